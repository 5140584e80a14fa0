#include "engine/scorer.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

#include "engine/engine.h"
#include "pagedattn/error.h"

namespace pagedattn::engine {

SequenceScorer::SequenceScorer(const ModelConfig& config, ModelWeightsF32 weights, int32_t max_tokens,
                               int32_t block_size, const std::string& kv_format)
    : model_(config, std::move(weights)),
      blocks_((max_tokens + block_size - 1) / block_size, block_size, /*enable_prefix_caching=*/false),
      cache_(config, (max_tokens + block_size - 1) / block_size, block_size, kv_format) {}

std::vector<float> SequenceScorer::feed(std::span<const int32_t> tokens) {
  PA_CHECK(!tokens.empty(), "SequenceScorer::feed: no tokens");
  const std::vector<TokenId> ids(tokens.begin(), tokens.end());
  if (!blocks_.contains(0)) {
    blocks_.allocate(0, ids);
  } else {
    PA_CHECK(blocks_.can_append(0, static_cast<int64_t>(ids.size())), "SequenceScorer: past its ",
             blocks_.num_blocks() * blocks_.block_size(), " tokens");
    blocks_.append(0, ids);
  }
  const BatchItem item{0, static_cast<int64_t>(ids.size())};
  HostBatch batch = build_batch(blocks_, std::span<const BatchItem>(&item, 1));
  std::vector<float> logits = model_.forward(tokens, batch, cache_);
  blocks_.mark_computed(0, blocks_.num_tokens(0));
  return logits;
}

SequenceScorer make_scorer(const std::string& model, int32_t max_tokens, uint64_t weights_seed,
                           const std::string& kv_format) {
  EngineConfig c;
  c.model = model;
  const ModelConfig config = resolve_model(c);
  ModelWeightsF32 w = std::filesystem::is_directory(model)
                          ? ModelWeightsF32::load(config, SafetensorsFolder(model))
                          : ModelWeightsF32::random(config, weights_seed);
  return SequenceScorer(config, std::move(w), max_tokens, 16, kv_format);
}

namespace {

// KL(softmax(a) || softmax(b)) in double precision.
double kl_divergence(const std::vector<float>& a, const std::vector<float>& b) {
  const float ma = *std::max_element(a.begin(), a.end()), mb = *std::max_element(b.begin(), b.end());
  double za = 0, zb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    za += std::exp(static_cast<double>(a[i] - ma));
    zb += std::exp(static_cast<double>(b[i] - mb));
  }
  double k = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double la = a[i] - ma - std::log(za), lb = b[i] - mb - std::log(zb);
    k += std::exp(la) * (la - lb);
  }
  return k;
}

int32_t argmax(const std::vector<float>& x) {
  return static_cast<int32_t>(std::max_element(x.begin(), x.end()) - x.begin());
}

}  // namespace

KVQuality measure_kv_quality(const std::string& model, const std::string& reference_format,
                             const std::string& format, int32_t prompt_len, int32_t steps,
                             uint64_t prompt_seed, uint64_t weights_seed) {
  PA_CHECK(prompt_len >= 1 && steps >= 1, "measure_kv_quality: prompt_len and steps must be >= 1, got ",
           prompt_len, " and ", steps);
  EngineConfig c;
  c.model = model;
  const int64_t vocab = resolve_model(c).vocab_size;
  const int32_t max_tokens = prompt_len + steps + 16;
  SequenceScorer ref = make_scorer(model, max_tokens, weights_seed, reference_format);
  SequenceScorer test = make_scorer(model, max_tokens, weights_seed, format);
  std::mt19937_64 rng(prompt_seed);
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_len));
  for (auto& t : prompt) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  std::vector<float> a = ref.feed(prompt), b = test.feed(prompt);
  KVQuality q;
  int32_t agree = 0;
  for (int32_t s = 0; s < steps; ++s) {
    const double d = kl_divergence(a, b);
    q.mean_kl += d / steps;
    q.max_kl = std::max(q.max_kl, d);
    const int32_t next = argmax(a);
    agree += next == argmax(b);
    const std::vector<int32_t> token{next};  // both follow the reference run
    a = ref.feed(token);
    b = test.feed(token);
  }
  q.agreement = static_cast<double>(agree) / steps;
  return q;
}

}  // namespace pagedattn::engine
