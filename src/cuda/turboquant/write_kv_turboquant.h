// write_kv into a TurboQuant cache on the GPU (shared/TURBOQUANT.md; the host side is
// pagedattn/turboquant.h).
#pragma once

#include <cuda_runtime.h>

#include "core/validate.h"

namespace pagedattn::cuda {

/// Quantizes the new keys and values of p into their slots, writing the same bytes as the CPU backend
/// (tq::quantize_key / tq::quantize_value) for the same input. p.kv.tq_key_bits > 0; slots already checked.
void write_kv_turboquant(const core::WriteKVProblem& p, cudaStream_t stream);

}  // namespace pagedattn::cuda
