// Turns the scheduler's choice for one step into the kernel inputs of BatchDesc and write_kv.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "pagedattn/block_manager.h"
#include "pagedattn/paged_kv.h"

namespace pagedattn {

/// One sequence of a step: compute its next num_new_tokens tokens (after those already computed).
struct BatchItem {
  SeqId seq = 0;
  int64_t num_new_tokens = 0;
};

/// Host arrays for one step, and views of them in the form the ops take.
struct HostBatch {
  int32_t num_seqs = 0;
  int32_t max_blocks_per_seq = 0;
  std::vector<int32_t> block_tables;     // [num_seqs, max_blocks_per_seq], padded with -1
  std::vector<int32_t> seq_lens;         // [num_seqs]: computed + new tokens
  std::vector<int32_t> query_start_loc;  // [num_seqs + 1]
  std::vector<int64_t> slot_mapping;     // [num_new_tokens total]: where each new token's K/V goes
  std::vector<int32_t> positions;        // [num_new_tokens total]: each new token's position in its sequence

  int64_t num_tokens() const { return static_cast<int64_t>(slot_mapping.size()); }
  BatchDesc desc();        ///< views of block_tables, seq_lens, query_start_loc (CPU)
  TensorView slot_view();  ///< view of slot_mapping (CPU)
};

/// Builds the step's inputs. max_blocks_per_seq = 0 uses the widest table of the batch.
HostBatch build_batch(const BlockManager& manager, std::span<const BatchItem> items,
                      int32_t max_blocks_per_seq = 0);

}  // namespace pagedattn
