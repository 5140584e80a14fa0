// Element types and exact host-side conversions (round-to-nearest-even).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace pagedattn {

/// kUInt8: raw bytes (the packed code planes of TurboQuant caches, pagedattn/turboquant.h).
enum class DType : uint8_t {
  kFloat32,
  kFloat16,
  kBFloat16,
  kFloat8E4M3,
  kFloat8E5M2,
  kInt8,
  kInt32,
  kInt64,
  kUInt8
};

/// Bytes of one element.
constexpr int dtype_size(DType t) {
  switch (t) {
    case DType::kFloat32:
      return 4;
    case DType::kFloat16:
      return 2;
    case DType::kBFloat16:
      return 2;
    case DType::kFloat8E4M3:
    case DType::kFloat8E5M2:
    case DType::kInt8:
    case DType::kUInt8:
      return 1;
    case DType::kInt32:
      return 4;
    case DType::kInt64:
      return 8;
  }
  return 0;
}

/// Short name used in messages and on the command line ("fp32", "fp16", "bf16", "fp8_e4m3", "fp8_e5m2",
/// "int8", "int32", "int64", "uint8").
std::string_view dtype_name(DType t);

/// Parses a name produced by dtype_name; throws pagedattn::Error on anything else.
DType parse_dtype(std::string_view name);

/// True for the floating-point types.
constexpr bool is_float_dtype(DType t) {
  return t != DType::kInt8 && t != DType::kInt32 && t != DType::kInt64 && t != DType::kUInt8;
}

// ---- scalar conversions (bit patterns)
// ------------------------------------------------------------------------------

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

/// IEEE binary16, round to nearest even; overflow gives inf; NaN stays NaN.
inline uint16_t float_to_fp16_bits(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  if (ax < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal result m * 2^-24
    const float scaled = bits_float(ax) * 16777216.0f;  // exact: a power-of-two scale
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  uint32_t h = ((((ax >> 23) - 127u + 15u) << 10) | ((ax & 0x7fffffu) >> 13));
  const uint32_t rem = ax & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carry may move into the exponent: still correct
  return static_cast<uint16_t>(sign | h);
}

inline float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0) {
    const float v = std::ldexp(static_cast<float>(m), -24);
    return sign ? -v : v;
  }
  if (e == 31) return bits_float(sign | 0x7f800000u | (m << 13));
  return bits_float(sign | ((e - 15u + 127u) << 23) | (m << 13));
}

/// bfloat16, round to nearest even; NaN stays NaN.
inline uint16_t float_to_bf16_bits(float f) {
  const uint32_t x = float_bits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  return static_cast<uint16_t>((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}
inline float bf16_bits_to_float(uint16_t b) {
  return bits_float(static_cast<uint32_t>(b) << 16);
}

/// fp8 e4m3fn (bias 7, no inf, NaN = S.1111.111), round to nearest even, saturating at +-448.
inline uint8_t float_to_fp8e4m3_bits(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f)) return static_cast<uint8_t>(sign | 0x7f);
  const float a = std::fabs(f);
  if (a >= 448.0f) return static_cast<uint8_t>(sign | 0x7e);
  if (a < 0.015625f) {  // below 2^-6: subnormal m * 2^-9 (m = 8 encodes the smallest normal, as it should)
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f)));
  }
  int e = 0;
  const float frac = std::frexp(a, &e);                    // a = frac * 2^e, frac in [0.5, 1)
  int q = static_cast<int>(std::nearbyint(frac * 16.0f));  // 1.mmm in eighths: [8, 16]
  int exp = e - 1;
  if (q == 16) {
    q = 8;
    ++exp;
  }
  return static_cast<uint8_t>(sign | ((exp + 7) << 3) | (q - 8));
}

inline float fp8e4m3_bits_to_float(uint8_t b) {
  const int e = (b >> 3) & 0xf;
  const int m = b & 0x7;
  float v;
  if (e == 15 && m == 7) {
    v = std::nanf("");
  } else if (e == 0) {
    v = std::ldexp(static_cast<float>(m), -9);
  } else {
    v = std::ldexp(1.0f + static_cast<float>(m) / 8.0f, e - 7);
  }
  return (b & 0x80) ? -v : v;
}

/// fp8 e5m2 (bias 15, IEEE specials), round to nearest even, saturating at +-57344 (infinities included, as
/// the e4m3 conversion saturates); NaN stays NaN. e5m2 is the top byte of an fp16, so the rounding is fp16's
/// with two mantissa bits.
inline uint8_t float_to_fp8e5m2_bits(float f) {
  const uint8_t sign = std::signbit(f) ? 0x80 : 0x00;
  if (std::isnan(f)) return static_cast<uint8_t>(sign | 0x7e);
  const float a = std::fabs(f);
  if (a >= 57344.0f) return static_cast<uint8_t>(sign | 0x7b);
  if (a < 6.103515625e-05f) {  // below 2^-14: subnormal m * 2^-16
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::nearbyint(a * 65536.0f)));
  }
  int e = 0;
  const float frac = std::frexp(a, &e);                   // a = frac * 2^e, frac in [0.5, 1)
  int q = static_cast<int>(std::nearbyint(frac * 8.0f));  // 1.mm in quarters: [4, 8]
  int exp = e - 1;
  if (q == 8) {
    q = 4;
    ++exp;
  }
  if (exp + 15 >= 31) return static_cast<uint8_t>(sign | 0x7b);  // rounded past 57344: saturate
  return static_cast<uint8_t>(sign | ((exp + 15) << 2) | (q - 4));
}

inline float fp8e5m2_bits_to_float(uint8_t b) {
  return fp16_bits_to_float(static_cast<uint16_t>(static_cast<uint16_t>(b) << 8));
}

/// Reads element i of a buffer of float dtype t as fp32.
inline float load_as_float(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kFloat32:
      return static_cast<const float*>(p)[i];
    case DType::kFloat16:
      return fp16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::kBFloat16:
      return bf16_bits_to_float(static_cast<const uint16_t*>(p)[i]);
    case DType::kFloat8E4M3:
      return fp8e4m3_bits_to_float(static_cast<const uint8_t*>(p)[i]);
    case DType::kFloat8E5M2:
      return fp8e5m2_bits_to_float(static_cast<const uint8_t*>(p)[i]);
    case DType::kInt8:
      return static_cast<float>(static_cast<const int8_t*>(p)[i]);
    default:
      return std::nanf("");
  }
}

/// Writes fp32 value v into element i of a buffer of float dtype t (rounded to nearest even; the fp8 formats
/// saturate).
inline void store_from_float(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kFloat32:
      static_cast<float*>(p)[i] = v;
      break;
    case DType::kFloat16:
      static_cast<uint16_t*>(p)[i] = float_to_fp16_bits(v);
      break;
    case DType::kBFloat16:
      static_cast<uint16_t*>(p)[i] = float_to_bf16_bits(v);
      break;
    case DType::kFloat8E4M3:
      static_cast<uint8_t*>(p)[i] = float_to_fp8e4m3_bits(v);
      break;
    case DType::kFloat8E5M2:
      static_cast<uint8_t*>(p)[i] = float_to_fp8e5m2_bits(v);
      break;
    default:
      break;
  }
}

/// Rounds v to the nearest value representable in dtype t.
inline float round_to_dtype(float v, DType t) {
  switch (t) {
    case DType::kFloat16:
      return fp16_bits_to_float(float_to_fp16_bits(v));
    case DType::kBFloat16:
      return bf16_bits_to_float(float_to_bf16_bits(v));
    case DType::kFloat8E4M3:
      return fp8e4m3_bits_to_float(float_to_fp8e4m3_bits(v));
    case DType::kFloat8E5M2:
      return fp8e5m2_bits_to_float(float_to_fp8e5m2_bits(v));
    default:
      return v;
  }
}

}  // namespace pagedattn
