// A build without the CUDA backend: backend_for() reports it for CUDA tensors.
#include "core/backend.h"

namespace pagedattn::core {

const Backend* cuda_backend() {
  return nullptr;
}

void fill_cuda_build_info(BuildInfo&) {}

}  // namespace pagedattn::core

namespace pagedattn {

std::vector<DeviceInfo> cuda_devices() {
  return {};
}

std::string cuda_unavailable_reason() {
  return "this build has no CUDA backend (configure with -DPAGEDATTN_CUDA=ON on a machine with nvcc)";
}

}  // namespace pagedattn
