#include "reference_dtype.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "pagedattn/error.h"

namespace pagedattn::testing {
namespace {

struct Format {
  int exponent_bits, mantissa_bits, bias;
  bool ieee_specials;  // the all-ones exponent holds inf and NaN (else: e4m3fn's single NaN pattern)
  bool saturates;  // the library's conversion into it clamps to the largest finite value (the fp8 formats)
};

Format format_of(DType t) {
  switch (t) {
    case DType::kFloat32:
      return {8, 23, 127, true, false};
    case DType::kFloat16:
      return {5, 10, 15, true, false};
    case DType::kBFloat16:
      return {8, 7, 127, true, false};
    case DType::kFloat8E4M3:
      return {4, 3, 7, false, true};
    case DType::kFloat8E5M2:
      return {5, 2, 15, true, true};
    default:
      PA_CHECK(false, "reference: ", dtype_name(t), " is not a float dtype");
  }
}

double largest_finite(const Format& f) {
  // e4m3fn: exponent all ones is normal, but its largest mantissa is NaN, leaving 1.110b * 2^8 = 448.
  const int top_exponent = (1 << f.exponent_bits) - (f.ieee_specials ? 2 : 1);
  const double top_mantissa =
      f.ieee_specials ? 2.0 - std::ldexp(1.0, -f.mantissa_bits) : 2.0 - std::ldexp(2.0, -f.mantissa_bits);
  return std::ldexp(top_mantissa, top_exponent - f.bias);
}

}  // namespace

namespace {

// The definition above, applied to one bit pattern.
double decode_bits(const Format& f, uint64_t bits) {
  const uint64_t m = bits & ((uint64_t{1} << f.mantissa_bits) - 1);
  const uint64_t e = (bits >> f.mantissa_bits) & ((uint64_t{1} << f.exponent_bits) - 1);
  const bool negative = (bits >> (f.exponent_bits + f.mantissa_bits)) & 1;
  const uint64_t e_max = (uint64_t{1} << f.exponent_bits) - 1;
  double v;
  if (f.ieee_specials && e == e_max) {
    v = m == 0 ? std::numeric_limits<double>::infinity() : std::numeric_limits<double>::quiet_NaN();
  } else if (!f.ieee_specials && e == e_max && m == (uint64_t{1} << f.mantissa_bits) - 1) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (e == 0) {
    v = std::ldexp(static_cast<double>(m), 1 - f.bias - f.mantissa_bits);
  } else {
    v = std::ldexp(1.0 + std::ldexp(static_cast<double>(m), -f.mantissa_bits), static_cast<int>(e) - f.bias);
  }
  return negative ? -v : v;
}

// Every bit pattern of an 8- or 16-bit format, decoded once (the dense reference reads each element many
// times).
const std::vector<double>& table_of(DType t) {
  static const auto make = [](DType type) {
    const Format f = format_of(type);
    std::vector<double> table(size_t{1} << (1 + f.exponent_bits + f.mantissa_bits));
    for (size_t b = 0; b < table.size(); ++b) table[b] = decode_bits(f, b);
    return table;
  };
  static const std::vector<double> fp16 = make(DType::kFloat16), bf16 = make(DType::kBFloat16),
                                   fp8 = make(DType::kFloat8E4M3), e5m2 = make(DType::kFloat8E5M2);
  switch (t) {
    case DType::kFloat16:
      return fp16;
    case DType::kBFloat16:
      return bf16;
    case DType::kFloat8E5M2:
      return e5m2;
    default:
      return fp8;
  }
}

}  // namespace

double ref_decode(const void* buffer, DType t, int64_t i) {
  const Format f = format_of(t);
  const auto* p = static_cast<const unsigned char*>(buffer);
  if (t == DType::kFloat32) {
    uint32_t bits = 0;
    for (int b = 0; b < 4; ++b) bits |= static_cast<uint32_t>(p[i * 4 + b]) << (8 * b);  // little endian
    return decode_bits(f, bits);
  }
  if (t == DType::kFloat8E4M3 || t == DType::kFloat8E5M2) return table_of(t)[p[i]];
  return table_of(t)[static_cast<size_t>(p[i * 2]) | static_cast<size_t>(p[i * 2 + 1]) << 8];
}

double ref_round(double x, DType t) {
  if (t == DType::kFloat32) return static_cast<double>(static_cast<float>(x));  // the C++ conversion: RNE
  const Format f = format_of(t);
  if (std::isnan(x)) return x;
  if (std::isinf(x)) return f.saturates ? std::copysign(largest_finite(f), x) : x;
  // The spacing of representable values around |x|: 2^(e - M) for |x| in [2^e, 2^(e+1)), and the subnormal
  // spacing 2^(1 - B - M) below the smallest normal 2^(1 - B). Dividing by a power of two is exact, and
  // std::nearbyint rounds half to even in the default rounding mode.
  const int min_exponent = 1 - f.bias;
  int e = x == 0 ? min_exponent : std::ilogb(x);
  if (e < min_exponent) e = min_exponent;
  const double spacing = std::ldexp(1.0, e - f.mantissa_bits);
  const double r = std::nearbyint(x / spacing) * spacing;  // may carry to 2^(e+1): still representable
  const double top = largest_finite(f);
  if (std::fabs(r) <= top) return r;
  if (f.saturates) return std::copysign(top, x);
  return std::copysign(std::numeric_limits<double>::infinity(), x);
}

}  // namespace pagedattn::testing
