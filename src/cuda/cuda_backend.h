// The CUDA backend's entry points, called by src/core/ops.cpp after validation.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "core/validate.h"
#include "pagedattn/attention.h"
#include "pagedattn/info.h"

namespace pagedattn::cuda {

void write_kv(const core::WriteKVProblem& p, Stream stream, bool validate_slots);
size_t attention_workspace_size(const core::AttentionProblem& p);
void attention(const core::AttentionProblem& p, Workspace workspace, Stream stream);
std::vector<DeviceInfo> devices();
/// "" when the CUDA runtime sees at least one device; otherwise the runtime's reason.
std::string device_count_error();
/// Whether long-query tiles run the sm_90a wgmma kernel on this device (PAGEDATTN_WGMMA, build, device).
bool wgmma_prefill_enabled(int device);
/// Whether short-query tiles load K/V with TMA on this device (PAGEDATTN_USE_TMA, build, device); a cache
/// the kernel cannot read still takes the cp.async path (logged).
bool tma_decode_enabled(int device);
/// Whether attention kernels are launched to start while the previous kernel drains (PAGEDATTN_PDL, device).
bool early_start_enabled(int device);

}  // namespace pagedattn::cuda
