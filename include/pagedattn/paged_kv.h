// The one description of a paged KV cache and of a batch over it, shared by every backend.
#pragma once

#include <optional>

#include "pagedattn/tensor.h"
#include "pagedattn/turboquant.h"

namespace pagedattn {

/// K and V pools. Both have the logical shape [num_blocks, block_size, num_kv_heads, head_dim]; the physical
/// layout is given by the strides, so the "HND" layout [num_blocks, num_kv_heads, block_size, head_dim] is
/// the same logical view with other strides. head_dim must be the innermost, contiguous dimension. block_size
/// may be any of 1..256. K and V share shape and dtype; their strides may differ. Offsets into the pools are
/// computed in 64 bits.
///
/// The dtype of k and v names the cache format (kv_format.h): fp16, bf16 (fp32 on the CPU) store values as
/// they are; fp8_e4m3 / fp8_e5m2 store value / scale with the optional k_scale / v_scale; int8 stores
/// round(value / s) with s = absmax / 127 of each token's head vector, s kept in the k_meta / v_meta planes.
struct PagedKVCache {
  PagedKVCache() = default;
  /// A cache without scales (bf16, fp16, fp32; fp8 with scale 1.0).
  PagedKVCache(const TensorView& k_pool, const TensorView& v_pool) : k(k_pool), v(v_pool) {}

  TensorView k;  ///< [num_blocks, block_size, num_kv_heads, head_dim]
  TensorView v;  ///< [num_blocks, block_size, num_kv_heads, head_dim]
  /// fp8 only, optional: fp32 [1] (one scale per tensor) or [num_kv_heads]; absent = 1.0.
  TensorView k_scale;
  TensorView v_scale;
  /// int8 only, required: fp32 [num_blocks, block_size, num_kv_heads], the scale of each stored head vector
  /// (any strides; 0 for a zero vector). The metadata plane of the format.
  TensorView k_meta;
  TensorView v_meta;

  /// TurboQuant caches (pagedattn/turboquant.h): the preset, and the head dim of the vectors the planes code.
  /// The planes then hold codes and metadata (plane rows are dense, any block/token/head strides):
  ///   k      uint8 [num_blocks, block_size, num_kv_heads, key code bytes]   (tq_k8v4: fp8 e4m3 keys, uint8
  ///                                                                          or fp8_e4m3)
  ///   k_meta fp16  [num_blocks, block_size, num_kv_heads]                   n' (absent for tq_k8v4)
  ///   v      uint8 [num_blocks, block_size, num_kv_heads, value code bytes]
  ///   v_meta fp16  [num_blocks, block_size, num_kv_heads, 2]                 scale, minimum
  /// Code bytes per token and head: tq::token_bytes(preset, head_dim).
  std::optional<tq::Preset> tq;
  int64_t tq_head_dim = 0;

  /// A TurboQuant cache over its four planes (k_norms empty for tq_k8v4).
  static PagedKVCache turboquant(tq::Preset preset, int64_t head_dim, const TensorView& k_codes,
                                 const TensorView& k_norms, const TensorView& v_codes,
                                 const TensorView& v_meta) {
    PagedKVCache c(k_codes, v_codes);
    c.k_meta = k_norms;
    c.v_meta = v_meta;
    c.tq = preset;
    c.tq_head_dim = head_dim;
    return c;
  }

  int64_t num_blocks() const { return k.shape[0]; }
  int64_t block_size() const { return k.shape[1]; }
  int64_t num_kv_heads() const { return k.shape[2]; }
  int64_t head_dim() const { return tq ? tq_head_dim : k.shape[3]; }
};

/// Which cache positions each sequence of a batch sees, and where its new query tokens are.
///
/// Sequence i holds seq_lens[i] tokens in the cache (the new ones included). Its query tokens are rows
/// query_start_loc[i] .. query_start_loc[i+1]-1 of the query tensor, and they are the LAST query_len_i
/// positions of the sequence: query token j sits at position seq_lens[i] - query_len_i + j. Token position p
/// lives in block block_tables[i][p / block_size] at offset p % block_size. Decode, prefill, chunked prefill
/// and mixed batches are all this one description.
struct BatchDesc {
  TensorView
      block_tables;     ///< [num_seqs, max_blocks_per_seq] int32; entries past a sequence's need are unread
  TensorView seq_lens;  ///< [num_seqs] int32
  TensorView
      query_start_loc;  ///< [num_seqs + 1] int32, prefix sums of query lengths, query_start_loc[0] == 0

  /// Optional host-side hints (-1 = unknown). They steer the GPU launch choice (tile shape, split-KV
  /// segments) and never change results; without them the CUDA backend assumes the widest case. The batch
  /// builder fills them.
  int32_t max_query_len = -1;  ///< upper bound of query_start_loc[i+1] - query_start_loc[i]
  int32_t max_seq_len = -1;    ///< upper bound of seq_lens[i]

  int64_t num_seqs() const { return seq_lens.shape[0]; }
};

}  // namespace pagedattn
