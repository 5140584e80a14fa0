// Attention over TurboQuant caches on the GPU (shared/TURBOQUANT.md): plan and run, behind the CUDA backend's
// plan_attention / run_attention (attention_cuda.cu dispatches here when the cache has TurboQuant codes).
#pragma once

#include "core/backend.h"

namespace pagedattn::cuda {

class CudaContext;

/// Checks what the TurboQuant kernel requires (a compiled (query dtype, preset, head dim), code rows aligned
/// for its loads), chooses the launch (decode tile shape, split count) and sizes the workspace: the split-KV
/// partials, then the rotated queries (fp16) and their row scales.
void plan_turboquant_attention(CudaContext& ctx, const core::AttentionProblem& p, core::PlanState& plan);
/// Rotates the queries into the workspace and launches the attention (and merge) kernels; no choice, no
/// allocation, no synchronization.
void run_turboquant_attention(const core::PlanState& plan, const core::AttentionProblem& p,
                              Workspace workspace, Stream stream);

}  // namespace pagedattn::cuda
