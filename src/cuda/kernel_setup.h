// What the CUDA attention launchers share: per-device kernel setup, and the launch of a kernel of the family
// with or without programmatic dependent launch.
#pragma once

#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>

#include "cuda/attention/unified_params.h"
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

/// Launches kernel(params); `early`: with programmatic stream serialization, so that its CTAs may start
/// while the previous kernel in the stream drains (the kernel waits for its results: dependent_launch.cuh).
inline void launch_kernel(void (*kernel)(UnifiedParams), const char* name, dim3 grid, dim3 block,
                          size_t smem_bytes, cudaStream_t stream, bool early, const UnifiedParams& params) {
  cudaLaunchConfig_t config = {};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  cudaLaunchAttribute early_start;
  early_start.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  early_start.val.programmaticStreamSerializationAllowed = 1;
  config.attrs = &early_start;
  config.numAttrs = early ? 1 : 0;
  PA_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, params));
  PA_CUDA_CHECK_LAUNCH(name);
}

}  // namespace pagedattn::cuda
