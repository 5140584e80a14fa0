// Bad input gets a clear error naming the constraint; nothing is written.
#include <gtest/gtest.h>

#include <sstream>

#include "problem.h"
#include "test_util.h"

namespace pagedattn {
namespace {

testing::HostProblem small_problem(int head_dim = 64) {
  testing::ProblemSpec s;
  s.head_dim = head_dim;
  s.num_q_heads = 4;
  s.num_kv_heads = 2;
  s.block_size = 16;
  s.seq_lens = {20, 33, 5};
  s.query_lens = {1, 10, 5};
  s.seed = 7;
  return testing::make_problem(s);
}

void run(testing::HostProblem& p) {
  attention(p.query(), p.cache(), p.batch(), p.params(), p.output());
}

TEST(Errors, UnsupportedHeadDim) {
  auto p = small_problem();
  auto cache = p.cache();
  cache.k.shape[3] = cache.v.shape[3] = 72;
  auto q = p.query();
  q.shape[2] = 72;
  auto o = p.output();
  o.shape[2] = 72;
  EXPECT_ERROR_CONTAINS(attention(q, cache, p.batch(), p.params(), o),
                        "head_dim 72 is not supported; supported: 64, 80, 96, 112, 128, 192, 256");
}

testing::HostProblem quantized_problem(DType cache_dtype) {
  testing::ProblemSpec s;
  s.head_dim = 64;
  s.num_q_heads = 4;
  s.num_kv_heads = 2;
  s.block_size = 16;
  s.cache_dtype = cache_dtype;
  s.seq_lens = {20, 33};
  s.query_lens = {1, 10};
  s.seed = 11;
  return testing::make_problem(s);
}

TEST(Errors, Int8CacheNeedsItsMetadataPlanes) {
  auto p = quantized_problem(DType::kInt8);
  auto cache = p.cache();
  cache.v_meta = {};
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "an int8 cache needs cache.v_meta: fp32 [num_blocks, block_size, num_kv_heads]");
  cache = p.cache();
  cache.k_meta.shape[2] = 3;
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "cache.k_meta must have shape [num_blocks, block_size, num_kv_heads] = [");
  cache = p.cache();
  cache.k_meta.dtype = DType::kFloat16;
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "cache.k_meta must be fp32, got fp16");
  cache = p.cache();
  cache.k_meta.device = Device::cuda(0);
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "cache.k_meta is on cuda:0 but the op runs on cpu");
  cache = p.cache();
  std::vector<float> one = {1.0f};
  cache.k_scale = TensorView::contiguous(one.data(), DType::kFloat32, {1});
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "cache.k_scale / cache.v_scale belong to fp8 caches; a int8 cache takes none");
}

TEST(Errors, Fp8ScalesAreCheckedAndOnlyFp8TakesThem) {
  auto p = quantized_problem(DType::kFloat8E5M2);
  auto cache = p.cache();
  std::vector<float> three = {1.0f, 2.0f, 3.0f};
  cache.k_scale = TensorView::contiguous(three.data(), DType::kFloat32, {3});
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "cache.k_scale must have shape [1] or [num_kv_heads] = [2], got [3]");
  cache.k_scale = TensorView::contiguous(three.data(), DType::kFloat32, {2});
  cache.k_scale.device = Device::cuda(0);
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "cache.k_scale is on cuda:0 but the op runs on cpu");
  cache = p.cache();
  cache.k_scale = TensorView::contiguous(three.data(), DType::kFloat32, {2});
  cache.v_scale = TensorView::contiguous(three.data(), DType::kFloat32, {1});
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "must both be per tensor or both per kv head");
  auto plain = small_problem();
  cache = plain.cache();
  cache.k_meta = cache.k;
  EXPECT_ERROR_CONTAINS(attention(plain.query(), cache, plain.batch(), plain.params(), plain.output()),
                        "cache.k_meta / cache.v_meta belong to int8 caches; a bf16 cache takes none");
}

TEST(Errors, QueryHeadsNotAMultipleOfKvHeads) {
  auto p = small_problem();
  auto q = p.query();
  q.shape[1] = 3;
  auto o = p.output();
  o.shape[1] = 3;
  EXPECT_ERROR_CONTAINS(attention(q, p.cache(), p.batch(), p.params(), o),
                        "num_q_heads (3) must be a multiple of num_kv_heads (2)");
}

TEST(Errors, DtypeMismatch) {
  auto p = small_problem();
  auto o = p.output();
  o.dtype = DType::kFloat16;
  EXPECT_ERROR_CONTAINS(attention(p.query(), p.cache(), p.batch(), p.params(), o),
                        "out dtype fp16 must equal query dtype bf16");
  auto cache = p.cache();
  cache.k.dtype = cache.v.dtype = DType::kFloat16;
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "cache dtype fp16 must equal query dtype bf16 or be a quantized format");
  cache = p.cache();
  cache.v.dtype = DType::kFloat16;
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "cache.k (bf16) and cache.v (fp16) must have the same dtype");
  auto b = p.batch();
  b.seq_lens.dtype = DType::kInt64;
  EXPECT_ERROR_CONTAINS(attention(p.query(), p.cache(), b, p.params(), p.output()),
                        "seq_lens must be int32, got int64");
}

TEST(Errors, BlockIdOutsidePool) {
  auto p = small_problem();
  p.block_tables[1 * p.max_blocks_per_seq + 1] = static_cast<int32_t>(p.num_blocks + 3);
  std::ostringstream want;
  want << "block_tables[1][1] = " << p.num_blocks + 3 << " is outside the pool of " << p.num_blocks
       << " blocks";
  EXPECT_ERROR_CONTAINS(run(p), want.str());
  p.block_tables[1 * p.max_blocks_per_seq + 1] = -1;
  EXPECT_ERROR_CONTAINS(run(p), "block_tables[1][1] = -1 is outside the pool");
}

TEST(Errors, SeqLenBeyondBlockTable) {
  auto p = small_problem();
  p.seq_lens[2] = static_cast<int32_t>(p.max_blocks_per_seq * 16 + 1);
  std::ostringstream want;
  want << "seq_lens[2] = " << p.seq_lens[2] << " needs " << p.max_blocks_per_seq + 1
       << " blocks of 16 but block_tables has " << p.max_blocks_per_seq << " columns";
  EXPECT_ERROR_CONTAINS(run(p), want.str());
}

TEST(Errors, QueryLongerThanSequence) {
  auto p = small_problem();
  p.seq_lens[1] = 9;  // query_len 10
  EXPECT_ERROR_CONTAINS(run(p), "sequence 1 has query_len 10 > seq_len 9");
}

TEST(Errors, QueryStartLocNotMonotone) {
  auto p = small_problem();
  p.query_start_loc = {0, 11, 1, 16};
  EXPECT_ERROR_CONTAINS(
      run(p), "query_start_loc must be non-decreasing: query_start_loc[2] = 1 < query_start_loc[1] = 11");
  p.query_start_loc = {0, 1, 11, 15};
  EXPECT_ERROR_CONTAINS(run(p), "query_start_loc[num_seqs] = 15 must equal the number of query rows 16");
}

TEST(Errors, WrongRanksAndShapes) {
  auto p = small_problem();
  auto q = p.query();
  q.rank = 2;
  EXPECT_ERROR_CONTAINS(attention(q, p.cache(), p.batch(), p.params(), p.output()),
                        "query must have rank 3 [num_tokens, num_q_heads, head_dim], got rank 2");
  auto cache = p.cache();
  cache.v.shape[0] -= 1;
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache, p.batch(), p.params(), p.output()),
                        "must have the same shape");
  auto b = p.batch();
  b.query_start_loc.shape[0] = 3;
  EXPECT_ERROR_CONTAINS(attention(p.query(), p.cache(), b, p.params(), p.output()),
                        "query_start_loc must have shape [num_seqs + 1] = [4], got [3]");
  auto o = p.output();
  o.shape[0] = 5;
  EXPECT_ERROR_CONTAINS(attention(p.query(), p.cache(), p.batch(), p.params(), o),
                        "out shape [5, 4, 64] must equal query shape [16, 4, 64]");
  auto cache2 = p.cache();
  cache2.k.shape[1] = cache2.v.shape[1] = 300;
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache2, p.batch(), p.params(), p.output()),
                        "block_size 300 is outside 1..256");
  auto cache3 = p.cache();
  cache3.k.strides[3] = 2;
  EXPECT_ERROR_CONTAINS(attention(p.query(), cache3, p.batch(), p.params(), p.output()),
                        "cache.k must be contiguous in its last dim");
  auto params = p.params();
  std::vector<float> slopes(3);
  params.alibi_slopes = TensorView::contiguous(slopes.data(), DType::kFloat32, {3});
  EXPECT_ERROR_CONTAINS(attention(p.query(), p.cache(), p.batch(), params, p.output()),
                        "alibi_slopes must have shape [num_q_heads] = [4], got [3]");
}

TEST(Errors, BadInputWritesNothing) {
  auto p = small_problem();
  p.seq_lens[1] = 9;
  const auto before = p.out;
  EXPECT_THROW(run(p), Error);
  EXPECT_EQ(p.out, before);
}

TEST(Errors, MixedDevices) {
  auto p = small_problem();
  auto q = p.query();
  q.device = Device::cuda(0);
  EXPECT_ERROR_CONTAINS(attention(q, p.cache(), p.batch(), p.params(), p.output()),
                        "is on cpu but the op runs on cuda:0");
}

TEST(Errors, SlotOutsidePool) {
  auto p = small_problem();
  std::vector<uint16_t> key(2 * 2 * 64, 0x3c00), value(key);
  std::vector<int64_t> slots{3, static_cast<int64_t>(p.num_blocks * 16)};
  const auto k_before = p.k_pool;
  auto run_write = [&] {
    write_kv(TensorView::contiguous(key.data(), DType::kBFloat16, {2, 2, 64}),
             TensorView::contiguous(value.data(), DType::kBFloat16, {2, 2, 64}),
             TensorView::contiguous(slots.data(), DType::kInt64, {2}), p.cache());
  };
  std::ostringstream want;
  want << "slot_mapping[1] = " << p.num_blocks * 16 << " is outside the pool of " << p.num_blocks * 16
       << " slots";
  EXPECT_ERROR_CONTAINS(run_write(), want.str());
  EXPECT_EQ(p.k_pool, k_before);  // validated before any write
  slots[1] = -2;
  EXPECT_ERROR_CONTAINS(run_write(), "slot_mapping[1] = -2 is outside the pool");
  std::vector<int32_t> slots32{0, 1};
  EXPECT_ERROR_CONTAINS(write_kv(TensorView::contiguous(key.data(), DType::kBFloat16, {2, 2, 64}),
                                 TensorView::contiguous(value.data(), DType::kBFloat16, {2, 2, 64}),
                                 TensorView::contiguous(slots32.data(), DType::kInt32, {2}), p.cache()),
                        "slot_mapping must be int64, got int32");
  EXPECT_ERROR_CONTAINS(write_kv(TensorView::contiguous(key.data(), DType::kBFloat16, {2, 2, 64}),
                                 TensorView::contiguous(value.data(), DType::kFloat16, {2, 2, 64}),
                                 TensorView::contiguous(slots.data(), DType::kInt64, {2}), p.cache()),
                        "value dtype fp16 must equal key dtype bf16");
}

}  // namespace
}  // namespace pagedattn
