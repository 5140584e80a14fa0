// Parameters of one launch of the unified attention kernel (2D or segmented 3D). Plain data, passed by value.
#pragma once

#include <cuda.h>

#include "kernels/fast_divmod.h"
#include "kernels/kernel_args.h"

namespace pagedattn::cuda {

using kernels::FastDivmod;

/// The paged K/V pools as the bulk tensor copy engine sees them (kv_tensor_map.h builds them): coordinates
/// are (column, kv head, token in block, block), or (column, token, kv head, block) when token_dim_first
/// (HND); a box is 64 columns x box_rows tokens.
struct KVTensorMaps {
  CUtensorMap k;
  CUtensorMap v;
  int32_t token_dim_first = 0;
  int32_t box_rows = 0;
};

struct UnifiedParams {
  kernels::PagedKVArgs kv;
  kernels::BatchArgs batch;
  kernels::AttentionArgs attn;
  FastDivmod group;          // attn.group_size: packed row -> (query token, query head of the group)
  int32_t num_segments = 1;  // 1: 2D launch, the kernel writes O and LSE; > 1: partials for the reduce kernel
  float* partial_o =
      nullptr;  // [num_tokens, num_q_heads, num_segments, head_dim] fp32, relative to partial max
  float* partial_ml = nullptr;  // [num_tokens, num_q_heads, num_segments, 2]: max (log2 domain), exp-sum
  // Persistent launches (kPrefillSm90, kDecodeSm90 beyond one wave): work items are (query tile, kv head,
  // segment), grid_tiles x num_kv_heads x num_segments of them, handed out in that order through work_counter
  // (zero at launch).
  int32_t grid_tiles = 0;
  uint32_t* work_counter = nullptr;
  // Every sequence's packed query rows fit one tile (short queries: the decode shapes): tile i is sequence
  // i, found without a search.
  int32_t one_tile_per_seq = 0;
  KVTensorMaps tma;  // TMA decode (kDecodeSm90) only
};

/// The tile shapes the kernel family is compiled for.
enum class TileShape : int {
  kDecode = 0,  // 16 packed rows, 4 warps splitting each KV tile's keys: short queries (decode, small chunks)
  kPrefill = 1,      // 64 packed rows, 4 warps splitting the rows: long queries (portable mma.sync kernel)
  kPrefillSm90 = 2,  // 128 packed rows, 2 warpgroups on wgmma: long queries on sm_90a (prefill_sm90_kernel)
  kDecodeSm90 = 3,   // the decode shape with K/V loaded by TMA from a producer warp (decode_sm90_kernel)
};

}  // namespace pagedattn::cuda
