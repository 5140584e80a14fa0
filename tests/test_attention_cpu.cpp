// The CPU backend against the independent dense double-precision reference over the randomized grid.
#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <set>

#include "pagedattn/plan.h"
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

// The step's own raw K/V (AttentionParams::new_key/new_value) against the dense reference that reads the
// query positions from them and earlier positions from the cache: every cache format (for TurboQuant the
// spec's prefill semantics), fresh prompts, continuation chunks, decodes and mixed batches, odd head dims
// (block-diagonal rotation at 80/96/112), GQA 5/6, page sizes 1/7/16, window, sinks, soft-cap.
TEST(AttentionCpu, NewKvMatchesTheDenseReference) {
  std::mt19937_64 rng(test::run_seed());
  struct Format {
    DType cache;
    std::optional<tq::Preset> tq;
  };
  const Format formats[] = {{DType::kBFloat16, {}},
                            {DType::kFloat8E4M3, {}},
                            {DType::kInt8, {}},
                            {DType::kBFloat16, tq::Preset::kK8V4},
                            {DType::kBFloat16, tq::Preset::kK4V4},
                            {DType::kBFloat16, tq::Preset::kK3V4},
                            {DType::kBFloat16, tq::Preset::kK3V3}};
  const testing::BatchKind kinds[] = {testing::BatchKind::kPrefill, testing::BatchKind::kChunked,
                                      testing::BatchKind::kMixed, testing::BatchKind::kDecode};
  const int head_dims[] = {80, 112, 128}, ratios[] = {1, 5, 6}, block_sizes[] = {1, 7, 16};
  int n = 0;
  for (const Format& f : formats) {
    for (testing::BatchKind kind : kinds) {
      testing::ProblemSpec s;
      s.cache_dtype = f.cache;
      s.tq = f.tq;
      s.head_dim = head_dims[n % 3];
      s.num_kv_heads = 2;
      s.num_q_heads = 2 * ratios[(n / 3) % 3];
      s.block_size = block_sizes[n % 3 == 2 ? 0 : (n / 2) % 3];
      s.window_left = n % 5 == 1 ? 9 : 0;
      s.sinks = n % 4 == 2;
      s.softcap = n % 6 == 3 ? 30.0f : 0.0f;
      s.lse = true;
      s.new_kv = true;
      s.seed = rng();
      testing::draw_batch(s, kind, 2 + n % 4, 70, rng);
      ++n;
      SCOPED_TRACE(s.describe());
      testing::HostProblem p = testing::make_problem(s);
      attention(p.query(), p.cache(), p.batch(), p.params(), p.output());
      const auto cmp = testing::compare(p, testing::dense_reference(p));
      EXPECT_TRUE(cmp.ok) << cmp.summary();
    }
  }
}

// One rule for every query length: a prompt of 37 tokens over a 29-token quantized prefix, prefilled in
// chunks of every length 1..37 (a decode is a chunk of 1), gives each query row the same bits whether its
// chunk runs alone or inside a batch of other fresh, continuing and decoding sequences; and each chunk equals
// the dense reference.
TEST(AttentionCpu, NewKvChunksAreTheSameAloneAndInAnyBatch) {
  std::mt19937_64 rng(test::run_seed());
  constexpr int kPrefix = 29, kPrompt = 37;
  for (int chunk = 1; chunk <= kPrompt; ++chunk) {
    const int done = kPrefix + (chunk * 7) % (kPrompt - chunk + 1);  // a chunk that starts mid-prompt
    testing::ProblemSpec alone;
    alone.tq = chunk % 2 ? tq::Preset::kK4V4 : tq::Preset::kK3V3;
    alone.head_dim = 96;
    alone.num_q_heads = 12;
    alone.num_kv_heads = 2;
    alone.block_size = 7;
    alone.new_kv = true;
    alone.seq_lens = {done + chunk};
    alone.query_lens = {chunk};
    alone.seed = rng();
    SCOPED_TRACE(alone.describe());
    testing::HostProblem a = testing::make_problem(alone);
    attention(a.query(), a.cache(), a.batch(), a.params(), a.output());
    const auto cmp = testing::compare(a, testing::dense_reference(a));
    EXPECT_TRUE(cmp.ok) << cmp.summary();

    // The same sequence as the third of five: the others fresh (no prefix), continuing, decoding.
    testing::ProblemSpec batched = alone;
    batched.seq_lens = {50, 1 + chunk % 5, done + chunk, 64, 23};
    batched.query_lens = {50, 1, chunk, 17, 1};
    batched.seed = rng();
    testing::HostProblem b = testing::make_problem(batched);
    // Put the lone problem's data for that sequence into the batch: its cache pages, queries and new K/V.
    const int64_t blocks = (done + chunk + alone.block_size - 1) / alone.block_size;
    for (int64_t page = 0; page < blocks; ++page) {
      b.block_tables[2 * b.max_blocks_per_seq + page] = static_cast<int32_t>(b.num_blocks + page);
    }
    b.num_blocks += blocks;
    auto append_pages = [&](auto& dst, const auto& src, int64_t elems_per_block) {
      for (int64_t page = 0; page < blocks; ++page) {
        const auto first = src.begin() + a.block_tables[page] * elems_per_block;
        dst.insert(dst.end(), first, first + elems_per_block);
      }
    };
    const int64_t tokens_per_block = alone.block_size * alone.num_kv_heads;
    const tq::TokenBytes tb = tq::token_bytes(*alone.tq, alone.head_dim);
    append_pages(b.k_pool, a.k_pool, tokens_per_block * tb.key_codes);
    append_pages(b.v_pool, a.v_pool, tokens_per_block * tb.value_codes);
    append_pages(b.k_norms, a.k_norms, tokens_per_block);
    append_pages(b.v_scale_min, a.v_scale_min, 2 * tokens_per_block);
    const int64_t row0 = b.query_start_loc[2];
    const int64_t e = dtype_size(alone.dtype);
    const int64_t q_row = b.q_stride_token * e, kv_row = alone.num_kv_heads * alone.head_dim * e;
    std::memcpy(&b.q[row0 * q_row], a.q.data(), chunk * q_row);
    std::memcpy(&b.new_k[row0 * kv_row], a.new_k.data(), chunk * kv_row);
    std::memcpy(&b.new_v[row0 * kv_row], a.new_v.data(), chunk * kv_row);
    attention(b.query(), b.cache(), b.batch(), b.params(), b.output());
    const int64_t o_row = b.o_stride_token * e;
    EXPECT_EQ(0, std::memcmp(&b.out[row0 * o_row], a.out.data(), chunk * o_row))
        << "chunk " << chunk << ": the sequence's rows differ between alone and batched";
    const auto cmp_b = testing::compare(b, testing::dense_reference(b));
    EXPECT_TRUE(cmp_b.ok) << cmp_b.summary();
  }
}

// A bf16 cache that holds what the new K/V say gives bit-identical results with or without them (the raw
// rows are read at the same positions the cache's copies would be), over a mixed batch with page size 3.
TEST(AttentionCpu, NewKvEqualToTheCacheChangesNothing) {
  std::mt19937_64 rng(test::run_seed());
  testing::ProblemSpec s;
  s.head_dim = 64;
  s.num_q_heads = 6;
  s.num_kv_heads = 3;
  s.block_size = 3;
  s.new_kv = true;
  s.lse = true;
  s.seed = rng();
  testing::draw_batch(s, testing::BatchKind::kMixed, 7, 40, rng);
  testing::HostProblem p = testing::make_problem(s);
  const int64_t e = dtype_size(s.dtype), d = s.head_dim, h = s.num_kv_heads;
  for (size_t seq = 0; seq < p.seq_lens.size(); ++seq) {
    const int64_t q0 = p.query_start_loc[seq], qlen = p.query_start_loc[seq + 1] - q0;
    for (int64_t t = 0; t < qlen; ++t) {
      const int64_t pos = p.seq_lens[seq] - qlen + t;
      const int64_t block = p.block_tables[seq * p.max_blocks_per_seq + pos / s.block_size];
      const int64_t src = ((block * s.block_size + pos % s.block_size) * h) * d * e;
      std::memcpy(&p.new_k[(q0 + t) * h * d * e], &p.k_pool[src], h * d * e);
      std::memcpy(&p.new_v[(q0 + t) * h * d * e], &p.v_pool[src], h * d * e);
    }
  }
  attention(p.query(), p.cache(), p.batch(), p.params(), p.output());
  const std::vector<uint8_t> with_new = p.out;
  const std::vector<float> lse_with_new = p.lse;
  p.poison();
  AttentionParams without = p.params();
  without.new_key = without.new_value = TensorView{};
  attention(p.query(), p.cache(), p.batch(), without, p.output());
  EXPECT_EQ(with_new, p.out);
  EXPECT_EQ(0, std::memcmp(lse_with_new.data(), p.lse.data(), p.lse.size() * sizeof(float)));
}

TEST(AttentionCpu, NewKvBadInputIsAClearError) {
  testing::ProblemSpec s;
  s.tq = tq::Preset::kK4V4;
  s.num_q_heads = 4;
  s.num_kv_heads = 2;
  s.new_kv = true;
  s.seq_lens = {20, 9};
  s.query_lens = {20, 1};
  s.seed = test::run_seed();
  testing::HostProblem p = testing::make_problem(s);
  AttentionParams only_k = p.params();
  only_k.new_value = TensorView{};
  EXPECT_ERROR_CONTAINS(attention(p.query(), p.cache(), p.batch(), only_k, p.output()),
                        "new_key and new_value go together");
  AttentionParams short_rows = p.params();
  short_rows.new_key.shape[0] -= 1;
  short_rows.new_value.shape[0] -= 1;
  EXPECT_ERROR_CONTAINS(attention(p.query(), p.cache(), p.batch(), short_rows, p.output()),
                        "new_key must have shape [num_tokens, num_kv_heads, head_dim] = [21, 2, 128], got "
                        "[20, 2, 128]");
  AttentionParams wrong_dtype = p.params();
  wrong_dtype.new_value.dtype = DType::kFloat16;
  EXPECT_ERROR_CONTAINS(attention(p.query(), p.cache(), p.batch(), wrong_dtype, p.output()),
                        "new_value dtype fp16 must equal query dtype bf16");
  // A plan made without them does not run with them (and the other way round).
  AttentionParams without = p.params();
  without.new_key = without.new_value = TensorView{};
  const AttentionPlan plan = plan_attention(p.query(), p.cache(), p.batch(), without);
  EXPECT_ERROR_CONTAINS(run_attention(plan, p.query(), p.cache(), p.batch(), p.params(), p.output()),
                        "the presence of new_key/new_value (1 = given)");
}

}  // namespace
}  // namespace pagedattn
