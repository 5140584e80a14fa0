// The CUDA backend's entry points, behind core::Backend (cuda_backend.cpp).
#pragma once

#include <string>
#include <vector>

#include "core/backend.h"
#include "pagedattn/info.h"

namespace pagedattn::cuda {

class CudaContext;

void write_kv(const core::WriteKVProblem& p, Stream stream, bool validate_slots);
void plan_attention(CudaContext& ctx, const core::AttentionProblem& p, core::PlanState& plan);
void run_attention(const core::PlanState& plan, const core::AttentionProblem& p, Workspace workspace,
                   Stream stream);
/// Copies the batch to the host and checks it (synchronizes; skipped while the stream captures a graph).
void validate_batch(const core::AttentionProblem& p, Stream stream);
std::vector<DeviceInfo> devices();
/// "" when the CUDA runtime sees at least one device; otherwise the runtime's reason.
std::string device_count_error();

}  // namespace pagedattn::cuda
