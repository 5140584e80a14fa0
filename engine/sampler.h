// Per-request sampling parameters and the sampler (host side; the GPU sampler will implement the same rule).
#pragma once

#include <cstdint>
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

#if defined(__CUDACC__)
#define PAGEDATTN_ENGINE_HD __host__ __device__
#else
#define PAGEDATTN_ENGINE_HD
#endif

/// The random numbers of sampling, one uniform in (0, 1) per (request stream, draw, token id): a
/// counter-based hash (splitmix64's finalizer), so the CPU and the GPU sampler draw the same numbers, a
/// request's tokens depend on its own seed and token index only (never on its neighbours in the batch, the
/// batch's order or a preemption), and no generator state lives anywhere.
PAGEDATTN_ENGINE_HD inline float sample_uniform(uint64_t seed, uint64_t counter, uint32_t id) {
  uint64_t x = seed ^ (counter * 0x9e3779b97f4a7c15ull) ^ (static_cast<uint64_t>(id) * 0xd1b54a32d192ed03ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  x ^= x >> 31;
  return (static_cast<float>(x >> 41) + 0.5f) * (1.0f / 8388608.0f);  // 23 bits + 1/2: exact, never 0 or 1
}

/// Draws the next token from one row of logits. Greedy when temperature is 0 (argmax, the lowest id among
/// ties); otherwise softmax(logits / temperature) restricted to the top-k candidates (by logit, ties by id)
/// and then to the top-p nucleus (the shortest prefix of that order whose share of the top-k mass reaches
/// top_p), sampled by the Gumbel-max rule: argmax over the kept ids of logit / T - log(-log(u)) with u =
/// sample_uniform(seed, counter, id), the lowest id among ties. `counter` is the index of the token being
/// drawn (its output position). The GPU sampler (engine/cuda/sampling.cu) implements the same rule.
int32_t sample_token(std::span<const float> logits, const SamplingParams& p, uint64_t seed, uint64_t counter);

}  // namespace pagedattn::engine
