#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>

#include "pagedattn/attention.h"
#include "test_util.h"

namespace pagedattn {
namespace {

struct WriteCase {
  DType src, cache;
  bool hnd;
  int block_size;
};

class WriteKV : public ::testing::TestWithParam<WriteCase> {};

TEST_P(WriteKV, WritesEverySlotAndNothingElse) {
  const WriteCase wc = GetParam();
  std::mt19937_64 rng(test::fresh_seed());
  const int64_t tokens = 37, heads = 3, d = 80, bs = wc.block_size, blocks = (tokens + bs - 1) / bs + 4;
  const int64_t es = dtype_size(wc.src), ec = dtype_size(wc.cache);
  // Strided source: a gap after each head and token.
  const int64_t head_stride = d + 4, token_stride = heads * head_stride + 8;
  std::vector<uint8_t> key(tokens * token_stride * es), value(key.size());
  std::uniform_real_distribution<float> u(-3, 3);
  for (int64_t i = 0; i < tokens * token_stride; ++i) {
    store_from_float(key.data(), wc.src, i, u(rng));
    store_from_float(value.data(), wc.src, i, u(rng));
  }
  // Distinct random slots, some skipped.
  std::vector<int64_t> all(blocks * bs);
  std::iota(all.begin(), all.end(), 0);
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<int64_t> slots(all.begin(), all.begin() + tokens);
  for (int64_t t = 0; t < tokens; t += 5) slots[t] = -1;

  const int64_t pool = blocks * bs * heads * d;
  std::vector<uint8_t> k_pool(pool * ec, 0xab), v_pool(pool * ec, 0xcd);
  const auto k_before = k_pool, v_before = v_pool;
  PagedKVCache cache;
  if (wc.hnd) {
    cache.k =
        TensorView::strided(k_pool.data(), wc.cache, {blocks, bs, heads, d}, {heads * bs * d, d, bs * d, 1});
    cache.v =
        TensorView::strided(v_pool.data(), wc.cache, {blocks, bs, heads, d}, {heads * bs * d, d, bs * d, 1});
  } else {
    cache.k = TensorView::contiguous(k_pool.data(), wc.cache, {blocks, bs, heads, d});
    cache.v = TensorView::contiguous(v_pool.data(), wc.cache, {blocks, bs, heads, d});
  }
  write_kv(TensorView::strided(key.data(), wc.src, {tokens, heads, d}, {token_stride, head_stride, 1}),
           TensorView::strided(value.data(), wc.src, {tokens, heads, d}, {token_stride, head_stride, 1}),
           TensorView::contiguous(slots.data(), DType::kInt64, {tokens}), cache);

  std::vector<bool> written(pool, false);
  for (int64_t t = 0; t < tokens; ++t) {
    if (slots[t] < 0) continue;
    const int64_t b = slots[t] / bs, o = slots[t] % bs;
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < d; ++i) {
        const int64_t dst = wc.hnd ? ((b * heads + h) * bs + o) * d + i : ((b * bs + o) * heads + h) * d + i;
        const int64_t src = t * token_stride + h * head_stride + i;
        written[dst] = true;
        ASSERT_EQ(load_as_float(k_pool.data(), wc.cache, dst),
                  round_to_dtype(load_as_float(key.data(), wc.src, src), wc.cache));
        ASSERT_EQ(load_as_float(v_pool.data(), wc.cache, dst),
                  round_to_dtype(load_as_float(value.data(), wc.src, src), wc.cache));
      }
  }
  for (int64_t i = 0; i < pool; ++i) {
    if (written[i]) continue;
    ASSERT_EQ(std::memcmp(&k_pool[i * ec], &k_before[i * ec], ec), 0) << "k element " << i << " changed";
    ASSERT_EQ(std::memcmp(&v_pool[i * ec], &v_before[i * ec], ec), 0) << "v element " << i << " changed";
  }
}

INSTANTIATE_TEST_SUITE_P(Cases, WriteKV,
                         ::testing::Values(WriteCase{DType::kBFloat16, DType::kBFloat16, false, 16},
                                           WriteCase{DType::kFloat16, DType::kFloat16, true, 3},
                                           WriteCase{DType::kFloat32, DType::kFloat32, false, 1},
                                           WriteCase{DType::kBFloat16, DType::kFloat8E4M3, false, 256},
                                           WriteCase{DType::kFloat16, DType::kFloat8E4M3, true, 32}),
                         [](const ::testing::TestParamInfo<WriteCase>& param_info) {
                           const WriteCase& c = param_info.param;
                           return std::string(dtype_name(c.src)) + "_to_" + std::string(dtype_name(c.cache)) +
                                  (c.hnd ? "_HND" : "_NHD") + "_bs" + std::to_string(c.block_size);
                         });

}  // namespace
}  // namespace pagedattn
