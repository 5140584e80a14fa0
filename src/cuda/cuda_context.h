// The CUDA backend's per-device state (a DeviceContext's core::ContextState): what choosing a launch asks of
// the device, read once. Replaces what used to be function-static caches behind mutexes.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "core/backend.h"
#include "cuda/attention/kv_tensor_map.h"
#include "cuda/attention/unified_params.h"

namespace pagedattn::cuda {

class CudaContext final : public core::ContextState {
 public:
  /// Queries the device and decides the PAGEDATTN_WGMMA / PAGEDATTN_USE_TMA / PAGEDATTN_PDL switches
  /// (unset: where the kernel can run; "1": required, an error naming why it cannot run; "0": never). Not
  /// using a kernel is logged once with the reason.
  explicit CudaContext(Device device);

  std::string describe() const override;

  int index() const { return device.index; }
  int sm_count() const { return sm_count_; }
  int major() const { return major_; }
  bool wgmma_prefill() const { return wgmma_prefill_; }  // long-query tiles take the sm_90a wgmma kernel
  bool tma_decode() const { return tma_decode_; }        // short-query tiles load K/V with TMA
  bool early_start() const { return early_start_; }      // programmatic dependent launch

  /// CTAs of a kernel resident per SM (the occupancy API), asked once per kernel and tile shape.
  /// `query(shape)` computes it; `kernel` identifies the instance.
  int resident(const void* kernel, TileShape shape, int (*query)(TileShape));

  KVTensorMapCache& tensor_maps() { return tensor_maps_; }

 private:
  int sm_count_ = 0, major_ = 0, minor_ = 0;
  bool wgmma_prefill_ = false, tma_decode_ = false, early_start_ = false;
  std::mutex mutex_;
  std::map<std::pair<const void*, int>, int> resident_;
  KVTensorMapCache tensor_maps_;
};

/// The default context of a CUDA device (pagedattn::default_context).
CudaContext& default_cuda_context(int device);

}  // namespace pagedattn::cuda
