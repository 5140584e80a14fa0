#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include <random>

#include "pagedattn/dtype.h"
#include "reference_dtype.h"
#include "test_util.h"

namespace pagedattn {
namespace {

TEST(DType, Fp16RoundTripsEveryBitPattern) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = fp16_bits_to_float(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_bits_to_float(float_to_fp16_bits(f))));
      continue;
    }
    EXPECT_EQ(float_to_fp16_bits(f), h) << "bits " << h;
  }
}

TEST(DType, Fp16RoundsToNearestEven) {
  // 1 + 2^-11 is exactly between 1 and 1 + 2^-10: ties to even (1.0). 1 + 3*2^-11 ties up to 1 + 2^-9.
  EXPECT_EQ(fp16_bits_to_float(float_to_fp16_bits(1.0f + std::ldexp(1.0f, -11))), 1.0f);
  EXPECT_EQ(fp16_bits_to_float(float_to_fp16_bits(1.0f + 3 * std::ldexp(1.0f, -11))),
            1.0f + std::ldexp(1.0f, -9));
  EXPECT_EQ(fp16_bits_to_float(float_to_fp16_bits(65504.0f)), 65504.0f);
  EXPECT_TRUE(std::isinf(fp16_bits_to_float(float_to_fp16_bits(65520.0f))));
  EXPECT_EQ(fp16_bits_to_float(float_to_fp16_bits(65519.0f)), 65504.0f);
  EXPECT_EQ(fp16_bits_to_float(float_to_fp16_bits(std::ldexp(1.0f, -24))), std::ldexp(1.0f, -24));
  EXPECT_EQ(fp16_bits_to_float(float_to_fp16_bits(std::ldexp(1.0f, -25))), 0.0f);  // tie to even: 0
  EXPECT_EQ(fp16_bits_to_float(float_to_fp16_bits(std::ldexp(3.0f, -26))), std::ldexp(1.0f, -24));
}

TEST(DType, Bf16RoundTripsAndRounds) {
  for (uint32_t b = 0; b < 65536; ++b) {
    const float f = bf16_bits_to_float(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    EXPECT_EQ(float_to_bf16_bits(f), b);
  }
  EXPECT_EQ(bf16_bits_to_float(float_to_bf16_bits(1.0f + std::ldexp(1.0f, -8))), 1.0f);  // tie to even
  EXPECT_EQ(bf16_bits_to_float(float_to_bf16_bits(1.0f + 3 * std::ldexp(1.0f, -8))),
            1.0f + std::ldexp(1.0f, -6));
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(std::nanf("")))));
}

TEST(DType, Fp8E4M3RoundTripsSaturatesAndRounds) {
  for (uint32_t b = 0; b < 256; ++b) {
    const float f = fp8e4m3_bits_to_float(static_cast<uint8_t>(b));
    if (std::isnan(f)) continue;
    EXPECT_EQ(float_to_fp8e4m3_bits(f), b) << "bits " << b;
  }
  EXPECT_EQ(fp8e4m3_bits_to_float(float_to_fp8e4m3_bits(1000.0f)), 448.0f);
  EXPECT_EQ(fp8e4m3_bits_to_float(float_to_fp8e4m3_bits(-1e9f)), -448.0f);
  EXPECT_EQ(fp8e4m3_bits_to_float(float_to_fp8e4m3_bits(1.0625f)), 1.0f);   // tie to even
  EXPECT_EQ(fp8e4m3_bits_to_float(float_to_fp8e4m3_bits(1.1875f)), 1.25f);  // tie to even (up)
  EXPECT_EQ(fp8e4m3_bits_to_float(float_to_fp8e4m3_bits(std::ldexp(1.0f, -9))), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(fp8e4m3_bits_to_float(float_to_fp8e4m3_bits(std::nanf("")))));
  // Every float rounds to the nearest representable value.
  for (float x = -500.0f; x < 500.0f; x += 0.37f) {
    const float r = fp8e4m3_bits_to_float(float_to_fp8e4m3_bits(x));
    float best = 0, best_err = std::numeric_limits<float>::infinity();
    for (uint32_t b = 0; b < 256; ++b) {
      const float v = fp8e4m3_bits_to_float(static_cast<uint8_t>(b));
      if (!std::isnan(v) && std::fabs(v - x) < best_err) {
        best_err = std::fabs(v - x);
        best = v;
      }
    }
    EXPECT_FLOAT_EQ(std::fabs(r - x), std::fabs(best - x)) << x;
  }
}

TEST(DType, Fp8E5M2RoundTripsAndSaturates) {
  for (uint32_t b = 0; b < 256; ++b) {
    const float f = fp8e5m2_bits_to_float(static_cast<uint8_t>(b));
    if (std::isnan(f) || std::isinf(f)) continue;
    EXPECT_EQ(float_to_fp8e5m2_bits(f), b) << "bits " << b;
  }
  EXPECT_EQ(fp8e5m2_bits_to_float(float_to_fp8e5m2_bits(INFINITY)), 57344.0f);
  EXPECT_EQ(fp8e5m2_bits_to_float(float_to_fp8e5m2_bits(-1e9f)), -57344.0f);
  EXPECT_EQ(fp8e5m2_bits_to_float(float_to_fp8e5m2_bits(1.125f)), 1.0f);  // tie to even
  EXPECT_TRUE(std::isnan(fp8e5m2_bits_to_float(float_to_fp8e5m2_bits(std::nanf("")))));
}

TEST(DType, NamesParse) {
  for (DType t : {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3, DType::kFloat8E5M2,
                  DType::kInt8, DType::kInt32, DType::kInt64}) {
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  }
}

// The test oracle decodes stored elements with its own code (testing/reference_dtype.cpp, written from the
// formats' definitions). The library must agree on every bit pattern of every 8- and 16-bit format.
TEST(DType, LibraryDecodingAgreesWithTheReferenceOnEveryBitPattern) {
  for (DType t : {DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3, DType::kFloat8E5M2}) {
    const uint32_t patterns = dtype_size(t) == 1 ? 256 : 65536;
    for (uint32_t b = 0; b < patterns; ++b) {
      const uint32_t bits = b;  // 4 bytes: the compiler sees no read past it on any dtype's path
      const double want = testing::ref_decode(&bits, t, 0);
      const float got = load_as_float(&bits, t, 0);
      if (std::isnan(want)) {
        EXPECT_TRUE(std::isnan(got)) << dtype_name(t) << " bits " << b;
      } else {
        EXPECT_EQ(static_cast<double>(got), want) << dtype_name(t) << " bits " << b;
      }
    }
  }
}

// Known values from the formats' specifications, so that the reference itself is pinned (a table, not a
// second copy of the same reasoning).
TEST(DType, ReferenceDecodesKnownValues) {
  struct Known {
    DType t;
    uint16_t bits;
    double value;
  };
  const Known known[] = {{DType::kFloat16, 0x3c00, 1.0},
                         {DType::kFloat16, 0x7bff, 65504.0},
                         {DType::kFloat16, 0x0001, 5.960464477539063e-08},
                         {DType::kFloat16, 0x0400, 6.103515625e-05},
                         {DType::kFloat16, 0xc000, -2.0},
                         {DType::kFloat16, 0x3555, 0.333251953125},
                         {DType::kBFloat16, 0x3f80, 1.0},
                         {DType::kBFloat16, 0x4049, 3.140625},
                         {DType::kBFloat16, 0x7f7f, 3.3895313892515355e+38},
                         {DType::kBFloat16, 0x0001, 9.183549615799121e-41},
                         {DType::kFloat8E4M3, 0x38, 1.0},
                         {DType::kFloat8E4M3, 0x7e, 448.0},
                         {DType::kFloat8E4M3, 0x01, 0.001953125},
                         {DType::kFloat8E4M3, 0x08, 0.015625},
                         {DType::kFloat8E4M3, 0xb8, -1.0},
                         {DType::kFloat8E4M3, 0x77, 240.0},
                         {DType::kFloat8E5M2, 0x3c, 1.0},
                         {DType::kFloat8E5M2, 0x7b, 57344.0},
                         {DType::kFloat8E5M2, 0x01, 1.52587890625e-05},
                         {DType::kFloat8E5M2, 0x04, 6.103515625e-05},
                         {DType::kFloat8E5M2, 0xc2, -3.0}};
  for (const Known& k : known) {
    EXPECT_EQ(testing::ref_decode(&k.bits, k.t, 0), k.value) << dtype_name(k.t) << " bits " << k.bits;
  }
  const uint16_t inf16 = 0x7c00, nan8 = 0x7f, inf_bf = 0xff80;
  EXPECT_TRUE(std::isinf(testing::ref_decode(&inf16, DType::kFloat16, 0)));
  EXPECT_TRUE(std::isnan(testing::ref_decode(&nan8, DType::kFloat8E4M3, 0)));
  EXPECT_TRUE(std::isinf(testing::ref_decode(&inf_bf, DType::kBFloat16, 0)));
}

// The library's rounding (what write_kv and the CPU backend use) against the reference's rounding, on random
// values across every binade, on the exact midpoints between neighbours (ties to even), and past the largest
// finite value (inf for fp16/bf16, saturation for e4m3fn).
TEST(DType, LibraryRoundingAgreesWithTheReference) {
  std::mt19937_64 rng(test::run_seed());
  for (DType t : {DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3, DType::kFloat8E5M2}) {
    const uint32_t patterns = dtype_size(t) == 1 ? 256 : 65536;
    std::vector<double> values;
    for (uint32_t b = 0; b + 1 < patterns; ++b) {  // midpoints of neighbouring finite values
      const uint16_t lo = static_cast<uint16_t>(b), hi = static_cast<uint16_t>(b + 1);
      const double a = testing::ref_decode(&lo, t, 0), c = testing::ref_decode(&hi, t, 0);
      if (std::isfinite(a) && std::isfinite(c)) values.push_back(0.5 * (a + c));
    }
    for (int i = 0; i < 20000; ++i) {
      const double mag = std::ldexp(std::uniform_real_distribution<double>(1.0, 2.0)(rng),
                                    std::uniform_int_distribution<int>(-30, 20)(rng));
      values.push_back(i % 2 ? mag : -mag);
    }
    for (double v : {448.0, 460.0, 464.0, 480.0, 1e6, 57344.0, 61439.0, 61440.0, 65504.0, 65519.0, 65520.0,
                     3.4e38, static_cast<double>(INFINITY)}) {
      values.push_back(v);
      values.push_back(-v);
    }
    for (double v : values) {
      const float f = static_cast<float>(v);
      if (static_cast<double>(f) != v) continue;  // the library rounds floats: only exactly-float inputs
      const double want = testing::ref_round(v, t);
      const float got = round_to_dtype(f, t);
      EXPECT_EQ(static_cast<double>(got), want) << dtype_name(t) << " x = " << v;
    }
  }
}

}  // namespace
}  // namespace pagedattn
