#include "pagedattn/info.h"

#include <sstream>
#include <string>

#ifdef PAGEDATTN_WITH_CUDA
#include "cuda/cuda_backend.h"
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
