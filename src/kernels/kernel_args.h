// Plain argument structs read by every backend's kernels (CPU and CUDA alike): raw pointers, strides in
// elements, sizes. No ownership and no validation here; src/core/validate.cpp builds them from checked
// TensorViews.
#pragma once

#include <cstdint>

#include "kernels/fast_divmod.h"
#include "kernels/host_device.h"
#include "pagedattn/dtype.h"

namespace pagedattn::kernels {

/// One plane of a paged pool: per (block, slot, kv head) either a head_dim vector of the format's data
/// elements (the data plane) or the format's per-token metadata (int8: one fp32 scale). Strides in elements
/// of the plane's own type.
struct KVPlane {
  const void* data = nullptr;  // nullptr: the format has no such plane
  int64_t stride_block = 0, stride_token = 0, stride_head = 0;

  /// Element offset of (block, slot, head), in 64 bits: pools beyond 2^31 elements are normal.
  PAGEDATTN_HD int64_t offset(int64_t block, int32_t slot, int32_t head) const {
    return block * stride_block + static_cast<int64_t>(slot) * stride_token +
           static_cast<int64_t>(head) * stride_head;
  }
  template <typename E>
  PAGEDATTN_HD const E* at(int64_t block, int32_t slot, int32_t head) const {
    return static_cast<const E*>(data) + offset(block, slot, head);
  }
};

/// The paged K/V pools, logical shape [num_blocks, block_size, num_kv_heads, head_dim], head_dim contiguous,
/// and the one way every loader (CPU, validation, every kernel, write_kv) turns a sequence position into an
/// address: locate(pos) -> (page of the block table, slot in the block), then plane.offset(block, slot,
/// head).
struct PagedKVArgs {
  KVPlane k, v;            // data planes: [num_blocks, block_size, num_kv_heads, head_dim] of `dtype`
  KVPlane k_meta, v_meta;  // int8: fp32 [num_blocks, block_size, num_kv_heads] scales; else data == nullptr
  const float* k_scale = nullptr;  // fp8: [1] or [num_kv_heads] fp32 (scale_per_head); nullptr = 1.0
  const float* v_scale = nullptr;
  int32_t scale_per_head = 0;
  int32_t num_blocks = 0;
  int32_t block_size = 0;
  int32_t num_kv_heads = 0;
  int32_t head_dim = 0;
  FastDivmod page;                 // block_size as a fast divisor
  DType dtype = DType::kBFloat16;  // the cache format (pagedattn/kv_format.h); uint8 for TurboQuant
  // TurboQuant caches (pagedattn/turboquant.h): key bits (8: fp8 e4m3 keys; 2-4: rotated codes with the norm
  // n' in k_meta) and value bits (codes with fp16 scale and minimum in v_meta); 0 for every other format.
  int32_t tq_key_bits = 0;
  int32_t tq_value_bits = 0;

  /// Position pos of a sequence -> index into its block-table row and slot inside that block.
  PAGEDATTN_HD void locate(int32_t pos, int32_t& page_index, int32_t& slot) const {
    page.divmod(pos, page_index, slot);
  }
  /// fp8: the dequantization scale of a KV head (1 without scales).
  PAGEDATTN_HD float k_head_scale(int32_t head) const {
    return k_scale == nullptr ? 1.0f : k_scale[scale_per_head ? head : 0];
  }
  PAGEDATTN_HD float v_head_scale(int32_t head) const {
    return v_scale == nullptr ? 1.0f : v_scale[scale_per_head ? head : 0];
  }
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
  // Optional (AttentionParams::new_key/new_value): the query rows' own K/V [num_tokens, num_kv_heads,
  // head_dim] in q_dtype, read for each sequence's last query_len positions instead of the cache.
  const void* new_k = nullptr;
  const void* new_v = nullptr;
  int64_t new_k_stride_token = 0, new_k_stride_head = 0;
  int64_t new_v_stride_token = 0, new_v_stride_head = 0;
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
