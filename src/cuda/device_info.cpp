#include <cuda_runtime.h>

#include <sstream>
#include <string>
#include <vector>

#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "pagedattn_cuda_instances.h"

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
    const CudaContext& ctx = default_cuda_context(i);  // what the switches decided there
    out.push_back({i, prop.name, prop.multiProcessorCount, prop.major, prop.minor, prop.totalGlobalMem,
                   static_cast<size_t>(prop.l2CacheSize), ctx.wgmma_prefill() ? "wgmma" : "mma.sync",
                   ctx.tma_decode() ? "tma" : "cp.async"});
  }
  return out;
}

}  // namespace pagedattn::cuda

namespace pagedattn::core {
namespace {

std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

void fill_cuda_build_info(BuildInfo& info) {
  info.cuda = true;
  info.cuda_archs = PAGEDATTN_CUDA_ARCHS_STRING;
#ifdef PAGEDATTN_HAS_TMA
  info.cuda_tma = true;
#endif
  for (const auto& hd : split_csv(PAGEDATTN_HEAD_DIMS_STRING)) info.cuda_head_dims.push_back(std::stoi(hd));
  for (const auto& dt : split_csv(PAGEDATTN_DTYPES_STRING)) info.cuda_dtypes.push_back(parse_dtype(dt));
  for (const auto& f : split_csv(PAGEDATTN_KV_FORMATS_STRING)) {
    if (f.rfind("tq_", 0) != 0) info.cuda_kv_formats.push_back(parse_dtype(f));  // presets: below
  }
  // The generated instance list (src/cuda/CMakeLists.txt); only its dtype enums and head dims are used
  // here.
#define PAGEDATTN_INSTANCE_INFO(TYPE, DTYPE, FORMAT, CACHE_DTYPE, HEAD_DIM) \
  info.cuda_instances.push_back({DTYPE, CACHE_DTYPE, HEAD_DIM});
  PAGEDATTN_FOR_EACH_INSTANCE(PAGEDATTN_INSTANCE_INFO)
#undef PAGEDATTN_INSTANCE_INFO
#define PAGEDATTN_TQ_INSTANCE_INFO(TYPE, DTYPE, KEY_BITS, VALUE_BITS, HEAD_DIM) \
  info.cuda_tq_instances.push_back({DTYPE, tq::preset_of_bits(KEY_BITS, VALUE_BITS), HEAD_DIM});
  PAGEDATTN_FOR_EACH_TQ_INSTANCE(PAGEDATTN_TQ_INSTANCE_INFO)
#undef PAGEDATTN_TQ_INSTANCE_INFO
}

}  // namespace pagedattn::core

namespace pagedattn {

std::vector<DeviceInfo> cuda_devices() {
  return cuda::devices();
}

std::string cuda_unavailable_reason() {
  const std::string runtime = cuda::device_count_error();
  return runtime.empty()
             ? std::string()
             : "this build has the CUDA backend, but no GPU is visible (CUDA runtime: " + runtime + ")";
}

}  // namespace pagedattn
