// Plain argument structs read by every backend's kernels (CPU and CUDA alike): raw pointers, strides in
// elements, sizes. No ownership and no validation here; src/core/validate.cpp builds them from checked
// TensorViews.
#pragma once

#include <cstdint>

#include "pagedattn/dtype.h"

namespace pagedattn::kernels {

/// The paged K/V pools, logical shape [num_blocks, block_size, num_kv_heads, head_dim], head_dim contiguous.
struct PagedKVArgs {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t k_stride_block = 0, k_stride_token = 0, k_stride_head = 0;
  int64_t v_stride_block = 0, v_stride_token = 0, v_stride_head = 0;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  DType dtype = DType::kBFloat16;
};

/// The batch: which cache positions each sequence sees and where its query rows are.
struct BatchArgs {
  const int32_t* block_tables = nullptr;  // [num_seqs, max_blocks_per_seq]
  int64_t block_table_stride = 0;         // elements between rows of block_tables
  int32_t max_blocks_per_seq = 0;
  const int32_t* seq_lens = nullptr;         // [num_seqs]
  const int32_t* query_start_loc = nullptr;  // [num_seqs + 1]
  int32_t num_seqs = 0;
  int64_t num_tokens = 0;  // query rows = query_start_loc[num_seqs]
};

/// Query, output and the attention variant.
struct AttentionArgs {
  const void* q = nullptr;  // [num_tokens, num_q_heads, head_dim]
  int64_t q_stride_token = 0, q_stride_head = 0;
  void* o = nullptr;  // [num_tokens, num_q_heads, head_dim], dtype = q_dtype
  int64_t o_stride_token = 0, o_stride_head = 0;
  float* lse = nullptr;  // optional [num_tokens, num_q_heads]
  int64_t lse_stride_token = 0, lse_stride_head = 0;
  const float* alibi_slopes = nullptr;  // optional [num_q_heads]
  const float* sinks = nullptr;         // optional [num_q_heads]
  int32_t num_q_heads = 0;
  int32_t group_size = 1;  // query heads per kv head
  float scale = 1.0f;
  float softcap = 0.0f;     // 0 = off
  int32_t window_left = 0;  // 0 = off
  DType q_dtype = DType::kBFloat16;
};

/// New keys/values and where they go.
struct WriteKVArgs {
  const void* key = nullptr;  // [num_tokens, num_kv_heads, head_dim]
  const void* value = nullptr;
  int64_t key_stride_token = 0, key_stride_head = 0;
  int64_t value_stride_token = 0, value_stride_head = 0;
  const int64_t* slot_mapping = nullptr;  // [num_tokens]; -1 = skip
  int64_t num_tokens = 0;
  DType src_dtype = DType::kBFloat16;
};

}  // namespace pagedattn::kernels
