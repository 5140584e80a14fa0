// The engine's CPU model against an independent reference written here: a dense fp64 forward of the whole
// token sequence (no cache, no paging, explicit causal softmax, RoPE from Hugging Face's formulas), for a
// Llama shape with llama3 RoPE scaling and a Qwen3 shape (q/k norms, tied embeddings). Then the paths that
// must not change results: chunked vs whole prefill, decode steps, and a sequence alone vs inside a batch.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "engine/cpu_model.h"
#include "engine/scorer.h"
#include "pagedattn/batch_builder.h"
#include "pagedattn/block_manager.h"
#include "test_util.h"

namespace pagedattn::engine {
namespace {

// ---- The reference (fp64, whole sequence at once) ----
using Vec = std::vector<double>;

Vec ref_linear(const Vec& x, int64_t n, int64_t in, const std::vector<float>& w, int64_t out) {
  Vec y(static_cast<size_t>(n * out), 0.0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t o = 0; o < out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < in; ++i) s += x[r * in + i] * w[o * in + i];
      y[r * out + o] = s;
    }
  return y;
}

void ref_norm(Vec& x, int64_t rows, int64_t dim, const std::vector<float>& w, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += x[r * dim + i] * x[r * dim + i];
    const double inv = 1.0 / std::sqrt(ss / static_cast<double>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i) x[r * dim + i] *= inv * w[i];
  }
}

// Hugging Face's _compute_llama3_parameters, written from its definition.
double ref_inv_freq(const ModelConfig& c, int64_t i) {
  double f = std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(c.head_dim));
  if (c.rope_scaling.type == "llama3") {
    const auto& r = c.rope_scaling;
    const double old = static_cast<double>(r.original_max_position_embeddings);
    const double wavelen = 2 * M_PI / f;
    if (wavelen > old / r.low_freq_factor) return f / r.factor;
    if (wavelen < old / r.high_freq_factor) return f;
    const double smooth = (old / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
    return (1 - smooth) * f / r.factor + smooth * f;
  }
  return c.rope_scaling.type == "linear" ? f / c.rope_scaling.factor : f;
}

// Logits [T, vocab] of the whole sequence.
Vec reference_logits(const ModelConfig& c, const ModelWeightsF32& w, const std::vector<int32_t>& tokens) {
  const int64_t T = static_cast<int64_t>(tokens.size()), h = c.hidden_size, d = c.head_dim;
  const int64_t hq = c.num_heads, hkv = c.num_kv_heads, g = hq / hkv;
  Vec x(static_cast<size_t>(T * h));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = 0; i < h; ++i) x[t * h + i] = w.embed[tokens[t] * h + i];
  for (const LayerWeightsF32& L : w.layers) {
    Vec xn = x;
    ref_norm(xn, T, h, L.input_norm, c.rms_norm_eps);
    Vec q = ref_linear(xn, T, h, L.q_proj, hq * d), k = ref_linear(xn, T, h, L.k_proj, hkv * d),
        v = ref_linear(xn, T, h, L.v_proj, hkv * d);
    if (c.qk_norm) {
      ref_norm(q, T * hq, d, L.q_norm, c.rms_norm_eps);
      ref_norm(k, T * hkv, d, L.k_norm, c.rms_norm_eps);
    }
    auto rotate = [&](Vec& m, int64_t heads) {  // q * cos + rotate_half(q) * sin
      for (int64_t t = 0; t < T; ++t)
        for (int64_t hh = 0; hh < heads; ++hh) {
          double* p = &m[(t * heads + hh) * d];
          std::vector<double> out(d);
          for (int64_t i = 0; i < d; ++i) {
            const double ang = static_cast<double>(t) * ref_inv_freq(c, i % (d / 2));
            const double rot = i < d / 2 ? -p[i + d / 2] : p[i - d / 2];
            out[i] = p[i] * std::cos(ang) + rot * std::sin(ang);
          }
          std::copy(out.begin(), out.end(), p);
        }
    };
    rotate(q, hq);
    rotate(k, hkv);
    Vec o(static_cast<size_t>(T * hq * d), 0.0);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t hh = 0; hh < hq; ++hh) {
        std::vector<double> s(t + 1);
        double mx = -1e300;
        for (int64_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += q[(t * hq + hh) * d + i] * k[(j * hkv + hh / g) * d + i];
          s[j] = dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, s[j]);
        }
        double den = 0;
        for (auto& e : s) den += (e = std::exp(e - mx));
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t i = 0; i < d; ++i)
            o[(t * hq + hh) * d + i] += s[j] / den * v[(j * hkv + hh / g) * d + i];
      }
    Vec a = ref_linear(o, T, hq * d, L.o_proj, h);
    for (size_t i = 0; i < x.size(); ++i) x[i] += a[i];
    xn = x;
    ref_norm(xn, T, h, L.post_norm, c.rms_norm_eps);
    Vec gt = ref_linear(xn, T, h, L.gate_proj, c.intermediate_size),
        u = ref_linear(xn, T, h, L.up_proj, c.intermediate_size);
    for (size_t i = 0; i < gt.size(); ++i) gt[i] = gt[i] / (1 + std::exp(-gt[i])) * u[i];
    Vec m = ref_linear(gt, T, c.intermediate_size, L.down_proj, h);
    for (size_t i = 0; i < x.size(); ++i) x[i] += m[i];
  }
  ref_norm(x, T, h, w.final_norm, c.rms_norm_eps);
  return ref_linear(x, T, h, c.tie_word_embeddings ? w.embed : w.lm_head, c.vocab_size);
}

double rel_error(const float* got, const double* want, int64_t n) {
  double e = 0, r = 0;
  for (int64_t i = 0; i < n; ++i) {
    e += (got[i] - want[i]) * (got[i] - want[i]);
    r += want[i] * want[i];
  }
  return std::sqrt(e / r);
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n, int vocab) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % vocab);
  return t;
}

// Runs one step for these (sequence, new tokens) pairs; returns the logits rows.
std::vector<float> step(const CpuModel& m, BlockManager& blocks, HostKVCache& cache,
                        const std::vector<std::pair<SeqId, std::vector<int32_t>>>& work) {
  std::vector<BatchItem> items;
  std::vector<int32_t> tokens;
  for (const auto& [seq, toks] : work) {
    items.push_back({seq, static_cast<int64_t>(toks.size())});
    tokens.insert(tokens.end(), toks.begin(), toks.end());
  }
  HostBatch b = build_batch(blocks, items);
  std::vector<float> logits = m.forward(tokens, b, cache);
  for (const auto& [seq, toks] : work)
    blocks.mark_computed(seq, blocks.num_computed_tokens(seq) + static_cast<int64_t>(toks.size()));
  return logits;
}

class CpuModelVsReference : public ::testing::TestWithParam<const char*> {};

// Prefill of 37 tokens in chunks of 16 (pages of 8 end mid-chunk), then 4 decode steps: every step's
// logits equal the dense reference over the prefix (fp32 vs fp64: 1e-4 relative).
TEST_P(CpuModelVsReference, PrefillChunksAndDecodes) {
  const ModelConfig c = ModelConfig::preset(GetParam());
  const ModelWeightsF32 w = ModelWeightsF32::random(c, 21);
  const CpuModel m(c, w);
  std::mt19937_64 rng(test::run_seed());
  std::vector<int32_t> all = random_tokens(rng, 41, static_cast<int>(c.vocab_size));
  BlockManager blocks(32, 8);
  HostKVCache cache(c, 32, 8);
  std::vector<TokenId> prompt(all.begin(), all.begin() + 37);
  blocks.allocate(1, prompt);
  std::vector<float> logits;
  for (int at = 0; at < 37; at += 16) {
    const int end = std::min(37, at + 16);
    logits = step(m, blocks, cache, {{1, std::vector<int32_t>(all.begin() + at, all.begin() + end)}});
  }
  for (int t = 37; t <= 41; ++t) {
    const Vec want = reference_logits(c, w, std::vector<int32_t>(all.begin(), all.begin() + t));
    EXPECT_LT(rel_error(logits.data(), &want[(t - 1) * c.vocab_size], c.vocab_size), 1e-4)
        << "after " << t << " tokens";
    if (t == 41) break;
    blocks.append(1, std::vector<TokenId>{all[t]});
    logits = step(m, blocks, cache, {{1, {all[t]}}});
  }
}

INSTANTIATE_TEST_SUITE_P(Presets, CpuModelVsReference, ::testing::Values("tiny-llama", "tiny-qwen3"));

// A sequence alone and inside a mixed batch (another sequence's prefill chunk and a third's decode in the
// same step) gets the same logits, bit for bit: nothing in a row's computation depends on its neighbours.
TEST(CpuModel, BatchNeighboursDoNotChangeResults) {
  const ModelConfig c = ModelConfig::preset("tiny-llama");
  const CpuModel m(c, ModelWeightsF32::random(c, 4));
  std::mt19937_64 rng(test::run_seed());
  const auto a = random_tokens(rng, 20, 512), b = random_tokens(rng, 30, 512), z = random_tokens(rng, 9, 512);
  BlockManager alone_blocks(64, 16), batch_blocks(64, 16);
  HostKVCache alone_cache(c, 64, 16), batch_cache(c, 64, 16);
  alone_blocks.allocate(1, std::vector<TokenId>(a.begin(), a.end()));
  const auto alone = step(m, alone_blocks, alone_cache, {{1, a}});
  batch_blocks.allocate(2, std::vector<TokenId>(z.begin(), z.end()));
  step(m, batch_blocks, batch_cache, {{2, z}});
  batch_blocks.append(2, std::vector<TokenId>{5});
  batch_blocks.allocate(1, std::vector<TokenId>(a.begin(), a.end()));
  batch_blocks.allocate(3, std::vector<TokenId>(b.begin(), b.end()));
  const auto mixed = step(m, batch_blocks, batch_cache,
                          {{3, std::vector<int32_t>(b.begin(), b.begin() + 17)}, {1, a}, {2, {5}}});
  for (int64_t i = 0; i < c.vocab_size; ++i) ASSERT_EQ(mixed[c.vocab_size + i], alone[i]) << i;
}

TEST(CpuModel, RopeScalingMatchesTheDefinition) {
  ModelConfig c = ModelConfig::preset("llama-3.1-8b");
  const auto f = rope_inv_freq(c);
  for (int64_t i = 0; i < c.head_dim / 2; ++i)
    EXPECT_NEAR(f[i], ref_inv_freq(c, i), 1e-7 * ref_inv_freq(c, i) + 1e-12);
  // The first (highest) frequency is kept, the last (longest wavelength) divided by the factor.
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_NEAR(f.back(), std::pow(500000.0, -126.0 / 128) / 8, 1e-12);
  c.rope_scaling = {"linear", 4.0, 1, 4, 8192};
  EXPECT_NEAR(rope_inv_freq(c)[3], std::pow(500000.0, -6.0 / 128) / 4, 1e-7 * 0.136);  // fp32 rounding
}

// The scorer (what the transformers parity test drives): prompt, then single tokens, each against the dense
// reference.
TEST(CpuModel, SequenceScorerFollowsTheReference) {
  const ModelConfig c = ModelConfig::preset("tiny-qwen3");
  const ModelWeightsF32 w = ModelWeightsF32::random(c, 8);
  SequenceScorer s(c, w, 64, 16);
  std::mt19937_64 rng(test::run_seed());
  std::vector<int32_t> tokens = random_tokens(rng, 20, static_cast<int>(c.vocab_size));
  std::vector<float> got = s.feed(tokens);
  for (int step = 0; step < 3; ++step) {
    const Vec want = reference_logits(c, w, tokens);
    EXPECT_LT(rel_error(got.data(), &want[(tokens.size() - 1) * c.vocab_size], c.vocab_size), 1e-4);
    const int32_t next = static_cast<int32_t>(rng() % c.vocab_size);
    tokens.push_back(next);
    got = s.feed(std::vector<int32_t>{next});
  }
  EXPECT_EQ(s.length(), 23);
  EXPECT_ERROR_CONTAINS(s.feed(random_tokens(rng, 50, 512)), "SequenceScorer: past its 64 tokens");
}

TEST(CpuModel, BadTokenIsAnError) {
  const ModelConfig c = ModelConfig::preset("tiny-qwen3");
  const CpuModel m(c, ModelWeightsF32::random(c, 1));
  BlockManager blocks(8, 16);
  HostKVCache cache(c, 8, 16);
  blocks.allocate(1, std::vector<TokenId>{1, 2});
  EXPECT_ERROR_CONTAINS(step(m, blocks, cache, {{1, {1, 9999}}}), "token id 9999 is outside the vocabulary");
}

}  // namespace
}  // namespace pagedattn::engine
