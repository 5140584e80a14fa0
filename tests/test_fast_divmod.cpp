// FastDivmod against integer division: every divisor a GQA group can have in practice and then some, at the
// edges of the range (0, multiples of the divisor and their neighbours, 2^31 - 1) and at random points.
#include <gtest/gtest.h>

#include <cstdint>
#include <random>

#include "kernels/fast_divmod.h"

namespace pagedattn::kernels {
namespace {

TEST(FastDivmod, MatchesIntegerDivision) {
  std::mt19937_64 rng(std::random_device{}());
  std::uniform_int_distribution<int32_t> any(0, INT32_MAX);
  for (int32_t d = 1; d <= 1100; ++d) {
    const FastDivmod f(d);
    auto check = [&](int32_t n) {
      int32_t q = 0, r = 0;
      f.divmod(n, q, r);
      ASSERT_EQ(q, n / d) << n << " / " << d;
      ASSERT_EQ(r, n % d) << n << " % " << d;
    };
    for (int32_t n = 0; n < 4 * d + 3; ++n) check(n);
    for (int32_t k :
         {INT32_MAX, INT32_MAX - 1, INT32_MAX - d, (INT32_MAX / d) * d, (INT32_MAX / d) * d - 1}) {
      if (k >= 0) check(k);
    }
    for (int i = 0; i < 2000; ++i) check(any(rng));
  }
  for (int32_t d : {65521, 1 << 20, (1 << 30) + 7, INT32_MAX}) {
    const FastDivmod f(d);
    for (int i = 0; i < 20000; ++i) {
      const int32_t n = any(rng);
      ASSERT_EQ(f.div(n), n / d) << n << " / " << d;
    }
  }
}

}  // namespace
}  // namespace pagedattn::kernels
