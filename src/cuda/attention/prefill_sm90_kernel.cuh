// The Hopper prefill kernel: 128 packed query rows per work item, S = QK^T and O += PV on wgmma (fp32
// accumulation), online softmax in registers. One CTA per SM stays resident and takes work items (query tile,
// kv head, segment) from a counter in the workspace, heaviest first, so that a work item's start and end
// overlap its neighbours' instead of costing a CTA launch each (bench/NOTES.md, version 14).
//
// Three warpgroups specialize (as in FlashAttention-3):
//   - the producer (warpgroup 0, registers given back) plans the next work item, gathers its K/V tiles
//     through the block table with cp.async into 128-byte swizzled shared memory (pages are as small as one
//     token, so rows are copied 16 bytes at a time rather than by TMA boxes) and loads its Q tile as soon as
//     the consumers are done with the previous one;
//   - two consumers (warpgroups 1 and 2, 64 rows each) run the GEMMs and the softmax and write the output.
// A stage of K/V tiles has a `full` barrier (the producer's copies landed) and an `empty` one (both consumers
// are done with it); Q has the same pair, and its `full` phase also publishes the work item's plan. The head
// dimension is padded to a multiple of 64 in shared memory with zeros (80/96/112 run as 128).
//
// Per KV tile and consumer: S (64 x BN) = one wgmma chain over the head dim with Q and K both read from
// shared memory; P is converted to 16-bit A fragments in registers; O (64 x D) += P V reads V from shared
// memory (MN-major), one 64-column panel per instruction. With three stages, P V of tile j - 1 runs on the
// tensor cores during the softmax of tile j. Results, the 3D launch's partials and the merge are those of
// the unified kernel (query_tile.cuh), so the two kernels are interchangeable for any batch.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/attention/mbarrier_sm90.cuh"
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
  static constexpr int kBlockM = 128;  // two consumer warpgroups x 64 rows
  // 128 keys where S + O fit the consumers' registers; 64 for head dim > 128 (O is large).
  static constexpr int kBlockN = kHeadDim <= 128 ? 128 : 64;
  static constexpr int kProducerThreads = 128;
  static constexpr int kConsumerWarps = 8;
  static constexpr int kThreads = kProducerThreads + 32 * kConsumerWarps;
  static constexpr int kMinBlocksPerSm = 1;
  // Register budgets after the split (128 x 80 + 256 x 208 <= 64 K; no spills at any head dim).
  static constexpr int kProducerRegisters = 80;
  static constexpr int kConsumerRegisters = 208;
  static constexpr int kQBytes = kBlockM * kPaddedDim * 2;
  static constexpr int kTileBytes = kBlockN * kPaddedDim * 2;  // one K or V tile
  // Three stages where they fit (227 KB, less the barriers and the plan): the previous tile's V stays
  // resident while the next tile lands. Head dim 256 keeps two.
  static constexpr bool kThreeStagesFit = 1024 + kQBytes + 3 * 2 * kTileBytes <= 227 * 1024 - 256;
  static constexpr int kStages = kThreeStagesFit ? 3 : 2;
  // +1024: the dynamic shared-memory base is only 16-byte aligned; swizzle atoms need 1024.
  static constexpr int kSmemBytes = 1024 + kQBytes + kStages * 2 * kTileBytes;
  static_assert(kHeadDim % 16 == 0, "head dim must be a multiple of 16");
  static_assert(kBlockN / 4 * (kPaddedDim / 8) % 32 == 0, "a producer warp's tile rows must fill its lanes");
};

/// Barriers, the published plan and the producer's next work item (static shared memory).
template <int kStages>
struct PrefillSm90Control {
  uint64_t full[kStages];   // K/V stage landed: 128 producer arrivals (after their copies)
  uint64_t empty[kStages];  // K/V stage consumed: one arrival per consumer warp
  uint64_t q_full;          // Q landed and the plan is written: 128 arrivals after copies + 1
  uint64_t q_empty;         // both consumers are done with Q (and have read the plan)
  WorkItemPlan plan;
  int next_item[2];  // the producer's next work item, double-buffered across its named barrier
};

/// Producer warpgroups synchronize among themselves on named barrier 1 (0 is __syncthreads).
__device__ __forceinline__ void producer_barrier(int threads) {
  asm volatile("bar.sync 1, %0;\n" ::"r"(threads) : "memory");
}

/// Warpgroup 0: plans work items and copies their Q and K/V tiles into shared memory.
template <typename T, typename Cfg>
__device__ __forceinline__ void produce_tiles(const UnifiedParams& p, PrefillSm90Control<Cfg::kStages>& ctl,
                                              unsigned char* smem) {
  constexpr int D = Cfg::kHeadDim, DP = Cfg::kPaddedDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN;
  constexpr int S = Cfg::kStages, kChunks = DP / 8;
  constexpr int kRowsPerWarp = BN / 4;  // each producer warp copies a quarter of every K/V tile
  constexpr int kCopiesPerLane = kRowsPerWarp * kChunks / 32;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const auto& a = p.attn;
  const auto& kv = p.kv;
  const int num_items = p.grid_tiles * kv.num_kv_heads * p.num_segments;  // < 2^31 (checked by the host)

  uint32_t tiles_made = 0, items_made = 0;
  int item = blockIdx.x;
  for (uint32_t round = 0;; ++round) {
    if (item >= num_items) break;
    uint32_t claimed = 0;
    if (tid == 0) claimed = atomicAdd(p.work_counter, 1u);  // the next item, fetched early
    const int x = item % p.grid_tiles, rest = item / p.grid_tiles;
    const int kv_head = rest % kv.num_kv_heads, segment = rest / kv.num_kv_heads;
    QueryTile t;
    // Heaviest tiles first: later query rows of a causal sequence see more keys.
    if (plan_query_tile<BM, BN>(p, p.grid_tiles - 1 - x, segment, t)) {
      if (t.tile_lo >= t.tile_hi) {
        mark_empty_segment(p, t, kv_head, segment);  // rows_valid <= 128: one row per producer thread
      } else {
        const int32_t* table =
            p.batch.block_tables + static_cast<int64_t>(t.seq) * p.batch.block_table_stride;
        // Lane l (< kRowsPerWarp) holds the block id and in-block slot of row warp * kRowsPerWarp + l of
        // the next tile to copy; -1 = past the sequence (zero-filled).
        int block = -1, slot = 0;
        auto fetch_blocks = [&](int kv_tile) {
          const int pos = t.kv_begin + kv_tile * BN + warp * kRowsPerWarp + lane;
          int page = 0;
          kv.locate(pos, page, slot);
          block = lane < kRowsPerWarp && pos < t.seq_len ? __ldg(table + page) : -1;
        };
        auto copy_tile = [&](int kv_tile) {
          const uint32_t stage = tiles_made % S;
          sm90::mbarrier_wait(smem_addr(&ctl.empty[stage]), ((tiles_made / S) & 1) ^ 1);
          unsigned char* dk = smem + Cfg::kQBytes + stage * 2 * Cfg::kTileBytes;
          unsigned char* dv = dk + Cfg::kTileBytes;
#pragma unroll 4
          for (int i = 0; i < kCopiesPerLane; ++i) {
            const int e = i * 32 + lane;
            const int r = e / kChunks, col = (e % kChunks) * 8;
            const int b = __shfl_sync(0xffffffffu, block, r);
            const int sl = __shfl_sync(0xffffffffu, slot, r);
            const bool valid = b >= 0 && col < D;
            const int64_t bb = valid ? b : 0;
            const T* ksrc = kv.k.at<T>(bb, sl, kv_head) + col;
            const T* vsrc = kv.v.at<T>(bb, sl, kv_head) + col;
            const uint32_t off = sm90::swizzled_offset(BN, warp * kRowsPerWarp + r, col);
            cp_async_16(dk + off, ksrc, valid ? 16 : 0);
            cp_async_16(dv + off, vsrc, valid ? 16 : 0);
          }
          sm90::mbarrier_arrive_after_copies(smem_addr(&ctl.full[stage]));
          ++tiles_made;
          if (kv_tile + 1 < t.tile_hi) fetch_blocks(kv_tile + 1);
        };

        // The first K/V tile goes out before Q: its stage frees up before the consumers release Q.
        fetch_blocks(t.tile_lo);
        copy_tile(t.tile_lo);
        sm90::mailbox_publish(smem_addr(&ctl.q_empty), smem_addr(&ctl.q_full), items_made, tid == 0, [&] {
          if (tid == 0) ctl.plan = WorkItemPlan{t, kv_head, segment, 0};
          const T* q_base = static_cast<const T*>(a.q);
          for (int c = tid; c < BM * kChunks; c += Cfg::kProducerThreads) {
            const int r = c / kChunks, ch = c % kChunks;
            const T* src = q_base;
            int bytes = 0;
            if (r < t.rows_valid && ch * 8 < D) {
              int token, head;
              t.row_target(r, p.group, kv_head, token, head);
              src = q_base + static_cast<int64_t>(token) * a.q_stride_token + head * a.q_stride_head + ch * 8;
              bytes = 16;
            }
            cp_async_16(smem + sm90::swizzled_offset(BM, r, ch * 8), src, bytes);
          }
        });
        ++items_made;
        for (int kv_tile = t.tile_lo + 1; kv_tile < t.tile_hi; ++kv_tile) copy_tile(kv_tile);
      }
    }
    if (tid == 0) ctl.next_item[round & 1] = static_cast<int>(claimed + gridDim.x);
    producer_barrier(Cfg::kProducerThreads);
    item = ctl.next_item[round & 1];
  }
  // No more work: the consumers exit once they have finished the last item.
  sm90::mailbox_publish(smem_addr(&ctl.q_empty), smem_addr(&ctl.q_full), items_made, tid == 0, [&] {
    if (tid == 0) ctl.plan.done = 1;
  });
}

/// Warpgroups 1 and 2: rows 64 * wg .. of each work item, from the producer's tiles to the output.
template <typename T, typename Cfg>
__device__ __forceinline__ void consume_tiles(const UnifiedParams& p, PrefillSm90Control<Cfg::kStages>& ctl,
                                              uint32_t base) {
  constexpr int D = Cfg::kHeadDim, DP = Cfg::kPaddedDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN;
  constexpr int kNTiles = BN / 8;        // n8 column tiles of S per row block
  constexpr int kPanels = Cfg::kPanels;  // 64-column panels of O
  constexpr bool kOverlapPV = Cfg::kStages == 3;
  const uint32_t sQ = base;
  auto sK = [&](int stage) { return base + Cfg::kQBytes + stage * 2 * Cfg::kTileBytes; };
  auto sV = [&](int stage) { return sK(stage) + Cfg::kTileBytes; };
  const auto& a = p.attn;
  const int tid = threadIdx.x - Cfg::kProducerThreads, lane = tid & 31, warp = tid >> 5;
  const int wg = warp / 4;  // consumer warpgroup: rows 64 * wg ..
  const int G = a.group_size;
  const int g = lane >> 2, t4 = lane & 3;
  const int wrow = wg * 64 + (warp % 4) * 16;  // first row of this warp
  const float unit = logit_unit(a);            // row_max * unit is the log2-domain max
  // One arrival per consumer warp on a barrier (its wgmma reads of the stage or of Q are complete).
  auto warp_arrive = [&](uint64_t& bar) {
    __syncwarp();
    if (lane == 0) sm90::mbarrier_arrive(smem_addr(&bar));
  };

  uint32_t tiles_used = 0;
  for (uint32_t items_used = 0;; ++items_used) {
    sm90::mbarrier_wait(smem_addr(&ctl.q_full), items_used & 1);
    const WorkItemPlan plan = read_plan(ctl.plan, lane);  // lane 0 reads; it also releases q_empty
    if (plan.done) break;
    const QueryTile t = plan.t;
    const int kv_head = plan.kv_head, segment = plan.segment;

    // ---- per-thread row facts: rows g and g + 8 of this warp's 16-row block
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
    // P V issued and completed here (no overlap): O and P are final on return, the stage is released.
    auto pv_now = [&](int stage) {
#pragma unroll
      for (int c = 0; c < kPanels; ++c) sm90::pin_registers(o[c]);
      sm90::pin_registers(pf);
      sm90::wgmma_fence();
      issue_pv(stage);
      sm90::wgmma_wait<0>();
#pragma unroll
      for (int c = 0; c < kPanels; ++c) sm90::pin_registers(o[c]);
      warp_arrive(ctl.empty[stage]);
    };
    int prev_stage = 0;
    // One KV tile. kPendingPV: the previous tile's P V has not been issued yet (three stages, not the first
    // tile). A compile-time flag: wgmma issued under a run-time condition makes ptxas serialize every wgmma.
    auto step = [&]<bool kPendingPV>(int kv_tile) {
      const int stage = static_cast<int>(tiles_used % Cfg::kStages);
      const bool last = kv_tile + 1 == t.tile_hi;
      sm90::mbarrier_wait(smem_addr(&ctl.full[stage]), (tiles_used / Cfg::kStages) & 1);
      ++tiles_used;
      if (!wg_has_rows) {  // no rows for this warpgroup (a short query in a mixed batch): it only releases
        warp_arrive(ctl.empty[stage]);
        if (last) warp_arrive(ctl.q_empty);
        return;
      }
      sm90::fence_proxy_async();  // the producer's cp.async writes, now visible, before wgmma reads them
      // S = Q K^T over the padded head dim, issued first; with three stages, the previous tile's P V right
      // behind it, so that the tensor cores run it while this warpgroup computes the softmax below.
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
      if constexpr (kPendingPV) {
        sm90::wgmma_wait<1>();  // S is ready; the previous P V may still run
      } else {
        sm90::wgmma_wait<0>();
      }
      sm90::pin_registers(s);
      if (last) warp_arrive(ctl.q_empty);  // Q is free for the next work item

      // Logits, mask, online softmax (as in the unified kernel).
      const int key0 = t.kv_begin + kv_tile * BN;
      const bool full_tile =
          key0 + BN - 1 <= t.qpos_min && (a.window_left == 0 || key0 >= t.qpos_max - a.window_left);
      float tile_max[2] = {-INFINITY, -INFINITY};
      scores_to_logits<kNTiles>(a, s, key0, t4, row_qpos, row_slope, full_tile, tile_max);
      float rescale[2];
      online_softmax_step<kNTiles>(s, tile_max, unit, row_max, row_sum, rescale);
      if constexpr (kPendingPV) {  // the previous P V is done with O, the P fragments and its stage
        sm90::wgmma_wait<0>();
#pragma unroll
        for (int c = 0; c < kPanels; ++c) sm90::pin_registers(o[c]);
        sm90::pin_registers(pf);
        warp_arrive(ctl.empty[prev_stage]);
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
      if constexpr (!kOverlapPV) pv_now(stage);
    };
    step.template operator()<false>(t.tile_lo);
    for (int kv_tile = t.tile_lo + 1; kv_tile < t.tile_hi; ++kv_tile)
      step.template operator()<kOverlapPV>(kv_tile);
    if (kOverlapPV && wg_has_rows) pv_now(prev_stage);  // the last tile's P V
    if (!wg_has_rows) continue;

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
  }
}

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocksPerSm)
    prefill_sm90_kernel(const __grid_constant__ UnifiedParams p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ unsigned char smem_raw[];
  __shared__ PrefillSm90Control<Cfg::kStages> ctl;
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  if (threadIdx.x == 0) {
    for (int s = 0; s < Cfg::kStages; ++s) {
      sm90::mbarrier_init(smem_addr(&ctl.full[s]), Cfg::kProducerThreads);
      sm90::mbarrier_init(smem_addr(&ctl.empty[s]), Cfg::kConsumerWarps);
    }
    sm90::mbarrier_init(smem_addr(&ctl.q_full), Cfg::kProducerThreads + 1);
    sm90::mbarrier_init(smem_addr(&ctl.q_empty), Cfg::kConsumerWarps);
    sm90::mbarrier_init_fence();
  }
  __syncthreads();
  allow_dependent_launch();  // the merge of a split launch may start launching (it waits for our partials)
  wait_for_prerequisite_grid();  // an early start (LaunchChoice::early_start): the previous kernel's results
  if (threadIdx.x < Cfg::kProducerThreads) {
    sm90::release_registers<Cfg::kProducerRegisters>();
    produce_tiles<T, Cfg>(p, ctl, smem_raw + (base - raw));
  } else {
    sm90::claim_registers<Cfg::kConsumerRegisters>();
    consume_tiles<T, Cfg>(p, ctl, base);
  }
#else
  __trap();  // the host selects this kernel only for sm_90a devices in builds that include sm_90a
#endif
}

}  // namespace pagedattn::cuda
