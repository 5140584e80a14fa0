// The engine over quantized KV caches (CPU runner): the same greedy decode as the fp32 cache step by step
// (the fp32 run's tokens fed to both), with the logits' KL divergence and the greedy-token agreement per
// format — the quality figures issue 17 asks for once the engine exists, and a check that each format stays
// close.
#include <gtest/gtest.h>

#include <cstdio>

#include "engine/scorer.h"
#include "test_util.h"

namespace pagedattn::engine {
namespace {

TEST(KVQuality, QuantizedCachesTrackTheFp32Cache) {
  struct Bound {
    const char* format;
    double mean_kl, agreement;
  };
  // Bounds with margin over the measured figures (printed below; bench/NOTES.md keeps them).
  const Bound bounds[] = {{"fp8_e4m3", 0.01, 0.9}, {"int8", 0.01, 0.9},   {"tq_k8v4", 0.05, 0.8},
                          {"tq_k4v4", 0.05, 0.8},  {"tq_k3v4", 0.1, 0.7}, {"tq_k3v3", 0.15, 0.6}};
  for (const Bound& b : bounds) {
    const KVQuality qa = measure_kv_quality("tiny-llama", "fp32", b.format, 64, 96, test::run_seed());
    std::printf("KV %-9s mean KL %.5f max KL %.4f greedy agreement %.3f\n", b.format, qa.mean_kl, qa.max_kl,
                qa.agreement);
    EXPECT_LT(qa.mean_kl, b.mean_kl) << b.format;
    EXPECT_GE(qa.agreement, b.agreement) << b.format;
  }
}

}  // namespace
}  // namespace pagedattn::engine
