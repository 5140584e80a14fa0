// The test oracle's own reading and rounding of stored elements, written from the formats' definitions and
// sharing no code with pagedattn/dtype.h: a conversion bug in the library cannot hide in the reference.
//
// Every float format here is sign | exponent (E bits, bias B) | mantissa (M bits):
//   exponent 0            subnormal  (-1)^s * m * 2^(1 - B - M)
//   exponent 1..max       normal     (-1)^s * (1 + m / 2^M) * 2^(e - B)
//   exponent all ones     IEEE formats (fp16, bf16, fp32, e5m2): inf (m = 0) or NaN; e4m3fn: normal, except
//                         S.1111.111, its only NaN (no infinities)
#pragma once

#include <cstdint>

#include "pagedattn/dtype.h"

namespace pagedattn::testing {

/// Element i of a buffer of float dtype t, exactly, as a double.
double ref_decode(const void* buffer, DType t, int64_t i);

/// The value of float dtype t nearest to x, ties to the even mantissa. Beyond the largest finite value: inf
/// for fp16, bf16 and fp32; the largest finite value for the fp8 formats (saturation, as the library
/// specifies for fp8, infinities included).
double ref_round(double x, DType t);

}  // namespace pagedattn::testing
