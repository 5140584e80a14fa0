#include "pagedattn/batch_builder.h"

#include <algorithm>

#include "pagedattn/error.h"

namespace pagedattn {

BatchDesc HostBatch::desc() {
  BatchDesc d;
  d.block_tables = TensorView::contiguous(block_tables.data(), DType::kInt32, {num_seqs, max_blocks_per_seq});
  d.seq_lens = TensorView::contiguous(seq_lens.data(), DType::kInt32, {num_seqs});
  d.query_start_loc = TensorView::contiguous(query_start_loc.data(), DType::kInt32, {num_seqs + 1});
  for (int32_t i = 0; i < num_seqs; ++i) {
    d.max_query_len = std::max(d.max_query_len, query_start_loc[i + 1] - query_start_loc[i]);
    d.max_seq_len = std::max(d.max_seq_len, seq_lens[i]);
  }
  return d;
}

TensorView HostBatch::slot_view() {
  return TensorView::contiguous(slot_mapping.data(), DType::kInt64, {num_tokens()});
}

HostBatch build_batch(const BlockManager& manager, std::span<const BatchItem> items,
                      int32_t max_blocks_per_seq) {
  HostBatch out;
  out.num_seqs = static_cast<int32_t>(items.size());
  const int64_t bs = manager.block_size();
  int64_t widest = 0;
  for (const BatchItem& it : items) {
    const int64_t seq_len = manager.num_computed_tokens(it.seq) + it.num_new_tokens;
    PA_CHECK(it.num_new_tokens >= 0 && seq_len <= manager.num_tokens(it.seq), "build_batch: sequence ",
             it.seq, " has ", manager.num_tokens(it.seq) - manager.num_computed_tokens(it.seq),
             " uncomputed tokens, asked for ", it.num_new_tokens);
    widest = std::max(widest, manager.blocks_for_tokens(seq_len));
  }
  if (max_blocks_per_seq == 0) max_blocks_per_seq = static_cast<int32_t>(std::max<int64_t>(widest, 1));
  PA_CHECK(widest <= max_blocks_per_seq, "build_batch: a sequence needs ", widest,
           " blocks but max_blocks_per_seq is ", max_blocks_per_seq);
  out.max_blocks_per_seq = max_blocks_per_seq;
  out.block_tables.assign(static_cast<size_t>(out.num_seqs) * max_blocks_per_seq, -1);
  out.query_start_loc.push_back(0);
  for (int32_t i = 0; i < out.num_seqs; ++i) {
    const BatchItem& it = items[i];
    const auto table = manager.block_table(it.seq);
    const int64_t first = manager.num_computed_tokens(it.seq);
    const int64_t seq_len = first + it.num_new_tokens;
    const int64_t used_blocks = manager.blocks_for_tokens(seq_len);
    std::copy(table.begin(), table.begin() + used_blocks, out.block_tables.begin() + i * max_blocks_per_seq);
    out.seq_lens.push_back(static_cast<int32_t>(seq_len));
    out.query_start_loc.push_back(out.query_start_loc.back() + static_cast<int32_t>(it.num_new_tokens));
    for (int64_t pos = first; pos < seq_len; ++pos) {
      out.slot_mapping.push_back(static_cast<int64_t>(table[static_cast<size_t>(pos / bs)]) * bs + pos % bs);
      out.positions.push_back(static_cast<int32_t>(pos));
    }
  }
  return out;
}

}  // namespace pagedattn
