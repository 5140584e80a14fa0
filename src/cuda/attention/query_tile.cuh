// What every attention kernel of the family does the same way: map a CTA to its sequence and packed query
// rows, find the KV range its rows see and its segment's share of it, turn raw scores into masked logits,
// and write a row's result (final O and LSE, or a segment's partials for the merge kernel).
//
// Packed rows: row R of sequence s is query token R / G, query head kv_head * G + R % G (G = group size).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>
#include <cstring>

#include "cuda/attention/unified_params.h"

namespace pagedattn::cuda {

constexpr float kLog2e = 1.4426950408889634f;

/// 2^x in one MUFU instruction (ex2.approx.ftz: ~2 ulp, results below 2^-126 flush to 0 — probabilities
/// that small do not change a softmax). exp2f adds a range fix-up of three instructions per element.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

/// Index of the sequence owning CTA tile `tile`, or -1. tile_start(s) = floor(qsl[s] * G / kBlockM) + s is
/// non-decreasing and leaves room for every sequence's ceil(query_len * G / kBlockM) tiles, so the owner is
/// the last s with tile_start(s) <= tile. A binary search is a chain of log2(num_seqs) dependent loads at the
/// head of every CTA (10 for a batch of 1000); here every warp searches on its own (no barrier, no shared
/// memory) with 32 probes per round, keeping the interval between its last true and first false probe:
/// 32 sequences take one round of loads, 1024 two, 32768 three. Called by whole warps.
template <int kBlockM>
__device__ __forceinline__ int find_sequence(const int32_t* qsl, int num_seqs, int group, int tile,
                                             int& first_tile) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  int lo = 0, count = num_seqs;  // the owner is in [lo, lo + count)
  while (true) {
    const int step = (count + 31) / 32;
    const int probe = lo + lane * step;
    int start = 0;
    if (probe < lo + count)
      start = static_cast<int>((static_cast<int64_t>(qsl[probe]) * group) / kBlockM) + probe;
    const bool at_or_before = probe < lo + count && start <= tile;
    // Probes are in order and tile_start is monotone: the first `hits` lanes are true.
    const int hits = __popc(__ballot_sync(0xffffffffu, at_or_before));
    if (hits == 0) return -1;  // only in the first round (tile_start(0) = 0 <= tile otherwise)
    if (step == 1) {
      first_tile = __shfl_sync(0xffffffffu, start, hits - 1);
      return lo + hits - 1;
    }
    lo += (hits - 1) * step;
    count = min(step, count - (hits - 1) * step);
  }
}

/// One CTA's work: kBlockM packed rows of one sequence against one segment of its KV tiles. Its methods take
/// the group size's FastDivmod from the launch parameters (constant memory) rather than keeping a copy, which
/// would hold three registers for the life of the kernel.
struct QueryTile {
  int seq = 0;
  int q_begin = 0;  // first query token of the sequence
  int seq_len = 0;
  int row0 = 0;                    // first packed row of the tile
  int rows_valid = 0;              // rows of the tile that exist (<= kBlockM)
  int ctx = 0;                     // position of query token 0
  int qpos_min = 0, qpos_max = 0;  // positions of the tile's first and last query token
  int kv_begin = 0;                // first key position of the first KV tile
  int first_key = 0;               // first key position any row sees (sliding window); kv_begin <= it
  int tile_lo = 0, tile_hi = 0;    // this segment's KV tiles, [lo, hi), counted from kv_begin

  /// Token and query head of packed row r of the tile.
  __device__ __forceinline__ void row_target(int r, const FastDivmod& group, int kv_head, int& token,
                                             int& head) const {
    int t, h;
    group.divmod(row0 + r, t, h);
    token = q_begin + t;
    head = kv_head * group.divisor + h;
  }
  /// Query position of row r, or -1 for rows past rows_valid (every key is masked for them).
  __device__ __forceinline__ int row_qpos(int r, const FastDivmod& group) const {
    return r < rows_valid ? ctx + group.div(row0 + r) : -1;
  }
  /// Query head of packed row r within its group (ALiBi slopes).
  __device__ __forceinline__ int row_head_in_group(int r, const FastDivmod& group) const {
    return row0 + r - group.div(row0 + r) * group.divisor;
  }
};

/// The plan of one work item (query tile, kv head, segment) as a persistent Hopper kernel's producer
/// publishes it to its consumers (sm90::mailbox_publish).
struct WorkItemPlan {
  QueryTile t;
  int kv_head;
  int segment;
  int done;  // no more work: the consumers exit
};

/// The consumer side of the plan mailbox: lane 0 of the warp reads the published plan from shared memory and
/// hands it to the other lanes by shuffles. Lane 0 is also a lane whose mbarrier arrival releases the slot
/// (q_empty: the prefill's one arrival per warp, the decode's one per thread), so every shared-memory read of
/// the plan is ordered before the producer's next write by the reading thread's own release. Every lane
/// reading, then __syncwarp and lane 0's arrival, is as correct under the PTX memory model (bar.warp.sync
/// orders the lanes' reads before lane 0's release), but compute-sanitizer's racecheck does not credit other
/// lanes' reads to that arrival and reported a write-after-read hazard here.
__device__ __forceinline__ WorkItemPlan read_plan(const WorkItemPlan& slot, int lane) {
  static_assert(sizeof(WorkItemPlan) % 4 == 0, "the plan crosses lanes as 32-bit words");
  constexpr int kWords = sizeof(WorkItemPlan) / 4;
  uint32_t words[kWords] = {};
  if (lane == 0) {
    const uint32_t* src = reinterpret_cast<const uint32_t*>(&slot);
#pragma unroll
    for (int i = 0; i < kWords; ++i) words[i] = src[i];
  }
#pragma unroll
  for (int i = 0; i < kWords; ++i) words[i] = __shfl_sync(0xffffffffu, words[i], 0);
  WorkItemPlan plan;
  memcpy(&plan, words, sizeof(plan));
  return plan;
}

/// Fills t for CTA tile `tile`; false when the tile holds no rows (the grid is an upper bound).
/// kAlignedTiles: KV tiles start at multiples of kBlockN (a sliding window's first tile starts early, its
/// extra keys masked), so that a tile covers whole pages or whole 64-key runs of one (TMA boxes).
template <int kBlockM, int kBlockN, bool kAlignedTiles = false>
__device__ __forceinline__ bool plan_query_tile(const UnifiedParams& p, int tile, int segment, QueryTile& t) {
  const auto& b = p.batch;
  const int G = p.attn.group_size;
  int first_tile = tile;
  if (p.one_tile_per_seq) {
    if (tile >= b.num_seqs) return false;
    t.seq = tile;
  } else {
    t.seq = find_sequence<kBlockM>(b.query_start_loc, b.num_seqs, G, tile, first_tile);
    if (t.seq < 0) return false;
  }
  t.q_begin = b.query_start_loc[t.seq];
  const int query_len = b.query_start_loc[t.seq + 1] - t.q_begin;
  t.seq_len = b.seq_lens[t.seq];
  t.row0 = (tile - first_tile) * kBlockM;
  const int rows_total = query_len * G;
  if (t.row0 >= rows_total) return false;
  t.rows_valid = min(kBlockM, rows_total - t.row0);
  t.ctx = t.seq_len - query_len;
  t.qpos_min = t.ctx + p.group.div(t.row0);
  t.qpos_max = t.ctx + p.group.div(t.row0 + t.rows_valid - 1);
  const int window = p.attn.window_left;
  t.kv_begin = t.first_key = window > 0 ? max(0, t.qpos_min - window) : 0;
  if constexpr (kAlignedTiles) t.kv_begin -= t.kv_begin % kBlockN;
  const int num_kv_tiles = (t.qpos_max + 1 - t.kv_begin + kBlockN - 1) / kBlockN;
  const int per_segment = (num_kv_tiles + p.num_segments - 1) / p.num_segments;
  t.tile_lo = segment * per_segment;
  t.tile_hi = min(num_kv_tiles, t.tile_lo + per_segment);
  return true;
}

/// An empty segment tells the merge kernel to skip it (max = -inf).
/// Called by `threads` threads of the CTA, `thread` = 0 .. threads - 1 (by default all of them).
__device__ __forceinline__ void mark_empty_segment(const UnifiedParams& p, const QueryTile& t, int kv_head,
                                                   int segment, int thread = static_cast<int>(threadIdx.x),
                                                   int threads = static_cast<int>(blockDim.x)) {
  if (p.num_segments <= 1) return;
  for (int r = thread; r < t.rows_valid; r += threads) {
    int token, head;
    t.row_target(r, p.group, kv_head, token, head);
    float* ml = p.partial_ml +
                ((static_cast<int64_t>(token) * p.attn.num_q_heads + head) * p.num_segments + segment) * 2;
    ml[0] = -INFINITY;
    ml[1] = 0.0f;
  }
}

/// True when key is invisible to a query at qpos (causal, sliding window). qpos = -1 masks every key.
__device__ __forceinline__ bool key_masked(int key, int qpos, int window_left) {
  return key > qpos || (window_left > 0 && qpos - key > window_left);
}

template <bool kPlain, bool kMasked, int kTiles>
__device__ __forceinline__ void scores_to_logits_impl(const kernels::AttentionArgs& a, float* s, int key0,
                                                      int t4, const int (&qpos)[2], const float (&slope)[2],
                                                      float (&tile_max)[2]) {
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int i = e >> 1;
      const int key = key0 + nt * 8 + 2 * t4 + (e & 1);
      float x;
      if constexpr (kPlain) {
        x = s[nt * 4 + e];  // scaled inside the exponent: exp2(x * unit - max * unit) is one FFMA
      } else {
        x = s[nt * 4 + e] * a.scale;
        if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
        x = (x + slope[i] * static_cast<float>(key - qpos[i])) * kLog2e;
      }
      if constexpr (kMasked) {
        if (key_masked(key, qpos[i], a.window_left)) x = -INFINITY;
      }
      s[nt * 4 + e] = x;
      tile_max[i] = fmaxf(tile_max[i], x);
    }
  }
}

/// Logits are kept in units of logit_unit(a): the log2-domain logit is value * unit. Without soft-cap and
/// ALiBi the value is the raw score (unit = scale * log2 e, folded into the exponent's FFMA); otherwise the
/// value is the log2-domain logit itself (unit = 1). Positive either way (scale > 0), so maxima agree.
__device__ __forceinline__ float logit_unit(const kernels::AttentionArgs& a) {
  return a.softcap <= 0.0f && a.alibi_slopes == nullptr ? a.scale * kLog2e : 1.0f;
}

/// One thread's scores of a KV tile -> logits in units of logit_unit(a) (soft-cap, ALiBi, mask), in place,
/// and each of its two rows' max over them. s holds kTiles n8 tiles x 4 (rows g, g + 8; columns 2 t4, +1)
/// for keys key0 + 8 nt + ... The transform is chosen once per tile: decided per element, the compiler
/// predicated the whole soft-cap path (tanh, division) into every element of every tile.
template <int kTiles>
__device__ __forceinline__ void scores_to_logits(const kernels::AttentionArgs& a, float* s, int key0, int t4,
                                                 const int (&qpos)[2], const float (&slope)[2],
                                                 bool full_tile, float (&tile_max)[2]) {
  const bool plain = a.softcap <= 0.0f && a.alibi_slopes == nullptr;
  if (plain) {
    if (full_tile) {
      scores_to_logits_impl<true, false, kTiles>(a, s, key0, t4, qpos, slope, tile_max);
    } else {
      scores_to_logits_impl<true, true, kTiles>(a, s, key0, t4, qpos, slope, tile_max);
    }
  } else {
    if (full_tile) {
      scores_to_logits_impl<false, false, kTiles>(a, s, key0, t4, qpos, slope, tile_max);
    } else {
      scores_to_logits_impl<false, true, kTiles>(a, s, key0, t4, qpos, slope, tile_max);
    }
  }
}

/// The online-softmax step of one KV tile for one thread's fragment (kTiles n8 tiles x 4 logits from
/// scores_to_logits; rows g and g + 8 of the warp's 16, columns spread over the lane quad): the rows' running
/// max and sum move to this tile, s becomes probabilities relative to the new max, and rescale[i] is the
/// factor row i's O must be multiplied by. A row with no visible key yet stays at max -inf and zero output.
template <int kTiles>
__device__ __forceinline__ void online_softmax_step(float* s, float (&tile_max)[2], float unit,
                                                    float (&row_max)[2], float (&row_sum)[2],
                                                    float (&rescale)[2]) {
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 1));
    tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 2));
    const float new_max = fmaxf(row_max[i], tile_max[i]);
    const float base = new_max == -INFINITY ? 0.0f : new_max;
    rescale[i] = fast_exp2((row_max[i] - base) * unit);
    row_max[i] = new_max;
    row_sum[i] *= rescale[i];
    tile_max[i] = base * unit;
  }
#pragma unroll
  for (int nt = 0; nt < kTiles; ++nt) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      s[nt * 4 + e] = fast_exp2(s[nt * 4 + e] * unit - tile_max[e >> 1]);
      row_sum[e >> 1] += s[nt * 4 + e];
    }
  }
}

/// Whether any row of this warp changed its running max, so that O must be rescaled. Once the max settles
/// (most tiles of a long row) the multiply of every O register is skipped; warp-uniform, so no divergence.
__device__ __forceinline__ bool o_needs_rescale(const float (&rescale)[2]) {
  return __any_sync(0xffffffffu, rescale[0] != 1.0f || rescale[1] != 1.0f);
}

/// Segment partials of one row: kVec consecutive output columns from `col`, and (once per row) max and sum.
template <int kHeadDim, int kVec>
__device__ __forceinline__ void store_partial(const UnifiedParams& p, int token, int head, int segment,
                                              int col, const float (&o)[kVec], bool write_ml, float m,
                                              float l) {
  const int64_t idx = (static_cast<int64_t>(token) * p.attn.num_q_heads + head) * p.num_segments + segment;
  float* dst = p.partial_o + idx * kHeadDim + col;
  if constexpr (kVec == 4) {
    *reinterpret_cast<float4*>(dst) = make_float4(o[0], o[1], o[2], o[3]);
  } else {
#pragma unroll
    for (int e = 0; e < kVec; e += 2) *reinterpret_cast<float2*>(dst + e) = make_float2(o[e], o[e + 1]);
  }
  if (write_ml) {
    p.partial_ml[idx * 2] = m;
    p.partial_ml[idx * 2 + 1] = l;
  }
}

/// Query head `head`'s sink logit in the log2 domain, -inf without sinks. A kernel loads it with its row
/// facts so that the load's latency is not paid at the end of the CTA.
__device__ __forceinline__ float sink_log2(const kernels::AttentionArgs& a, int head) {
  return a.sinks != nullptr ? a.sinks[head] * kLog2e : -INFINITY;
}

/// The sink (log2 domain, -inf for none) joins the denominator, then 1 / denominator scales the row (2D
/// launch). Returns the scale and sets lse (natural log) for the row. m: row max (log2 domain), l: row sum
/// relative to m.
__device__ __forceinline__ float finalize_row(float sink, float m, float l, float& lse) {
  const float top = fmaxf(m, sink);
  const float f = exp2f(m - top);
  const float denom = l * f + (sink == -INFINITY ? 0.0f : exp2f(sink - top));
  lse = (top + log2f(denom)) / kLog2e;
  return f / denom;
}

}  // namespace pagedattn::cuda
