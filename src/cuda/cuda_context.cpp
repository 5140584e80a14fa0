#include "cuda/cuda_context.h"

#include <cuda_runtime.h>

#include <cstdlib>
#include <cstring>

#include "core/log.h"
#include "cuda/cuda_check.h"
#include "cuda/device_guard.h"
#include "pagedattn/error.h"

namespace pagedattn::cuda {
namespace {

// A kernel choice behind a tri-state environment variable: unset = use it where it can run, "1" = required
// (an error naming `why` where it cannot run), "0" = never. Not using it is logged once with the reason.
bool decide_switch(const char* variable, const std::string& alternative, bool can_run,
                   const std::string& why) {
  const char* env = std::getenv(variable);
  PA_CHECK(env == nullptr || std::strcmp(env, "0") == 0 || std::strcmp(env, "1") == 0, variable,
           " must be unset, 0 or 1, got '", env ? env : "", "'");
  if (env != nullptr && env[0] == '1') {
    PA_CHECK(can_run, variable, "=1 but ", why);
    return true;
  }
  if (env != nullptr && env[0] == '0') {
    core::log_once(std::string(variable) + "=0: " + alternative);
    return false;
  }
  if (!can_run) core::log_once(alternative + ": " + why);
  return can_run;
}

}  // namespace

CudaContext::CudaContext(Device d) : core::ContextState(d) {
  int count = 0;
  PA_CUDA_CHECK(cudaGetDeviceCount(&count));
  PA_CHECK(d.index >= 0 && d.index < count, device_name(d), " does not exist: the CUDA runtime sees ", count,
           " device(s)");
  PA_CUDA_CHECK(cudaDeviceGetAttribute(&major_, cudaDevAttrComputeCapabilityMajor, d.index));
  PA_CUDA_CHECK(cudaDeviceGetAttribute(&minor_, cudaDevAttrComputeCapabilityMinor, d.index));
  PA_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, d.index));
  const std::string sm = "sm_" + std::to_string(major_) + std::to_string(minor_);
  const std::string dev = "device " + std::to_string(d.index) + " is " + sm;

  // Long-query tiles: the wgmma kernel where the build has sm_90a code and the device is 9.0.
#ifdef PAGEDATTN_HAS_SM90A
  wgmma_prefill_ = decide_switch("PAGEDATTN_WGMMA", "prefill tiles use the portable mma.sync kernel",
                                 major_ == 9 && minor_ == 0, dev + ", the wgmma kernel runs on sm_90a only");
#else
  wgmma_prefill_ = decide_switch("PAGEDATTN_WGMMA", "prefill tiles use the portable mma.sync kernel", false,
                                 std::string("this build has no sm_90a code (PAGEDATTN_CUDA_ARCHS=") +
                                     PAGEDATTN_CUDA_ARCHS_STRING + ")");
#endif
  // Short-query tiles: K/V by TMA where the build has the kernel and the device is 9.x. A cache the kernel
  // cannot read (head dim, page size, format, strides) takes the cp.async path either way (logged by the
  // plan).
#ifdef PAGEDATTN_HAS_TMA
  tma_decode_ = decide_switch("PAGEDATTN_USE_TMA", "decode tiles use the cp.async gather", major_ == 9,
                              dev + "; the TMA decode kernel runs on 9.x only");
#else
  tma_decode_ =
      decide_switch("PAGEDATTN_USE_TMA", "decode tiles use the cp.async gather", false,
                    std::string("this build has no TMA decode kernel (PAGEDATTN_TMA=OFF or no sm_90 "
                                "target in PAGEDATTN_CUDA_ARCHS=") +
                        PAGEDATTN_CUDA_ARCHS_STRING + ")");
#endif
  early_start_ = decide_switch("PAGEDATTN_PDL", "attention kernels start after the previous kernel ends",
                               major_ >= 9, dev + "; programmatic dependent launch needs sm_90 or newer");
}

std::string CudaContext::describe() const {
  return device_name(device) + " sm_" + std::to_string(major_) + std::to_string(minor_) + ", " +
         std::to_string(sm_count_) + " SMs: prefill " + (wgmma_prefill_ ? "wgmma" : "mma.sync") +
         ", decode " + (tma_decode_ ? "tma" : "cp.async") + ", early start " + (early_start_ ? "on" : "off");
}

int CudaContext::resident(const void* kernel, TileShape shape, int (*query)(TileShape)) {
  const auto key = std::make_pair(kernel, static_cast<int>(shape));
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = resident_.find(key);
  if (it == resident_.end()) {
    DeviceGuard guard(device.index);
    it = resident_.emplace(key, query(shape)).first;
  }
  return it->second;
}

CudaContext& default_cuda_context(int device) {
  return static_cast<CudaContext&>(*default_context(Device::cuda(device)).state());
}

}  // namespace pagedattn::cuda
