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
#include "test_util.h"

#ifdef PAGEDATTN_ENGINE_CUDA
#include <cuda_runtime.h>
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

#define REQUIRE_TINY_MODEL(m)                                                                             \
  if ((m).folder.empty()) GTEST_SKIP() << "bf16 attention at head dim 64 or 128 is not compiled in this " \
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

TEST(EngineCuda, DeviceNamesAreChecked) {
  EXPECT_ERROR_CONTAINS(Engine(config("tiny-llama", "tpu", 8, 64)),
                        "device 'tpu' is not cpu, cuda or cuda:N");
}

}  // namespace
}  // namespace pagedattn::engine
