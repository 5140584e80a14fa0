// The Hopper prefill tile: 128 packed query rows per CTA, two warpgroups of 64 rows each, S = QK^T and
// O += PV on wgmma (fp32 accumulation), online softmax in registers. K/V tiles are gathered through the block
// table with cp.async into 128-byte swizzled shared memory (two or three stages): pages are as small as one
// token, so they are copied 16 bytes at a time rather than by TMA boxes. The head dimension is padded to a
// multiple of 64 in shared memory with zeros (80/96/112 run as 128, 192 and 256 as themselves).
//
// Per KV tile and warpgroup: S (64 x BN) = one wgmma chain over the head dim with Q and K both read from
// shared memory; P is converted to 16-bit A fragments in registers; O (64 x D) += P V reads V from shared
// memory (MN-major), one 64-column panel per instruction. Results, the 3D launch's partials and the merge are
// those of the unified kernel (query_tile.cuh), so the two kernels are interchangeable for any batch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/attention/kv_gather.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/query_tile.cuh"
#include "cuda/attention/unified_params.h"
#include "cuda/attention/wgmma_sm90.cuh"

namespace pagedattn::cuda {

template <int kHeadDim_>
struct PrefillSm90Config {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kPaddedDim = (kHeadDim + 63) / 64 * 64;  // whole 128-byte swizzle panels
  static constexpr int kPanels = kPaddedDim / 64;
  static constexpr int kBlockM = 128;  // two warpgroups x 64 rows
  // 128 keys where S + O fit the register budget; 64 for head dim > 128 (O is large) and for head dim 64
  // (two CTAs per SM cap registers at 128).
  static constexpr int kBlockN = kHeadDim > 64 && kHeadDim <= 128 ? 128 : 64;
  static constexpr int kThreads = 256;
  static constexpr int kQBytes = kBlockM * kPaddedDim * 2;
  static constexpr int kTileBytes = kBlockN * kPaddedDim * 2;  // one K or V tile
  // Three stages where they fit (227 KB): the previous tile's V stays resident while the next tile lands,
  // so P V of tile j-1 runs on the tensor cores during the softmax of tile j. Head dim 256 keeps two (no
  // room), head dim 64 keeps two (two CTAs per SM instead).
  static constexpr bool kThreeStagesFit = 1024 + kQBytes + 3 * 2 * kTileBytes <= 227 * 1024;
  static constexpr int kStages = kPaddedDim > 64 && kThreeStagesFit ? 3 : 2;
  // Head dim 64: two CTAs per SM (its softmax dominates; a second CTA hides it better than the P V overlap).
  static constexpr int kMinBlocksPerSm = kPaddedDim <= 64 ? 2 : 1;
  // +1024: the dynamic shared-memory base is only 16-byte aligned; swizzle atoms need 1024.
  static constexpr int kSmemBytes = 1024 + kQBytes + kStages * 2 * kTileBytes;
  static_assert(kHeadDim % 16 == 0, "head dim must be a multiple of 16");
};

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocksPerSm)
    prefill_sm90_kernel(const __grid_constant__ UnifiedParams p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int D = Cfg::kHeadDim, DP = Cfg::kPaddedDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN;
  constexpr int kChunks = DP / 8;        // 16-byte chunks per padded row
  constexpr int kNTiles = BN / 8;        // n8 column tiles of S per row block
  constexpr int kPanels = Cfg::kPanels;  // 64-column panels of O
  constexpr bool kOverlapPV = Cfg::kStages == 3;
  extern __shared__ unsigned char smem_raw[];
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);
  const uint32_t sQ = base;
  auto sK = [&](int stage) { return base + Cfg::kQBytes + stage * 2 * Cfg::kTileBytes; };
  auto sV = [&](int stage) { return sK(stage) + Cfg::kTileBytes; };

  allow_dependent_launch();  // the merge of a split launch may start launching (it waits for our partials)
  const auto& a = p.attn;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp / 4;  // warpgroup: rows 64 * wg ..
  const int G = a.group_size;
  const int kv_head = blockIdx.y, segment = blockIdx.z;

  // Heaviest tiles first: later query rows of a causal sequence see more keys.
  QueryTile t;
  if (!plan_query_tile<BM, BN>(p, gridDim.x - 1 - blockIdx.x, segment, t)) return;
  if (t.tile_lo >= t.tile_hi) {
    mark_empty_segment(p, t, kv_head, segment);
    return;
  }

  // ---- Q tile -> shared memory (rows past rows_valid and columns past D are zero)
  const T* q_base = static_cast<const T*>(a.q);
  for (int c = tid; c < BM * kChunks; c += Cfg::kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const T* src = q_base;
    int bytes = 0;
    if (r < t.rows_valid && ch * 8 < D) {
      int token, head;
      t.row_target(r, p.group, kv_head, token, head);
      src = q_base + static_cast<int64_t>(token) * a.q_stride_token + head * a.q_stride_head + ch * 8;
      bytes = 16;
    }
    cp_async_16(smem + (sQ - base) + sm90::swizzled_offset(BM, r, ch * 8), src, bytes);
  }
  cp_async_commit();

  // ---- K/V tiles: block ids fetched one tile ahead of the copies that use them (kv_gather.cuh)
  KVTileGather<T, Cfg::kThreads, kChunks, BN> gather;
  gather.init(p.kv, p.batch.block_tables + static_cast<int64_t>(t.seq) * p.batch.block_table_stride, kv_head,
              t.seq_len, D);
  auto key0_of = [&](int kv_tile) { return t.kv_begin + kv_tile * BN; };
  auto swizzled = [](int n, int col) { return sm90::swizzled_offset(BN, n, col); };
  auto copy_tile = [&](int stage) {
    gather.copy(smem + (sK(stage) - base), smem + (sV(stage) - base), swizzled);
  };
  gather.fetch_blocks(key0_of(t.tile_lo));
  copy_tile(0);
  cp_async_commit();
  if (t.tile_lo + 1 < t.tile_hi) gather.fetch_blocks(key0_of(t.tile_lo + 1));

  // ---- per-thread row facts: rows g and g + 8 of this warp's 16-row block
  const int g = lane >> 2, t4 = lane & 3;
  const int wrow = wg * 64 + (warp % 4) * 16;  // first row of this warp
  int row_qpos[2];
  float row_slope[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = wrow + g + 8 * i;
    const bool valid = r < t.rows_valid;
    row_qpos[i] = t.row_qpos(r, p.group);
    row_slope[i] = a.alibi_slopes != nullptr && valid
                       ? a.alibi_slopes[kv_head * G + t.row_head_in_group(r, p.group)]
                       : 0.0f;
  }

  float o[kPanels][32];
#pragma unroll
  for (int c = 0; c < kPanels; ++c) {
#pragma unroll
    for (int i = 0; i < 32; ++i) o[c][i] = 0.0f;
  }
  const float unit = logit_unit(a);           // row_max * unit is the log2-domain max
  float row_max[2] = {-INFINITY, -INFINITY};  // in logit units (query_tile.cuh)
  float row_sum[2] = {0.0f, 0.0f};  // this thread's columns only; reduced across the quad at the end

  const bool wg_has_rows = wg * 64 < t.rows_valid;  // uniform per warpgroup, as wgmma requires
  uint32_t pf[BN / 16][4] = {};                     // P of the last scored tile, 16-bit A fragments
  // O += P V over the tile in `stage`, one 64-column panel of V per instruction.
  auto issue_pv = [&](int stage) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
      for (int c = 0; c < kPanels; ++c) {
        const uint32_t v_addr = sV(stage) + c * (BN * 128) + kk * 16 * 128;
        sm90::WgmmaRS<T, 64>::run(o[c], pf[kk], sm90::make_desc(v_addr, 1024), 1);
      }
    }
    sm90::wgmma_commit();
  };
  // P V issued and completed here (no overlap): O and P are final on return.
  auto pv_now = [&](int stage) {
#pragma unroll
    for (int c = 0; c < kPanels; ++c) sm90::pin_registers(o[c]);
    sm90::pin_registers(pf);
    sm90::wgmma_fence();
    issue_pv(stage);
    sm90::wgmma_wait<0>();
#pragma unroll
    for (int c = 0; c < kPanels; ++c) sm90::pin_registers(o[c]);
  };
  int prev_stage = 0;
  // One KV tile. kPendingPV: the previous tile's P V has not been issued yet (three stages, not the first
  // tile). A compile-time flag: wgmma issued under a run-time condition makes ptxas serialize every wgmma.
  auto step = [&]<bool kPendingPV>(int kv_tile) {
    const int it = kv_tile - t.tile_lo;
    const int stage = it % Cfg::kStages;
    cp_async_wait<0>();         // this tile (and Q) have landed for this thread's copies ...
    sm90::fence_proxy_async();  // ... and are visible to wgmma (the async proxy) ...
    __syncthreads();            // ... for every thread's copies; the stage refilled next is free again

    if (!wg_has_rows) {  // no rows for this warpgroup (a short query in a mixed batch): it only copies
      if (kv_tile + 1 < t.tile_hi) copy_tile((it + 1) % Cfg::kStages);
      cp_async_commit();
      if (kv_tile + 2 < t.tile_hi) gather.fetch_blocks(key0_of(kv_tile + 2));
      return;
    }
    // S = Q K^T over the padded head dim, issued first; with three stages, the previous tile's P V right
    // behind it, so that the tensor cores run it while this warpgroup computes the softmax below. The next
    // tile's copies are issued while they run.
    float s[kNTiles * 4];
#pragma unroll
    for (int c = 0; c < kPanels; ++c) sm90::pin_registers(o[c]);
    sm90::pin_registers(pf);
    sm90::wgmma_fence();
#pragma unroll
    for (int ks = 0; ks < DP / 16; ++ks) {
      const uint32_t q_addr = sQ + (ks / 4) * (BM * 128) + wg * 64 * 128 + (ks % 4) * 32;
      const uint32_t k_addr = sK(stage) + (ks / 4) * (BN * 128) + (ks % 4) * 32;
      sm90::WgmmaSS<T, BN>::run(s, sm90::make_desc(q_addr, 1024), sm90::make_desc(k_addr, 1024), ks > 0);
    }
    sm90::wgmma_commit();
    if constexpr (kPendingPV) issue_pv(prev_stage);
    if (kv_tile + 1 < t.tile_hi) copy_tile((it + 1) % Cfg::kStages);
    cp_async_commit();
    if (kv_tile + 2 < t.tile_hi) gather.fetch_blocks(key0_of(kv_tile + 2));
    if constexpr (kPendingPV) {
      sm90::wgmma_wait<1>();  // S is ready; the previous P V may still run
    } else {
      sm90::wgmma_wait<0>();
    }
    sm90::pin_registers(s);

    // Logits, mask, online softmax (as in the unified kernel).
    const int key0 = t.kv_begin + kv_tile * BN;
    const bool full_tile =
        key0 + BN - 1 <= t.qpos_min && (a.window_left == 0 || key0 >= t.qpos_max - a.window_left);
    float tile_max[2] = {-INFINITY, -INFINITY};
    scores_to_logits<kNTiles>(a, s, key0, t4, row_qpos, row_slope, full_tile, tile_max);
    float rescale[2];
    online_softmax_step<kNTiles>(s, tile_max, unit, row_max, row_sum, rescale);
    if constexpr (kPendingPV) {  // the previous P V is done with O and with the P fragments
      sm90::wgmma_wait<0>();
#pragma unroll
      for (int c = 0; c < kPanels; ++c) sm90::pin_registers(o[c]);
      sm90::pin_registers(pf);
    }
    if (o_needs_rescale(rescale)) {
#pragma unroll
      for (int c = 0; c < kPanels; ++c) {
#pragma unroll
        for (int i = 0; i < 32; ++i) o[c][i] *= rescale[(i >> 1) & 1];
      }
    }
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      pf[kk][0] = Mma<T>::pack(s[(2 * kk) * 4 + 0], s[(2 * kk) * 4 + 1]);
      pf[kk][1] = Mma<T>::pack(s[(2 * kk) * 4 + 2], s[(2 * kk) * 4 + 3]);
      pf[kk][2] = Mma<T>::pack(s[(2 * kk + 1) * 4 + 0], s[(2 * kk + 1) * 4 + 1]);
      pf[kk][3] = Mma<T>::pack(s[(2 * kk + 1) * 4 + 2], s[(2 * kk + 1) * 4 + 3]);
    }
    prev_stage = stage;
    if constexpr (!kOverlapPV) {
      pv_now(stage);
    }
  };
  if (t.tile_lo < t.tile_hi) step.template operator()<false>(t.tile_lo);
  for (int kv_tile = t.tile_lo + 1; kv_tile < t.tile_hi; ++kv_tile)
    step.template operator()<kOverlapPV>(kv_tile);
  if (kOverlapPV && wg_has_rows && t.tile_hi > t.tile_lo) pv_now(prev_stage);  // the last tile's P V
  cp_async_wait<0>();

  // ---- epilogue: each thread owns rows g and g + 8 of its warp, columns 8j + 2t4 (+1) of every panel.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = wrow + g + 8 * i;
    if (r >= t.rows_valid) continue;
    int token, head;
    t.row_target(r, p.group, kv_head, token, head);
    const float m = row_max[i] * unit, l = row_sum[i];  // log2 domain
    // Calls fn(col, x, x') for each pair of row i's output columns this thread holds (col < D).
    auto for_each_pair = [&](auto&& fn) {
#pragma unroll
      for (int c = 0; c < kPanels; ++c) {
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int col = c * 64 + j * 8 + 2 * t4;
          if (col < D) fn(col, o[c][j * 4 + 2 * i], o[c][j * 4 + 2 * i + 1]);
        }
      }
    };
    if (p.num_segments > 1) {
      for_each_pair([&](int col, float x0, float x1) {
        const float pair[2] = {x0, x1};
        store_partial<D, 2>(p, token, head, segment, col, pair, col == 0, m, l);
      });
      continue;
    }
    float lse;
    const float inv = finalize_row(sink_log2(a, head), m, l, lse);
    T* dst = static_cast<T*>(a.o) + static_cast<int64_t>(token) * a.o_stride_token + head * a.o_stride_head;
    for_each_pair([&](int col, float x0, float x1) {
      *reinterpret_cast<uint32_t*>(dst + col) = Mma<T>::pack(x0 * inv, x1 * inv);
    });
    if (a.lse != nullptr && t4 == 0) {
      a.lse[static_cast<int64_t>(token) * a.lse_stride_token + head * a.lse_stride_head] = lse;
    }
  }
#else
  __trap();  // the host selects this kernel only for sm_90a devices in builds that include sm_90a
#endif
}

}  // namespace pagedattn::cuda
