// The one function that decides how attention runs on the GPU: tile shape, 2D or segmented 3D, segment count.
// It also answers "how much workspace?", so the two can never disagree.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/attention/unified_params.h"

namespace pagedattn::cuda {

struct LaunchInputs {
  int sm_count = 132;
  int num_seqs = 0;
  int64_t num_tokens = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int max_query_len = -1;           // -1 = unknown
  int max_seq_len = -1;             // -1 = unknown
  int window_left = 0;              // sliding window (0 = none): bounds each tile's KV range
  int force_segments = 0;           // 0 = choose
  size_t workspace_limit = 0;       // 0 = none; else the choice's workspace_bytes stays within it
  int resident_decode = 3;          // CTAs of the decode shape in use resident per SM (occupancy API)
  int resident_prefill = 2;         // CTAs of the prefill shape in use resident per SM
  bool wgmma_prefill = false;       // long queries take the sm_90a wgmma tile (kPrefillSm90)
  bool tma_decode = false;          // short queries take the TMA decode tile (kDecodeSm90)
  bool early_merge_launch = false;  // the device has programmatic dependent launch (sm_90+)
  bool early_start = false;       // PAGEDATTN_PDL: the attention kernel may start before its predecessor ends
  bool persistent_decode = true;  // the TMA decode beyond one wave runs persistent CTAs
  // 1-byte K/V codes (fp8, int8) converted in registers: a CTA alone on its SM gains less than a bf16 one
  // (launch_selection.cpp, kLoneTileTime).
  bool converted_kv = false;
  // The kernel has the 16-row decode tile only (TurboQuant caches): every query length takes it.
  bool decode_shape_only = false;
};

struct LaunchChoice {
  TileShape shape = TileShape::kDecode;
  int block_m = 16;        // packed query rows per CTA
  int block_n = 64;        // keys per KV tile
  int num_segments = 1;    // 1 = 2D launch
  int64_t grid_tiles = 0;  // grid.x: an upper bound on query tiles
  // Short queries: each sequence's packed rows fit one tile, tile i is sequence i (grid_tiles = num_seqs).
  bool one_tile_per_seq = false;
  // The merge kernel is launched while the attention kernel still runs (programmatic dependent launch) and
  // waits for its results on the device, so its launch latency overlaps the attention kernel's tail.
  bool early_merge_launch = false;
  // The attention kernel is launched with programmatic stream serialization: its CTAs may become resident
  // while the previous kernel in the stream drains, set up shared memory, and wait for that kernel's results
  // (griddepcontrol.wait) before their first global access. Not for persistent launches, which a memset of
  // their work counter precedes.
  bool early_start = false;
  // > 0: a persistent launch of this many CTAs that take work items from a counter at the start of the
  // workspace (kPrefillSm90 always; kDecodeSm90 when its items exceed one wave); 0: one CTA per grid slot
  // (grid_tiles x kv heads x segments).
  int64_t persistent_ctas = 0;
  size_t workspace_bytes = 0;  // the work counter (kWorkCounterBytes), then the split-KV partials
};

/// Workspace bytes in front of the partials that hold a persistent launch's work counter (256 keeps the
/// partials aligned for vector access).
constexpr size_t kWorkCounterBytes = 256;

/// The choice for a batch shape. With a workspace_limit the segment count is the best one whose partials fit;
/// an error names the limit when even one segment's launch (or force_segments) needs more.
LaunchChoice choose_launch(const LaunchInputs& in);

/// The most split-KV segments whose partials fit in.workspace_limit, behind a persistent launch's work
/// counter or not (1 when even two do not; INT32_MAX without a limit).
int max_segments_in_workspace(const LaunchInputs& in, bool work_counter);

/// The split model behind choose_launch's segment count, exposed for tests and tuning: the modeled time of a
/// launch with `segments` split-KV segments (in KV-tile times at full residency), and the largest count it
/// considers. Needs max_seq_len and max_query_len (the split is not sized without them).
double modeled_split_time(const LaunchInputs& in, int segments);
int max_modeled_segments(const LaunchInputs& in);
/// choose_launch takes the smallest count whose modeled time is within this factor of the least.
constexpr double kSplitTimeMargin = 1.02;

/// Tile of each shape: packed query rows and keys per KV tile (the kernel configs in unified_launch.cuh
/// check that they agree).
int block_m_for(TileShape shape);
int block_n_for(TileShape shape, int head_dim);

}  // namespace pagedattn::cuda
