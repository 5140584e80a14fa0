// Decode attention of one query over a two-block bf16 cache through the installed headers and library; the
// output must equal the one cached value every key shares (softmax weights sum to 1).
#include <pagedattn/pagedattn.h>

#include <cmath>
#include <cstdio>
#include <vector>

int main() {
  using namespace pagedattn;
  const int64_t blocks = 2, bs = 16, heads = 1, d = 64, len = 20;
  std::vector<uint16_t> k(blocks * bs * heads * d), v(k.size()), q(d), out(d);
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = float_to_bf16_bits(0.01f * static_cast<float>(i % 7));
    v[i] = float_to_bf16_bits(1.5f);
  }
  for (auto& x : q) x = float_to_bf16_bits(0.25f);
  std::vector<int32_t> table = {1, 0}, seq_lens = {len}, qsl = {0, 1};
  PagedKVCache cache(TensorView::contiguous(k.data(), DType::kBFloat16, {blocks, bs, heads, d}),
                     TensorView::contiguous(v.data(), DType::kBFloat16, {blocks, bs, heads, d}));
  BatchDesc batch;
  batch.block_tables = TensorView::contiguous(table.data(), DType::kInt32, {1, 2});
  batch.seq_lens = TensorView::contiguous(seq_lens.data(), DType::kInt32, {1});
  batch.query_start_loc = TensorView::contiguous(qsl.data(), DType::kInt32, {2});
  attention(TensorView::contiguous(q.data(), DType::kBFloat16, {1, heads, d}), cache, batch, {},
            TensorView::contiguous(out.data(), DType::kBFloat16, {1, heads, d}));
  for (uint16_t o : out) {
    if (std::fabs(bf16_bits_to_float(o) - 1.5f) > 1e-2f) {
      std::printf("consumer: wrong output %f\n", static_cast<double>(bf16_bits_to_float(o)));
      return 1;
    }
  }
  std::printf("consumer: pagedattn %s installed package works\n", build_info().version.c_str());
  return 0;
}
