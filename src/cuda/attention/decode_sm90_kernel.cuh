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
// Work items are (query tile, kv head, segment). A CTA takes its own; in a persistent launch (a decode batch
// of more than one wave of short items, launch_selection.cpp) it then takes more from a counter. The producer
// plans each item and publishes the plan and the item's Q tile (q_full / q_empty), so the compute warps
// never wait on global memory; the stage ring runs on across items, and the compute warps stage their
// epilogue in the item's last stage while the producer fills the others with the next item.
//
// fp8 (e4m3, e5m2) and int8 caches stream as codes: a 128-byte panel holds 128 of them, so a tile is half
// the bytes and more stages fit. Each compute warp reads its 16 keys' codes of a landed tile into registers,
// releases the stage, converts them in registers into the MMA's fragments (exact: every fp8 value and int8
// code is a bf16 and an fp16 value; code_tile_math.cuh) and applies the scales in fp32 (kv_format.cuh): per
// KV head for fp8, per token for int8 (the producer copies a tile's scales into the stage with its boxes).
// The epilogue stages in a buffer of its own (a 16-row 1-byte stage is smaller than the warps' fp32 O).
//
// Rows a TMA box brings in that no query row may see (a page's slots past seq_len, a sliding window's keys
// before its first) hold whatever the pool holds there: their logits are masked, and each compute warp zeroes
// their V rows before P V (a masked probability is 0, but 0 x NaN is not).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/attention/code_tile_math.cuh"
#include "cuda/attention/dependent_launch.cuh"
#include "cuda/attention/kv_format.cuh"
#include "cuda/attention/mbarrier_sm90.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/query_tile.cuh"
#include "cuda/attention/tma_sm90.cuh"
#include "cuda/attention/unified_params.h"
#include "cuda/attention/warp_tile_math.cuh"
#include "cuda/attention/wgmma_sm90.cuh"

namespace pagedattn::cuda {

template <int kHeadDim_, typename Fmt_ = KVAsQuery>
struct DecodeSm90Config {
  using Format = Fmt_;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kCodeBytes = Fmt_::kBytes;
  static constexpr int kPanelCols = 128 / kCodeBytes;  // cache columns of one 128-byte panel row
  static_assert(kHeadDim % kPanelCols == 0, "TMA boxes are whole 128-byte panels");
  static constexpr int kPanels = kHeadDim / kPanelCols;
  static constexpr bool kConvert = Fmt_::kQuantized;  // codes are converted in registers (code_tile_math)
  static constexpr int kBlockM = 16;                  // packed query rows per CTA
  static constexpr int kBlockN = 64;                  // keys per KV tile
  static constexpr int kComputeWarps = 4;
  static constexpr int kWarpKeys = kBlockN / kComputeWarps;
  static constexpr int kComputeThreads = 32 * kComputeWarps;
  static constexpr int kThreads = kComputeThreads + 32;  // + the producer warp
  static constexpr int kQStride = kHeadDim + 8;          // padded Q rows: ldmatrix without bank conflicts
  static constexpr int kQBytes = (kBlockM * kQStride * 2 + 1023) / 1024 * 1024;  // stages stay 1024-aligned
  static constexpr int kTileBytes = kBlockN * kHeadDim * kCodeBytes;             // one K or V tile
  static constexpr int kStageBytes = 2 * kTileBytes;
  // int8: each stage's per-token scales (K then V, fp32 per key), kept apart from the 1024-aligned stages.
  static constexpr bool kTokenScales = Fmt_::kTokenScales;
  static constexpr int kScaleStageBytes = kTokenScales ? 2 * kBlockN * 4 : 0;
  // Arrivals that complete a `full` phase: the producer's announcement, and for int8 each producer lane's
  // arrival once its scale copies have landed.
  static constexpr int kFullArrivals = kTokenScales ? 1 + 32 : 1;
  // fp8 / int8: the epilogue's staging (the warps' fp32 partial O), which no 1-byte stage can hold.
  static constexpr int kEpilogueStagingBytes =
      kConvert ? kEpilogueBytes<kHeadDim, kBlockM, kComputeWarps> : 0;
  // Two CTAs share an SM where each still gets three stages (228 KB, 1 KB reserved per CTA; the dynamic base
  // is aligned up to 1024 and the barriers and merge state are static), with at most 6; otherwise one CTA
  // per SM takes every stage that fits: head dims 192 (4 stages) and 256 (3). Two CTAs of two stages at head
  // dim 192 held the same bytes in flight but had to fit 168 registers per thread and spilled 188 bytes in
  // the tile loop (H200, bench/NOTES.md version 19: 64 x 4096 took 459 us, one CTA of four stages 375 us).
  // fp8 at head dim 128: 16 KB stages, 32 KB of epilogue staging, two CTAs of four stages.
  static constexpr int kFixedBytes = 1024 + kQBytes + kEpilogueStagingBytes + 1024;
  static constexpr int kStagesForTwo = (113 * 1024 - kFixedBytes) / (kStageBytes + kScaleStageBytes);
  static constexpr int kStagesForOne = (227 * 1024 - kFixedBytes) / (kStageBytes + kScaleStageBytes);
  static constexpr bool kTwoPerSm = kStagesForTwo >= 3;
  static constexpr int kStages = kTwoPerSm ? (kStagesForTwo < 6 ? kStagesForTwo : 6) : kStagesForOne;
  static_assert(kStages >= 2, "a K/V tile must stream while another is computed");
  static constexpr int kSmemBytes =
      1024 + kQBytes + kEpilogueStagingBytes + kStages * (kStageBytes + kScaleStageBytes);
  static constexpr int kMinBlocksPerSm = kTwoPerSm ? 2 : 1;
  // The epilogue stages the warps' partial O in an item's last K/V stage (kept until it is done), or, for
  // converted formats (whose warps release every stage once its codes are in registers), in its own buffer.
  static_assert(kEpilogueBytes<kHeadDim, kBlockM, kComputeWarps> <=
                    (kConvert ? kEpilogueStagingBytes : kStageBytes),
                "epilogue staging must fit");
};

/// The compute warps synchronize among themselves on named barrier 1 (0 is __syncthreads, which the
/// producer has left).
template <int kThreads>
__device__ __forceinline__ void compute_barrier() {
  asm volatile("bar.sync 1, %0;\n" ::"n"(kThreads) : "memory");
}

/// Barriers and the published plan (static shared memory).
template <int kStages>
struct DecodeSm90Control {
  uint64_t full[kStages];   // K/V stage landed: one producer arrival announcing the bytes, then the copies
  uint64_t empty[kStages];  // K/V stage consumed: one arrival per compute warp
  uint64_t q_full;          // Q landed and the plan is written: 32 producer arrivals after copies + 1
  uint64_t q_empty;         // every compute thread holds Q in registers and has read the plan
  WorkItemPlan plan;
};

/// The producer warp, for one work item: for each KV tile of its range, waits for the tile's stage to be
/// free, announces its bytes on `full` and issues its boxes (lane i handles box i (+ 32 r) of the tile: page,
/// K or V, panel). `tiles_made` counts tiles over the CTA's life (stage and phase).
///
/// A lone CTA streams at this warp's pace: its instructions per tile, not the copies' latency, set the time
/// (H200, bench/NOTES.md version 18: 16 x 4096 at one CTA per SM took 0.84 us per tile at head dim 64, 8
/// boxes, and 1.22 us at head dim 128, 16 boxes; two calls placed in the loop made 1 x 32768 12% slower even
/// where they did nothing). So everything that is the same for every tile — which page, panel and pool a
/// lane's box is, where it lands in a stage — is worked out once, before the loop.
template <typename Cfg>
__device__ __forceinline__ void produce_kv_tiles(const UnifiedParams& p, const QueryTile& t, int kv_head,
                                                 uint32_t stages, float* tile_scales,
                                                 DecodeSm90Control<Cfg::kStages>& ctl, uint32_t& tiles_made) {
  constexpr int BN = Cfg::kBlockN, S = Cfg::kStages, kPanels = Cfg::kPanels;
  constexpr int kRounds = (8 * kPanels * 2 + 31) / 32;  // boxes per tile: at most 8 pages x panels x K/V
  const int lane = threadIdx.x & 31;
  const int32_t* table = p.batch.block_tables + static_cast<int64_t>(t.seq) * p.batch.block_table_stride;
  const int bs = p.kv.block_size;  // a power of two >= 8 (checked by the host)
  const int bs_shift = __ffs(bs) - 1;
  const int rows = p.tma.box_rows;  // tokens per box: min(bs, BN) (kv_tensor_map.h)
  const int rows_shift = __ffs(rows) - 1;
  const int pages_shift = __ffs(BN / rows) - 1;  // boxes per panel of a tile: 1, 2, 4 or 8
  const int pages = 1 << pages_shift;
  const uint32_t box_bytes = static_cast<uint32_t>(rows) * 128;
  const bool token_first = p.tma.token_dim_first != 0;

  // This lane's boxes, the same in every tile.
  int box_page[kRounds], box_col[kRounds];
  uint32_t box_dst[kRounds];
  const CUtensorMap* box_map[kRounds];
#pragma unroll
  for (int r = 0; r < kRounds; ++r) {
    const int box = r * 32 + lane;
    const int panel = (box >> pages_shift) % kPanels;
    const bool is_v = (box >> pages_shift) >= kPanels;
    box_page[r] = box < 2 * kPanels * pages ? box & (pages - 1) : -1;
    box_col[r] = panel * Cfg::kPanelCols;
    box_dst[r] = (is_v ? Cfg::kTileBytes : 0) + static_cast<uint32_t>(panel * BN * 128) +
                 static_cast<uint32_t>(box & (pages - 1)) * box_bytes;
    box_map[r] = is_v ? &p.tma.v : &p.tma.k;
  }

  // Lane i < pages: the block id of page i of a tile, -1 when the page starts at or past the sequence end.
  auto block_of = [&](int tile) {
    const int key = t.kv_begin + tile * BN + lane * rows;
    return lane < pages && key < t.seq_len ? __ldg(table + (key >> bs_shift)) : -1;
  };
  int32_t block = block_of(t.tile_lo);
  for (int tile = t.tile_lo; tile < t.tile_hi; ++tile, ++tiles_made) {
    const int32_t next = tile + 1 < t.tile_hi ? block_of(tile + 1) : -1;  // lands during the wait
    const int stage = static_cast<int>(tiles_made % S);
    const uint32_t full_bar = smem_addr(&ctl.full[stage]);
    sm90::mbarrier_wait(smem_addr(&ctl.empty[stage]), ((tiles_made / S) & 1) ^ 1);
    const int live_pages = __popc(__ballot_sync(0xffffffffu, block >= 0));
    if (lane == 0) sm90::mbarrier_arrive_expect_tx(full_bar, live_pages * kPanels * 2 * box_bytes);
    __syncwarp();
    // A tile starts at a multiple of 64 keys: at slot 0 of its first page, or 64-token runs into a larger
    // page.
    const int slot = (t.kv_begin + tile * BN) & (bs - 1);
    const uint32_t stage_base = stages + static_cast<uint32_t>(stage * Cfg::kStageBytes);
#pragma unroll
    for (int r = 0; r < kRounds; ++r) {
      const int32_t b = __shfl_sync(0xffffffffu, block, box_page[r] & (pages - 1));
      if (box_page[r] >= 0 && b >= 0) {
        sm90::tma_load_4d(stage_base + box_dst[r], box_map[r], full_bar, box_col[r],
                          token_first ? slot : kv_head, token_first ? kv_head : slot, b);
      }
    }
    if constexpr (Cfg::kTokenScales) {
      // The tile's per-token scales, 4-byte copies, zero for keys no query row may see (their codes are
      // finite, so a zero scale makes their V rows 0 whatever P holds); each lane arrives on `full` once
      // its copies have landed.
      float* dst = tile_scales + stage * 2 * BN;
#pragma unroll
      for (int i0 = 0; i0 < BN; i0 += 32) {
        const int i = i0 + lane, key = t.kv_begin + tile * BN + i;
        const int32_t b = __shfl_sync(0xffffffffu, block, i >> rows_shift);
        const bool live = b >= 0 && key >= t.first_key && key < t.seq_len;
        const int key_slot = slot + (i & (rows - 1));
        const float* ks = static_cast<const float*>(p.kv.k_meta.data);
        const float* vs = static_cast<const float*>(p.kv.v_meta.data);
        cp_async_4(dst + i, live ? p.kv.k_meta.at<float>(b, key_slot, kv_head) : ks, live ? 4 : 0);
        cp_async_4(dst + BN + i, live ? p.kv.v_meta.at<float>(b, key_slot, kv_head) : vs, live ? 4 : 0);
      }
      sm90::mbarrier_arrive_after_copies(full_bar);
    }
    block = next;
  }
}

/// The producer warp: takes work items (the CTA's own, then in a persistent launch the next from the work
/// counter, claimed as the current one starts so that the atomic's latency hides behind its tiles), plans
/// each, publishes its plan and Q tile to the compute warps and streams its K/V tiles. While the compute
/// warps finish an item, the stages they have released already fill with the next item's first tiles, and
/// the next Q lands.
template <typename T, typename Cfg>
__device__ __forceinline__ void produce_items(const UnifiedParams& p, DecodeSm90Control<Cfg::kStages>& ctl,
                                              T* sQ, uint32_t stages, float* tile_scales) {
  constexpr int BM = Cfg::kBlockM, BN = Cfg::kBlockN;
  const int lane = threadIdx.x & 31;
  const uint32_t num_items = static_cast<uint32_t>(p.grid_tiles) * p.kv.num_kv_heads * p.num_segments;
  const bool persistent = p.work_counter != nullptr;
  uint32_t item = persistent ? blockIdx.x : blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
  uint32_t tiles_made = 0, items_made = 0;
  while (item < num_items) {
    uint32_t claimed = 0;
    if (persistent && lane == 0) claimed = atomicAdd(p.work_counter, 1u);
    const int x = static_cast<int>(item % p.grid_tiles), rest = static_cast<int>(item / p.grid_tiles);
    const int kv_head = rest % p.kv.num_kv_heads, segment = rest / p.kv.num_kv_heads;
    QueryTile t;
    if (plan_query_tile<BM, BN, true>(p, x, segment, t)) {
      if (t.tile_lo >= t.tile_hi) {
        mark_empty_segment(p, t, kv_head, segment, lane, 32);
      } else {
        sm90::mailbox_publish(smem_addr(&ctl.q_empty), smem_addr(&ctl.q_full), items_made, lane == 0, [&] {
          if (lane == 0) ctl.plan = WorkItemPlan{t, kv_head, segment, 0};
          load_q_tile_async<T, Cfg::kHeadDim, BM, 32>(p, t, kv_head, sQ, Cfg::kQStride, lane);
        });
        ++items_made;
        produce_kv_tiles<Cfg>(p, t, kv_head, stages, tile_scales, ctl, tiles_made);
      }
    }
    if (!persistent) break;
    item = __shfl_sync(0xffffffffu, claimed, 0) + gridDim.x;
  }
  sm90::mailbox_publish(smem_addr(&ctl.q_empty), smem_addr(&ctl.q_full), items_made, lane == 0, [&] {
    if (lane == 0) ctl.plan.done = 1;
  });
}

/// The compute warps: for each published item, Q into registers (releasing the Q buffer for the next item),
/// the tiles through the online softmax, then the epilogue, staged in the item's last K/V stage, which they
/// keep until the epilogue is done (the other stages meanwhile take the next item's tiles).
template <typename T, typename Cfg>
__device__ __forceinline__ void consume_items(const UnifiedParams& p, DecodeSm90Control<Cfg::kStages>& ctl,
                                              const T* sQ, unsigned char* epilogue_staging,
                                              unsigned char* stages, const float* tile_scales,
                                              float (*s_ml)[Cfg::kBlockM][2]) {
  constexpr int D = Cfg::kHeadDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN, S = Cfg::kStages;
  constexpr int kWarpKeys = Cfg::kWarpKeys, kComputeThreads = Cfg::kComputeThreads;
  const auto& a = p.attn;
  const int lane = threadIdx.x & 31, wn = threadIdx.x >> 5;
  const float unit = logit_unit(a);  // row_max * unit is the log2-domain max
  const int row0 = wn * kWarpKeys;   // the warp's first key row in a tile
  uint32_t tiles_used = 0;
  for (uint32_t items = 0;; ++items) {
    sm90::mbarrier_wait(smem_addr(&ctl.q_full), items & 1);
    const WorkItemPlan plan = read_plan(ctl.plan, lane);  // lane 0 reads (every thread releases q_empty)
    if (plan.done) return;
    const QueryTile t = plan.t;
    const int kv_head = plan.kv_head, segment = plan.segment;
    uint32_t q_frag[D / 16][4];
    if constexpr (Cfg::kConvert) {
      load_q_fragments_for_codes<T, D>(q_frag, sQ, Cfg::kQStride, lane);
    } else {
      load_q_fragments<D>(
          q_frag, [&](int r, int col) { return sQ + r * Cfg::kQStride + col; }, lane);
    }
    // Every thread releases the Q buffer after its own reads (the producer's next cp.async overwrites it):
    // one lane's arrival after __syncwarp would order them too, but racecheck credits a release only with
    // the releasing thread's reads.
    sm90::mbarrier_arrive(smem_addr(&ctl.q_empty));
    int row_qpos[2];
    float row_slope[2];
    row_facts(p, t, kv_head, 0, lane, row_qpos, row_slope);

    WarpSoftmaxState<D> st;
    st.clear();
    int stage = 0;
    for (int tile = t.tile_lo; tile < t.tile_hi; ++tile, ++tiles_used) {
      stage = static_cast<int>(tiles_used % S);
      sm90::mbarrier_wait(smem_addr(&ctl.full[stage]), (tiles_used / S) & 1);
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
      if constexpr (Cfg::kConvert) {
        // The warp's K codes from the stage into fragments (code_tile_math.cuh), the scores and the softmax;
        // then its V codes, the stage back to the producer once they are in registers, and P V. (Reading the
        // V codes up front too, to release the stage sooner, needs ~16 more registers than the 168 that two
        // CTAs per SM allow: ptxas spilled 76 bytes in the tile loop at head dim 128.)
        static_assert(kWarpKeys == 16, "code tiles are 16 keys per warp");
        float s[2][4];
        code_scores<T, typename Cfg::Format, D, BN>(sk, row0, q_frag, s, lane);
        const float* sc = tile_scales + stage * 2 * BN + row0;  // int8: this warp's keys' scales
        const auto scales = [&] {
          if constexpr (Cfg::kTokenScales) {
            return TokenKVScales{sc, sc + BN};
          } else {
            return HeadKVScales{p.kv.k_head_scale(kv_head), p.kv.v_head_scale(kv_head)};
          }
        }();
        scores_to_probabilities<D, 2>(a, s, key0, keys_unmasked(a, t, key0, kWarpKeys), row_qpos, row_slope,
                                      unit, st, lane, scales);
        code_pv<T, typename Cfg::Format, D, BN>(sv, row0, s, st, lane, [&] {
          __syncwarp();
          if (lane == 0) sm90::mbarrier_arrive(smem_addr(&ctl.empty[stage]));
        });
      } else {
        auto panel_at = [&](unsigned char* tile_base) {
          return [=](int n, int col) { return tile_base + sm90::swizzled_offset(BN, row0 + n, col); };
        };
        attend_kv_tile<T, D, kWarpKeys>(a, q_frag, panel_at(sk), panel_at(sv), key0,
                                        keys_unmasked(a, t, key0, kWarpKeys), row_qpos, row_slope, unit, st,
                                        lane);
        __syncwarp();
        // The last tile's stage stays taken: the epilogue stages the warps' partial O there.
        if (lane == 0 && tile + 1 < t.tile_hi) sm90::mbarrier_arrive(smem_addr(&ctl.empty[stage]));
      }
    }
    compute_barrier<kComputeThreads>();  // every warp is done with the last stage's K/V (or its staging
                                         // reads)
    unsigned char* staging = Cfg::kConvert ? epilogue_staging : stages + stage * Cfg::kStageBytes;
    using OStaging = std::conditional_t<Cfg::kConvert, CodeOStaging, NaturalOStaging>;
    merge_warps_and_store<T, D, BM, Cfg::kComputeWarps, kComputeThreads, OStaging>(
        p, t, kv_head, segment, st, unit, reinterpret_cast<float*>(staging), s_ml, 0, wn,
        [] { compute_barrier<kComputeThreads>(); });
    if constexpr (Cfg::kConvert) {
      compute_barrier<kComputeThreads>();  // the staging reads, before the next item's staging writes
    } else {
      sm90::fence_proxy_async();  // the staging writes, before the copy engine refills the stage
      compute_barrier<kComputeThreads>();
      if (lane == 0) sm90::mbarrier_arrive(smem_addr(&ctl.empty[stage]));
    }
  }
}

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocksPerSm)
    decode_sm90_kernel(const __grid_constant__ UnifiedParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  constexpr int S = Cfg::kStages;
  extern __shared__ unsigned char smem_raw[];
  __shared__ DecodeSm90Control<S> ctl;
  __shared__ float s_ml[Cfg::kComputeWarps][Cfg::kBlockM][2];
  // Swizzle atoms need 1024-byte alignment; the dynamic base is only 16-byte aligned.
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* smem = smem_raw + (base - raw);
  T* sQ = reinterpret_cast<T*>(smem);                     // (BM, kQStride)
  unsigned char* epilogue_staging = smem + Cfg::kQBytes;  // fp8: the epilogue's fp32 partial O
  unsigned char* stages = epilogue_staging + Cfg::kEpilogueStagingBytes;  // kStages x (K panels, V panels)
  float* tile_scales =
      reinterpret_cast<float*>(stages + S * Cfg::kStageBytes);  // int8: kStages x (K, V) x BN

  allow_dependent_launch();  // the merge of a split launch may start launching (it waits for our partials)
  // Set-up that reads nothing an earlier kernel writes, done before waiting for it (an early start).
  if (threadIdx.x == 0) {
    for (int s = 0; s < S; ++s) {
      sm90::mbarrier_init(smem_addr(&ctl.full[s]), Cfg::kFullArrivals);
      sm90::mbarrier_init(smem_addr(&ctl.empty[s]), Cfg::kComputeWarps);
    }
    sm90::mbarrier_init(smem_addr(&ctl.q_full), 32 + 1);
    sm90::mbarrier_init(smem_addr(&ctl.q_empty), Cfg::kComputeThreads);
    sm90::mbarrier_init_fence();
  } else if (threadIdx.x == Cfg::kComputeThreads) {
    sm90::prefetch_tensor_map(&p.tma.k);  // the descriptors are launch parameters
    sm90::prefetch_tensor_map(&p.tma.v);
  }
  __syncthreads();
  wait_for_prerequisite_grid();
  if (threadIdx.x >= Cfg::kComputeThreads) {
    produce_items<T, Cfg>(p, ctl, sQ, base + Cfg::kQBytes + Cfg::kEpilogueStagingBytes, tile_scales);
  } else {
    consume_items<T, Cfg>(p, ctl, sQ, epilogue_staging, stages, tile_scales, s_ml);
  }
#else
  __trap();  // the host selects this kernel only for sm_90 devices in builds that include it
#endif
}

}  // namespace pagedattn::cuda
