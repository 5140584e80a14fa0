// Describes the paged K/V pools to the sm_90 bulk tensor copy engine (TMA) for decode_sm90_kernel.cuh.
//
// A pool is a rank-4 tensor: head-dim columns (contiguous), KV heads and tokens of a block (in the order of
// their strides, so NHD and HND pools both read as "each dimension includes the previous"), blocks. One box
// is one 128-byte swizzled panel of the kernel's shared memory: 64 bf16/fp16 columns (128 fp8 codes) x
// min(block_size, 64) tokens of one KV head and one block. A 64-key KV tile is then 64 / rows boxes per
// panel, whatever the page size.
#pragma once

#include <cuda.h>

#include <map>
#include <mutex>
#include <string>
#include <tuple>

#include "cuda/attention/unified_params.h"
#include "kernels/kernel_args.h"

namespace pagedattn::cuda {

/// Why the TMA decode kernel cannot read a cache of this head dim, page size and format, or empty: boxes are
/// whole 128-byte panels (64 bf16/fp16 or 128 fp8/int8 columns) and each box (a page, or a 64-token run of
/// one) must start a 1024-byte swizzle atom.
std::string tma_decode_shape_limit(int head_dim, int block_size, DType format);

/// The K and V maps of the caches seen so far, one set per pool description (a device context owns one). A
/// serving loop runs attention per layer and step over the same few caches; the driver's encoding would
/// otherwise run on every call.
class KVTensorMapCache {
 public:
  /// The K and V maps of a cache (boxes of a whole page, or a 64-token run of a larger one). Returns empty on
  /// success, else why the driver refused (the caller logs it and takes the cp.async path).
  std::string encode(const kernels::PagedKVArgs& kv, KVTensorMaps& maps);

 private:
  using Key = std::tuple<const void*, const void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                         int32_t, int32_t, int32_t, int32_t, int>;
  struct Encoded {
    KVTensorMaps maps;
    std::string why;
  };
  std::mutex mutex_;
  std::map<Key, Encoded> encoded_;
};

}  // namespace pagedattn::cuda
