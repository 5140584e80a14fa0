#include "engine/scorer.h"

#include <filesystem>

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

}  // namespace pagedattn::engine
