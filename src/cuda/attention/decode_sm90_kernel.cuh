// The Hopper decode kernel: the unified kernel's decode shape (16 packed query rows, 4 warps splitting each
// 64-key tile, mma.sync) with its K/V tiles loaded by the bulk tensor copy engine (TMA) from one producer
// warp, so the compute warps issue no copies at all.
//
// Why: measured with ncu on the H200 (bench/NOTES.md, version 15), the cp.async gather cost the unified
// kernel about twice cuDNN's instructions per byte (16 copies per thread per tile, each with 64-bit address
// math, plus the block-table reads and a barrier per tile), so at two warps per scheduler the loads left
// DRAM 30% idle. Here a 64-key tile of 16-token pages is 16 TMA instructions (4 pages x K/V x 2 panels at
// head dim 128), issued by 16 lanes of the producer.
//
// Pipeline: kStages stages of (K, V) tiles in 128-byte swizzled panels (wgmma_sm90.cuh's layout, which the
// copy engine writes with CU_TENSOR_MAP_SWIZZLE_128B); per stage a `full` mbarrier (one producer arrival that
// announces the tile's bytes, then the copies' bytes) and an `empty` one (one arrival per compute warp).
// The producer reads each tile's block ids one tile ahead, so their latency overlaps its wait on `empty`.
//
// Rows a TMA box brings in that no query row may see (a page's slots past seq_len, a sliding window's keys
// before its first) hold whatever the pool holds there: their logits are masked, and each compute warp zeroes
// their V rows before P V (a masked probability is 0, but 0 x NaN is not).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/attention/mbarrier_sm90.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/query_tile.cuh"
#include "cuda/attention/tma_sm90.cuh"
#include "cuda/attention/unified_params.h"
#include "cuda/attention/warp_tile_math.cuh"
#include "cuda/attention/wgmma_sm90.cuh"

namespace pagedattn::cuda {

template <int kHeadDim_>
struct DecodeSm90Config {
  static constexpr int kHeadDim = kHeadDim_;
  static_assert(kHeadDim % 64 == 0, "TMA boxes are whole 64-column panels");
  static constexpr int kPanels = kHeadDim / 64;
  static constexpr int kBlockM = 16;  // packed query rows per CTA
  static constexpr int kBlockN = 64;  // keys per KV tile
  static constexpr int kComputeWarps = 4;
  static constexpr int kWarpKeys = kBlockN / kComputeWarps;
  static constexpr int kComputeThreads = 32 * kComputeWarps;
  static constexpr int kThreads = kComputeThreads + 32;  // + the producer warp
  static constexpr int kQStride = kHeadDim + 8;          // padded Q rows: ldmatrix without bank conflicts
  static constexpr int kQBytes = (kBlockM * kQStride * 2 + 1023) / 1024 * 1024;  // stages stay 1024-aligned
  static constexpr int kTileBytes = kBlockN * kHeadDim * 2;                      // one K or V tile
  static constexpr int kStageBytes = 2 * kTileBytes;
  // As many stages as let two CTAs share an SM (228 KB, 1 KB reserved per CTA; the dynamic base is aligned
  // up to 1024 and the barriers and merge state are static), at most 6; head dim 256 fits only one CTA with
  // two stages, so it takes three and runs one CTA per SM.
  static constexpr int kFixedBytes = 1024 + kQBytes + 1024;
  static constexpr int kStagesForTwo = (113 * 1024 - kFixedBytes) / kStageBytes;
  static constexpr int kStages = kStagesForTwo >= 2 ? (kStagesForTwo < 6 ? kStagesForTwo : 6) : 3;
  static constexpr int kSmemBytes = 1024 + kQBytes + kStages * kStageBytes;
  // Two CTAs per SM need <= 204 registers per thread (5 warps each); head dim 192 asks for 222 otherwise.
  static constexpr int kMinBlocksPerSm = kStagesForTwo >= 2 ? 2 : 1;
  static_assert(kEpilogueBytes<kHeadDim, kBlockM, kComputeWarps> <= kStages * kStageBytes,
                "epilogue staging must fit in the K/V stages");
};

/// The compute warps synchronize among themselves on named barrier 1 (0 is __syncthreads, which the
/// producer has left).
template <int kThreads>
__device__ __forceinline__ void compute_barrier() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kThreads) : "memory");
}

/// The producer warp: for each KV tile of the CTA's range, waits for its stage to be free, announces its
/// bytes on `full` and issues its boxes (lane i handles box i of the tile: page, K or V, panel).
template <typename Cfg>
__device__ __forceinline__ void produce_kv_tiles(const UnifiedParams& p, const QueryTile& t, int kv_head,
                                                 uint32_t stages, uint64_t* full, uint64_t* empty) {
  constexpr int BN = Cfg::kBlockN, S = Cfg::kStages, kPanels = Cfg::kPanels;
  const int lane = threadIdx.x & 31;
  if (lane == 0) {
    sm90::prefetch_tensor_map(&p.tma.k);
    sm90::prefetch_tensor_map(&p.tma.v);
  }
  const int32_t* table = p.batch.block_tables + static_cast<int64_t>(t.seq) * p.batch.block_table_stride;
  const int bs = p.kv.block_size;  // a power of two >= 8 (checked by the host)
  const int bs_shift = __ffs(bs) - 1;
  const int rows = p.tma.box_rows;  // tokens per box: min(bs, BN) (kv_tensor_map.h)
  const int pages = BN / rows;      // boxes per panel of a tile
  const int boxes = pages * kPanels * 2;
  const uint32_t box_bytes = static_cast<uint32_t>(rows) * 128;
  const bool token_first = p.tma.token_dim_first != 0;

  // Lane i < pages: the block id of page i of a tile, -1 when the page starts at or past the sequence end.
  auto block_of = [&](int tile) {
    const int key = t.kv_begin + tile * BN + lane * rows;
    return lane < pages && key < t.seq_len ? __ldg(table + (key >> bs_shift)) : -1;
  };
  int32_t block = block_of(t.tile_lo);
  for (int tile = t.tile_lo, it = 0; tile < t.tile_hi; ++tile, ++it) {
    const int32_t next = tile + 1 < t.tile_hi ? block_of(tile + 1) : -1;  // lands during the wait
    const int stage = it % S;
    const uint32_t full_bar = smem_addr(&full[stage]);
    sm90::mbarrier_wait(smem_addr(&empty[stage]), ((it / S) & 1) ^ 1);
    const int live_pages = __popc(__ballot_sync(0xffffffffu, block >= 0));
    if (lane == 0) sm90::mbarrier_arrive_expect_tx(full_bar, live_pages * kPanels * 2 * box_bytes);
    __syncwarp();
    // A tile starts at a multiple of 64 keys: at slot 0 of its first page, or 64-token runs into a larger
    // page.
    const int slot = (t.kv_begin + tile * BN) & (bs - 1);
    const uint32_t stage_base = stages + static_cast<uint32_t>(stage * Cfg::kStageBytes);
    for (int first = 0; first < boxes; first += 32) {
      const int box = first + lane;
      const int page = box % pages;
      const int32_t b = __shfl_sync(0xffffffffu, block, page);
      if (box < boxes && b >= 0) {
        const int panel = (box / pages) % kPanels;
        const bool is_v = box / pages >= kPanels;
        const uint32_t dst = stage_base + (is_v ? Cfg::kTileBytes : 0) +
                             static_cast<uint32_t>(panel * BN * 128) +
                             static_cast<uint32_t>(page) * box_bytes;
        sm90::tma_load_4d(dst, is_v ? &p.tma.v : &p.tma.k, full_bar, panel * 64, token_first ? slot : kv_head,
                          token_first ? kv_head : slot, b);
      }
    }
    block = next;
  }
}

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocksPerSm)
    decode_sm90_kernel(const __grid_constant__ UnifiedParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int D = Cfg::kHeadDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN, S = Cfg::kStages;
  constexpr int kWarpKeys = Cfg::kWarpKeys, kComputeThreads = Cfg::kComputeThreads;
  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t full[S], empty[S];
  __shared__ float s_ml[Cfg::kComputeWarps][BM][2];
  // Swizzle atoms need 1024-byte alignment; the dynamic base is only 16-byte aligned.
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);
  T* sQ = reinterpret_cast<T*>(smem);           // (BM, kQStride)
  unsigned char* stages = smem + Cfg::kQBytes;  // kStages x (K panels, V panels)
  const uint32_t stages_addr = base + Cfg::kQBytes;

  allow_dependent_launch();  // the merge of a split launch may start launching (it waits for our partials)
  const int kv_head = blockIdx.y, segment = blockIdx.z;
  QueryTile t;
  if (!plan_query_tile<BM, BN, true>(p, blockIdx.x, segment, t)) return;
  if (t.tile_lo >= t.tile_hi) {
    mark_empty_segment(p, t, kv_head, segment);
    return;
  }
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      sm90::mbarrier_init(smem_addr(&full[s]), 1);
      sm90::mbarrier_init(smem_addr(&empty[s]), Cfg::kComputeWarps);
    }
    sm90::mbarrier_init_fence();
  }
  __syncthreads();
  if (threadIdx.x >= kComputeThreads) {
    produce_kv_tiles<Cfg>(p, t, kv_head, stages_addr, full, empty);
    return;
  }

  const auto& a = p.attn;
  const int lane = threadIdx.x & 31, wn = threadIdx.x >> 5;
  load_q_tile_async<T, D, BM, kComputeThreads>(p, t, kv_head, sQ, Cfg::kQStride);
  cp_async_commit();
  int row_qpos[2];
  float row_slope[2];
  row_facts(p, t, kv_head, 0, lane, row_qpos, row_slope);
  cp_async_wait<0>();
  compute_barrier<kComputeThreads>();
  uint32_t q_frag[D / 16][4];
  load_q_fragments<D>(
      q_frag, [&](int r, int col) { return sQ + r * Cfg::kQStride + col; }, lane);

  WarpSoftmaxState<D> st;
  st.clear();
  const float unit = logit_unit(a);  // row_max * unit is the log2-domain max
  const int row0 = wn * kWarpKeys;   // the warp's first key row in a tile
  for (int tile = t.tile_lo, it = 0; tile < t.tile_hi; ++tile, ++it) {
    const int stage = it % S;
    sm90::mbarrier_wait(smem_addr(&full[stage]), (it / S) & 1);
    unsigned char* sk = stages + stage * Cfg::kStageBytes;
    unsigned char* sv = sk + Cfg::kTileBytes;
    const int key0 = t.kv_begin + tile * BN + row0;
    if (key0 < t.first_key || key0 + kWarpKeys > t.seq_len) {
      // Rows no query row sees: zero their V (see the top of the file). Ordered before the copy engine
      // refills the stage by the proxy fence.
      for (int c = lane; c < kWarpKeys * Cfg::kPanels * 8; c += 32) {
        const int n = c / (Cfg::kPanels * 8), panel = (c / 8) % Cfg::kPanels, chunk = c % 8;
        const int key = key0 + n;
        if (key < t.first_key || key >= t.seq_len) {
          *reinterpret_cast<uint4*>(sv + panel * BN * 128 + (row0 + n) * 128 + chunk * 16) =
              make_uint4(0, 0, 0, 0);
        }
      }
      sm90::fence_proxy_async();
      __syncwarp();
    }
    auto panel_at = [&](unsigned char* tile_base) {
      return [=](int n, int col) { return tile_base + sm90::swizzled_offset(BN, row0 + n, col); };
    };
    attend_kv_tile<T, D, kWarpKeys>(a, q_frag, panel_at(sk), panel_at(sv), key0,
                                    keys_unmasked(a, t, key0, kWarpKeys), row_qpos, row_slope, unit, st,
                                    lane);
    __syncwarp();
    if (lane == 0) sm90::mbarrier_arrive(smem_addr(&empty[stage]));
  }
  compute_barrier<kComputeThreads>();  // every warp is done with the stages: the epilogue reuses them
  merge_warps_and_store<T, D, BM, Cfg::kComputeWarps, kComputeThreads>(
      p, t, kv_head, segment, st, unit, reinterpret_cast<float*>(stages), s_ml, 0, wn,
      [] { compute_barrier<kComputeThreads>(); });
#else
  __trap();  // the host selects this kernel only for sm_90 devices in builds that include it
#endif
}

}  // namespace pagedattn::cuda
