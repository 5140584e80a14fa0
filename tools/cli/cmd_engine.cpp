// `pagedattn generate`, `pagedattn bench-engine` and `pagedattn kv-quality`: the engine from the command line
// (flags of the benchmark named as in `vllm bench throughput`). The model is a Hugging Face folder or a
// preset with random weights.
#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "commands.h"
#include "engine/engine.h"
#include "engine/scorer.h"
#ifdef PAGEDATTN_ENGINE_CUDA
#include "engine/cuda/ceilings.h"
#endif
#include "pagedattn/error.h"

namespace pagedattn::cli {
namespace {

engine::SamplingParams sampling(const SamplingOptions& s) {
  engine::SamplingParams p;
  p.temperature = s.temperature;
  p.top_k = s.top_k;
  p.top_p = s.top_p;
  p.seed = s.seed;
  p.max_tokens = s.max_tokens;
  p.ignore_eos = s.ignore_eos;
  return p;
}

engine::EngineConfig engine_config(const EngineOptions& e) {
  engine::EngineConfig c;
  c.model = e.model;
  c.block_size = e.block_size;
  c.num_blocks = e.num_blocks;
  c.max_num_seqs = e.max_num_seqs;
  c.max_num_batched_tokens = e.max_num_batched_tokens;
  c.max_model_len = e.max_model_len;
  c.enable_prefix_caching = !e.no_prefix_caching;
  c.kv_layout = e.kv_layout;
  c.device = e.device;
  c.kv_cache_dtype = e.kv_cache_dtype;
  if (e.gpu_memory_utilization > 0) c.gpu_memory_utilization = e.gpu_memory_utilization;
  c.seed = e.seed;
  return c;
}

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double at = p / 100.0 * static_cast<double>(v.size() - 1);
  const size_t lo = static_cast<size_t>(at);
  const size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (at - static_cast<double>(lo)) * (v[hi] - v[lo]);
}

}  // namespace

int run_generate(const GenerateOptions& o) {
  // The prompts first: a malformed one is reported before any work (loading a model can take a while).
  std::vector<std::vector<int32_t>> prompts;
  for (const std::string& text : o.prompt_ids) {
    std::vector<int32_t> ids;
    size_t at = 0;
    while (at < text.size()) {
      const size_t comma = std::min(text.find(',', at), text.size());
      const std::string item = text.substr(at, comma - at);
      PA_CHECK(!item.empty() && item.size() < 10 && item.find_first_not_of("0123456789") == std::string::npos,
               "--prompt-ids '", text, "': expected comma-separated token ids");
      ids.push_back(std::stoi(item));
      at = comma + 1;
    }
    prompts.push_back(std::move(ids));
  }
  engine::Engine e(engine_config(o.engine));
  std::fprintf(stderr, "%s\n", e.capacity_summary().c_str());
  const auto outputs = e.generate(prompts, sampling(o.sampling));
  for (size_t i = 0; i < outputs.size(); ++i) {
    std::printf("prompt %zu (%zu tokens) -> %s:", i, prompts[i].size(),
                engine::finish_reason_name(outputs[i].finish));
    for (int32_t t : outputs[i].tokens) std::printf(" %d", t);
    if (!outputs[i].finish_detail.empty()) std::printf(" (%s)", outputs[i].finish_detail.c_str());
    std::printf("\n");
  }
  return 0;
}

int run_bench_engine(const BenchEngineOptions& o) {
  engine::EngineConfig config = engine_config(o.engine);
  config.enforce_eager = o.enforce_eager;
  const engine::ModelConfig model = engine::resolve_model(config);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int> outs;
  if (!o.requests_file.empty()) {
    // One request per line: its output length, then its prompt's token ids (a workload fixed elsewhere,
    // e.g. W1's Python random.seed(0) requests written by bench/engine_bench.py).
    std::ifstream f(o.requests_file);
    PA_CHECK(f.good(), "--requests-file ", o.requests_file, ": cannot read the file");
    std::string line;
    for (int64_t number = 1; std::getline(f, line); ++number) {
      std::istringstream in(line);
      int out = 0;
      if (!(in >> out)) continue;  // a blank line
      std::vector<int32_t> prompt;
      for (int64_t id = 0; in >> id;) {
        PA_CHECK(id >= 0 && id < model.vocab_size, "--requests-file line ", number, ": token id ", id,
                 " is outside the vocabulary of ", model.vocab_size);
        prompt.push_back(static_cast<int32_t>(id));
      }
      PA_CHECK(in.eof() && out >= 1 && !prompt.empty(), "--requests-file line ", number,
               ": expected an output length >= 1 and then at least one token id");
      outs.push_back(out);
      prompts.push_back(std::move(prompt));
    }
    PA_CHECK(!prompts.empty(), "--requests-file ", o.requests_file, " holds no request");
  } else {
    // Prompt and output lengths uniform in [len (1 - r), len (1 + r)], token ids uniform over the vocabulary.
    std::mt19937_64 rng(o.engine.seed);
    auto length = [&](int len) {
      const int lo = std::max(1, static_cast<int>(std::floor(len * (1 - o.random_range_ratio))));
      const int hi = std::max(lo, static_cast<int>(std::ceil(len * (1 + o.random_range_ratio))));
      return std::uniform_int_distribution<int>(lo, hi)(rng);
    };
    for (int i = 0; i < o.num_prompts; ++i) {
      std::vector<int32_t> p(static_cast<size_t>(length(o.input_len)));
      for (auto& t : p) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(model.vocab_size));
      outs.push_back(length(o.output_len));
      prompts.push_back(std::move(p));
    }
  }
  const int num_prompts = static_cast<int>(prompts.size());
  int64_t need_tokens = 0;
  for (int i = 0; i < num_prompts; ++i)
    need_tokens += static_cast<int64_t>(prompts[static_cast<size_t>(i)].size()) +
                   outs[static_cast<size_t>(i)] + config.block_size;
  const bool runner_sizes_pool = config.num_blocks <= 0 && o.engine.gpu_memory_utilization > 0 &&
                                 config.device != "cpu" && o.kv_cache_gib <= 0;
  if (config.num_blocks <= 0 &&
      !runner_sizes_pool) {  // enough for every request at once, within --kv-cache-gib
    int64_t blocks = need_tokens / config.block_size + 1;
    if (o.kv_cache_gib > 0) {
      const auto budget = static_cast<size_t>(o.kv_cache_gib * static_cast<double>(size_t{1} << 30));
      blocks =
          std::min(blocks, engine::kv_geometry(model, config.block_size, config.device, config.kv_cache_dtype)
                               .blocks_for_budget(budget));
    }
    PA_CHECK(blocks >= 1, "--kv-cache-gib ", o.kv_cache_gib, " holds no block");
    config.num_blocks = static_cast<int32_t>(std::min<int64_t>(blocks, INT32_MAX));
  }
  engine::Engine e(config, model, nullptr);
  std::fprintf(stderr, "%s\n", e.capacity_summary().c_str());
  std::fprintf(stderr,
               "bench-engine: %s, %d prompts (%s), KV pool %d blocks of %d "
               "(%lld tokens), max_num_seqs %d, max_num_batched_tokens %lld, %s\n",
               o.engine.model.c_str(), num_prompts,
               o.requests_file.empty()
                   ? ("input " + std::to_string(o.input_len) + ", output " + std::to_string(o.output_len) +
                      ", range ratio " + std::to_string(o.random_range_ratio))
                         .c_str()
                   : o.requests_file.c_str(),
               e.blocks().num_blocks(), config.block_size,
               static_cast<long long>(e.blocks().num_blocks()) * config.block_size, config.max_num_seqs,
               static_cast<long long>(config.max_num_batched_tokens),
               config.device == "cpu" ? "eager (CPU runner)"
               : o.enforce_eager      ? "eager (--enforce-eager)"
                                      : "CUDA graphs for decode steps");
  engine::SamplingParams p = sampling(o.sampling);
  p.ignore_eos = true;
  if (o.warmup) {  // one short untimed generate first (W1's rule): first-call costs stay out of the timing
    // Its prompts are fresh random ids of the first and last requests' lengths: a warm-up over the requests'
    // own prompts would leave their blocks in the prefix cache and make their prefill free.
    std::mt19937_64 warm_rng(o.engine.seed ^ 0x5741524d55505f31ull);
    std::vector<std::vector<int32_t>> warm;
    for (size_t i : {size_t{0}, prompts.size() - 1}) {
      std::vector<int32_t> w(prompts[i].size());
      for (auto& t : w) t = static_cast<int32_t>(warm_rng() % static_cast<uint64_t>(model.vocab_size));
      warm.push_back(std::move(w));
    }
    engine::SamplingParams w = p;
    w.max_tokens = 4;
    e.generate(warm, w);
    e.take_finished();
  }
  const engine::EngineStats before = e.stats();
  const size_t steps_before = e.step_work().size();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < num_prompts; ++i) {
    p.max_tokens = outs[static_cast<size_t>(i)];
    e.add_request(prompts[static_cast<size_t>(i)], p);
  }
  int done = 0;
  while (e.has_unfinished()) {
    for (const auto& out : e.step()) {
      if (out.finish == engine::FinishReason::kNone) continue;
      ++done;
      const int width = 30, filled = width * done / num_prompts;
      std::fprintf(stderr, "\r[%s%s] %d/%d requests", std::string(static_cast<size_t>(filled), '#').c_str(),
                   std::string(static_cast<size_t>(width - filled), '-').c_str(), done, num_prompts);
    }
  }
  std::fprintf(stderr, "\n");
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::vector<double> ttft, tpot, e2e;
  int64_t out_tokens = 0, in_tokens = 0;
  int aborted = 0;
  for (const auto& r : e.take_finished()) {
    if (r->finish == engine::FinishReason::kAborted) {
      ++aborted;
      continue;
    }
    in_tokens += static_cast<int64_t>(r->prompt.size());
    out_tokens += static_cast<int64_t>(r->output.size());
    ttft.push_back(r->first_token_s - r->arrival_s);
    e2e.push_back(r->finish_s - r->arrival_s);
    if (r->output.size() > 1)
      tpot.push_back((e2e.back() - ttft.back()) / static_cast<double>(r->output.size() - 1));
  }
  engine::EngineStats s = e.stats();
  s.model_seconds -= before.model_seconds;
  s.host_seconds -= before.host_seconds;
  const int64_t steps = s.scheduler.steps - before.scheduler.steps;
  // The roofline over the timed steps against ceilings measured now on this card (CUDA), or none (CPU).
  double copy_bw = 0, matmul = 0, roofline_s = 0, bytes = 0, flops = 0;
#ifdef PAGEDATTN_ENGINE_CUDA
  if (config.device != "cpu") {
    const engine::DeviceCeilings c =
        engine::measure_ceilings(config.device == "cuda" ? 0 : std::stoi(config.device.substr(5)));
    copy_bw = c.copy_bytes_per_s;
    matmul = c.matmul_flops_per_s;
  }
#endif
  const auto& work = e.step_work();
  for (size_t i = steps_before; i < work.size(); ++i) {
    bytes += work[i].bytes;
    flops += work[i].flops;
    if (copy_bw > 0) roofline_s += std::max(work[i].bytes / copy_bw, work[i].flops / matmul);
  }
  const double weight_bytes = 2.0 * static_cast<double>(model.num_parameters());
  const double kv_peak_bytes = static_cast<double>(s.peak_used_blocks) * static_cast<double>(s.block_bytes);
  std::printf("requests %d (aborted %d), wall %.3f s\n", num_prompts, aborted, wall);
  std::printf("throughput: %.2f requests/s, %.1f output tok/s, %.1f total tok/s\n", num_prompts / wall,
              static_cast<double>(out_tokens) / wall, static_cast<double>(in_tokens + out_tokens) / wall);
  std::printf("TTFT ms p50 %.2f p99 %.2f | TPOT ms p50 %.3f p99 %.3f | E2E ms p50 %.2f p99 %.2f\n",
              1e3 * percentile(ttft, 50), 1e3 * percentile(ttft, 99), 1e3 * percentile(tpot, 50),
              1e3 * percentile(tpot, 99), 1e3 * percentile(e2e, 50), 1e3 * percentile(e2e, 99));
  std::printf(
      "steps %lld, most requests at once %lld, preemptions %lld, prefix-cache hit tokens %lld, model %.3f s, "
      "host %.3f s (%.1f%% of the run)\n",
      static_cast<long long>(steps), static_cast<long long>(s.scheduler.max_running),
      static_cast<long long>(s.scheduler.preemptions), static_cast<long long>(s.scheduler.prefix_hit_tokens),
      s.model_seconds, s.host_seconds, 100.0 * s.host_seconds / wall);
  std::printf("memory: weights %.2f GiB, KV in use at peak %.2f GiB (%lld of %lld blocks)\n",
              weight_bytes / (1 << 30), kv_peak_bytes / (1 << 30), static_cast<long long>(s.peak_used_blocks),
              static_cast<long long>(s.num_blocks));
  if (roofline_s > 0) {
    std::printf(
        "roofline: %.1f GB read, %.1f TFLOP over the run; ceilings copy %.2f TB/s, bf16 GEMM %.0f TFLOP/s -> "
        "%.3f s, the run reaches %.0f%% of it\n",
        bytes / 1e9, flops / 1e12, copy_bw / 1e12, matmul / 1e12, roofline_s, 100.0 * roofline_s / wall);
  }
  if (!o.output_json.empty()) {
    std::ofstream f(o.output_json);
    PA_CHECK(f.good(), "--output-json ", o.output_json, ": cannot write the file");
    f << "{\"model\": \"" << o.engine.model << "\", \"device\": \"" << config.device
      << "\", \"kv_cache_dtype\": \"" << config.kv_cache_dtype
      << "\", \"enforce_eager\": " << (o.enforce_eager ? "true" : "false")
      << ", \"num_prompts\": " << num_prompts << ", \"input_len\": " << o.input_len
      << ", \"output_len\": " << o.output_len << ", \"prompt_tokens\": " << in_tokens
      << ", \"output_tokens\": " << out_tokens << ", \"elapsed_time\": " << wall
      << ", \"requests_per_second\": " << num_prompts / wall
      << ", \"output_tokens_per_second\": " << static_cast<double>(out_tokens) / wall
      << ", \"tokens_per_second\": " << static_cast<double>(in_tokens + out_tokens) / wall
      << ", \"ttft_p50_ms\": " << 1e3 * percentile(ttft, 50)
      << ", \"ttft_p99_ms\": " << 1e3 * percentile(ttft, 99)
      << ", \"tpot_p50_ms\": " << 1e3 * percentile(tpot, 50)
      << ", \"tpot_p99_ms\": " << 1e3 * percentile(tpot, 99)
      << ", \"e2e_p50_ms\": " << 1e3 * percentile(e2e, 50)
      << ", \"e2e_p99_ms\": " << 1e3 * percentile(e2e, 99) << ", \"kv_layout\": \"" << o.engine.kv_layout
      << "\", \"max_concurrency\": " << s.scheduler.max_running
      << ", \"preemptions\": " << s.scheduler.preemptions
      << ", \"prefix_hit_tokens\": " << s.scheduler.prefix_hit_tokens - before.scheduler.prefix_hit_tokens
      << ", \"steps\": " << steps << ", \"model_seconds\": " << s.model_seconds
      << ", \"host_fraction\": " << s.host_seconds / wall << ", \"weight_bytes\": " << weight_bytes
      << ", \"kv_peak_bytes\": " << kv_peak_bytes
      << ", \"kv_pool_bytes\": " << static_cast<double>(s.num_blocks) * static_cast<double>(s.block_bytes)
      << ", \"kv_bytes_per_token\": " << static_cast<double>(s.block_bytes) / config.block_size
      << ", \"max_model_len\": " << config.max_model_len << ", \"num_blocks\": " << s.num_blocks
      << ", \"roofline_bytes\": " << bytes << ", \"roofline_flops\": " << flops
      << ", \"copy_bytes_per_s\": " << copy_bw << ", \"matmul_flops_per_s\": " << matmul
      << ", \"roofline_seconds\": " << roofline_s
      << ", \"roofline_fraction\": " << (roofline_s > 0 ? roofline_s / wall : 0.0) << "}\n";
  }
  return aborted == 0 ? 0 : 1;
}

int run_kv_quality(const KvQualityOptions& o) {
  std::printf(
      "KV format quality on %s (CPU runner): a %d-token random prompt (seed %llu), then %d greedy steps "
      "of the %s run fed to both; per step KL(%s || format) of the logits and top-1 agreement\n\n",
      o.model.c_str(), o.prompt_len, static_cast<unsigned long long>(o.seed), o.steps, o.reference.c_str(),
      o.reference.c_str());
  std::printf("| cache | mean KL | max KL | greedy agreement |\n|---|---|---|---|\n");
  for (const std::string& format : o.formats) {
    const engine::KVQuality q =
        engine::measure_kv_quality(o.model, o.reference, format, o.prompt_len, o.steps, o.seed);
    std::printf("| %s | %.5f | %.4f | %.3f |\n", format.c_str(), q.mean_kl, q.max_kl, q.agreement);
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace pagedattn::cli
