// The CUDA model runner: bf16 weights on the GPU (a model folder's, or drawn on the device for a preset),
// cuBLAS GEMMs (bf16 in, fp32 accumulate), the model kernels of model_kernels.cuh, the library's write_kv +
// attention (one plan per step, run per layer) over paged pools in bf16, fp8 or int8, the sampler on the GPU
// (sampling.cuh), and CUDA graphs for decode-only steps at bucketed batch sizes.
#pragma once

#include <memory>
#include <string>

#include "engine/engine.h"

namespace pagedattn::engine {

struct CudaRunnerOptions {
  int device = 0;
  int32_t num_blocks = 0, block_size = 16;  ///< the pool of every layer; 0: from gpu_memory_utilization
  double gpu_memory_utilization = 0.9;
  std::string kv_cache_dtype =
      "auto";              ///< auto (bf16), bf16, fp8_e4m3, fp8_e5m2, int8, tq_k8v4, tq_k4v4, ...
  int max_num_seqs = 256;  ///< buffers are sized once, for the largest step
  int64_t max_num_batched_tokens = 8192;
  int64_t max_model_len = 4096;
  bool enforce_eager = false;  ///< no CUDA graphs
};

/// The runner over host weights (a model folder, or ModelWeightsF32::random in tests).
std::unique_ptr<ModelRunner> make_cuda_runner(const ModelConfig& config, const ModelWeightsF32& weights,
                                              const CudaRunnerOptions& options);
/// The runner over random weights drawn on the device (the distribution of ModelWeightsF32::random, other
/// numbers).
std::unique_ptr<ModelRunner> make_cuda_runner(const ModelConfig& config, uint64_t weights_seed,
                                              const CudaRunnerOptions& options);

}  // namespace pagedattn::engine
