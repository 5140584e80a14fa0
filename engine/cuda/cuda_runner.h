// The CUDA model runner: bf16 weights on the GPU, cuBLAS GEMMs (bf16 in, fp32 accumulate), the model kernels
// of model_kernels.cuh, and the library's write_kv + attention (one plan per step, run per layer) over bf16
// paged pools. Eager today (CUDA graphs for decode steps are the next step).
#pragma once

#include <memory>

#include "engine/engine.h"

namespace pagedattn::engine {

/// The runner for a model on CUDA device `device`: num_blocks pool blocks of block_size tokens per layer.
std::unique_ptr<ModelRunner> make_cuda_runner(const ModelConfig& config, const ModelWeightsF32& weights,
                                              int32_t num_blocks, int32_t block_size, int device);

}  // namespace pagedattn::engine
