// One sequence fed through the CPU model step by step (prefill chunks, then single tokens), returning the
// logits after each feed: what the parity tests compare with other implementations (transformers) through the
// same paged cache and attention the engine uses.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "engine/cpu_model.h"

namespace pagedattn::engine {

class SequenceScorer {
 public:
  SequenceScorer(const ModelConfig& config, ModelWeightsF32 weights, int32_t max_tokens,
                 int32_t block_size = 16, const std::string& kv_format = "fp32");
  /// Appends tokens to the sequence and returns the logits after its last token, [vocab].
  std::vector<float> feed(std::span<const int32_t> tokens);
  int64_t length() const { return blocks_.contains(0) ? blocks_.num_tokens(0) : 0; }

 private:
  CpuModel model_;
  BlockManager blocks_;
  HostKVCache cache_;
};

/// A scorer for a model folder or preset (random weights of weights_seed).
SequenceScorer make_scorer(const std::string& model, int32_t max_tokens, uint64_t weights_seed = 0,
                           const std::string& kv_format = "fp32");

/// How closely a KV cache format tracks a reference format on one model: a random prompt of prompt_len
/// tokens (prompt_seed), then `steps` greedy tokens of the reference run fed to both, so the two see the
/// same sequence; after the prompt and each step the logits' KL(reference || format) and whether their
/// top-1 tokens agree.
struct KVQuality {
  double mean_kl = 0, max_kl = 0, agreement = 0;
};
KVQuality measure_kv_quality(const std::string& model, const std::string& reference_format,
                             const std::string& format, int32_t prompt_len, int32_t steps,
                             uint64_t prompt_seed, uint64_t weights_seed = 11);

}  // namespace pagedattn::engine
