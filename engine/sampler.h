// Per-request sampling parameters and the sampler (host side; the GPU sampler will implement the same rule).
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace pagedattn::engine {

struct SamplingParams {
  float temperature = 1.0f;             ///< 0: greedy (argmax, the lowest id among ties)
  int top_k = 0;                        ///< keep the k most likely tokens; 0 = all
  float top_p = 1.0f;                   ///< keep the smallest set whose probability reaches top_p; 1 = all
  int64_t seed = -1;                    ///< per-request seed; -1: drawn from the engine's seed
  int max_tokens = 16;                  ///< tokens to generate at most
  bool ignore_eos = false;              ///< keep going past EOS (benchmarks)
  std::vector<int32_t> stop_token_ids;  ///< finish (after emitting it) on any of these, besides EOS
  void validate() const;
};

/// Draws the next token from one row of logits. Greedy when temperature is 0; otherwise softmax of
/// logits / temperature restricted by top-k then top-p, sampled with `rng` (one draw per token, so a
/// request's tokens depend on its own seed only, never on its neighbours in the batch).
int32_t sample_token(std::span<const float> logits, const SamplingParams& p, std::mt19937_64& rng);

}  // namespace pagedattn::engine
