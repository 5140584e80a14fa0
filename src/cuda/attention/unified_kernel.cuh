// The unified paged attention kernel: one CTA = one tile of packed query rows (query token x query head of
// one KV head's group) x one KV segment. K/V tiles are gathered through the block table with cp.async into
// double-buffered shared memory, scores and probabilities stay in registers (online softmax), and S = QK^T
// and O += PV run on tensor cores (mma.sync m16n8k16, fp32 accumulation).
//
// Warps form a kWarpsM x kWarpsN grid: kWarpsM warps split the 16-row blocks of the tile, kWarpsN warps split
// the keys of each KV tile (each keeps its own softmax state; the states merge through shared memory at the
// end).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/attention/kv_gather.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/query_tile.cuh"
#include "cuda/attention/unified_params.h"

namespace pagedattn::cuda {

template <int kHeadDim_, int kWarpsM_, int kWarpsN_, int kBlockN_, int kStages_>
struct UnifiedConfig {
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
  // Shared memory: Q tile, then kStages stages of K and V tiles; the K/V region is reused by the epilogue.
  static constexpr int kQBytes = kBlockM * kStride * 2;
  static constexpr int kKVBytes = kStages * 2 * kBlockN * kStride * 2;
  static constexpr int kMergeBytes = kWarpsN * kBlockM * kHeadDim * 4;
  static_assert(kMergeBytes <= kKVBytes, "epilogue staging must fit in the K/V region");
  static constexpr int kSmemBytes = kQBytes + kKVBytes;
};

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads)
    unified_attention_kernel(const __grid_constant__ UnifiedParams p) {
  constexpr int D = Cfg::kHeadDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN, S = Cfg::kStride;
  constexpr int kNTiles = Cfg::kWarpKeys / 8;  // n8 score tiles per warp per KV tile
  constexpr int kDTiles = D / 8;               // n8 output tiles per warp
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);                 // (BM, S)
  T* sK = reinterpret_cast<T*>(smem + Cfg::kQBytes);  // (kStages, BN, S)
  T* sV = sK + Cfg::kStages * BN * S;                 // (kStages, BN, S)
  __shared__ float s_ml[Cfg::kWarpsN][BM][2];

  const auto& kv = p.kv;
  const auto& a = p.attn;
  allow_dependent_launch();  // the merge of a split launch may start launching (it waits for our partials)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / Cfg::kWarpsN, wn = warp % Cfg::kWarpsN;
  const int G = a.group_size;
  const int kv_head = blockIdx.y, segment = blockIdx.z;

  QueryTile t;
  if (!plan_query_tile<BM, BN>(p, blockIdx.x, segment, t)) return;
  if (t.tile_lo >= t.tile_hi) {
    mark_empty_segment(p, t, kv_head, segment);
    return;
  }
  const int rows_valid = t.rows_valid, seq_len = t.seq_len, kv_begin = t.kv_begin;
  const int qpos_min = t.qpos_min, qpos_max = t.qpos_max, tile_lo = t.tile_lo, tile_hi = t.tile_hi;
  auto out_index = [&](int r, int& token, int& head) { t.row_target(r, p.group, kv_head, token, head); };

  // ---- Q tile -> shared memory (rows past rows_valid are zero)
  // --------------------------------------------------
  const T* q_base = static_cast<const T*>(a.q);
  for (int c = tid; c < BM * Cfg::kChunks; c += Cfg::kThreads) {
    const int r = c / Cfg::kChunks, ch = c % Cfg::kChunks;
    const T* src = q_base;
    int bytes = 0;
    if (r < rows_valid) {
      int token, head;
      out_index(r, token, head);
      src = q_base + token * a.q_stride_token + head * a.q_stride_head + ch * 8;
      bytes = 16;
    }
    cp_async_16(sQ + r * S + ch * 8, src, bytes);
  }
  cp_async_commit();

  // ---- K/V tiles: block ids fetched one tile ahead of the copies that use them (kv_gather.cuh); rows at
  // or past seq_len are zero
  KVTileGather<T, Cfg::kThreads, Cfg::kChunks, BN> gather;
  gather.init(kv, p.batch.block_tables + static_cast<int64_t>(t.seq) * p.batch.block_table_stride, kv_head,
              seq_len, D);
  auto key0_of = [&](int kv_tile) { return kv_begin + kv_tile * BN; };
  auto padded = [](int n, int col) { return static_cast<uint32_t>((n * S + col) * 2); };
  auto copy_tile = [&](int stage) {
    gather.copy(reinterpret_cast<unsigned char*>(sK + stage * BN * S),
                reinterpret_cast<unsigned char*>(sV + stage * BN * S), padded);
  };
  // Prologue: the first kStages - 1 tiles in flight, one commit group each (empty groups keep the count
  // uniform); then the block ids of the next tile.
#pragma unroll
  for (int st = 0; st < Cfg::kStages - 1; ++st) {
    if (tile_lo + st < tile_hi) {
      gather.fetch_blocks(key0_of(tile_lo + st));
      copy_tile(st);
    }
    cp_async_commit();
  }
  if (tile_lo + Cfg::kStages - 1 < tile_hi) gather.fetch_blocks(key0_of(tile_lo + Cfg::kStages - 1));

  // ---- per-thread row facts: this thread holds rows g and g + 8 of its warp's 16-row block
  // ------------------------
  const int g = lane >> 2, t4 = lane & 3;
  int row_qpos[2];
  float row_slope[2];
  for (int i = 0; i < 2; ++i) {
    const int r = wm * 16 + g + 8 * i;
    const bool valid = r < rows_valid;
    row_qpos[i] = t.row_qpos(r, p.group);
    row_slope[i] = (a.alibi_slopes != nullptr && valid)
                       ? a.alibi_slopes[kv_head * G + t.row_head_in_group(r, p.group)]
                       : 0.0f;
  }

  cp_async_wait<Cfg::kStages - 1>();  // Q has landed (only the prologue's tile groups may be pending)
  __syncthreads();
  uint32_t q_frag[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    const int r = wm * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
    const int col = ks * 16 + (lane >> 4) * 8;
    ldmatrix_x4(q_frag[ks], sQ + r * S + col);
  }

  float o_acc[kDTiles][4];
#pragma unroll
  for (int i = 0; i < kDTiles; ++i) o_acc[i][0] = o_acc[i][1] = o_acc[i][2] = o_acc[i][3] = 0.0f;
  const float unit = logit_unit(a);           // row_max * unit is the log2-domain max
  float row_max[2] = {-INFINITY, -INFINITY};  // in logit units (query_tile.cuh)
  float row_sum[2] = {0.0f, 0.0f};  // this thread's columns only; reduced across the quad at the end

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
    const T* tk = sK + stage * BN * S + wn * Cfg::kWarpKeys * S;
    const T* tv = sV + stage * BN * S + wn * Cfg::kWarpKeys * S;
    const int key0 = kv_begin + kv_tile * BN + wn * Cfg::kWarpKeys;

    // S = Q K^T for this warp's 16 rows x kWarpKeys keys.
    float s[kNTiles][4];
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; nt += 2) {
        uint32_t kf[4];
        const int n = nt * 8 + (lane & 7) + (lane >> 4) * 8;
        const int col = ks * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(kf, tk + n * S + col);
        Mma<T>::run(s[nt], q_frag[ks], kf[0], kf[1]);
        Mma<T>::run(s[nt + 1], q_frag[ks], kf[2], kf[3]);
      }
    }

    // Logits in the log2 domain: scale, soft-cap, ALiBi, mask. Then the online softmax update.
    const bool full_tile =
        key0 + Cfg::kWarpKeys - 1 <= qpos_min && (a.window_left == 0 || key0 >= qpos_max - a.window_left);
    float tile_max[2] = {-INFINITY, -INFINITY};
    scores_to_logits<kNTiles>(a, &s[0][0], key0, t4, row_qpos, row_slope, full_tile, tile_max);
    float rescale[2];
    online_softmax_step<kNTiles>(&s[0][0], tile_max, unit, row_max, row_sum, rescale);
    if (o_needs_rescale(rescale)) {
#pragma unroll
      for (int dt = 0; dt < kDTiles; ++dt) {
        o_acc[dt][0] *= rescale[0];
        o_acc[dt][1] *= rescale[0];
        o_acc[dt][2] *= rescale[1];
        o_acc[dt][3] *= rescale[1];
      }
    }

    // O += P V: two score tiles (16 keys) form one A fragment.
#pragma unroll
    for (int kk = 0; kk < kNTiles / 2; ++kk) {
      uint32_t pf[4];
      pf[0] = Mma<T>::pack(s[2 * kk][0], s[2 * kk][1]);
      pf[1] = Mma<T>::pack(s[2 * kk][2], s[2 * kk][3]);
      pf[2] = Mma<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      pf[3] = Mma<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dt = 0; dt < kDTiles; dt += 2) {
        uint32_t vf[4];
        const int n = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
        const int col = dt * 8 + (lane >> 4) * 8;
        ldmatrix_x4_trans(vf, tv + n * S + col);
        Mma<T>::run(o_acc[dt], pf, vf[0], vf[1]);
        Mma<T>::run(o_acc[dt + 1], pf, vf[2], vf[3]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the K/V stages: the epilogue reuses them

  // ---- epilogue: merge the kWarpsN partial states per row through shared memory
  // ----------------------------------
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
  }
  float* s_o = reinterpret_cast<float*>(smem + Cfg::kQBytes);  // (kWarpsN, BM, D), reusing the K/V region
  {
    const int r = wm * 16 + g;
    if (t4 == 0) {
      s_ml[wn][r][0] = row_max[0] * unit;
      s_ml[wn][r][1] = row_sum[0];
      s_ml[wn][r + 8][0] = row_max[1] * unit;
      s_ml[wn][r + 8][1] = row_sum[1];
    }
    float* o0 = s_o + (wn * BM + r) * D;
    float* o1 = o0 + 8 * D;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + 2 * t4;
      *reinterpret_cast<float2*>(o0 + col) = make_float2(o_acc[dt][0], o_acc[dt][1]);
      *reinterpret_cast<float2*>(o1 + col) = make_float2(o_acc[dt][2], o_acc[dt][3]);
    }
  }
  __syncthreads();

  constexpr int kVec = 4;  // output elements per thread per step
  for (int c = tid; c < rows_valid * (D / kVec); c += Cfg::kThreads) {
    const int r = c / (D / kVec), col = (c % (D / kVec)) * kVec;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < Cfg::kWarpsN; ++w) m = fmaxf(m, s_ml[w][r][0]);
    const float base = m == -INFINITY ? 0.0f : m;
    float l = 0.0f;
    float o[kVec] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int w = 0; w < Cfg::kWarpsN; ++w) {
      const float f = exp2f(s_ml[w][r][0] - base);
      l += s_ml[w][r][1] * f;
      const float4 v = *reinterpret_cast<const float4*>(s_o + (w * BM + r) * D + col);
      o[0] += v.x * f;
      o[1] += v.y * f;
      o[2] += v.z * f;
      o[3] += v.w * f;
    }
    int token, head;
    out_index(r, token, head);
    if (p.num_segments > 1) {
      store_partial<D, kVec>(p, token, head, segment, col, o, col == 0, m, l);
      continue;
    }
    float lse;
    const float inv = finalize_row(sink_log2(a, head), m, l, lse);
    T* dst = static_cast<T*>(a.o) + token * a.o_stride_token + head * a.o_stride_head + col;
    T packed[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) packed[e] = from_float<T>(o[e] * inv);
    *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(packed);
    if (a.lse != nullptr && col == 0) a.lse[token * a.lse_stride_token + head * a.lse_stride_head] = lse;
  }
}

}  // namespace pagedattn::cuda
