// Describes the paged K/V pools to the sm_90 bulk tensor copy engine (TMA) for decode_sm90_kernel.cuh.
//
// A pool is a rank-4 tensor: head-dim columns (contiguous), KV heads and tokens of a block (in the order of
// their strides, so NHD and HND pools both read as "each dimension includes the previous"), blocks. One box
// is one 128-byte swizzled panel of the kernel's shared memory: 64 columns x min(block_size, 64) tokens of
// one KV head and one block. A 64-key KV tile is then 64 / rows boxes per panel, whatever the page size.
#pragma once

#include <cuda.h>

#include <string>

#include "cuda/attention/unified_params.h"
#include "kernels/kernel_args.h"

namespace pagedattn::cuda {

/// Why the TMA decode kernel cannot read a cache of this head dim and page size, or empty: boxes are whole
/// 64-column panels, and each box (a page, or a 64-token run of one) must start a 1024-byte swizzle atom.
std::string tma_decode_shape_limit(int head_dim, int block_size);

/// The K and V maps of a cache (boxes of a whole page, or a 64-token run of a larger one). Returns empty on
/// success, else why the driver refused (the caller logs it and takes the cp.async path). Remembered per
/// pool description: a serving loop calls attention per layer and step with the same few caches, and the
/// encoding would otherwise run on every call (and again for attention_workspace_size).
std::string encode_kv_tensor_maps(const kernels::PagedKVArgs& kv, KVTensorMaps& maps);

}  // namespace pagedattn::cuda
