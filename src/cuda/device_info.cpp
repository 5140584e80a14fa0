#include <cuda_runtime.h>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"

namespace pagedattn::cuda {

std::string device_count_error() {
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the sticky-free error so later calls start clean
    return cudaGetErrorString(status);
  }
  return count > 0 ? std::string() : std::string("the runtime reports 0 devices");
}

std::vector<DeviceInfo> devices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // no driver or no device: report none
    return {};
  }
  std::vector<DeviceInfo> out;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    PA_CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
    out.push_back({i, prop.name, prop.multiProcessorCount, prop.major, prop.minor, prop.totalGlobalMem,
                   static_cast<size_t>(prop.l2CacheSize), wgmma_prefill_enabled(i) ? "wgmma" : "mma.sync",
                   tma_decode_enabled(i) ? "tma" : "cp.async"});
  }
  return out;
}

}  // namespace pagedattn::cuda
