// Per-device, per-kernel setup before a launch that the CUDA kernels share.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "cuda/cuda_check.h"

namespace pagedattn::cuda {

/// Raises `kernel`'s dynamic shared-memory limit to `bytes` on the current device, once per device:
/// `configured` (one per kernel, static at the caller) remembers the devices done (bit = device index % 64).
template <typename Kernel>
void raise_smem_limit_once(Kernel* kernel, int bytes, std::atomic<uint64_t>& configured) {
  int device = 0;
  PA_CUDA_CHECK(cudaGetDevice(&device));
  const uint64_t bit = 1ULL << (device & 63);
  if (!(configured.load() & bit)) {
    PA_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
    configured.fetch_or(bit);
  }
}

}  // namespace pagedattn::cuda
