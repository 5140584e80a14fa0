// The two ops: write new K/V into the paged cache, and attention over it.
#pragma once

#include <cstddef>

#include "pagedattn/paged_kv.h"
#include "pagedattn/tensor.h"

namespace pagedattn {

/// Head dims every backend supports (a CUDA build may compile a subset: see build_info()).
inline constexpr int kSupportedHeadDims[] = {64, 80, 96, 112, 128, 192, 256};
inline constexpr int kMaxBlockSize = 256;

/// Attention semantics. All logits are in natural-log space: s = scale * <q, k>, then soft-cap, then ALiBi.
struct AttentionParams {
  float scale = 0.0f;    ///< softmax scale; 0 means 1/sqrt(head_dim)
  int window_left = 0;   ///< sliding window: a query at position p sees keys p-window_left..p; 0 = no window
  float softcap = 0.0f;  ///< logits soft-cap: s = softcap * tanh(s / softcap); 0 = off
  TensorView alibi_slopes;  ///< optional [num_q_heads] fp32: s += slope * (key_pos - query_pos)
  TensorView sinks;         ///< optional [num_q_heads] fp32: a logit that joins the softmax denominator only
  TensorView lse;           ///< optional output [num_tokens, num_q_heads] fp32: natural log of the softmax
                            ///< denominator, sink included
  /// Optional, both or neither: the step's new keys and values [num_tokens, num_kv_heads, head_dim] in the
  /// query dtype (row r belongs to query row r: what write_kv was given this step). When present, each
  /// sequence's query positions (its last query_len positions) read their K/V from here, unquantized, and
  /// only the earlier positions come from the cache. This is the prefill semantics of quantized caches
  /// (shared/TURBOQUANT.md): a fresh prompt attends to its raw K/V; a continuation chunk to its quantized
  /// prefix and its own raw tokens; a decode token to the cache and itself raw. Every query length follows
  /// the same rule, so a sequence gives the same result alone or in any batch. For a bf16/fp16 cache holding
  /// what write_kv wrote, results are unchanged. CUDA: TurboQuant caches (the other formats: a clear error at
  /// plan time; their caches hold what write_kv wrote).
  TensorView new_key;
  TensorView new_value;
  /// GPU only: copy the batch description to the host and check its contents (block ids inside the pool,
  /// seq_len covered by the block table, query_start_loc monotone, query_len <= seq_len) before the launch.
  /// This synchronizes the stream; it is skipped while the stream is capturing a CUDA graph. The CPU always
  /// checks.
  bool validate_batch = true;
  /// GPU only, for tests and tuning: 0 lets the library choose; N > 0 forces N split-KV segments (N = 1: the
  /// 2D launch). Results do not depend on it beyond rounding.
  int force_segments = 0;
  /// GPU only: 0 = no cap; N > 0: the plan keeps its workspace within N bytes, taking fewer split-KV segments
  /// than it would otherwise (a slower launch for long contexts, the same results within rounding) when the
  /// best split needs more. What a server that reserves one workspace for every step sets
  /// (WorkspaceReservation). An error when even the unsplit launch needs more, or when force_segments needs
  /// more. Read by plan_attention (and the flat ops) only; run_attention ignores it.
  size_t max_workspace_bytes = 0;
};

/// Caller-provided scratch memory on the op's device. The ops never allocate device memory themselves.
struct Workspace {
  void* data = nullptr;
  size_t bytes = 0;
};

/// An opaque stream handle: a cudaStream_t for CUDA tensors (nullptr = the default stream); ignored on the
/// CPU.
using Stream = void*;

/// Writes key/value [num_tokens, num_kv_heads, head_dim] into the cache at slot_mapping [num_tokens] int64
/// (slot = block_id * block_size + offset; -1 skips the token). The cache dtype is the key dtype, or fp8_e4m3
/// (values are converted, rounding to nearest even and saturating). validate_slots checks every slot on the
/// host first (GPU: a copy and a stream synchronization, skipped while capturing a CUDA graph; the CPU always
/// checks).
void write_kv(const TensorView& key, const TensorView& value, const TensorView& slot_mapping,
              const PagedKVCache& cache, Stream stream = nullptr, bool validate_slots = true);

/// Bytes of workspace attention() needs for this problem on its device (0 on the CPU): split-KV partials and,
/// for long queries on sm_90a, the persistent prefill kernel's work counter.
size_t attention_workspace_size(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
                                const AttentionParams& params);

/// Causal attention of query [num_tokens, num_q_heads, head_dim] over the paged cache, into out (same shape
/// and dtype as query; both may be strided in their first two dims). num_q_heads must be a multiple of
/// num_kv_heads (query head h reads kv head h / (num_q_heads / num_kv_heads)). The cache dtype is the query
/// dtype or fp8_e4m3.
void attention(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
               const AttentionParams& params, const TensorView& out, Workspace workspace = {},
               Stream stream = nullptr);

}  // namespace pagedattn
