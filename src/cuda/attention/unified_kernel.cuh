// The unified paged attention kernel: one CTA = one tile of packed query rows (query token x query head of
// one KV head's group) x one KV segment. K/V tiles are gathered through the block table with cp.async into
// double-buffered shared memory, scores and probabilities stay in registers (online softmax), and S = QK^T
// and O += PV run on tensor cores (mma.sync m16n8k16, fp32 accumulation).
//
// Warps form a kWarpsM x kWarpsN grid: kWarpsM warps split the 16-row blocks of the tile, kWarpsN warps split
// the keys of each KV tile (each keeps its own softmax state; the states merge through shared memory at the
// end).
//
// Quantized caches (fp8, int8: kv_format.cuh) stage their stored codes (half the bytes) in the multi-buffered
// stages instead, and every thread converts the current tile into one query-type K/V tile right before the
// MMAs read it: one more barrier per tile, and the pipeline depth of the bf16 kernel at about half its
// shared memory. Scales stay in fp32 on the scores (attend_kv_tile).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>
#include <type_traits>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/attention/kv_format.cuh"
#include "cuda/attention/kv_gather.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/query_tile.cuh"
#include "cuda/attention/unified_params.h"
#include "cuda/attention/warp_tile_math.cuh"

namespace pagedattn::cuda {

template <int kHeadDim_, int kWarpsM_, int kWarpsN_, int kBlockN_, int kStages_, typename Format_ = KVAsQuery>
struct UnifiedConfig {
  using Format = Format_;
  static constexpr int kStages = kStages_;  // K/V tiles in flight + the one being computed
  static_assert(kStages >= 2, "the pipeline needs at least two stages");
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarpsM = kWarpsM_;
  static constexpr int kWarpsN = kWarpsN_;
  static constexpr int kBlockN = kBlockN_;      // keys per KV tile
  static constexpr int kBlockM = 16 * kWarpsM;  // packed query rows per CTA
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpKeys = kBlockN / kWarpsN;  // keys of a tile each warp scores
  static constexpr int kStride = kHeadDim + 8;  // smem row stride (elements): +16 B avoids bank conflicts
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static_assert(kHeadDim % 16 == 0 && kWarpKeys % 16 == 0, "tile shape must match the m16n8k16 instruction");
  // Shared memory: Q tile, then kStages stages of K and V tiles (quantized: of stored codes, rows padded by
  // 16 bytes, their per-token scales, and one converted K/V tile); the K/V region is reused by the epilogue.
  static constexpr int kQBytes = kBlockM * kStride * 2;
  static constexpr int kCodeStride = kHeadDim * Format::kBytes + 16;  // bytes per staged row (quantized)
  static constexpr int kStageTileBytes = Format::kQuantized ? kBlockN * kCodeStride : kBlockN * kStride * 2;
  static constexpr int kScaleBytes = Format::kTokenScales ? kStages * 2 * kBlockN * 4 : 0;
  static constexpr int kConvertedBytes = Format::kQuantized ? 2 * kBlockN * kStride * 2 : 0;
  static constexpr int kKVBytes = kStages * 2 * kStageTileBytes + kScaleBytes + kConvertedBytes;
  static constexpr int kMergeBytes = kEpilogueBytes<kHeadDim, kBlockM, kWarpsN>;
  static_assert(kMergeBytes <= kKVBytes, "epilogue staging must fit in the K/V region");
  static constexpr int kSmemBytes = kQBytes + kKVBytes;
};

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads)
    unified_attention_kernel(const __grid_constant__ UnifiedParams p) {
  using Fmt = typename Cfg::Format;
  using Stored = std::conditional_t<Fmt::kQuantized, uint8_t, T>;
  constexpr int D = Cfg::kHeadDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN, S = Cfg::kStride;
  constexpr int kStageBytes = Cfg::kStageTileBytes;
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);       // (BM, S)
  unsigned char* sK = smem + Cfg::kQBytes;  // (kStages, BN, S) of T, or (kStages, BN, kCodeStride) bytes
  unsigned char* sV = sK + Cfg::kStages * kStageBytes;
  float* sKs = reinterpret_cast<float*>(sV + Cfg::kStages * kStageBytes);  // token scales: (kStages, BN)
  float* sVs = sKs + Cfg::kStages * BN;
  T* sKc = reinterpret_cast<T*>(sV + Cfg::kStages * kStageBytes + Cfg::kScaleBytes);  // converted (BN, S)
  T* sVc = sKc + BN * S;
  __shared__ float s_ml[Cfg::kWarpsN][BM][2];

  const auto& kv = p.kv;
  const auto& a = p.attn;
  allow_dependent_launch();  // the merge of a split launch may start launching (it waits for our partials)
  wait_for_prerequisite_grid();  // an early start (LaunchChoice::early_start): the previous kernel's results
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / Cfg::kWarpsN, wn = warp % Cfg::kWarpsN;
  const int kv_head = blockIdx.y, segment = blockIdx.z;

  QueryTile t;
  if (!plan_query_tile<BM, BN>(p, blockIdx.x, segment, t)) return;
  if (t.tile_lo >= t.tile_hi) {
    mark_empty_segment(p, t, kv_head, segment);
    return;
  }
  const int kv_begin = t.kv_begin, tile_lo = t.tile_lo, tile_hi = t.tile_hi;

  // ---- Q tile -> shared memory (rows past rows_valid are zero)
  load_q_tile_async<T, D, BM, Cfg::kThreads>(p, t, kv_head, sQ, S, tid);
  cp_async_commit();

  // ---- K/V tiles: block ids fetched one tile ahead of the copies that use them (kv_gather.cuh); rows at
  // or past seq_len are zero
  KVTileGather<Stored, Cfg::kThreads, D, BN, Fmt::kTokenScales> gather;
  gather.init(kv, p.batch.block_tables + static_cast<int64_t>(t.seq) * p.batch.block_table_stride, kv_head,
              t.seq_len);
  auto key0_of = [&](int kv_tile) { return kv_begin + kv_tile * BN; };
  auto staged = [](int n, int col) {
    return static_cast<uint32_t>(Fmt::kQuantized ? n * Cfg::kCodeStride + col : (n * S + col) * 2);
  };
  auto copy_tile = [&](int stage) {
    gather.copy(sK + stage * kStageBytes, sV + stage * kStageBytes, staged, sKs + stage * BN,
                sVs + stage * BN);
  };
  // Prologue: the first kStages - 1 tiles in flight, one commit group each (empty groups keep the count
  // uniform); then the block ids of the next tile.
#pragma unroll
  for (int pre = 0; pre < Cfg::kStages - 1; ++pre) {
    if (tile_lo + pre < tile_hi) {
      gather.fetch_blocks(key0_of(tile_lo + pre));
      copy_tile(pre);
    }
    cp_async_commit();
  }
  if (tile_lo + Cfg::kStages - 1 < tile_hi) gather.fetch_blocks(key0_of(tile_lo + Cfg::kStages - 1));

  int row_qpos[2];
  float row_slope[2];
  row_facts(p, t, kv_head, wm, lane, row_qpos, row_slope);

  cp_async_wait<Cfg::kStages - 1>();  // Q has landed (only the prologue's tile groups may be pending)
  __syncthreads();
  uint32_t q_frag[D / 16][4];
  load_q_fragments<D>(
      q_frag, [&](int r, int col) { return sQ + (wm * 16 + r) * S + col; }, lane);

  WarpSoftmaxState<D> st;
  st.clear();
  // fp8: the KV head's dequantization scales, read once.
  [[maybe_unused]] HeadKVScales head_scales{1.0f, 1.0f};
  if constexpr (Fmt::kQuantized && !Fmt::kTokenScales) {
    head_scales = HeadKVScales{kv.k_head_scale(kv_head), kv.v_head_scale(kv_head)};
  }
  const float unit = logit_unit(a);  // row_max * unit is the log2-domain max

  for (int kv_tile = tile_lo; kv_tile < tile_hi; ++kv_tile) {
    const int it = kv_tile - tile_lo;
    const int stage = it % Cfg::kStages;
    // Committed so far: Q, kStages - 1 prologue groups, one per earlier iteration. Tile `it` is group it + 1,
    // so all but the newest kStages - 2 groups must be complete.
    cp_async_wait<Cfg::kStages - 2>();
    __syncthreads();  // tile `it` is visible to all warps, and every warp is done with the stage refilled
                      // next
    if (kv_tile + Cfg::kStages - 1 < tile_hi) copy_tile((it + Cfg::kStages - 1) % Cfg::kStages);
    cp_async_commit();
    if (kv_tile + Cfg::kStages < tile_hi) gather.fetch_blocks(key0_of(kv_tile + Cfg::kStages));
    const int key0 = kv_begin + kv_tile * BN + wn * Cfg::kWarpKeys;
    if constexpr (Fmt::kQuantized) {
      // Codes -> query-type elements, 8 at a time; the barrier makes the whole converted tile visible.
      const unsigned char* ck = sK + stage * kStageBytes;
      const unsigned char* cv = sV + stage * kStageBytes;
      for (int c = tid; c < BN * (D / 8); c += Cfg::kThreads) {
        const int n = c / (D / 8), col = (c % (D / 8)) * 8;
        const uint2 rk = *reinterpret_cast<const uint2*>(ck + n * Cfg::kCodeStride + col);
        const uint2 rv = *reinterpret_cast<const uint2*>(cv + n * Cfg::kCodeStride + col);
        *reinterpret_cast<uint4*>(sKc + n * S + col) = dequantize8<T, Fmt>(rk);
        *reinterpret_cast<uint4*>(sVc + n * S + col) = dequantize8<T, Fmt>(rv);
      }
      __syncthreads();
      const T* tk = sKc + wn * Cfg::kWarpKeys * S;
      const T* tv = sVc + wn * Cfg::kWarpKeys * S;
      auto k_at = [&](int n, int col) { return tk + n * S + col; };
      auto v_at = [&](int n, int col) { return tv + n * S + col; };
      const bool full = keys_unmasked(a, t, key0, Cfg::kWarpKeys);
      if constexpr (Fmt::kTokenScales) {
        const TokenKVScales scales{sKs + stage * BN + wn * Cfg::kWarpKeys,
                                   sVs + stage * BN + wn * Cfg::kWarpKeys};
        attend_kv_tile<T, D, Cfg::kWarpKeys>(a, q_frag, k_at, v_at, key0, full, row_qpos, row_slope, unit, st,
                                             lane, scales);
      } else {
        attend_kv_tile<T, D, Cfg::kWarpKeys>(a, q_frag, k_at, v_at, key0, full, row_qpos, row_slope, unit, st,
                                             lane, head_scales);
      }
    } else {
      const T* tk = reinterpret_cast<const T*>(sK + stage * kStageBytes) + wn * Cfg::kWarpKeys * S;
      const T* tv = reinterpret_cast<const T*>(sV + stage * kStageBytes) + wn * Cfg::kWarpKeys * S;
      attend_kv_tile<T, D, Cfg::kWarpKeys>(
          a, q_frag, [&](int n, int col) { return tk + n * S + col; },
          [&](int n, int col) { return tv + n * S + col; }, key0, keys_unmasked(a, t, key0, Cfg::kWarpKeys),
          row_qpos, row_slope, unit, st, lane);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the K/V stages: the epilogue reuses them

  merge_warps_and_store<T, D, BM, Cfg::kWarpsN, Cfg::kThreads>(p, t, kv_head, segment, st, unit,
                                                               reinterpret_cast<float*>(smem + Cfg::kQBytes),
                                                               s_ml, wm, wn, [] { __syncthreads(); });
}

}  // namespace pagedattn::cuda
