// Validation of user input and construction of the kernel argument structs. Every message names the
// constraint.
#pragma once

#include "kernels/kernel_args.h"
#include "pagedattn/attention.h"

namespace pagedattn::core {

struct AttentionProblem {
  kernels::PagedKVArgs kv;
  kernels::BatchArgs batch;
  kernels::AttentionArgs attn;
  Device device;
  int32_t max_query_len = -1;  // host hints from BatchDesc (-1 = unknown)
  int32_t max_seq_len = -1;
  bool validate_batch = true;
  int force_segments = 0;
  size_t max_workspace_bytes = 0;  // 0 = no cap (AttentionParams::max_workspace_bytes)
};

struct WriteKVProblem {
  kernels::PagedKVArgs kv;  // the destination (k, v are written through const_cast by the backends)
  kernels::WriteKVArgs src;
  Device device;
};

/// Checks ranks, shapes, dtypes, strides and devices (metadata only; reads no tensor contents).
AttentionProblem check_attention(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
                                 const AttentionParams& params, const TensorView& out);
WriteKVProblem check_write_kv(const TensorView& key, const TensorView& value, const TensorView& slot_mapping,
                              const PagedKVCache& cache);

/// Checks the batch contents: query_start_loc monotone and consistent with the query rows, query_len <=
/// seq_len, every block a sequence needs inside the table and inside the pool. The pointers must be
/// host-readable.
void check_batch_contents(const kernels::BatchArgs& batch, const kernels::PagedKVArgs& kv);

/// Checks that every slot is -1 or inside the pool. slot_mapping must be host-readable.
void check_slots(const int64_t* slot_mapping, int64_t num_tokens, const kernels::PagedKVArgs& kv);

/// The head dims list as text, "64, 80, ...".
const char* supported_head_dims_text();

}  // namespace pagedattn::core
