#include "pagedattn/info.h"

#include <sstream>
#include <string>

#ifdef PAGEDATTN_WITH_CUDA
#include "cuda/cuda_backend.h"
#include "pagedattn_cuda_instances.h"
#endif

namespace pagedattn {
namespace {

[[maybe_unused]] std::vector<std::string> split_csv(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

}  // namespace

BuildInfo build_info() {
  BuildInfo info;
  info.version = PAGEDATTN_VERSION;
#ifdef PAGEDATTN_WITH_CUDA
  info.cuda = true;
  info.cuda_archs = PAGEDATTN_CUDA_ARCHS_STRING;
#ifdef PAGEDATTN_HAS_TMA
  info.cuda_tma = true;
#endif
  for (const auto& hd : split_csv(PAGEDATTN_HEAD_DIMS_STRING)) info.cuda_head_dims.push_back(std::stoi(hd));
  for (const auto& dt : split_csv(PAGEDATTN_DTYPES_STRING)) info.cuda_dtypes.push_back(parse_dtype(dt));
  for (const auto& f : split_csv(PAGEDATTN_KV_FORMATS_STRING)) info.cuda_kv_formats.push_back(parse_dtype(f));
    // The generated instance list (src/cuda/CMakeLists.txt); only its dtype enums and head dims are used
    // here.
#define PAGEDATTN_INSTANCE_INFO(TYPE, DTYPE, FORMAT, CACHE_DTYPE, HEAD_DIM) \
  info.cuda_instances.push_back({DTYPE, CACHE_DTYPE, HEAD_DIM});
  PAGEDATTN_FOR_EACH_INSTANCE(PAGEDATTN_INSTANCE_INFO)
#undef PAGEDATTN_INSTANCE_INFO
#endif
  return info;
}

std::vector<DeviceInfo> cuda_devices() {
#ifdef PAGEDATTN_WITH_CUDA
  return cuda::devices();
#else
  return {};
#endif
}

std::string cuda_unavailable_reason() {
#ifdef PAGEDATTN_WITH_CUDA
  const std::string runtime = cuda::device_count_error();
  return runtime.empty()
             ? std::string()
             : "this build has the CUDA backend, but no GPU is visible (CUDA runtime: " + runtime + ")";
#else
  return "this build has no CUDA backend (configure with -DPAGEDATTN_CUDA=ON on a machine with nvcc)";
#endif
}

}  // namespace pagedattn
