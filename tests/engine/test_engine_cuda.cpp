// The engine's CUDA runner (bf16, cuBLAS, the library's kernels) against its CPU runner (fp32) on the same
// weights: logits after a prompt and decode steps within bf16's error, greedy tokens equal until the first
// near-tie, and the batching invariances on the GPU. Skips where the build or the machine has no GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>
#include <string>

#include "engine/engine.h"
#include "pagedattn/info.h"
#include "pagedattn/turboquant.h"
#include "test_util.h"

#ifdef PAGEDATTN_ENGINE_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/sampling.cuh"
#endif

namespace pagedattn::engine {
namespace {

bool have_gpu() {
#ifdef PAGEDATTN_ENGINE_CUDA
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
#else
  return false;
#endif
}

// A tiny preset's shape at a head dim this build compiled for bf16 (the presets' 64 first, else 128: a quick
// build has one head dim), written as an fp32 checkpoint so the CPU and CUDA runners load the same weights.
// "" when no head dim of the two is compiled.
std::string tiny_model_folder(const std::string& preset) {
  const BuildInfo info = build_info();
  ModelConfig c = ModelConfig::preset(preset);
  int head_dim = 0;
  for (int d : {64, 128}) {
    if (head_dim == 0 && info.cuda_compiled(DType::kBFloat16, DType::kBFloat16, d)) head_dim = d;
  }
  if (head_dim == 0) return "";
  c.num_heads = c.num_heads * 64 / head_dim;  // the same hidden width: 4 x 64 or 2 x 128 (GQA 2 stays 2)
  c.num_kv_heads = std::max<int64_t>(1, c.num_heads / 2);
  c.head_dim = head_dim;
  c.dtype = DType::kFloat32;
  const auto dir = std::filesystem::temp_directory_path() /
                   ("pagedattn_engine_cuda_" + preset + "_" + std::to_string(test::run_seed()));
  save_checkpoint(dir.string(), c, ModelWeightsF32::random(c, 5));
  return dir.string();
}

// Removes the folder when the test ends.
struct TinyModel {
  explicit TinyModel(const std::string& preset) : folder(tiny_model_folder(preset)) {}
  ~TinyModel() {
    if (!folder.empty()) std::filesystem::remove_all(folder);
  }
  std::string folder;
};

#define REQUIRE_TINY_MODEL(m)                                                     \
  if ((m).folder.empty())                                                         \
  GTEST_SKIP() << "bf16 attention at head dim 64 or 128 is not compiled in this " \
                  "build"

EngineConfig config(const std::string& model, const char* device, int32_t blocks, int64_t budget) {
  EngineConfig c;
  c.model = model;
  c.weights_seed = 5;
  c.block_size = 16;
  c.num_blocks = blocks;
  c.max_num_batched_tokens = budget;
  c.device = device;
  return c;
}

TEST(EngineCuda, GreedyTokensMatchTheCpuRunnerUntilANearTie) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA runner or no GPU";
  std::mt19937_64 rng(test::run_seed());
  for (const char* preset : {"tiny-llama", "tiny-qwen3"}) {
    SCOPED_TRACE(preset);
    const TinyModel tiny(preset);
    REQUIRE_TINY_MODEL(tiny);
    const std::string& model = tiny.folder;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 5; ++i) {
      std::vector<int32_t> p(10 + static_cast<size_t>(rng() % 60));
      for (auto& t : p) t = static_cast<int32_t>(rng() % 512);
      prompts.push_back(p);
    }
    SamplingParams greedy;
    greedy.temperature = 0;
    greedy.max_tokens = 16;
    greedy.ignore_eos = true;
    const auto cpu = Engine(config(model, "cpu", 64, 4096)).generate(prompts, greedy);
    Engine gpu_engine(config(model, "cuda", 64, 48));  // small budget: chunked prefill mixed with decodes
    const auto gpu = gpu_engine.generate(prompts, greedy);
    int agreeing = 0, total = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      ASSERT_EQ(gpu[i].tokens.size(), 16u);
      // bf16 vs fp32: the first divergence may come from a near-tie; up to it, tokens agree.
      size_t same = 0;
      while (same < 16 && gpu[i].tokens[same] == cpu[i].tokens[same]) ++same;
      agreeing += static_cast<int>(same);
      total += 16;
    }
    EXPECT_GE(agreeing, total * 3 / 4) << agreeing << " of " << total << " tokens agree before a divergence";
    EXPECT_EQ(gpu_engine.blocks().num_free_blocks(), gpu_engine.blocks().num_blocks());
  }
}

// On the GPU a request's greedy tokens alone and inside a batch: the kernels and GEMM algorithms may differ
// with the batch's shape (tile shapes, split counts, cuBLAS's choice per size), so bits may differ and a
// near-tie may break differently; until the first divergence tokens agree, and divergences stay rare.
TEST(EngineCuda, BatchingDoesNotChangeTokens) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA runner or no GPU";
  std::mt19937_64 rng(test::run_seed());
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 6; ++i) {
    std::vector<int32_t> p(20 + static_cast<size_t>(i) * 9);
    for (auto& t : p) t = static_cast<int32_t>(rng() % 512);
    prompts.push_back(p);
  }
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 10;
  greedy.ignore_eos = true;
  const TinyModel tiny("tiny-qwen3");
  REQUIRE_TINY_MODEL(tiny);
  Engine batched(config(tiny.folder, "cuda", 64, 40));
  const auto together = batched.generate(prompts, greedy);
  int agreeing = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    Engine alone(config(tiny.folder, "cuda", 64, 4096));
    const auto a = alone.generate({prompts[i]}, greedy)[0].tokens;
    size_t same = 0;
    while (same < a.size() && a[same] == together[i].tokens[same]) ++same;
    agreeing += static_cast<int>(same);
  }
  EXPECT_GE(agreeing, 54) << agreeing << " of 60 tokens agree before a divergence";
}

// The GPU sampler against sample_token on the same logits, seeds and counters: greedy and top-k 1 exactly
// (ties included: flat rows must give id 0), sampled rows draw the same id but for a Gumbel score within
// float rounding of the winner's (logf on the device against the host's), which stays rare.
TEST(EngineCuda, GpuSamplerFollowsTheHostRule) {
#ifdef PAGEDATTN_ENGINE_CUDA
  if (!have_gpu()) GTEST_SKIP() << "no CUDA runner or no GPU";
  std::mt19937_64 rng(test::run_seed());
  std::normal_distribution<float> normal(0.0f, 2.0f);
  for (const int64_t vocab : {int64_t{5}, int64_t{50000}, int64_t{151936}}) {
    SCOPED_TRACE(testing::Message() << "vocab " << vocab);
    std::vector<SamplingParams> params;
    for (const float t : {0.0f, 1.0f, 0.6f})
      for (const int k : {0, 1, 7, 1000})
        for (const float p : {1.0f, 0.9f, 0.3f}) {
          SamplingParams sp;
          sp.temperature = t;
          sp.top_k = k;
          sp.top_p = p;
          params.push_back(sp);
        }
    const auto rows = static_cast<int32_t>(params.size() * 2);  // each rule over a random and a flat row
    std::vector<float> logits(static_cast<size_t>(rows * vocab));
    std::vector<cuda::DeviceSampleRow> device_rows(static_cast<size_t>(rows));
    for (int32_t r = 0; r < rows; ++r) {
      const bool flat = r % 2 == 1;
      for (int64_t i = 0; i < vocab; ++i)
        logits[static_cast<size_t>(r * vocab + i)] = flat ? 0.5f : normal(rng);
      const SamplingParams& sp = params[static_cast<size_t>(r / 2)];
      device_rows[static_cast<size_t>(r)] = {sp.temperature, sp.top_p, sp.top_k, 0, rng(), rng() % 1000};
    }
    float* d_logits = nullptr;
    cuda::DeviceSampleRow* d_rows = nullptr;
    int32_t* d_tokens = nullptr;
    ASSERT_EQ(cudaMalloc(&d_logits, logits.size() * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&d_rows, device_rows.size() * sizeof(cuda::DeviceSampleRow)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&d_tokens, static_cast<size_t>(rows) * sizeof(int32_t)), cudaSuccess);
    cudaMemcpy(d_logits, logits.data(), logits.size() * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(d_rows, device_rows.data(), device_rows.size() * sizeof(cuda::DeviceSampleRow),
               cudaMemcpyHostToDevice);
    cudaMemset(d_tokens, 0xff, static_cast<size_t>(rows) * sizeof(int32_t));  // poison
    cuda::sample_rows(d_logits, vocab, d_rows, rows, d_tokens, nullptr);
    std::vector<int32_t> got(static_cast<size_t>(rows));
    ASSERT_EQ(cudaMemcpy(got.data(), d_tokens, got.size() * sizeof(int32_t), cudaMemcpyDeviceToHost),
              cudaSuccess);
    cudaFree(d_logits);
    cudaFree(d_rows);
    cudaFree(d_tokens);
    int same = 0, sampled = 0;
    for (int32_t r = 0; r < rows; ++r) {
      const SamplingParams& sp = params[static_cast<size_t>(r / 2)];
      const cuda::DeviceSampleRow& dr = device_rows[static_cast<size_t>(r)];
      const std::span<const float> row(logits.data() + r * vocab, static_cast<size_t>(vocab));
      const int32_t want = sample_token(row, sp, dr.seed, dr.counter);
      ASSERT_GE(got[static_cast<size_t>(r)], 0) << "row " << r << " was not written";
      ASSERT_LT(got[static_cast<size_t>(r)], vocab);
      if (sp.temperature == 0.0f || sp.top_k == 1) {
        EXPECT_EQ(got[static_cast<size_t>(r)], want) << "row " << r;
      } else {
        ++sampled;
        same += got[static_cast<size_t>(r)] == want;
      }
      if (r % 2 == 1 && sp.top_k > 0 && sp.top_k < vocab) {  // flat: only the k lowest ids are candidates
        EXPECT_LT(got[static_cast<size_t>(r)], sp.top_k) << "row " << r;
      }
    }
    EXPECT_GE(same, sampled - 2) << same << " of " << sampled << " sampled rows drew the host's token";
  }
#else
  GTEST_SKIP() << "no CUDA runner in this build";
#endif
}

// CUDA graphs on and off: decode steps replayed at a padded bucket (5 and 7 sequences run as 8) and a plan
// for the bucket's longest sequence give the tokens of the eager steps until a near-tie. The padded GEMMs may
// pick other cuBLAS algorithms, so bits differ and a tiny random model's near-flat logits (vocab 512) break
// ties now and then (a run of the H100 saw 147 of 168 tokens agree); a graph that read a wrong position,
// cache row or pad row would derail every sequence at its first decode step, which the second check catches.
TEST(EngineCuda, GraphsOnAndOffGiveTheSameTokens) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA runner or no GPU";
  const TinyModel tiny("tiny-llama");
  REQUIRE_TINY_MODEL(tiny);
  std::mt19937_64 rng(test::run_seed());
  for (const int count : {5, 7}) {
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < count; ++i) {
      std::vector<int32_t> p(5 + static_cast<size_t>(rng() % 90));
      for (auto& t : p) t = static_cast<int32_t>(rng() % 512);
      prompts.push_back(p);
    }
    SamplingParams greedy;
    greedy.temperature = 0;
    greedy.max_tokens = 24;
    greedy.ignore_eos = true;
    EngineConfig eager = config(tiny.folder, "cuda", 96, 4096), graphs = eager;
    eager.enforce_eager = true;
    const auto a = Engine(eager).generate(prompts, greedy);
    const auto b = Engine(graphs).generate(prompts, greedy);
    int agreeing = 0, first_decode_agrees = 0;
    for (int i = 0; i < count; ++i) {
      size_t same = 0;
      while (same < 24 && a[i].tokens[same] == b[i].tokens[same]) ++same;
      agreeing += static_cast<int>(same);
      first_decode_agrees +=
          same >= 2;  // token 0 comes from the prefill, token 1 from a replayed decode step
    }
    EXPECT_GE(agreeing, count * 24 * 3 / 4) << agreeing << " of " << count * 24;
    EXPECT_GE(first_decode_agrees, count - 1) << "sequences whose first decode token agrees";
  }
}

// Quantized caches in the CUDA runner (fp8 with scale 1, int8 with its scale planes, TurboQuant) against the
// CPU runner over the same format: greedy tokens agree until a near-tie, as for bf16.
TEST(EngineCuda, QuantizedCachesMatchTheCpuRunner) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA runner or no GPU";
  const TinyModel tiny("tiny-qwen3");
  REQUIRE_TINY_MODEL(tiny);
  const BuildInfo info = build_info();
  std::mt19937_64 rng(test::run_seed());
  int ran = 0;
  // The TurboQuant caches read each step's own tokens raw on both runners (AttentionParams::new_key).
  for (const char* format : {"fp8_e4m3", "int8", "tq_k8v4", "tq_k4v4"}) {
    SCOPED_TRACE(format);
    const ModelConfig m = resolve_model(config(tiny.folder, "cpu", 8, 8));
    const std::string name = format;
    const bool compiled =
        name.starts_with("tq_")
            ? std::any_of(info.cuda_tq_instances.begin(), info.cuda_tq_instances.end(),
                          [&](const BuildInfo::TurboQuantInstance& i) {
                            return i.query == DType::kBFloat16 && i.preset == tq::parse_preset(name) &&
                                   i.head_dim == m.head_dim;
                          })
            : info.cuda_compiled(DType::kBFloat16, parse_dtype(format), static_cast<int>(m.head_dim));
    if (!compiled) continue;
    ++ran;
    std::vector<std::vector<int32_t>> prompts;
    for (int i = 0; i < 4; ++i) {
      std::vector<int32_t> p(12 + static_cast<size_t>(rng() % 50));
      for (auto& t : p) t = static_cast<int32_t>(rng() % 512);
      prompts.push_back(p);
    }
    SamplingParams greedy;
    greedy.temperature = 0;
    greedy.max_tokens = 16;
    greedy.ignore_eos = true;
    EngineConfig cpu = config(tiny.folder, "cpu", 64, 4096), gpu = config(tiny.folder, "cuda", 64, 40);
    cpu.kv_cache_dtype = gpu.kv_cache_dtype = format;
    const auto want = Engine(cpu).generate(prompts, greedy);
    const auto got = Engine(gpu).generate(prompts, greedy);
    int agreeing = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      size_t same = 0;
      while (same < 16 && got[i].tokens[same] == want[i].tokens[same]) ++same;
      agreeing += static_cast<int>(same);
    }
    EXPECT_GE(agreeing, 64 * 3 / 4) << agreeing << " of 64";
  }
  if (ran == 0) GTEST_SKIP() << "no quantized bf16-query instance at the tiny model's head dim";
}

// A preset's random weights drawn on the device: a seed gives the same tokens every time, another seed
// others.
TEST(EngineCuda, DeviceRandomWeightsFollowTheSeed) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA runner or no GPU";
  if (!build_info().cuda_compiled(DType::kBFloat16, DType::kBFloat16, 128))
    GTEST_SKIP() << "bf16 attention at head dim 128 is not compiled";
  std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5}, {100, 200, 300}, {7, 7, 7, 7, 7, 7, 7, 7}};
  SamplingParams greedy;
  greedy.temperature = 0;
  greedy.max_tokens = 8;
  greedy.ignore_eos = true;
  auto run = [&](uint64_t seed) {
    EngineConfig c = config("qwen3-0.6b", "cuda", 16, 256);
    c.weights_seed = seed;
    c.max_model_len = 512;
    c.max_num_seqs = 8;
    std::vector<std::vector<int32_t>> tokens;
    for (const auto& o : Engine(c).generate(prompts, greedy)) tokens.push_back(o.tokens);
    return tokens;
  };
  const auto a = run(11), b = run(11), c = run(12);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (const auto& t : a) {
    ASSERT_EQ(t.size(), 8u);
    for (int32_t id : t) EXPECT_TRUE(id >= 0 && id < 151936);
  }
}

// num_blocks 0 on CUDA: the runner sizes the pool from what gpu_memory_utilization leaves once the weights
// and step buffers are allocated; the pool never exceeds that fraction of the card, the startup line says
// where it came from, and a fraction too small for one block is refused naming the memory in use.
TEST(EngineCuda, PoolFromGpuMemoryUtilization) {
#ifdef PAGEDATTN_ENGINE_CUDA
  if (!have_gpu()) GTEST_SKIP() << "no CUDA runner or no GPU";
  const TinyModel tiny("tiny-qwen3");
  REQUIRE_TINY_MODEL(tiny);
  EngineConfig c = config(tiny.folder, "cuda", 0, 256);
  c.gpu_memory_utilization = 0.3;  // other tests share the card
  size_t free = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free, &total), cudaSuccess);
  {
    Engine e(c);
    const EngineStats s = e.stats();
    EXPECT_GT(s.num_blocks, 0);
    EXPECT_LE(static_cast<double>(s.num_blocks) * static_cast<double>(s.block_bytes),
              0.3 * static_cast<double>(total));
    EXPECT_NE(e.capacity_summary().find("from gpu_memory_utilization"), std::string::npos)
        << e.capacity_summary();
    SamplingParams greedy;
    greedy.temperature = 0;
    greedy.max_tokens = 4;
    EXPECT_EQ(e.generate({{1, 2, 3}}, greedy)[0].tokens.size(), 4u);
  }
  c.gpu_memory_utilization = 0.005;
  EXPECT_ERROR_CONTAINS(Engine{c}, "leaves no room for a KV block");
#else
  GTEST_SKIP() << "no CUDA runner in this build";
#endif
}

TEST(EngineCuda, DeviceNamesAreChecked) {
  EXPECT_ERROR_CONTAINS(Engine(config("tiny-llama", "tpu", 8, 64)),
                        "device 'tpu' is not cpu, cuda or cuda:N");
}

}  // namespace
}  // namespace pagedattn::engine
