#include "cuda/attention/launch_selection.h"

#include <algorithm>

namespace pagedattn::cuda {

int block_n_for(TileShape shape, int head_dim) {
  return shape == TileShape::kDecode ? 64 : (head_dim <= 128 ? 64 : 32);
}

// How the choice is made, with the numbers of the decode grid (H100/H200: 132 SMs; 32 q heads, 8 kv heads, G
// = 4, head dim 128):
//
// Tile shape. A CTA covers BLOCK_M packed rows = query tokens x the G heads of one KV head. When every
// sequence's rows fit in 16 (max_query_len * G <= 16: decode, or G <= 4 with up to 4 speculative tokens) the
// 16-row decode shape wastes nothing and its 4 warps split each KV tile's keys, so one CTA streams 64 keys
// per step with all of its threads. Longer queries take the 64-row prefill shape (4 warps split the rows):
// each K/V tile is then reused by 64 rows, which is what moves the kernel from memory-bound to
// tensor-core-bound.
//
// Segments. Decode is memory-bound: the whole GPU must stream K/V at once. The 2D launch has num_seqs x
// kv_heads CTAs (a few per SM fit by shared memory: ~74 KB each at head dim 128, so 3 per SM, 396 in flight).
// When that is less than the resident capacity, the KV range is split into segments and a reduce kernel
// merges them:
//   batch 1 x 32768: 8 CTAs -> ceil(396 / 8) = 50 segments of ~656 keys (about 10 KV tiles each);
//   batch 16 x 4096: 128 CTAs -> 4 segments of 1024 keys;
//   batch 64 x 512: 512 CTAs >= 396 -> 2D.
// Each segment keeps at least kMinKeysPerSegment keys so that the partial writes and the merge (D + 2 floats
// per row and segment) stay small next to the K/V bytes they replace. Without max_seq_len the split cannot be
// sized, so the launch stays 2D; without max_query_len the prefill shape is assumed (correct for any batch).
LaunchChoice choose_launch(const LaunchInputs& in) {
  constexpr int kMinKeysPerSegment = 256;
  constexpr int kMaxSegments = 64;
  constexpr int kResidentCtasPerSm = 3;

  LaunchChoice c;
  const int group = in.num_q_heads / in.num_kv_heads;
  const bool short_queries = in.max_query_len >= 0 && in.max_query_len * group <= 16;
  c.shape = short_queries ? TileShape::kDecode : TileShape::kPrefill;
  c.block_m = c.shape == TileShape::kDecode ? 16 : 64;
  c.block_n = block_n_for(c.shape, in.head_dim);
  c.grid_tiles = in.num_tokens * group / c.block_m + in.num_seqs;

  if (in.force_segments > 0) {
    c.num_segments = in.force_segments;
  } else if (in.max_seq_len > 0 && in.max_query_len >= 0) {
    const int64_t tiles_per_seq =
        (static_cast<int64_t>(in.max_query_len) * group + c.block_m - 1) / c.block_m;
    const int64_t ctas = std::max<int64_t>(1, in.num_seqs * tiles_per_seq * in.num_kv_heads);
    const int64_t capacity = static_cast<int64_t>(in.sm_count) * kResidentCtasPerSm;
    if (ctas < capacity) {
      const int64_t by_fill = (capacity + ctas - 1) / ctas;
      const int64_t by_length = std::max<int64_t>(1, in.max_seq_len / kMinKeysPerSegment);
      c.num_segments = static_cast<int>(std::min<int64_t>({by_fill, by_length, kMaxSegments}));
    }
  }
  if (c.num_segments > 1) {
    const size_t rows = static_cast<size_t>(in.num_tokens) * in.num_q_heads * c.num_segments;
    c.workspace_bytes = rows * (static_cast<size_t>(in.head_dim) + 2) * sizeof(float);
  }
  return c;
}

}  // namespace pagedattn::cuda
