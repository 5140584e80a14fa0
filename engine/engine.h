// The engine: requests in, tokens out. One step = schedule (continuous batching over the block manager),
// apply copy-on-write copies, run the model over the step's flattened batch, sample, complete. The model
// runs behind ModelRunner (the CPU runner here; the GPU runner plugs in the same way).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/cpu_model.h"
#include "engine/model_config.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "pagedattn/block_manager.h"

namespace pagedattn::engine {

/// What runs the model for the engine: one forward over a step's batch (logits of each sequence's last new
/// token, [num_seqs, vocab], in host memory the runner owns until its next forward: the CUDA runner's is
/// pinned, so the step's copy runs at full link speed and is not copied again) and the block copies of
/// copy-on-write.
/// One sequence's draw in a step: `params` is null when the row does not sample (a prefill chunk short of the
/// prompt's end); `counter` is the index of the token being drawn (sample_token).
struct SampleRow {
  const SamplingParams* params = nullptr;
  uint64_t seed = 0;
  uint64_t counter = 0;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual std::span<const float> forward(std::span<const int32_t> tokens, HostBatch& batch) = 0;
  /// The step's next token per sequence (-1 where its row does not sample). This default runs forward and
  /// the host sampler (rows on all cores when the step is large); the CUDA runner samples on the GPU and
  /// copies back only the tokens.
  virtual std::vector<int32_t> forward_and_sample(std::span<const int32_t> tokens, HostBatch& batch,
                                                  std::span<const SampleRow> rows);
  virtual void copy_blocks(std::span<const BlockCopy> copies) = 0;
  /// The blocks of the runner's pools (each layer's): the engine's block manager hands out exactly these.
  virtual int32_t num_blocks() const = 0;
};

/// The CPU runner: CpuModel over host fp32 pools.
class CpuRunner final : public ModelRunner {
 public:
  CpuRunner(ModelConfig config, ModelWeightsF32 weights, int32_t num_blocks, int32_t block_size,
            const std::string& kv_format = "fp32");
  std::span<const float> forward(std::span<const int32_t> tokens, HostBatch& batch) override;
  void copy_blocks(std::span<const BlockCopy> copies) override;
  int32_t num_blocks() const override { return num_blocks_; }

 private:
  int32_t num_blocks_;
  CpuModel model_;
  HostKVCache cache_;
  std::vector<float> logits_;
};

struct EngineConfig {
  std::string model = "tiny-llama";  ///< a Hugging Face model folder, or a preset name (random weights)
  uint64_t weights_seed = 0;         ///< random weights of a preset
  int32_t block_size = 16;
  int32_t num_blocks = 256;  ///< KV pool blocks (every layer); 0: sized from kv_cache_bytes, else (CUDA) from
                             ///< gpu_memory_utilization
  size_t kv_cache_bytes = 0;  ///< with num_blocks = 0: the pool takes this many bytes (all layers, K and V)
  /// CUDA, with num_blocks = 0 and kv_cache_bytes = 0: the pool takes this fraction of the card's memory less
  /// what is in use once the weights and the step buffers are allocated (and a fixed reserve for workspaces
  /// and graphs), as vLLM sizes it; capacity_summary() states the result.
  double gpu_memory_utilization = 0.9;
  int max_num_seqs = 256;
  int64_t max_num_batched_tokens = 8192;
  int64_t max_model_len = 0;  ///< 0: the model's max_position_embeddings
  bool enable_prefix_caching = true;
  bool enforce_eager = false;  ///< CUDA runner: no CUDA graphs for decode steps
  /// "paged" (the default), or "contiguous": the traditional cache that reserves max_model_len tokens of
  /// consecutive blocks per request at admission (the source documents' comparison; same kernels).
  std::string kv_layout = "paged";
  /// "cpu" (the CPU runner, fp32) or "cuda:N" / "cuda" (the CUDA runner on device N, bf16; a CUDA build).
  std::string device = "cpu";
  /// The KV cache format: "auto" (the runner's own: fp32 on the CPU, bf16 on CUDA), or a quantized one
  /// (fp8_e4m3, fp8_e5m2, int8, tq_k8v4, tq_k4v4, tq_k3v4, tq_k3v3: both runners), or "bf16".
  std::string kv_cache_dtype = "auto";
  uint64_t seed = 0;  ///< the seed of requests that bring none
};

struct RequestOutput {
  int64_t id = 0;
  std::vector<int32_t> tokens;  ///< every token generated so far
  FinishReason finish = FinishReason::kNone;
  std::string finish_detail;
};

struct EngineStats {
  SchedulerStats scheduler;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;
  double model_seconds = 0;                 ///< inside ModelRunner::forward_and_sample
  double host_seconds = 0;                  ///< scheduling, batch building, sampling
  int64_t num_blocks = 0, free_blocks = 0;  ///< the KV pool now
  int64_t block_bytes = 0;                  ///< one block across all layers, K and V
  int64_t peak_used_blocks = 0;             ///< the most pool blocks in use after any step
};

/// What a step must move and compute at least (shared/ENGINE.md's rooflines): the weights it reads (bf16:
/// every projection, the LM head, the norms; not the embedding table's unread rows) plus the K/V of every
/// sequence's whole context, and 2 x parameters FLOPs per new token plus attention's 4 x context x head dim x
/// query heads per new token and layer. A run's roofline time is the sum over its steps of
/// max(bytes / read bandwidth, flops / matmul rate).
struct StepWork {
  double bytes = 0;
  double flops = 0;
};

class Engine {
 public:
  explicit Engine(const EngineConfig& config);
  /// The engine with a runner of the caller's (tests; the GPU runner).
  Engine(const EngineConfig& config, ModelConfig model, std::unique_ptr<ModelRunner> runner);

  /// Queues a request; returns its id. The prompt must be non-empty and shorter than max_model_len.
  int64_t add_request(std::vector<int32_t> prompt, SamplingParams params);
  /// One step; returns the requests that produced a token or finished in it.
  std::vector<RequestOutput> step();
  bool has_unfinished() const { return !scheduler_.idle(); }
  /// Runs prompts to completion; outputs in prompt order.
  std::vector<RequestOutput> generate(const std::vector<std::vector<int32_t>>& prompts,
                                      const SamplingParams& params);
  /// Finished requests (with their timing), in finishing order; cleared by take_finished().
  std::vector<std::unique_ptr<Request>> take_finished();

  const ModelConfig& model_config() const { return model_; }
  /// One line as vLLM logs it at startup: KV capacity in tokens and the concurrency it allows at
  /// max_model_len.
  std::string capacity_summary() const;
  const BlockManager& blocks() const { return blocks_; }
  EngineStats stats() const;
  /// Every step's StepWork so far, in order.
  const std::vector<StepWork>& step_work() const { return step_work_; }

 private:
  double now() const;
  StepWork step_work(const HostBatch& batch) const;
  EngineConfig config_;
  ModelConfig model_;
  std::unique_ptr<ModelRunner> runner_;  // before the block manager: a CUDA runner may size the pool
  BlockManager blocks_;
  Scheduler scheduler_;
  std::mt19937_64 seeds_;
  int64_t next_id_ = 0;
  std::vector<std::unique_ptr<Request>> finished_;
  EngineStats stats_;
  std::vector<StepWork> step_work_;
  bool pool_from_memory_ = false;  // the CUDA runner sized the pool from gpu_memory_utilization
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

/// The model config of EngineConfig::model (a folder's config.json, or a preset).
ModelConfig resolve_model(const EngineConfig& config);
/// The geometry of a runner's pools for a model (fp32 on the CPU runner, bf16 on the CUDA runner): what one
/// block costs across all layers.
KVCacheGeometry kv_geometry(const ModelConfig& model, int32_t block_size, const std::string& device = "cpu",
                            const std::string& kv_cache_dtype = "auto");

}  // namespace pagedattn::engine
