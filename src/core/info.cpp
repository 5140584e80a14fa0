#include "pagedattn/info.h"

#include "core/backend.h"

namespace pagedattn {

BuildInfo build_info() {
  BuildInfo info;
  info.version = PAGEDATTN_VERSION;
  core::fill_cuda_build_info(info);  // the CUDA backend's part (nothing in a build without it)
  return info;
}

}  // namespace pagedattn
