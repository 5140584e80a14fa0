// The model's elementwise and normalization kernels for the CUDA runner (bf16 activations, fp32 math, an fp32
// residual stream). GEMMs are cuBLAS; attention is the library's.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace pagedattn::engine::cuda {

/// Random weights drawn on the device (a preset's dummy weights): out[i] ~ N(0, sd) in bf16 for projections
/// and embeddings, N(mean, sd) in fp32 for norms; element i of stream `tensor` of `seed`, the same numbers on
/// every run and device.
void fill_normal(__nv_bfloat16* out, int64_t n, uint64_t seed, uint64_t tensor, float sd,
                 cudaStream_t stream);
void fill_normal(float* out, int64_t n, uint64_t seed, uint64_t tensor, float mean, float sd,
                 cudaStream_t stream);

/// x[t, :] = embed[tokens[t], :] (fp32 residual stream).
void embed_tokens(const __nv_bfloat16* embed, const int32_t* tokens, int64_t n, int64_t hidden, float* x,
                  cudaStream_t stream);

/// x += delta (when delta is not null), then out = RMSNorm(x) * weight, for rows [n, hidden].
void add_rms_norm(float* x, const __nv_bfloat16* delta, const float* weight, int64_t n, int64_t hidden,
                  float eps, __nv_bfloat16* out, cudaStream_t stream);

/// In place on the fused QKV rows [n, row_stride]: q heads at column 0, k heads after them. Optional per-head
/// RMSNorm (q_norm / k_norm weights, Qwen3), then RoPE ("rotate half" pairs (i, i + d/2)) at each token's
/// position with inv_freq [d/2].
void qk_norm_rope(__nv_bfloat16* qkv, int64_t row_stride, int64_t n, int num_q_heads, int num_kv_heads,
                  int head_dim, const int32_t* positions, const float* inv_freq, const float* q_norm,
                  const float* k_norm, float eps, cudaStream_t stream);

/// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i].
void silu_and_mul(const __nv_bfloat16* gate_up, int64_t n, int64_t inter, __nv_bfloat16* out,
                  cudaStream_t stream);

/// out[s, :] = rows[index[s], :] for s < count.
void gather_rows(const __nv_bfloat16* rows, const int32_t* index, int64_t count, int64_t width,
                 __nv_bfloat16* out, cudaStream_t stream);

}  // namespace pagedattn::engine::cuda
