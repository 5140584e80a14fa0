// The engine end to end on the CPU with tiny models: sampling rules, greedy generations that must not depend
// on batching, chunking, preemption or prefix-cache hits, scheduler properties under random load, and bad
// requests refused without disturbing the others.
#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "engine/engine.h"
#include "test_util.h"

namespace pagedattn::engine {
namespace {

TEST(Sampler, GreedyTopKTopPAndSeeds) {
  std::vector<float> logits = {0.1f, 2.0f, 2.0f, -1.0f, 1.5f};
  const uint64_t seed = test::run_seed();
  SamplingParams greedy;
  greedy.temperature = 0;
  EXPECT_EQ(sample_token(logits, greedy, seed, 0), 1);  // the lowest id among ties
  SamplingParams top1;
  top1.top_k = 1;
  for (uint64_t i = 0; i < 20; ++i) EXPECT_EQ(sample_token(logits, top1, seed, i), 1);
  // top_p small enough keeps only the two best (ids 1, 2: 2 x 0.35 of the mass); the draws cover both.
  SamplingParams nucleus;
  nucleus.top_p = 0.5f;
  std::set<int32_t> seen;
  for (uint64_t i = 0; i < 200; ++i) seen.insert(sample_token(logits, nucleus, seed, i));
  EXPECT_EQ(seen, (std::set<int32_t>{1, 2}));
  // Frequencies follow softmax(logits / T) over the draws of one stream.
  SamplingParams warm;
  warm.temperature = 0.7f;
  std::vector<int> count(5, 0);
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++count[static_cast<size_t>(sample_token(logits, warm, seed + 1, i))];
  double z = 0;
  for (float l : logits) z += std::exp(l / 0.7);
  for (size_t i = 0; i < logits.size(); ++i) {
    const double p = std::exp(logits[i] / 0.7) / z;
    EXPECT_NEAR(count[i] / static_cast<double>(n), p, 4 * std::sqrt(p * (1 - p) / n) + 1e-3) << i;
  }
  // A draw is a function of (seed, counter) alone; other seeds give other draws.
  int differ = 0;
  for (uint64_t i = 0; i < 50; ++i) {
    EXPECT_EQ(sample_token(logits, warm, 99, i), sample_token(logits, warm, 99, i));
    differ += sample_token(logits, warm, 99, i) != sample_token(logits, warm, 100, i);
  }
  EXPECT_GT(differ, 10);
  // The uniforms stay inside (0, 1) at the hash's extremes.
  for (uint64_t c : {0ull, 1ull, ~0ull})
    for (uint32_t id : {0u, 1u, ~0u}) {
      const float u = sample_uniform(~c, c, id);
      EXPECT_GT(u, 0.0f);
      EXPECT_LT(u, 1.0f);
    }
  SamplingParams bad;
  bad.top_p = 0;
  EXPECT_ERROR_CONTAINS(bad.validate(), "top_p must be in (0, 1]");
}

// The sampler on a real vocabulary's size against the rule written out with a full sort: every draw lies in
// the reference's top-k/top-p set, the most likely candidates come at their renormalized rates, and flat
// logits (the candidates' order decided by ids alone) keep exactly the id prefix the rule names.
TEST(Sampler, LargeVocabularyFollowsTheSortedRule) {
  std::mt19937_64 rng(test::run_seed());
  const uint64_t seed = rng();
  const int32_t n = 50000;
  std::vector<float> logits(n);
  std::normal_distribution<float> normal(0.0f, 2.5f);
  for (float& l : logits) l = normal(rng);
  struct Case {
    int top_k;
    float top_p, temperature;
  };
  for (const Case c : {Case{0, 0.9f, 1.0f}, Case{40, 1.0f, 1.0f}, Case{40, 0.8f, 0.7f}, Case{0, 0.3f, 1.0f},
                       Case{3000, 0.95f, 1.3f}, Case{0, 1.0f, 0.5f}}) {
    SCOPED_TRACE(testing::Message() << "top_k " << c.top_k << " top_p " << c.top_p << " T " << c.temperature);
    std::vector<int32_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    order.resize(static_cast<size_t>(c.top_k > 0 ? c.top_k : n));
    std::vector<double> w;
    double mass = 0;
    for (int32_t id : order)
      mass += w.emplace_back(std::exp((logits[id] - logits[order[0]]) / c.temperature));
    size_t keep = order.size();
    double acc = 0;
    for (size_t i = 0; i < order.size() && c.top_p < 1.0f; ++i) {
      if ((acc += w[i]) >= c.top_p * mass) {
        keep = i + 1;
        break;
      }
    }
    double kept = 0;
    for (size_t i = 0; i < keep; ++i) kept += w[i];
    std::map<int32_t, int> count;
    SamplingParams p;
    p.top_k = c.top_k;
    p.top_p = c.top_p;
    p.temperature = c.temperature;
    const int draws = 4000;
    for (int i = 0; i < draws; ++i) ++count[sample_token(logits, p, seed, i)];
    const std::set<int32_t> allowed(order.begin(), order.begin() + static_cast<int64_t>(keep));
    for (const auto& [id, times] : count)
      ASSERT_TRUE(allowed.count(id)) << "drew " << id << " outside the set";
    for (size_t i = 0; i < std::min<size_t>(3, keep); ++i) {
      const double prob = w[i] / kept, got = count[order[i]] / static_cast<double>(draws);
      EXPECT_NEAR(got, prob, 5 * std::sqrt(prob * (1 - prob) / draws) + 1e-3) << "rank " << i;
    }
  }
  // Flat logits: candidates tie everywhere, so ids order them; top_p 0.5 keeps ids [0, n / 2).
  const std::vector<float> flat(n, 0.25f);
  SamplingParams half;
  half.top_p = 0.5f;
  int32_t highest = 0;
  for (int i = 0; i < 2000; ++i) highest = std::max(highest, sample_token(flat, half, seed, i));
  EXPECT_LT(highest, n / 2);
  EXPECT_GT(highest, n / 2 - 500);  // 2000 uniform draws over [0, 25000) reach its top 2% surely
}

EngineConfig tiny(const char* model, int32_t blocks, int64_t budget) {
  EngineConfig c;
  c.model = model;
  c.weights_seed = 3;
  c.block_size = 8;
  c.num_blocks = blocks;
  c.max_num_batched_tokens = budget;
  c.max_num_seqs = 8;
  return c;
}

std::vector<int32_t> random_prompt(std::mt19937_64& rng, int len) {
  std::vector<int32_t> p(len);
  for (auto& t : p) t = static_cast<int32_t>(rng() % 512);
  return p;
}

// Greedy tokens of each prompt, run alone in a roomy engine: the reference for every batching variant.
std::vector<std::vector<int32_t>> alone(const char* model, const std::vector<std::vector<int32_t>>& prompts,
                                        const SamplingParams& p) {
  std::vector<std::vector<int32_t>> out;
  for (const auto& prompt : prompts) {
    Engine e(tiny(model, 256, 4096));
    out.push_back(e.generate({prompt}, p)[0].tokens);
  }
  return out;
}

// Batched with a small token budget (chunked prefill mixed with decodes) and a pool small enough to force
// preemptions; shared prompt prefixes hit the prefix cache. Every request gets exactly the tokens it gets
// alone, the pool is whole again at the end, and both preemption and prefix hits happened.
TEST(Engine, BatchingChunkingPreemptionAndPrefixHitsDoNotChangeTokens) {
  for (const char* model : {"tiny-llama", "tiny-qwen3"}) {
    SCOPED_TRACE(model);
    std::mt19937_64 rng(test::run_seed());
    const std::vector<int32_t> shared = random_prompt(rng, 24);
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 8; ++i) {
      std::vector<int32_t> p = i % 2 ? shared : std::vector<int32_t>{};
      // Fixed lengths (random tokens): scheduling depends on lengths and prefix structure only, so the
      // preemptions and prefix hits asserted below happen for every seed.
      const auto tail = random_prompt(rng, 10 + (i * 7) % 25);
      p.insert(p.end(), tail.begin(), tail.end());
      prompts.push_back(p);
    }
    SamplingParams greedy;
    greedy.temperature = 0;
    greedy.max_tokens = 12;
    greedy.ignore_eos = true;
    const auto want = alone(model, prompts, greedy);
    Engine e(tiny(model, 12, 24));  // 12 blocks of 8: far less than 8 requests need at once
    const auto got = e.generate(prompts, greedy);
    for (size_t i = 0; i < prompts.size(); ++i) {
      EXPECT_EQ(got[i].tokens, want[i]) << "request " << i;
      EXPECT_EQ(got[i].finish, FinishReason::kLength);
    }
    const EngineStats s = e.stats();
    EXPECT_GT(s.scheduler.preemptions, 0);
    EXPECT_GT(s.scheduler.prefix_hit_tokens, 0);
    EXPECT_EQ(e.blocks().num_free_blocks(), e.blocks().num_blocks());
    EXPECT_EQ(s.generated_tokens, 8 * 12);
  }
}

// Random arrivals, lengths, budgets and pool sizes: every request finishes with exactly max_tokens tokens
// (ignore_eos), greedy tokens match the request alone, no block leaks.
TEST(Engine, RandomLoadProperties) {
  std::mt19937_64 rng(test::run_seed());
  for (int round = 0; round < 4; ++round) {
    const int32_t blocks = 12 + static_cast<int32_t>(rng() % 40);
    const int64_t budget = 8 + static_cast<int64_t>(rng() % 64);
    SCOPED_TRACE(testing::Message() << "blocks " << blocks << " budget " << budget);
    Engine e(tiny("tiny-llama", blocks, budget));
    SamplingParams greedy;
    greedy.temperature = 0;
    greedy.ignore_eos = true;
    std::map<int64_t, std::pair<std::vector<int32_t>, int>> sent;  // id -> prompt, max_tokens
    std::map<int64_t, std::vector<int32_t>> finished;
    int arrivals = 0;
    while (arrivals < 10 || e.has_unfinished()) {
      if (arrivals < 10 && rng() % 3 == 0) {  // a new request between steps
        SamplingParams p = greedy;
        p.max_tokens = 1 + static_cast<int>(rng() % 10);
        auto prompt = random_prompt(rng, 1 + static_cast<int>(rng() % 40));
        sent[e.add_request(prompt, p)] = {prompt, p.max_tokens};
        ++arrivals;
      }
      for (const auto& o : e.step()) {
        if (o.finish != FinishReason::kNone) {
          ASSERT_EQ(finished.count(o.id), 0u);
          finished[o.id] = o.tokens;
        }
      }
    }
    ASSERT_EQ(finished.size(), sent.size());
    for (const auto& [id, req] : sent) {
      EXPECT_EQ(static_cast<int>(finished[id].size()), req.second) << "request " << id;
      SamplingParams p = greedy;
      p.max_tokens = req.second;
      EXPECT_EQ(finished[id], alone("tiny-llama", {req.first}, p)[0]) << "request " << id;
    }
    EXPECT_EQ(e.blocks().num_free_blocks(), e.blocks().num_blocks());
  }
}

TEST(Engine, StopsOnEosAndStopTokensAndRefusesWhatCannotFit) {
  Engine e(tiny("tiny-llama", 6, 64));  // 6 blocks of 8 = 48 tokens
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 5;
  std::mt19937_64 rng(1);
  const auto prompt = random_prompt(rng, 10);
  const auto first = e.generate({prompt}, greedy)[0].tokens;
  ASSERT_EQ(first.size(), 5u);
  // Stop on the third token it would produce: it is emitted, then the request finishes.
  SamplingParams stop = greedy;
  stop.stop_token_ids = {first[2]};
  const auto stopped = e.generate({prompt}, stop)[0];
  EXPECT_EQ(stopped.finish, FinishReason::kStop);
  EXPECT_EQ(stopped.tokens, std::vector<int32_t>(first.begin(), first.begin() + 3));
  // A prompt longer than the whole pool is refused with a reason; the other request still completes.
  const int64_t big = e.add_request(random_prompt(rng, 60), greedy);
  const int64_t ok = e.add_request(prompt, greedy);
  std::map<int64_t, RequestOutput> done;
  while (e.has_unfinished()) {
    for (auto& o : e.step()) {
      if (o.finish != FinishReason::kNone) done[o.id] = o;
    }
  }
  EXPECT_EQ(done[big].finish, FinishReason::kAborted);
  EXPECT_NE(done[big].finish_detail.find("needs 8 blocks; the pool has 6"), std::string::npos);
  EXPECT_EQ(done[ok].tokens, first);
  EXPECT_ERROR_CONTAINS(e.add_request({}, greedy), "the prompt is empty");
  EXPECT_ERROR_CONTAINS(e.add_request({600}, greedy), "token id 600 is outside the vocabulary of 512");
}

// The traditional contiguous cache on the same engine and kernels: the same greedy tokens as paged, but each
// request reserves max_model_len at admission, so a pool admits fewer at once (the documents' comparison).
TEST(Engine, ContiguousLayoutSameTokensLowerConcurrency) {
  std::mt19937_64 rng(test::run_seed());
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) prompts.push_back(random_prompt(rng, 10 + static_cast<int>(rng() % 10)));
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 8;
  greedy.ignore_eos = true;
  EngineConfig paged = tiny("tiny-llama", 24, 256), contiguous = paged;
  paged.max_model_len = contiguous.max_model_len = 64;  // 8 blocks of 8 per contiguous request
  contiguous.kv_layout = "contiguous";
  Engine p(paged), c(contiguous);
  const auto a = p.generate(prompts, greedy), b = c.generate(prompts, greedy);
  for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(a[i].tokens, b[i].tokens) << i;
  EXPECT_EQ(c.stats().scheduler.max_running, 3);  // 24 blocks / 8 per reservation
  EXPECT_EQ(p.stats().scheduler.max_running, 6);  // each needs at most 4 blocks: all fit
  EXPECT_EQ(c.blocks().num_free_blocks(), 24);
  contiguous.kv_layout = "striped";
  EXPECT_ERROR_CONTAINS(Engine{contiguous}, "kv_layout 'striped' is not one of paged, contiguous");
}

// Quantized KV caches in the engine (CPU runner): requests complete through chunked prefill and preemption,
// the pool is sized by the format's bytes (all its planes), and a format the runner cannot hold is named.
TEST(Engine, QuantizedKVCaches) {
  std::mt19937_64 rng(test::run_seed());
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 6;
  greedy.ignore_eos = true;
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; ++i) prompts.push_back(random_prompt(rng, 20 + 5 * i));
  for (const char* fmt : {"fp8_e4m3", "int8", "tq_k8v4", "tq_k4v4", "tq_k3v3"}) {
    SCOPED_TRACE(fmt);
    EngineConfig c = tiny("tiny-qwen3", 10, 16);
    c.kv_cache_dtype = fmt;
    Engine e(c);
    for (const auto& o : e.generate(prompts, greedy)) EXPECT_EQ(o.tokens.size(), 6u);
    EXPECT_EQ(e.blocks().num_free_blocks(), 10);
  }
  const ModelConfig m = ModelConfig::preset("tiny-qwen3");
  // head dim 64: 32 + 2 + 32 + 4 = 70 bytes per token and KV head; x layers x tokens x heads
  EXPECT_EQ(kv_geometry(m, 8, "cpu", "tq_k4v4").bytes_per_block(), 2 * 8 * 2 * 70);
  EngineConfig bad = tiny("tiny-qwen3", 10, 16);
  bad.kv_cache_dtype = "bf16";
  EXPECT_ERROR_CONTAINS(Engine{bad},
                        "the CPU runner computes in fp32, so its cache is fp32 or a quantized format");
}

// The pool sized from a byte budget, and the startup line vLLM users expect.
TEST(Engine, PoolFromByteBudgetAndCapacityLine) {
  EngineConfig c = tiny("tiny-llama", 0, 64);
  const KVCacheGeometry g = kv_geometry(ModelConfig::preset("tiny-llama"), 8);
  EXPECT_EQ(g.bytes_per_block(), 2 * 8 * 2 * 2 * 64 * 4);  // layers x tokens x K,V x heads x dim x fp32
  c.kv_cache_bytes = 10 * static_cast<size_t>(g.bytes_per_block()) + 100;
  c.max_model_len = 32;
  Engine e(c);
  EXPECT_EQ(e.blocks().num_blocks(), 10);
  EXPECT_EQ(
      e.capacity_summary(),
      "KV cache: 10 blocks of 8 tokens = 80 tokens (0.2 MiB); maximum concurrency for 32 tokens per request: "
      "2.50x");
  c.kv_cache_bytes = 100;
  EXPECT_ERROR_CONTAINS(Engine{c}, "kv_cache_bytes 100 holds no block of 16384 bytes");
}

// A checkpoint folder serves like the preset it was saved from.
TEST(Engine, ServesAModelFolder) {
  const ModelConfig c = ModelConfig::preset("tiny-qwen3");
  const auto dir =
      std::filesystem::temp_directory_path() / ("pagedattn_engine_" + std::to_string(test::run_seed()));
  ModelConfig f32 = c;
  f32.dtype = DType::kFloat32;  // exact weights, so both engines compute the same
  save_checkpoint(dir.string(), f32, ModelWeightsF32::random(c, 3));
  EngineConfig from_folder = tiny(dir.string().c_str(), 64, 256);
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 6;
  std::mt19937_64 rng(2);
  const auto prompt = random_prompt(rng, 15);
  EXPECT_EQ(Engine(from_folder).generate({prompt}, greedy)[0].tokens,
            Engine(tiny("tiny-qwen3", 64, 256)).generate({prompt}, greedy)[0].tokens);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pagedattn::engine
