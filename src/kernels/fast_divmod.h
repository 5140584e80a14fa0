// Division by a divisor fixed for a whole launch (the GQA group size, the page size) as a multiply-high and a
// shift. A
// run-time integer division is ~20 dependent instructions on the GPU; the kernels divide packed-row indices
// by the group size for every Q row they load, every row they write and every row's query position, which
// made up a visible part of a short CTA's prologue (bench/NOTES.md, version 12).
//
// For a divisor d >= 2 with l = ceil(log2 d): m = ceil(2^(31 + l) / d) fits in 32 bits and
// n / d = (n * m) >> (32 + l - 1) for every 0 <= n < 2^31 (the round-up error n * (m * d - 2^(31+l)) / d
// stays below 2^(31+l) / d, less than one step of the quotient). d = 1 is the identity.
#pragma once

#include <cstdint>

#include "kernels/host_device.h"

namespace pagedattn::kernels {

struct FastDivmod {
  int32_t divisor = 1;
  uint32_t multiplier = 0;
  uint32_t shift = 0;

  FastDivmod() = default;
  explicit FastDivmod(int32_t d) : divisor(d) {
    if (d <= 1) return;
    uint32_t l = 0;
    while ((1ll << l) < d) ++l;
    multiplier = static_cast<uint32_t>(((1ull << (31 + l)) + static_cast<uint64_t>(d) - 1) / d);
    shift = l - 1;
  }

  /// n / divisor for 0 <= n < 2^31.
  PAGEDATTN_HD int32_t div(int32_t n) const {
    if (divisor == 1) return n;
#if defined(__CUDA_ARCH__)
    return static_cast<int32_t>(__umulhi(static_cast<uint32_t>(n), multiplier) >> shift);
#else
    return static_cast<int32_t>(((static_cast<uint64_t>(n) * multiplier) >> 32) >> shift);
#endif
  }
  /// Quotient and remainder for 0 <= n < 2^31.
  PAGEDATTN_HD void divmod(int32_t n, int32_t& quotient, int32_t& remainder) const {
    quotient = div(n);
    remainder = n - quotient * divisor;
  }
};

}  // namespace pagedattn::kernels
