// Launchers of the attention kernel family, one instantiation per (query dtype, K/V format, head dim): see
// instantiate/.
#pragma once

#include <cuda_runtime.h>

#include "cuda/attention/kv_format.cuh"
#include "cuda/attention/launch_selection.h"
#include "cuda/attention/unified_params.h"

namespace pagedattn::cuda {

/// Launches the chosen shape (and the merge kernel when choice.num_segments > 1) on stream.
template <typename T, typename Fmt, int kHeadDim>
void launch_attention(const LaunchChoice& choice, const UnifiedParams& params, cudaStream_t stream);

/// CTAs of a tile shape that fit on one SM of the current device at once (shared memory, registers, threads).
template <typename T, typename Fmt, int kHeadDim>
int resident_ctas_per_sm(TileShape shape);

}  // namespace pagedattn::cuda
