#include "engine/engine.h"

#include <algorithm>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <map>

#include "pagedattn/error.h"
#ifdef PAGEDATTN_ENGINE_CUDA
#include "engine/cuda/cuda_runner.h"
#endif
#include "src/cpu/parallel.h"

namespace pagedattn::engine {

CpuRunner::CpuRunner(ModelConfig config, ModelWeightsF32 weights, int32_t num_blocks, int32_t block_size,
                     const std::string& kv_format)
    : num_blocks_(num_blocks),
      model_(config, std::move(weights)),
      cache_(config, num_blocks, block_size, kv_format) {}

std::span<const float> CpuRunner::forward(std::span<const int32_t> tokens, HostBatch& batch) {
  logits_ = model_.forward(tokens, batch, cache_);
  return logits_;
}

std::vector<int32_t> ModelRunner::forward_and_sample(std::span<const int32_t> tokens, HostBatch& batch,
                                                     std::span<const SampleRow> rows) {
  const std::span<const float> logits = forward(tokens, batch);
  const auto count = static_cast<int64_t>(rows.size());
  const int64_t vocab = count > 0 ? static_cast<int64_t>(logits.size()) / count : 0;
  std::vector<int32_t> sampled(rows.size(), -1);
  // Rows draw independently (sample_uniform), so a large step (tens of sequences over a 150k vocabulary)
  // samples on all cores.
  auto sample_row = [&](int64_t i) {
    const SampleRow& r = rows[static_cast<size_t>(i)];
    if (r.params == nullptr) return;
    sampled[static_cast<size_t>(i)] =
        sample_token(logits.subspan(static_cast<size_t>(i * vocab), static_cast<size_t>(vocab)), *r.params,
                     r.seed, r.counter);
  };
  if (count * vocab >= (int64_t{1} << 20)) {
    cpu::parallel_for(count, sample_row);
  } else {
    for (int64_t i = 0; i < count; ++i) sample_row(i);
  }
  return sampled;
}

void CpuRunner::copy_blocks(std::span<const BlockCopy> copies) {
  for (const BlockCopy& c : copies) cache_.copy_block(c.src, c.dst);
}

KVCacheGeometry kv_geometry(const ModelConfig& model, int32_t block_size, const std::string& device,
                            const std::string& kv_cache_dtype) {
  KVCacheGeometry g;
  g.num_layers = model.num_layers;
  g.num_kv_heads = model.num_kv_heads;
  g.head_dim = model.head_dim;
  g.block_size = block_size;
  g.dtype = device == "cpu" ? DType::kFloat32 : DType::kBFloat16;  // the runners' own pools
  if (kv_cache_dtype.rfind("tq_", 0) == 0) {
    g.tq = tq::parse_preset(kv_cache_dtype);
  } else if (kv_cache_dtype != "auto") {
    g.dtype = parse_dtype(kv_cache_dtype);
  }
  return g;
}

ModelConfig resolve_model(const EngineConfig& config) {
  namespace fs = std::filesystem;
  if (fs::is_directory(config.model))
    return ModelConfig::from_file((fs::path(config.model) / "config.json").string());
  return ModelConfig::preset(config.model);
}

namespace {

std::unique_ptr<ModelRunner> make_runner(const EngineConfig& config, const ModelConfig& model) {
  namespace fs = std::filesystem;
  const bool folder = fs::is_directory(config.model);
  if (config.device == "cpu") {
    ModelWeightsF32 w = folder ? ModelWeightsF32::load(model, SafetensorsFolder(config.model))
                               : ModelWeightsF32::random(model, config.weights_seed);
    return std::make_unique<CpuRunner>(model, std::move(w), config.num_blocks, config.block_size,
                                       config.kv_cache_dtype == "auto" ? "fp32" : config.kv_cache_dtype);
  }
  PA_CHECK(config.device == "cuda" || config.device.rfind("cuda:", 0) == 0, "device '", config.device,
           "' is not cpu, cuda or cuda:N");
  const int index = config.device == "cuda" ? 0 : std::stoi(config.device.substr(5));
#ifdef PAGEDATTN_ENGINE_CUDA
  CudaRunnerOptions o;
  o.device = index;
  o.num_blocks = config.num_blocks;
  o.block_size = config.block_size;
  o.kv_cache_dtype = config.kv_cache_dtype;
  o.max_num_seqs = config.max_num_seqs;
  o.max_num_batched_tokens = config.max_num_batched_tokens;
  o.max_model_len = config.max_model_len > 0 ? config.max_model_len : model.max_position_embeddings;
  o.enforce_eager = config.enforce_eager;
  o.gpu_memory_utilization = config.gpu_memory_utilization;
  // A preset's random weights are drawn on the device (an 8B model's weights never pass through the host).
  if (!folder) return make_cuda_runner(model, config.weights_seed, o);
  const ModelWeightsF32 w = ModelWeightsF32::load(model, SafetensorsFolder(config.model));
  return make_cuda_runner(model, w, o);
#else
  PA_CHECK(false, "device ", config.device, " (", index,
           "): this build of the engine has no CUDA runner "
           "(configure with -DPAGEDATTN_CUDA=ON)");
#endif
}

// num_blocks from the byte budget when it is not given.
EngineConfig sized(EngineConfig c, const ModelConfig& m) {
  if (c.num_blocks <= 0 && c.kv_cache_bytes == 0 && c.device != "cpu") {
    PA_CHECK(c.gpu_memory_utilization > 0 && c.gpu_memory_utilization <= 1, "gpu_memory_utilization ",
             c.gpu_memory_utilization, " must be in (0, 1]");
    return c;  // the CUDA runner sizes its pool from the memory left (num_blocks stays 0 until then)
  }
  if (c.num_blocks <= 0) {
    PA_CHECK(c.kv_cache_bytes > 0,
             "the engine needs num_blocks or kv_cache_bytes for its KV pool (or, on CUDA, "
             "gpu_memory_utilization)");
    const int64_t blocks =
        kv_geometry(m, c.block_size, c.device, c.kv_cache_dtype).blocks_for_budget(c.kv_cache_bytes);
    PA_CHECK(blocks >= 1, "kv_cache_bytes ", c.kv_cache_bytes, " holds no block of ",
             kv_geometry(m, c.block_size, c.device, c.kv_cache_dtype).bytes_per_block(), " bytes (",
             c.block_size, " tokens across ", m.num_layers, " layers)");
    c.num_blocks = static_cast<int32_t>(std::min<int64_t>(blocks, INT32_MAX));
  }
  return c;
}

int64_t max_model_len_of(const EngineConfig& c, const ModelConfig& m) {
  return c.max_model_len > 0 ? c.max_model_len : m.max_position_embeddings;
}

BlockManager make_blocks(const EngineConfig& c, const ModelConfig& m) {
  if (c.kv_layout == "contiguous")
    return BlockManager::contiguous(c.num_blocks, c.block_size, max_model_len_of(c, m));
  PA_CHECK(c.kv_layout == "paged", "kv_layout '", c.kv_layout, "' is not one of paged, contiguous");
  return BlockManager(c.num_blocks, c.block_size, c.enable_prefix_caching);
}

// The config with the runner's pool size (the same unless the runner sized it).
EngineConfig with_pool_of(EngineConfig c, const ModelRunner& runner) {
  PA_CHECK(c.num_blocks <= 0 || runner.num_blocks() == c.num_blocks, "the runner holds ", runner.num_blocks(),
           " blocks per layer, the config asks for ", c.num_blocks);
  c.num_blocks = runner.num_blocks();
  return c;
}

SchedulerConfig scheduler_config(const EngineConfig& c, const ModelConfig& m) {
  SchedulerConfig s;
  s.max_num_seqs = c.max_num_seqs;
  s.max_num_batched_tokens = c.max_num_batched_tokens;
  s.max_model_len = max_model_len_of(c, m);
  return s;
}

}  // namespace

Engine::Engine(const EngineConfig& config) : Engine(config, resolve_model(config), nullptr) {}

Engine::Engine(const EngineConfig& config, ModelConfig model, std::unique_ptr<ModelRunner> runner)
    : config_(sized(config, model)),
      model_(std::move(model)),
      runner_(runner ? std::move(runner) : make_runner(config_, model_)),
      blocks_(make_blocks(with_pool_of(config_, *runner_), model_)),
      scheduler_(scheduler_config(config_, model_), blocks_),
      seeds_(config.seed) {
  pool_from_memory_ = config_.num_blocks <= 0;
  config_.num_blocks = blocks_.num_blocks();
  if (config_.max_model_len <= 0) config_.max_model_len = model_.max_position_embeddings;
}

std::string Engine::capacity_summary() const {
  const int64_t tokens = static_cast<int64_t>(config_.num_blocks) * config_.block_size;
  const double mib =
      static_cast<double>(
          kv_geometry(model_, config_.block_size, config_.device, config_.kv_cache_dtype).bytes_per_block()) *
      config_.num_blocks / (1 << 20);
  char line[320];
  std::snprintf(
      line, sizeof(line),
      "KV cache: %d blocks of %d tokens = %lld tokens (%.1f MiB%s); maximum concurrency for %lld tokens per "
      "request: %.2fx",
      config_.num_blocks, config_.block_size, static_cast<long long>(tokens), mib,
      pool_from_memory_
          ? (", from gpu_memory_utilization " + std::to_string(config_.gpu_memory_utilization)).c_str()
          : "",
      static_cast<long long>(config_.max_model_len),
      static_cast<double>(tokens) / static_cast<double>(config_.max_model_len));
  return line;
}

double Engine::now() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

int64_t Engine::add_request(std::vector<int32_t> prompt, SamplingParams params) {
  params.validate();
  PA_CHECK(!prompt.empty(), "add_request: the prompt is empty");
  PA_CHECK(static_cast<int64_t>(prompt.size()) < config_.max_model_len, "add_request: a prompt of ",
           prompt.size(), " tokens leaves no room below max_model_len ", config_.max_model_len);
  for (int32_t t : prompt) {
    PA_CHECK(t >= 0 && t < model_.vocab_size, "add_request: token id ", t, " is outside the vocabulary of ",
             model_.vocab_size);
  }
  auto r = std::make_unique<Request>();
  r->id = next_id_++;
  r->prompt = std::move(prompt);
  r->params = std::move(params);
  r->seed = r->params.seed >= 0 ? static_cast<uint64_t>(r->params.seed) : seeds_();
  r->arrival_s = now();
  stats_.prompt_tokens += static_cast<int64_t>(r->prompt.size());
  scheduler_.add(std::move(r));
  return next_id_ - 1;
}

StepWork Engine::step_work(const HostBatch& batch) const {
  const double weight_bytes =
      2.0 * static_cast<double>(model_.num_parameters() -
                                (model_.tie_word_embeddings ? 0 : model_.vocab_size * model_.hidden_size));
  const double kv_per_token =
      static_cast<double>(
          kv_geometry(model_, config_.block_size, config_.device, config_.kv_cache_dtype).bytes_per_block()) /
      config_.block_size;
  const double matmul_params =
      static_cast<double>(model_.num_parameters() - model_.vocab_size * model_.hidden_size);
  const double attn_per_position =
      4.0 * static_cast<double>(model_.head_dim * model_.num_heads * model_.num_layers);
  StepWork w;
  w.bytes = weight_bytes;
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    const double context = batch.seq_lens[static_cast<size_t>(s)];
    const double fresh =
        batch.query_start_loc[static_cast<size_t>(s) + 1] - batch.query_start_loc[static_cast<size_t>(s)];
    w.bytes += context * kv_per_token;
    // The new tokens' projections (the LM head only for the sampled row) and their causal attention.
    w.flops += 2.0 * matmul_params * fresh + attn_per_position * fresh * (context - (fresh - 1) / 2.0);
  }
  w.flops += 2.0 * static_cast<double>(model_.vocab_size * model_.hidden_size) * batch.num_seqs;
  return w;
}

std::vector<RequestOutput> Engine::step() {
  const double t0 = now();
  std::vector<BlockCopy> copies;
  const std::vector<ScheduledItem> items = scheduler_.schedule(copies);
  std::vector<int32_t> sampled(items.size(), -1);
  double model_s = 0;
  if (!items.empty()) {
    if (!copies.empty()) runner_->copy_blocks(copies);
    std::vector<BatchItem> batch_items;
    std::vector<int32_t> tokens;
    for (const ScheduledItem& it : items) {
      batch_items.push_back({it.request->id, it.num_new_tokens});
      const int64_t first = blocks_.num_computed_tokens(it.request->id);
      for (int64_t t = first; t < first + it.num_new_tokens; ++t) tokens.push_back(it.request->token(t));
    }
    HostBatch batch = build_batch(blocks_, batch_items);
    step_work_.push_back(step_work(batch));
    std::vector<SampleRow> rows(items.size());
    for (size_t i = 0; i < items.size(); ++i) {
      if (!items[i].samples) continue;
      const Request& r = *items[i].request;
      rows[i] = {&r.params, r.seed, r.output.size()};
    }
    const double m0 = now();
    sampled = runner_->forward_and_sample(tokens, batch, rows);
    model_s = now() - m0;
  }
  std::vector<std::unique_ptr<Request>> done =
      scheduler_.complete(items, sampled, now(), model_.eos_token_ids);
  // Every request that drew a token (finished ones now live in `done`, so the items' pointers stay valid),
  // then the ones refused at admission.
  std::vector<RequestOutput> out;
  for (const ScheduledItem& it : items) {
    if (!it.samples) continue;
    ++stats_.generated_tokens;
    out.push_back({it.request->id, it.request->output, it.request->finish, it.request->finish_detail});
  }
  for (auto& r : done) {
    if (r->finish == FinishReason::kAborted) out.push_back({r->id, r->output, r->finish, r->finish_detail});
    finished_.push_back(std::move(r));
  }
  stats_.peak_used_blocks =
      std::max<int64_t>(stats_.peak_used_blocks, blocks_.num_blocks() - blocks_.num_free_blocks());
  stats_.model_seconds += model_s;
  stats_.host_seconds += now() - t0 - model_s;
  return out;
}

std::vector<RequestOutput> Engine::generate(const std::vector<std::vector<int32_t>>& prompts,
                                            const SamplingParams& params) {
  std::vector<int64_t> ids;
  for (const auto& p : prompts) ids.push_back(add_request(p, params));
  std::map<int64_t, RequestOutput> results;
  while (has_unfinished()) {
    for (auto& o : step()) {
      if (o.finish != FinishReason::kNone) results[o.id] = std::move(o);
    }
  }
  std::vector<RequestOutput> out;
  for (int64_t id : ids) out.push_back(results[id]);
  return out;
}

std::vector<std::unique_ptr<Request>> Engine::take_finished() {
  return std::exchange(finished_, {});
}

EngineStats Engine::stats() const {
  EngineStats s = stats_;
  s.scheduler = scheduler_.stats();
  s.num_blocks = blocks_.num_blocks();
  s.free_blocks = blocks_.num_free_blocks();
  s.block_bytes =
      kv_geometry(model_, config_.block_size, config_.device, config_.kv_cache_dtype).bytes_per_block();
  return s;
}

}  // namespace pagedattn::engine
