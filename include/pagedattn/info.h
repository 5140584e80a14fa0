// What this build of the library contains, and what the machine offers.
#pragma once

#include <string>
#include <vector>

#include "pagedattn/dtype.h"
#include "pagedattn/turboquant.h"

namespace pagedattn {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_count = 0;
  int major = 0;
  int minor = 0;
  size_t total_memory = 0;
  size_t l2_bytes = 0;
  std::string prefill_kernel;  ///< kernel of long-query tiles: "wgmma" (sm_90a) or "mma.sync"
  /// K/V loads of short-query tiles: "tma" (sm_90; caches with head dim % 64 == 0 and power-of-two pages
  /// >= 8, others take "cp.async") or "cp.async"
  std::string decode_kernel;
};

/// One compiled CUDA attention instance: query dtype x K/V cache format x head dim.
struct CudaInstance {
  DType query = DType::kBFloat16;
  DType cache = DType::kBFloat16;
  int head_dim = 0;
};

struct BuildInfo {
  std::string version;
  bool cuda = false;                   ///< the CUDA backend is compiled in
  std::string cuda_archs;              ///< e.g. "90a"
  bool cuda_tma = false;               ///< the TMA decode kernel is compiled (PAGEDATTN_TMA, an sm_90 target)
  std::vector<int> cuda_head_dims;     ///< head dims compiled into the CUDA kernels
  std::vector<DType> cuda_dtypes;      ///< query dtypes compiled into the CUDA kernels
  std::vector<DType> cuda_kv_formats;  ///< K/V cache formats compiled into the CUDA kernels
  /// Every compiled (query dtype, cache format, head dim): the instantiation axis as CMake generated it.
  std::vector<CudaInstance> cuda_instances;
  /// TurboQuant attention compiled into the CUDA kernels: (query dtype, preset, head dim).
  struct TurboQuantInstance {
    DType query = DType::kBFloat16;
    tq::Preset preset = tq::Preset::kK4V4;
    int head_dim = 0;
  };
  std::vector<TurboQuantInstance> cuda_tq_instances;

  /// Whether attention over this combination is compiled into the CUDA kernels.
  bool cuda_compiled(DType query, DType cache, int head_dim) const {
    for (const CudaInstance& i : cuda_instances) {
      if (i.query == query && i.cache == cache && i.head_dim == head_dim) return true;
    }
    return false;
  }
};

BuildInfo build_info();

/// CUDA devices visible to this process (empty without the CUDA backend or without a GPU).
std::vector<DeviceInfo> cuda_devices();

/// Why this process cannot run the CUDA backend, or "" when it can: either the build has no CUDA backend, or
/// it has one and the CUDA runtime found no usable device (the runtime's own words follow, e.g. "no
/// CUDA-capable device is detected" or a driver/runtime version mismatch).
std::string cuda_unavailable_reason();

}  // namespace pagedattn
