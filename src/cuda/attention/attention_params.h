// What the CUDA attention paths share on the host (attention_cuda.cu, turboquant/attention_turboquant.cu):
// the alignment checks of the tensors a kernel reads with vector accesses, and the kernel parameters of a
// planned launch.
#pragma once

#include <cstdint>
#include <initializer_list>

#include "core/validate.h"
#include "cuda/attention/launch_selection.h"
#include "cuda/attention/unified_params.h"

namespace pagedattn::cuda {

/// ptr must be `bytes`-byte aligned (default 2 * vector: 2-byte elements) and every stride a multiple of
/// `vector` elements; the error names the tensor and the constraint.
void check_vector_access(const void* ptr, std::initializer_list<int64_t> strides, int vector,
                         const char* name, int bytes = 0);

/// The batch shape and hints of a problem as the launch selection reads them (sizes, lengths, window, forced
/// split); the device's and kernel's facts are the caller's.
void fill_batch_inputs(const core::AttentionProblem& p, LaunchInputs& in);

/// The family's kernel parameters for a planned launch: the problem's tensors, the choice's split and grid,
/// and the work counter and split-KV partials at the start of `scratch` (the workspace).
void fill_unified_params(const LaunchChoice& choice, const core::AttentionProblem& p, unsigned char* scratch,
                         UnifiedParams& params);

}  // namespace pagedattn::cuda
