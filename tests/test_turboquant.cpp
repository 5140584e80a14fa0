// The TurboQuant host primitives against the specification's invariants (shared/TURBOQUANT.md): rotation,
// codebooks, bucketing, packing, key and value quantizers.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "pagedattn/attention.h"
#include "pagedattn/dtype.h"
#include "pagedattn/paged_kv.h"
#include "pagedattn/turboquant.h"
#include "test_util.h"

namespace pagedattn::tq {
namespace {

std::vector<float> unit_vector(std::mt19937_64& rng, int d) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(d);
  double n = 0;
  for (auto& v : x) {
    v = g(rng);
    n += static_cast<double>(v) * v;
  }
  for (auto& v : x) v = static_cast<float>(v / std::sqrt(n));
  return x;
}

// R is orthogonal (RᵀR = I to 1e-6) and the fast transform equals the product with the explicit matrix
// H_blockdiag · diag(s), H[i][j] = (-1)^popcount(i & j) / sqrt(block): for every supported head dim, the
// non-powers of two (block-diagonal) included.
TEST(TurboQuant, RotationIsOrthogonalAndMatchesTheMatrix) {
  for (int d : kSupportedHeadDims) {
    SCOPED_TRACE(d);
    const Rotation& r = rotation(d);
    EXPECT_EQ(d % r.block, 0);
    EXPECT_EQ(r.block & (r.block - 1), 0);
    EXPECT_EQ((d / r.block) % 2, d == r.block ? 1 : 1);      // the largest power-of-two divisor: odd quotient
    std::vector<double> m(static_cast<size_t>(d) * d, 0.0);  // column j = R e_j
    std::vector<float> e(d), y(d);
    for (int j = 0; j < d; ++j) {
      std::fill(e.begin(), e.end(), 0.0f);
      e[j] = 1.0f;
      r.apply(e.data(), y.data());
      for (int i = 0; i < d; ++i) m[static_cast<size_t>(i) * d + j] = y[i];
      // The explicit matrix entry.
      const int b0 = (j / r.block) * r.block;
      for (int i = 0; i < d; ++i) {
        double want = 0.0;
        if (i >= b0 && i < b0 + r.block) {
          want = (__builtin_popcount(static_cast<unsigned>((i - b0) & (j - b0))) % 2 ? -1.0 : 1.0) *
                 r.signs[j] / std::sqrt(static_cast<double>(r.block));
        }
        ASSERT_NEAR(y[i], want, 1e-6) << i << "," << j;
      }
    }
    double worst = 0;
    for (int a = 0; a < d; ++a) {
      for (int b = 0; b < d; ++b) {
        double dot = 0;
        for (int i = 0; i < d; ++i)
          dot += m[static_cast<size_t>(i) * d + a] * m[static_cast<size_t>(i) * d + b];
        worst = std::max(worst, std::fabs(dot - (a == b ? 1.0 : 0.0)));
      }
    }
    EXPECT_LT(worst, 1e-6);
    // The transpose inverts it.
    std::mt19937_64 rng(d);
    const auto x = unit_vector(rng, d);
    std::vector<float> back(d);
    r.apply(x.data(), y.data());
    r.apply_transpose(y.data(), back.data());
    for (int i = 0; i < d; ++i) EXPECT_NEAR(back[i], x[i], 1e-6);
  }
}

// Sorted, symmetric, the middle midpoint exactly 0, and the distortion within 1% of the specification's
// exact-Beta figures; the solver on N(0, 1) reproduces the published Gaussian Lloyd–Max table.
TEST(TurboQuant, CodebooksMatchTheSpecification) {
  struct Want {
    int d, bits;
    double distortion;
  };
  const Want table[] = {{128, 1, 0.3609}, {128, 2, 0.1160}, {128, 3, 0.0340}, {128, 4, 0.00931},
                        {64, 2, 0.1145},  {64, 3, 0.0334},  {64, 4, 0.00913}, {256, 2, 0.1167},
                        {256, 3, 0.0343}, {256, 4, 0.00941}};
  for (const Want& w : table) {
    SCOPED_TRACE(testing::Message() << "D " << w.d << " b " << w.bits);
    const Codebook& cb = codebook(w.d, w.bits);
    const int levels = 1 << w.bits;
    ASSERT_EQ(static_cast<int>(cb.centroids.size()), levels);
    ASSERT_EQ(static_cast<int>(cb.midpoints.size()), levels - 1);
    for (int i = 0; i + 1 < levels; ++i) EXPECT_LT(cb.centroids[i], cb.centroids[i + 1]);
    for (int i = 0; i < levels; ++i) EXPECT_EQ(cb.centroids[i], -cb.centroids[levels - 1 - i]);
    EXPECT_EQ(cb.midpoints[levels / 2 - 1], 0.0f);
    EXPECT_NEAR(cb.distortion, w.distortion, 0.01 * w.distortion);
  }
  for (int d : kSupportedHeadDims) {  // every head dim has its codebooks
    for (int bits : {2, 3, 4}) EXPECT_GT(codebook(d, bits).distortion, 0.0);
  }
  const Codebook g = gaussian_codebook(4);
  const double positive[] = {0.1284, 0.3880, 0.6568, 0.9423, 1.2562, 1.6180, 2.0690, 2.7326};
  for (int i = 0; i < 8; ++i) EXPECT_NEAR(g.centroids[8 + i], positive[i], 1e-3);
  EXPECT_NEAR(gaussian_codebook(2).distortion, 0.1175, 0.001);
  EXPECT_NEAR(gaussian_codebook(3).distortion, 0.03455, 0.0003);
  EXPECT_NEAR(g.distortion, 0.009501, 0.0001);
}

TEST(TurboQuant, BucketIsTheNearestCentroidTiesUp) {
  std::mt19937_64 rng(3);
  for (int bits : {1, 2, 3, 4}) {
    const Codebook& cb = codebook(128, bits);
    std::normal_distribution<float> g(0.0f, 0.1f);
    for (int i = 0; i < 20000; ++i) {
      const float y = g(rng);
      int best = 0;
      for (int c = 1; c < (1 << bits); ++c) {
        if (std::fabs(y - cb.centroids[c]) <= std::fabs(y - cb.centroids[best])) best = c;  // ties: upper
      }
      const int got = bucket(cb, y);
      // Away from a midpoint both agree exactly; at a midpoint (equal distance in exact arithmetic) the
      // bucket takes the upper cell.
      if (std::fabs(std::fabs(y - cb.centroids[best]) - std::fabs(y - cb.centroids[got])) > 1e-7f) {
        ASSERT_EQ(got, best) << y;
      }
    }
    for (size_t m = 0; m < cb.midpoints.size(); ++m)
      EXPECT_EQ(bucket(cb, cb.midpoints[m]), static_cast<int>(m) + 1);
    EXPECT_EQ(bucket(cb, NAN), 0);
    EXPECT_EQ(bucket(cb, INFINITY), (1 << bits) - 1);
    EXPECT_EQ(bucket(cb, -INFINITY), 0);
  }
}

// Packing round-trips, for every width, and writes only its own bytes.
TEST(TurboQuant, PackingRoundTripsWithinItsField) {
  std::mt19937_64 rng(5);
  for (int bits : {1, 2, 3, 4, 8}) {
    for (int d : kSupportedHeadDims) {
      std::vector<uint8_t> codes(d), back(d);
      for (auto& c : codes) c = static_cast<uint8_t>(rng() & ((1u << bits) - 1));
      const size_t bytes = static_cast<size_t>(d) * bits / 8;
      std::vector<uint8_t> buf(bytes + 32, 0xA5);
      pack_codes(codes, bits, buf.data() + 16);
      for (size_t i = 0; i < 16; ++i) {
        ASSERT_EQ(buf[i], 0xA5);
        ASSERT_EQ(buf[16 + bytes + i], 0xA5);
      }
      unpack_codes(buf.data() + 16, bits, back);
      ASSERT_EQ(codes, back) << bits << " bits, D " << d;
    }
  }
}

// Preset byte counts as specified at D = 128; every supported head dim gives whole bytes.
TEST(TurboQuant, PresetBytes) {
  EXPECT_EQ(token_bytes(Preset::kK8V4, 128).total(), 196);
  EXPECT_EQ(token_bytes(Preset::kK4V4, 128).total(), 134);
  EXPECT_EQ(token_bytes(Preset::kK3V4, 128).total(), 118);
  EXPECT_EQ(token_bytes(Preset::kK3V3, 128).total(), 102);
  for (Preset p : kAllPresets) {
    EXPECT_EQ(parse_preset(preset_info(p).name), p);
    for (int d : kSupportedHeadDims) {
      const PresetInfo info = preset_info(p);
      EXPECT_EQ(token_bytes(p, d).key_codes * 8, d * (info.key_bits == 8 ? 8 : info.key_bits));
      EXPECT_EQ(token_bytes(p, d).value_codes * 8, d * info.value_bits);
    }
  }
  EXPECT_ERROR_CONTAINS(parse_preset("tq_k2v2"), "unknown TurboQuant preset 'tq_k2v2'");
}

// Key distortion on 20k random unit vectors within 3% of the table (the quantizer without the norm
// correction is the MSE quantizer the table measures); with it, the dequantized key keeps the norm; the
// rotated-domain score equals the dequantized-key score within 1e-5 relative.
TEST(TurboQuant, KeyQuantizerDistortionNormAndScore) {
  std::mt19937_64 rng(7);
  struct Want {
    int d, bits;
    double distortion;
  };
  for (const Want w : {Want{128, 2, 0.1160}, Want{128, 3, 0.0340}, Want{128, 4, 0.00931},
                       Want{64, 4, 0.00913}, Want{256, 3, 0.0343}}) {
    SCOPED_TRACE(testing::Message() << "D " << w.d << " b " << w.bits);
    const Codebook& cb = codebook(w.d, w.bits);
    const Rotation& r = rotation(w.d);
    double mse = 0;
    const int n = 20000;
    std::vector<float> y(w.d), xt(w.d);
    for (int i = 0; i < n; ++i) {
      const auto x = unit_vector(rng, w.d);
      r.apply(x.data(), y.data());
      for (int j = 0; j < w.d; ++j) y[j] = cb.centroids[bucket(cb, y[j])];
      r.apply_transpose(y.data(), xt.data());
      for (int j = 0; j < w.d; ++j) mse += (x[j] - xt[j]) * (x[j] - xt[j]);
    }
    EXPECT_NEAR(mse / n, w.distortion, 0.03 * w.distortion);

    // Norm correction and scores, on keys of assorted lengths.
    std::vector<uint8_t> codes(static_cast<size_t>(w.d) * w.bits / 8);
    std::vector<float> kt(w.d), qr(w.d);
    std::normal_distribution<float> g(0.0f, 1.0f);
    for (int i = 0; i < 200; ++i) {
      std::vector<float> k = unit_vector(rng, w.d), q(w.d);
      const float len = std::exp(g(rng) * 2.0f);
      for (auto& v : k) v *= len;
      for (auto& v : q) v = g(rng);
      uint16_t norm = 0;
      quantize_key(k.data(), w.d, w.bits, codes.data(), &norm);
      dequantize_key(codes.data(), norm, w.d, w.bits, kt.data());
      double kn = 0, dot = 0;
      for (int j = 0; j < w.d; ++j) {
        kn += static_cast<double>(kt[j]) * kt[j];
        dot += static_cast<double>(q[j]) * kt[j];
      }
      EXPECT_NEAR(std::sqrt(kn), len, 2e-3 * len);  // fp16 n'
      // Score in the rotated domain: n' <R q, c[idx]>.
      std::vector<uint8_t> idx(w.d);
      unpack_codes(codes.data(), w.bits, idx);
      r.apply(q.data(), qr.data());
      double rot = 0;
      for (int j = 0; j < w.d; ++j) rot += static_cast<double>(qr[j]) * cb.centroids[idx[j]];
      rot *= fp16_bits_to_float(norm);
      double qn = 0;
      for (float v : q) qn += static_cast<double>(v) * v;
      EXPECT_NEAR(rot, dot, 1e-5 * std::sqrt(qn * kn) + 1e-30);
    }
  }
}

// k = 0 gives a zero key and score 0 (no NaN); NaN gives a NaN norm; a norm beyond fp16 saturates to 65504.
TEST(TurboQuant, KeyEdgeCases) {
  const int d = 128;
  std::vector<uint8_t> codes(64);
  std::vector<float> k(d, 0.0f), kt(d);
  uint16_t norm = 0xffff;
  quantize_key(k.data(), d, 4, codes.data(), &norm);
  dequantize_key(codes.data(), norm, d, 4, kt.data());
  EXPECT_EQ(fp16_bits_to_float(norm), 0.0f);
  for (float v : kt) EXPECT_EQ(v, 0.0f);
  k[5] = NAN;
  quantize_key(k.data(), d, 4, codes.data(), &norm);
  EXPECT_TRUE(std::isnan(fp16_bits_to_float(norm)));
  std::fill(k.begin(), k.end(), 1e6f);  // norm 1.1e7
  quantize_key(k.data(), d, 3, codes.data(), &norm);
  EXPECT_EQ(fp16_bits_to_float(norm), 65504.0f);
}

// Value error <= s/2 plus the fp16 rounding of s and vmin; constant rows, NaN rows and fp16-range clamping.
TEST(TurboQuant, ValueQuantizerErrorBound) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (int bits : {2, 3, 4, 8}) {
    for (int d : kSupportedHeadDims) {
      std::vector<float> v(d), back(d);
      const float spread = std::exp(g(rng) * 3.0f);
      for (auto& x : v) x = g(rng) * spread + g(rng);
      std::vector<uint8_t> codes(static_cast<size_t>(d) * bits / 8);
      uint16_t s16 = 0, m16 = 0;
      quantize_value(v.data(), d, bits, codes.data(), &s16, &m16);
      dequantize_value(codes.data(), s16, m16, d, bits, back.data());
      const float lo = *std::min_element(v.begin(), v.end()), hi = *std::max_element(v.begin(), v.end());
      const float levels = static_cast<float>((1 << bits) - 1);
      const float s = std::max((hi - lo) / levels, 1e-8f);
      const float bound = s / 2 + levels * std::fabs(fp16_bits_to_float(s16) - s) +
                          std::fabs(fp16_bits_to_float(m16) - lo) + 1e-6f * std::fabs(hi);
      for (int j = 0; j < d; ++j) ASSERT_LE(std::fabs(back[j] - v[j]), bound) << bits << " bits D " << d;
    }
  }
  // Relative MSE on Gaussian rows at D = 128 (the specification: 4-bit ~0.0100, 3-bit ~0.0457).
  for (auto [bits, want] : {std::pair{4, 0.0100}, std::pair{3, 0.0457}}) {
    double err = 0, ref = 0;
    std::vector<float> v(128), back(128);
    std::vector<uint8_t> codes(128 * bits / 8);
    for (int i = 0; i < 5000; ++i) {
      for (auto& x : v) x = g(rng);
      uint16_t s16, m16;
      quantize_value(v.data(), 128, bits, codes.data(), &s16, &m16);
      dequantize_value(codes.data(), s16, m16, 128, bits, back.data());
      for (int j = 0; j < 128; ++j) {
        err += (back[j] - v[j]) * (back[j] - v[j]);
        ref += v[j] * v[j];
      }
    }
    EXPECT_NEAR(err / ref, want, 0.1 * want) << bits;
  }
  std::vector<float> same(64, 3.25f), back(64);
  std::vector<uint8_t> codes(32);
  uint16_t s16, m16;
  quantize_value(same.data(), 64, 4, codes.data(), &s16, &m16);
  dequantize_value(codes.data(), s16, m16, 64, 4, back.data());
  for (float x : back) EXPECT_EQ(x, 3.25f);
  same[7] = NAN;
  quantize_value(same.data(), 64, 4, codes.data(), &s16, &m16);
  dequantize_value(codes.data(), s16, m16, 64, 4, back.data());
  for (float x : back) EXPECT_TRUE(std::isnan(x));
  std::vector<float> huge(64, 1e6f);
  huge[0] = -1e6f;
  quantize_value(huge.data(), 64, 4, codes.data(), &s16, &m16);
  dequantize_value(codes.data(), s16, m16, 64, 4, back.data());
  EXPECT_EQ(back[0], -65504.0f);
  for (float x : back) EXPECT_TRUE(std::isfinite(x));
}

// A host TurboQuant cache of one preset: planes poisoned with 0xA5 bytes (so unwritten rows are visible).
struct HostTqCache {
  Preset preset;
  int64_t blocks, bs, hkv, d;
  TokenBytes tb;
  std::vector<uint8_t> k, v;
  std::vector<uint16_t> norms, meta;
  HostTqCache(Preset p, int64_t blocks_, int64_t bs_, int64_t hkv_, int64_t d_)
      : preset(p), blocks(blocks_), bs(bs_), hkv(hkv_), d(d_), tb(token_bytes(p, static_cast<int>(d_))) {
    const int64_t rows = blocks * bs * hkv;
    k.assign(static_cast<size_t>(rows * tb.key_codes), 0xA5);
    v.assign(static_cast<size_t>(rows * tb.value_codes), 0xA5);
    if (tb.key_norm) norms.assign(static_cast<size_t>(rows), 0xA5A5);
    meta.assign(static_cast<size_t>(rows * 2), 0xA5A5);
  }
  PagedKVCache cache() {
    TensorView n;
    if (!norms.empty()) n = TensorView::contiguous(norms.data(), DType::kFloat16, {blocks, bs, hkv});
    return PagedKVCache::turboquant(
        preset, d, TensorView::contiguous(k.data(), DType::kUInt8, {blocks, bs, hkv, tb.key_codes}), n,
        TensorView::contiguous(v.data(), DType::kUInt8, {blocks, bs, hkv, tb.value_codes}),
        TensorView::contiguous(meta.data(), DType::kFloat16, {blocks, bs, hkv, 2}));
  }
};

// write_kv on the CPU stores, for every written (token, head), exactly the bytes of the quantizers applied to
// the bf16 inputs; slot -1 and every other row stay untouched.
TEST(TurboQuant, WriteKvStoresTheQuantizersBytes) {
  std::mt19937_64 rng(13);
  std::normal_distribution<float> g(0.0f, 1.0f);
  for (Preset preset : kAllPresets) {
    for (int64_t d : {96, 128}) {
      SCOPED_TRACE(testing::Message() << preset_info(preset).name << " D " << d);
      HostTqCache c(preset, 6, 7, 3, d);
      const int64_t tokens = 20;
      std::vector<uint16_t> key(static_cast<size_t>(tokens * c.hkv * d)), value(key.size());
      for (auto& x : key) x = float_to_bf16_bits(g(rng) * 3.0f);
      for (auto& x : value) x = float_to_bf16_bits(g(rng));
      std::vector<int64_t> slots(c.blocks * c.bs);
      std::iota(slots.begin(), slots.end(), 0);
      std::shuffle(slots.begin(), slots.end(), rng);
      slots.resize(tokens);
      slots[4] = -1;
      write_kv(TensorView::contiguous(key.data(), DType::kBFloat16, {tokens, c.hkv, d}),
               TensorView::contiguous(value.data(), DType::kBFloat16, {tokens, c.hkv, d}),
               TensorView::contiguous(slots.data(), DType::kInt64, {tokens}), c.cache());
      std::vector<bool> written(static_cast<size_t>(c.blocks * c.bs * c.hkv), false);
      const PresetInfo info = preset_info(preset);
      std::vector<float> kf(d), vf(d);
      std::vector<uint8_t> kc(c.tb.key_codes), vc(c.tb.value_codes);
      for (int64_t t = 0; t < tokens; ++t) {
        if (slots[t] < 0) continue;
        for (int64_t h = 0; h < c.hkv; ++h) {
          const int64_t row = slots[t] * c.hkv + h;
          written[static_cast<size_t>(row)] = true;
          for (int64_t i = 0; i < d; ++i) {
            kf[i] = bf16_bits_to_float(key[(t * c.hkv + h) * d + i]);
            vf[i] = bf16_bits_to_float(value[(t * c.hkv + h) * d + i]);
          }
          uint16_t norm = 0, vs = 0, vm = 0;
          if (info.key_bits == 8) {
            for (int64_t i = 0; i < d; ++i) kc[i] = float_to_fp8e4m3_bits(kf[i]);
          } else {
            quantize_key(kf.data(), static_cast<int>(d), info.key_bits, kc.data(), &norm);
            EXPECT_EQ(c.norms[static_cast<size_t>(row)], norm);
          }
          quantize_value(vf.data(), static_cast<int>(d), info.value_bits, vc.data(), &vs, &vm);
          EXPECT_TRUE(std::equal(kc.begin(), kc.end(), c.k.begin() + row * c.tb.key_codes));
          EXPECT_TRUE(std::equal(vc.begin(), vc.end(), c.v.begin() + row * c.tb.value_codes));
          EXPECT_EQ(c.meta[static_cast<size_t>(2 * row)], vs);
          EXPECT_EQ(c.meta[static_cast<size_t>(2 * row + 1)], vm);
        }
      }
      for (size_t row = 0; row < written.size(); ++row) {
        if (written[row]) continue;
        for (int64_t b = 0; b < c.tb.key_codes; ++b) ASSERT_EQ(c.k[row * c.tb.key_codes + b], 0xA5);
        for (int64_t b = 0; b < c.tb.value_codes; ++b) ASSERT_EQ(c.v[row * c.tb.value_codes + b], 0xA5);
        ASSERT_EQ(c.meta[2 * row], 0xA5A5);
      }
    }
  }
}

TEST(TurboQuant, BadPlanesAreClearErrors) {
  HostTqCache c(Preset::kK4V4, 4, 16, 2, 128);
  std::vector<uint16_t> q(5 * 4 * 128), out(q.size());
  std::vector<int32_t> tables = {0, 1}, lens = {20}, qsl = {0, 5};
  BatchDesc batch;
  batch.block_tables = TensorView::contiguous(tables.data(), DType::kInt32, {1, 2});
  batch.seq_lens = TensorView::contiguous(lens.data(), DType::kInt32, {1});
  batch.query_start_loc = TensorView::contiguous(qsl.data(), DType::kInt32, {2});
  const TensorView query = TensorView::contiguous(q.data(), DType::kBFloat16, {5, 4, 128});
  const TensorView o = TensorView::contiguous(out.data(), DType::kBFloat16, {5, 4, 128});
  auto run = [&](const PagedKVCache& cache) { attention(query, cache, batch, AttentionParams{}, o); };
  run(c.cache());  // the well-formed cache runs
  auto bad = c.cache();
  bad.k.shape[3] = 48;
  EXPECT_ERROR_CONTAINS(run(bad), "a tq_k4v4 cache at head_dim 128 holds cache.k rows of 64 code bytes");
  bad = c.cache();
  bad.k_meta = {};
  EXPECT_ERROR_CONTAINS(run(bad),
                        "a tq_k4v4 cache needs cache.k_meta: fp16 [num_blocks, block_size, num_kv_heads]");
  bad = c.cache();
  bad.v_meta.shape[3] = 3;
  EXPECT_ERROR_CONTAINS(run(bad), "cache.v_meta must have shape [4, 16, 2, 2]");
  bad = c.cache();
  bad.v.dtype = DType::kInt8;
  EXPECT_ERROR_CONTAINS(run(bad), "cache.v must be uint8, got int8");
  bad = c.cache();
  bad.tq_head_dim = 72;
  EXPECT_ERROR_CONTAINS(run(bad), "head_dim 72 is not supported");
  HostTqCache k8(Preset::kK8V4, 4, 16, 2, 128);
  auto with_norms = k8.cache();
  with_norms.k_meta = c.cache().k_meta;
  EXPECT_ERROR_CONTAINS(run(with_norms), "a tq_k8v4 cache keeps fp8 keys and no key norms");
}

}  // namespace
}  // namespace pagedattn::tq
