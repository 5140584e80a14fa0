// The CPU backend against the independent dense double-precision reference over the randomized grid.
#include <gtest/gtest.h>

#include <cstring>
#include <set>

#include "problem.h"
#include "runner.h"
#include "test_util.h"

namespace pagedattn {
namespace {

using testing::GridCase;

const std::vector<GridCase>& grid() {
  static const std::vector<GridCase> cases = testing::attention_grid(false, test::run_seed());
  return cases;
}

class AttentionGrid : public ::testing::TestWithParam<size_t> {};

TEST_P(AttentionGrid, CpuMatchesDenseReference) {
  const GridCase& c = grid()[GetParam()];
  SCOPED_TRACE(c.group + ": " + c.spec.describe());
  testing::HostProblem p = testing::make_problem(c.spec);
  testing::make_cpu_runner()->run_attention(p);
  const auto cmp = testing::compare(p, testing::dense_reference(p));
  EXPECT_TRUE(cmp.ok) << cmp.summary();
}

INSTANTIATE_TEST_SUITE_P(Grid, AttentionGrid, ::testing::Range<size_t>(0, grid().size()));

TEST(AttentionCpu, GridCoversTheMatrix) {
  std::set<int> head_dims, ratios, block_sizes;
  std::set<std::pair<DType, DType>> formats;  // (query dtype, cache format)
  std::set<DType> head_scaled;                // fp8 formats met with per-head scales
  bool hnd = false, strided = false, window = false, softcap = false, alibi = false, sinks = false,
       lse = false;
  bool empty_query = false, single = false, mid_block = false, large_logits = false;
  for (const auto& c : grid()) {
    const auto& s = c.spec;
    head_dims.insert(s.head_dim);
    ratios.insert(s.num_q_heads / s.num_kv_heads);
    block_sizes.insert(s.block_size);
    formats.insert({s.dtype, s.cache_dtype});
    if (s.head_scales) head_scaled.insert(s.cache_dtype);
    hnd |= s.hnd_layout;
    strided |= s.strided;
    window |= s.window_left > 0;
    softcap |= s.softcap > 0;
    alibi |= s.alibi;
    sinks |= s.sinks;
    lse |= s.lse;
    large_logits |=
        s.scale >= 4.0f && s.softcap == 0.0f;  // logits in the hundreds: the max subtraction matters
    for (size_t i = 0; i < s.seq_lens.size(); ++i) {
      empty_query |= s.query_lens[i] == 0;
      single |= s.seq_lens[i] == 1;
      mid_block |= s.seq_lens[i] % s.block_size != 0;
    }
  }
  EXPECT_EQ(head_dims, (std::set<int>{64, 80, 96, 112, 128, 192, 256}));
  EXPECT_EQ(ratios, (std::set<int>{1, 2, 3, 4, 5, 6, 8}));
  EXPECT_EQ(block_sizes, (std::set<int>{1, 3, 7, 16, 32, 128, 256}));
  for (DType q : {DType::kBFloat16, DType::kFloat16}) {
    for (DType c : {q, DType::kFloat8E4M3, DType::kFloat8E5M2, DType::kInt8}) {
      EXPECT_TRUE(formats.count({q, c})) << dtype_name(q) << " queries over a " << dtype_name(c) << " cache";
    }
  }
  EXPECT_TRUE(formats.count({DType::kFloat32, DType::kFloat32}));
  EXPECT_TRUE(head_scaled.count(DType::kFloat8E4M3) && head_scaled.count(DType::kFloat8E5M2));
  EXPECT_TRUE(hnd && strided && window && softcap && alibi && sinks && lse);
  EXPECT_TRUE(empty_query && single && mid_block);
  EXPECT_TRUE(large_logits);
}

// The same cache contents in both layouts give bit-identical results.
TEST(AttentionCpu, LayoutsAgreeExactly) {
  std::mt19937_64 rng(test::run_seed());
  testing::ProblemSpec s;
  s.head_dim = 96;
  s.num_q_heads = 10;
  s.num_kv_heads = 2;
  s.block_size = 7;
  s.seed = rng();
  testing::draw_batch(s, testing::BatchKind::kMixed, 5, 90, rng);
  testing::HostProblem nhd = testing::make_problem(s);
  s.hnd_layout = true;
  testing::HostProblem hnd = testing::make_problem(s);
  // Re-lay the NHD pool's contents into the HND pool.
  const int64_t bs = s.block_size, h = s.num_kv_heads, d = s.head_dim, e = dtype_size(s.cache_dtype);
  for (int64_t b = 0; b < nhd.num_blocks; ++b)
    for (int64_t t = 0; t < bs; ++t)
      for (int64_t k = 0; k < h; ++k) {
        const int64_t src = ((b * bs + t) * h + k) * d * e, dst = ((b * h + k) * bs + t) * d * e;
        std::memcpy(&hnd.k_pool[dst], &nhd.k_pool[src], d * e);
        std::memcpy(&hnd.v_pool[dst], &nhd.v_pool[src], d * e);
      }
  attention(nhd.query(), nhd.cache(), nhd.batch(), nhd.params(), nhd.output());
  attention(hnd.query(), hnd.cache(), hnd.batch(), hnd.params(), hnd.output());
  EXPECT_EQ(nhd.out, hnd.out);
}

// One visible key: the output is that key's value row, exactly (fp32).
TEST(AttentionCpu, SingleKeyReturnsItsValue) {
  testing::ProblemSpec s;
  s.dtype = s.cache_dtype = DType::kFloat32;
  s.head_dim = 64;
  s.num_q_heads = s.num_kv_heads = 1;
  s.block_size = 1;
  s.seq_lens = {1};
  s.query_lens = {1};
  s.seed = test::run_seed();
  testing::HostProblem p = testing::make_problem(s);
  attention(p.query(), p.cache(), p.batch(), p.params(), p.output());
  const float* v = reinterpret_cast<const float*>(p.v_pool.data()) + p.block_tables[0] * 64;
  const float* o = reinterpret_cast<const float*>(p.out.data());
  for (int i = 0; i < 64; ++i) EXPECT_FLOAT_EQ(o[i], v[i]);
}

}  // namespace
}  // namespace pagedattn
