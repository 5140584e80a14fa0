#include "cuda/attention/launch_selection.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "pagedattn/error.h"

namespace pagedattn::cuda {

int block_m_for(TileShape shape) {
  switch (shape) {
    case TileShape::kDecode:
    case TileShape::kDecodeSm90:
      return 16;
    case TileShape::kPrefill:
      return 64;
    case TileShape::kPrefillSm90:
      return 128;
  }
  return 0;
}

int block_n_for(TileShape shape, int head_dim) {
  switch (shape) {
    case TileShape::kDecode:
    case TileShape::kDecodeSm90:
      return 64;
    case TileShape::kPrefill:
      return head_dim <= 128 ? 64 : 32;
    case TileShape::kPrefillSm90:
      return head_dim <= 128 ? 128 : 64;
  }
  return 0;
}

// How the choice is made, with the numbers of the decode grid (H100/H200: 132 SMs; 32 q heads, 8 kv heads, G
// = 4, head dim 128):
//
// Tile shape. A CTA covers BLOCK_M packed rows = query tokens x the G heads of one KV head. When every
// sequence's rows fit in 16 (max_query_len * G <= 16: decode, or G <= 4 with up to 4 speculative tokens) the
// 16-row decode shape wastes nothing and its 4 warps split each KV tile's keys, so one CTA streams 64 keys
// per step with all of its threads (on sm_90, where the cache allows, the same shape with K/V loaded by TMA
// from a producer warp: decode_sm90_kernel.cuh). Longer queries take a prefill shape: on sm_90a the 128-row
// wgmma tile (two warpgroups), elsewhere the 64-row mma.sync tile (4 warps split the rows). Each K/V tile is
// then reused by 64-128 rows, which is what moves the kernel from memory-bound to tensor-core-bound.
//
// Segments. A launch first fills the resident capacity (SMs x CTAs per SM from the occupancy API: 2 x 132 =
// 264 for the 3-stage decode tile at head dim 128); a smaller grid leaves bandwidth unused. Beyond that, time
// grows with the fraction of waves, plus half of the empty part of a partial last wave. With T KV tiles per
// CTA range and s segments, in units of one KV tile at full residency:
//   time(s) ~ waves(s) x (T / s + kFixedTiles) x lone(s) + (s > 1 ? kMergeTiles + kMergePerSegment x s : 0)
// and the smallest s within 2% of the least modeled time wins. lone(s) < 1 when a single wave leaves SMs
// with fewer CTAs than fit: a CTA alone on its SM runs its tiles faster than one sharing it. kLoneTileTime =
// 0.5 for one of two: on the H200 (TMA decode tile, bench/NOTES.md version 18) 16 x 4096 ran 69.0 us as
// 128 lone CTAs of 64 tiles and 73.3 us as 256 CTAs of 32 tiles plus the merge (head dim 64: 39.1 and
// 42.5 us; H100, cp.async tile, version 12: 1.7 us per tile alone, 2.9 us beside a second CTA). Worked
// examples, measured on the H200:
//   decode 1 x 32768 (T = 512):  8 CTAs per segment -> s = 16: 128 CTAs, one per SM, of 32 tiles each
//                                 (41.1 us; s = 32 fills both slots of every SM: 44.3 us);
//   decode 1 x 4096 (T = 64):    s = 16: 4 tiles each (12.4 us; 13 segments of 5: 13.1 us; 32: 15.1 us);
//   decode 1 x 512 (T = 8):      s = 8: one tile each (8.6 us; s = 4: 8.9 us);
//   decode 16 x 512 (T = 8):     s = 1: 128 CTAs alone on their SMs beat 256 sharing them plus a merge;
//   decode 16 x 4096 (T = 64):   s = 1: 128 lone CTAs (above);
//   decode 16 x 32768 (T = 512): s = 1 (505 / 503 / 500 us at s = 1 / 2 / 8; s = 3 would leave a 0.45-wave
//                                 tail, measured 1.3x slower on the H100);
//   decode 64 x 4096:            512 CTAs, 1.94 waves -> s = 1;
//   prefill 4 x 4096 (T = 64):   8192 CTAs, 31 waves -> s = 1.
// Wave efficiency alone is the wrong objective: it once split that prefill 32 ways for a 3% fuller last wave
// and doubled its time. Each segment keeps at least one KV tile (and kMinKeysPerSegment keys). Without
// max_seq_len (or a sliding window) the split cannot be sized, so the launch stays 2D; a window sizes it by
// the window's KV range instead of the sequence's (kv_range); without max_query_len the prefill shape is
// assumed (correct for any batch).
namespace {

constexpr int kMinKeysPerSegment = 64;
constexpr int kMaxSegments = 64;
constexpr double kFixedTiles = 2.0;  // per CTA: Q load, pipeline fill and epilogue, in KV-tile times
constexpr double kMergeTiles = 2.0;  // the merge launch
// Each segment's partials, written, then read by the merge: 0.05 since the merge requests a row's segments
// together (one round trip, merge_kernel.cuh); 0.15 before, when 1 x 4096 took 13 segments and measured
// 1.055x the best count, 16.
constexpr double kMergePerSegment = 0.05;
constexpr double kLoneTileTime = 0.5;  // a KV tile's time for a CTA alone on an SM that fits two
// The same for 1-byte codes on the TMA decode kernel: their conversion leaves a lone CTA's four compute warps
// less idle time to gain (H100, bench/NOTES.md version 22: fp8 16 x 4096 took 79.2 us as 128 lone CTAs and
// 69.2 us as 256 CTAs plus the merge, which the model gives for 0.63).
constexpr double kLoneTileTimeConverted = 0.63;

int group_of(const LaunchInputs& in) {
  return in.num_q_heads / in.num_kv_heads;
}
bool short_queries(const LaunchInputs& in) {
  return in.max_query_len >= 0 && in.max_query_len * group_of(in) <= 16;
}
TileShape shape_of(const LaunchInputs& in) {
  if (in.decode_shape_only) return TileShape::kDecode;
  if (short_queries(in)) return in.tma_decode ? TileShape::kDecodeSm90 : TileShape::kDecode;
  return in.wgmma_prefill ? TileShape::kPrefillSm90 : TileShape::kPrefill;
}

// The longest KV range one query tile reads (-1 = unknown). A sliding window bounds it whatever the
// sequences' lengths: a tile's rows see keys from (first row's position - window_left) to its last row's
// position, and the range starts at a KV tile boundary (plan_query_tile), so at most window_left + 1 + the
// tile's query positions + one tile's keys. decode 1 x 131072 with a 4096-key window is sized as 1 x 4162.
int64_t kv_range(const LaunchInputs& in) {
  if (in.window_left <= 0 || in.max_query_len < 0) return in.max_seq_len;
  const int shape_rows = (block_m_for(shape_of(in)) + group_of(in) - 1) / group_of(in);
  const int64_t span = int64_t{in.window_left} + 1 + std::min(in.max_query_len, shape_rows) +
                       block_n_for(shape_of(in), in.head_dim);
  return in.max_seq_len < 0 ? span : std::min<int64_t>(in.max_seq_len, span);
}

}  // namespace

int max_modeled_segments(const LaunchInputs& in) {
  const int block_n = block_n_for(shape_of(in), in.head_dim);
  return static_cast<int>(std::min<int64_t>(
      kMaxSegments, std::max<int64_t>(1, kv_range(in) / std::max(kMinKeysPerSegment, block_n))));
}

double modeled_split_time(const LaunchInputs& in, int segments) {
  PA_CHECK(kv_range(in) > 0 && in.max_query_len >= 0,
           "modeled_split_time needs max_seq_len (or a sliding window) and max_query_len");
  const TileShape shape = shape_of(in);
  const int group = group_of(in), block_m = block_m_for(shape), block_n = block_n_for(shape, in.head_dim);
  const int64_t tiles_per_seq = (static_cast<int64_t>(in.max_query_len) * group + block_m - 1) / block_m;
  const int64_t ctas = std::max<int64_t>(1, in.num_seqs * tiles_per_seq * in.num_kv_heads);
  const bool decode_tile = shape == TileShape::kDecode || shape == TileShape::kDecodeSm90;
  const int resident = decode_tile ? in.resident_decode : in.resident_prefill;
  const int64_t capacity = static_cast<int64_t>(in.sm_count) * std::max(1, resident);
  const double tiles = std::ceil(static_cast<double>(kv_range(in)) / block_n);  // of the longest range
  const int64_t s = segments;
  // Fractional waves, plus half of the empty part of a partial last wave (a tail of memory-bound CTAs runs
  // faster than a full wave, but not in proportion to its size).
  const double frac = static_cast<double>(ctas * s) / static_cast<double>(capacity);
  const double waves = std::max(1.0, frac + 0.5 * (std::ceil(frac) - frac));
  const double merge = s > 1 ? kMergeTiles + kMergePerSegment * static_cast<double>(s) : 0.0;
  // CTAs per SM in a single partial wave (the busiest SM's count), against the resident maximum.
  const int64_t per_sm = (ctas * s + in.sm_count - 1) / in.sm_count;
  const double lone = frac < 1.0 && per_sm < resident
                          ? std::max(in.converted_kv ? kLoneTileTimeConverted : kLoneTileTime,
                                     static_cast<double>(per_sm) / static_cast<double>(resident))
                          : 1.0;
  // A segment covers ceil(T / s) whole tiles (plan_query_tile): 1 x 4096 runs 13, 14 and 15 segments of 5
  // tiles alike (the last ones empty), and 16 of 4 tiles faster.
  const double per_segment = std::ceil(tiles / static_cast<double>(s));
  return waves * (per_segment + kFixedTiles) * lone + merge;
}

namespace {

// Bytes of split-KV partials per segment: each query row's output vector and its (max, sum) pair.
size_t partial_bytes_per_segment(const LaunchInputs& in) {
  return static_cast<size_t>(in.num_tokens) * in.num_q_heads * (static_cast<size_t>(in.head_dim) + 2) *
         sizeof(float);
}

// choose_launch with at most `fits` split-KV segments.
LaunchChoice choose_with_cap(const LaunchInputs& in, int fits) {
  LaunchChoice c;
  const int group = group_of(in);
  c.shape = shape_of(in);
  c.block_m = block_m_for(c.shape);
  c.block_n = block_n_for(c.shape, in.head_dim);
  c.one_tile_per_seq = short_queries(in);
  c.grid_tiles = c.one_tile_per_seq ? in.num_seqs : in.num_tokens * group / c.block_m + in.num_seqs;

  if (in.force_segments > 0) {
    PA_CHECK(in.force_segments == 1 || in.force_segments <= fits, "force_segments ", in.force_segments,
             " needs ", static_cast<size_t>(in.force_segments) * partial_bytes_per_segment(in),
             " bytes of split-KV partials; max_workspace_bytes ", in.workspace_limit, " holds ", fits,
             " segment(s)");
    c.num_segments = in.force_segments;
  } else if (kv_range(in) > 0 && in.max_query_len >= 0) {
    // The best count the workspace limit allows: a smaller workspace costs time, never correctness.
    const int most = std::min(max_modeled_segments(in), fits);
    double best = modeled_split_time(in, 1);
    for (int s = 2; s <= most; ++s) best = std::min(best, modeled_split_time(in, s));
    // The smallest count within the margin of the best: fewer segments mean fewer partials for the same time.
    while (modeled_split_time(in, c.num_segments) > kSplitTimeMargin * best) ++c.num_segments;
  }
  c.early_merge_launch = in.early_merge_launch && c.num_segments > 1;
  // Persistent launches: one resident CTA per SM slot takes work items until none are left
  // (prefill_sm90_kernel.cuh, decode_sm90_kernel.cuh), so that a CTA's start and end overlap the neighbouring
  // items' instead of costing a launch each. Always for the wgmma prefill. For the TMA decode only where that
  // start and end weigh: more items than one wave, each of at most kPersistentDecodeTiles KV tiles (H200,
  // bench/NOTES.md version 18: 256 x 512 151 -> 141 us, 64 x 512 43.3 -> 42.5 us; but 64 x 4096 257 -> 262
  // us, where the counter's reset and the lost early start outweigh one overlap per 64 tiles).
  constexpr int64_t kPersistentDecodeTiles = 16;
  const int64_t items = c.grid_tiles * in.num_kv_heads * c.num_segments;
  const int resident = c.shape == TileShape::kPrefillSm90 ? in.resident_prefill : in.resident_decode;
  const int64_t slots = static_cast<int64_t>(in.sm_count) * std::max(1, resident);
  const bool short_items =
      kv_range(in) > 0 && kv_range(in) <= kPersistentDecodeTiles * c.block_n * c.num_segments;
  if (c.shape == TileShape::kPrefillSm90 ||
      (c.shape == TileShape::kDecodeSm90 && in.persistent_decode && items > slots && short_items)) {
    PA_CHECK(items < (int64_t{1} << 31), "the batch has ", items,
             " work items (query tiles x kv heads x segments); at most 2^31 - 1 fit one launch");
    c.persistent_ctas = std::min<int64_t>(items, slots);
    c.workspace_bytes = kWorkCounterBytes;
  }
  c.early_start = in.early_start && c.persistent_ctas == 0;
  if (c.num_segments > 1) c.workspace_bytes += c.num_segments * partial_bytes_per_segment(in);
  return c;
}

}  // namespace

int max_segments_in_workspace(const LaunchInputs& in, bool work_counter) {
  const size_t per_segment = partial_bytes_per_segment(in);
  if (in.workspace_limit == 0 || per_segment == 0) return INT32_MAX;
  const size_t front = work_counter ? kWorkCounterBytes : 0;
  const size_t fit = in.workspace_limit > front ? (in.workspace_limit - front) / per_segment : 0;
  return fit >= 2 ? static_cast<int>(std::min<size_t>(fit, INT32_MAX)) : 1;
}

LaunchChoice choose_launch(const LaunchInputs& in) {
  LaunchChoice c = choose_with_cap(in, max_segments_in_workspace(in, false));
  // A persistent launch puts its work counter in front of the partials: one segment fewer may be needed.
  if (in.workspace_limit > 0 && c.workspace_bytes > in.workspace_limit && c.num_segments > 1)
    c = choose_with_cap(in, max_segments_in_workspace(in, true));
  PA_CHECK(in.workspace_limit == 0 || c.workspace_bytes <= in.workspace_limit, "max_workspace_bytes ",
           in.workspace_limit, " is below the ", c.workspace_bytes, " bytes this launch needs at least",
           c.persistent_ctas > 0 ? " (the persistent kernel's work counter)" : "");
  return c;
}

}  // namespace pagedattn::cuda
