// Describes the paged K/V pools to the sm_90 bulk tensor copy engine (TMA) for decode_sm90_kernel.cuh.
//
// A pool is a rank-4 tensor: head-dim columns (contiguous), KV heads and tokens of a block (in the order of
// their strides, so NHD and HND pools both read as "each dimension includes the previous"), blocks. One box
// is one 128-byte swizzled panel of the kernel's shared memory: 64 columns x min(block_size, 64) tokens of
// one KV head and one block. A 64-key KV tile is then 64 / rows boxes per panel, whatever the page size.
#pragma once

#include <cuda.h>

#include <string>

#include "kernels/kernel_args.h"

namespace pagedattn::cuda {

/// Why the TMA decode kernel cannot read a cache of this head dim and page size, or empty: boxes are whole
/// 64-column panels, and each box (a page, or a 64-token run of one) must start a 1024-byte swizzle atom.
std::string tma_decode_shape_limit(int head_dim, int block_size);

/// Tokens per box: a whole page, or a 64-token run of a larger one.
int tma_box_rows(int block_size);

/// Encodes the K and V maps. Returns empty on success, else why the driver refused (the caller logs it and
/// takes the cp.async path). token_dim_first is set when tokens are the map's second dimension (HND).
std::string encode_kv_tensor_maps(const kernels::PagedKVArgs& kv, CUtensorMap& k_map, CUtensorMap& v_map,
                                  bool& token_dim_first);

}  // namespace pagedattn::cuda
