#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "pagedattn/dtype.h"

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

TEST(DType, NamesParse) {
  for (DType t : {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat8E4M3, DType::kInt32,
                  DType::kInt64}) {
    EXPECT_EQ(parse_dtype(dtype_name(t)), t);
  }
}

}  // namespace
}  // namespace pagedattn
