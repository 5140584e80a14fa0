// write_kv on the CPU over the write_kv grid (testing/write_kv_problem.h): every written element equals the
// source rounded to the cache dtype by the reference's own rounding, nothing else changes, and the first and
// last slot of the pool and of a block are always among the written slots.
#include <gtest/gtest.h>

#include <algorithm>

#include "runner.h"
#include "test_util.h"
#include "write_kv_problem.h"

namespace pagedattn {
namespace {

const std::vector<testing::WriteKVSpec>& grid() {
  static const std::vector<testing::WriteKVSpec> cases = testing::write_kv_grid(false, test::run_seed());
  return cases;
}

class WriteKVGrid : public ::testing::TestWithParam<size_t> {};

TEST_P(WriteKVGrid, WritesEverySlotAndNothingElse) {
  const testing::WriteKVSpec& spec = grid()[GetParam()];
  SCOPED_TRACE(spec.describe());
  testing::HostWriteKV p = testing::make_write_kv_problem(spec);
  testing::make_cpu_runner()->run_write_kv(p);
  EXPECT_EQ(testing::check_write_kv(p), "");
}

INSTANTIATE_TEST_SUITE_P(Grid, WriteKVGrid, ::testing::Range<size_t>(0, grid().size()));

// The problems always write the edge slots (a kernel that skips slot 0 or the pool's last slot fails every
// case, not one run in five), at block sizes 1 (first == last of a block), 3, 16 and 256.
TEST(WriteKV, ProblemsWriteTheEdgeSlots) {
  for (int bs : {1, 3, 16, 256}) {
    testing::WriteKVSpec s;
    s.block_size = bs;
    s.num_blocks = 5;
    s.num_tokens = 5;
    s.seed = test::run_seed();
    const testing::HostWriteKV p = testing::make_write_kv_problem(s);
    for (int64_t edge : {int64_t{0}, int64_t{5} * bs - 1, int64_t{2} * bs, int64_t{2} * bs + bs - 1}) {
      EXPECT_NE(std::find(p.slots.begin(), p.slots.end(), edge), p.slots.end())
          << "block size " << bs << ": slot " << edge;
    }
  }
}

// The check itself fails when a slot is not written or a stray element is (a check that cannot fail would
// pass a broken kernel).
TEST(WriteKV, CheckCatchesSkippedAndStrayWrites) {
  testing::WriteKVSpec s;  // NHD, bf16: slot x's first element starts at byte x * heads * head_dim * 2
  s.seed = test::run_seed();
  testing::HostWriteKV good = testing::make_write_kv_problem(s);
  testing::make_cpu_runner()->run_write_kv(good);
  ASSERT_EQ(testing::check_write_kv(good), "");
  const int64_t slot_bytes = int64_t{s.num_kv_heads} * s.head_dim * 2;
  // A backend that skipped slot 0: the pool there still holds its initial bytes.
  testing::HostWriteKV miss = good;
  std::copy_n(good.k_before.begin(), 2, miss.k_pool.begin());
  EXPECT_NE(testing::check_write_kv(miss), "");
  // A stray write into a slot no token maps to.
  int64_t unused = 0;
  while (std::find(good.slots.begin(), good.slots.end(), unused) != good.slots.end()) ++unused;
  testing::HostWriteKV stray = good;
  stray.v_pool[static_cast<size_t>(unused * slot_bytes)] ^= 0x01;
  EXPECT_NE(testing::check_write_kv(stray), "");
}

}  // namespace
}  // namespace pagedattn
