// What the CUDA write_kv kernels share (write_kv.cu, turboquant/write_kv_turboquant.cu): one warp per (token,
// kv head) item, kWriteWarps warps per CTA, and reading a source element of any key dtype as a float.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/kernel_args.h"
#include "pagedattn/dtype.h"

namespace pagedattn::cuda {

constexpr int kWriteWarps = 4;  // warps per CTA of the write_kv kernels

// The (token, head) item of this warp, or false when it has none or its token is skipped (slot -1).
__device__ __forceinline__ bool warp_item(const kernels::PagedKVArgs& kv, const kernels::WriteKVArgs& src,
                                          int64_t& token, int& head, int64_t& block, int32_t& slot) {
  const int64_t item =
      static_cast<int64_t>(blockIdx.x) * kWriteWarps + (threadIdx.x >> 5);  // token * heads + head
  if (item >= src.num_tokens * kv.num_kv_heads) return false;
  token = item / kv.num_kv_heads;
  head = static_cast<int>(item % kv.num_kv_heads);
  const int64_t slot_id = src.slot_mapping[token];
  if (slot_id < 0) return false;
  block = slot_id / kv.block_size;
  slot = static_cast<int32_t>(slot_id - block * kv.block_size);
  return true;
}

__device__ __forceinline__ float load_float(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat16:
      return __half2float(static_cast<const __half*>(p)[i]);
    case DType::kBFloat16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

}  // namespace pagedattn::cuda
