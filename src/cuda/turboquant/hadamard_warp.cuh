// The Walsh-Hadamard butterflies of the TurboQuant rotation on the GPU, by one warp over a vector in shared
// memory: the write kernel (keys, bit-identical to the CPU writer) and the query rotation of attention use
// it.
#pragma once

#include <cuda_runtime.h>

namespace pagedattn::cuda {

/// y[0 .. d) <- blockwise unnormalized Walsh-Hadamard transform over blocks of `block` coordinates: per
/// stage, pair (a, b) -> (a + b, a - b) with IEEE adds (no fused or reordered arithmetic, as the CPU's
/// fwht_blocks; each pair is combined once per stage, so the order of pairs does not matter). Called by all
/// 32 lanes; the result is visible to the whole warp on return.
__device__ __forceinline__ void hadamard_butterflies_warp(float* y, int d, int block, int lane) {
  for (int len = 1; len < block; len <<= 1) {
    __syncwarp();
    for (int p = lane; p < d / 2; p += 32) {
      const int i = (p / len) * 2 * len + p % len;
      const float a = y[i], b = y[i + len];
      y[i] = __fadd_rn(a, b);
      y[i + len] = __fsub_rn(a, b);
    }
  }
  __syncwarp();
}

}  // namespace pagedattn::cuda
