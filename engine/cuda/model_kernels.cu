#include "engine/cuda/model_kernels.cuh"

#include <algorithm>
#include <type_traits>

#include "engine/sampler.h"
#include "pagedattn/error.h"

namespace pagedattn::engine::cuda {
namespace {

void check_launch(const char* name) {
  const cudaError_t e = cudaGetLastError();
  PA_CHECK(e == cudaSuccess, name, " launch failed: ", cudaGetErrorString(e));
}

__device__ __forceinline__ float block_sum(float v, float* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float total = 0;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) total += scratch[w];
  __syncthreads();
  return total;
}

__global__ void embed_kernel(const __nv_bfloat16* embed, const int32_t* tokens, int64_t hidden, float* x) {
  const int64_t t = blockIdx.x;
  const __nv_bfloat16* row = embed + static_cast<int64_t>(tokens[t]) * hidden;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) x[t * hidden + i] = __bfloat162float(row[i]);
}

__global__ void add_rms_norm_kernel(float* x, const __nv_bfloat16* delta, const float* weight, int64_t hidden,
                                    float eps, __nv_bfloat16* out) {
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  float* row = x + t * hidden;
  float ss = 0;
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x) {
    float v = row[i];
    if (delta != nullptr) {
      v += __bfloat162float(delta[t * hidden + i]);
      row[i] = v;
    }
    ss += v * v;
  }
  const float inv = rsqrtf(block_sum(ss, scratch) / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x; i < hidden; i += blockDim.x)
    out[t * hidden + i] = __float2bfloat16(row[i] * inv * weight[i]);
}

// One warp per (token, head); head_dim <= 256, so a lane holds at most 8 values.
__global__ void qk_norm_rope_kernel(__nv_bfloat16* qkv, int64_t row_stride, int64_t n, int num_q_heads,
                                    int num_kv_heads, int head_dim, const int32_t* positions,
                                    const float* inv_freq, const float* q_norm, const float* k_norm,
                                    float eps) {
  const int64_t warp = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const int heads = num_q_heads + num_kv_heads;
  if (warp >= n * heads) return;
  const int64_t t = warp / heads;
  const int h = static_cast<int>(warp % heads);
  __nv_bfloat16* v = qkv + t * row_stride + static_cast<int64_t>(h) * head_dim;
  const float* norm = h < num_q_heads ? q_norm : k_norm;
  const int half = head_dim / 2;
  float a[4], b[4];  // pairs (i, i + half) for i = lane + 32 j
  float ss = 0;
  for (int j = 0; j < 4; ++j) {
    const int i = lane + 32 * j;
    a[j] = i < half ? __bfloat162float(v[i]) : 0.0f;
    b[j] = i < half ? __bfloat162float(v[i + half]) : 0.0f;
    ss += a[j] * a[j] + b[j] * b[j];
  }
  if (norm != nullptr) {
    for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const float inv = rsqrtf(ss / static_cast<float>(head_dim) + eps);
    for (int j = 0; j < 4; ++j) {
      const int i = lane + 32 * j;
      if (i < half) {
        a[j] *= inv * norm[i];
        b[j] *= inv * norm[i + half];
      }
    }
  }
  const float pos = static_cast<float>(positions[t]);
  for (int j = 0; j < 4; ++j) {
    const int i = lane + 32 * j;
    if (i >= half) continue;
    float s, c;
    sincosf(pos * inv_freq[i], &s, &c);
    v[i] = __float2bfloat16(a[j] * c - b[j] * s);
    v[i + half] = __float2bfloat16(b[j] * c + a[j] * s);
  }
}

__global__ void silu_and_mul_kernel(const __nv_bfloat16* gate_up, int64_t n, int64_t inter,
                                    __nv_bfloat16* out) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= n * inter) return;
  const int64_t t = idx / inter, i = idx % inter;
  const float g = __bfloat162float(gate_up[t * 2 * inter + i]);
  const float u = __bfloat162float(gate_up[t * 2 * inter + inter + i]);
  out[idx] = __float2bfloat16(g / (1.0f + __expf(-g)) * u);
}

__global__ void gather_rows_kernel(const __nv_bfloat16* rows, const int32_t* index, int64_t width,
                                   __nv_bfloat16* out) {
  const int64_t s = blockIdx.x;
  const __nv_bfloat16* src = rows + static_cast<int64_t>(index[s]) * width;
  for (int64_t i = threadIdx.x; i < width; i += blockDim.x) out[s * width + i] = src[i];
}

// N(mean, sd) from two of sample_uniform's numbers (Box-Muller): element i of stream (seed, tensor).
__device__ __forceinline__ float hashed_normal(uint64_t seed, uint64_t tensor, int64_t i) {
  const auto id = static_cast<uint32_t>(i);
  const uint64_t high = static_cast<uint64_t>(i) >> 32;  // tensors past 2^32 elements get other streams
  const float u1 = sample_uniform(seed, tensor * 2 + (high << 20), id);
  const float u2 = sample_uniform(seed, tensor * 2 + 1 + (high << 20), id);
  return sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2);
}

template <typename T>
__global__ void fill_normal_kernel(T* out, int64_t n, uint64_t seed, uint64_t tensor, float sd, float mean) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = mean + sd * hashed_normal(seed, tensor, i);
    if constexpr (std::is_same_v<T, float>) {
      out[i] = v;
    } else {
      out[i] = __float2bfloat16(v);
    }
  }
}

template <typename T>
void launch_fill(T* out, int64_t n, uint64_t seed, uint64_t tensor, float sd, float mean,
                 cudaStream_t stream) {
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 65536);
  fill_normal_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(out, n, seed, tensor, sd, mean);
  check_launch("fill_normal_kernel");
}

}  // namespace

void fill_normal(__nv_bfloat16* out, int64_t n, uint64_t seed, uint64_t tensor, float sd,
                 cudaStream_t stream) {
  launch_fill(out, n, seed, tensor, sd, 0.0f, stream);
}

void fill_normal(float* out, int64_t n, uint64_t seed, uint64_t tensor, float mean, float sd,
                 cudaStream_t stream) {
  launch_fill(out, n, seed, tensor, sd, mean, stream);
}

void embed_tokens(const __nv_bfloat16* embed, const int32_t* tokens, int64_t n, int64_t hidden, float* x,
                  cudaStream_t stream) {
  if (n == 0) return;
  embed_kernel<<<static_cast<unsigned>(n), 256, 0, stream>>>(embed, tokens, hidden, x);
  check_launch("embed_kernel");
}

void add_rms_norm(float* x, const __nv_bfloat16* delta, const float* weight, int64_t n, int64_t hidden,
                  float eps, __nv_bfloat16* out, cudaStream_t stream) {
  if (n == 0) return;
  add_rms_norm_kernel<<<static_cast<unsigned>(n), 256, 0, stream>>>(x, delta, weight, hidden, eps, out);
  check_launch("add_rms_norm_kernel");
}

void qk_norm_rope(__nv_bfloat16* qkv, int64_t row_stride, int64_t n, int num_q_heads, int num_kv_heads,
                  int head_dim, const int32_t* positions, const float* inv_freq, const float* q_norm,
                  const float* k_norm, float eps, cudaStream_t stream) {
  PA_CHECK(head_dim <= 256 && head_dim % 2 == 0, "qk_norm_rope: head_dim ", head_dim,
           " must be even and <= 256");
  const int64_t warps = n * (num_q_heads + num_kv_heads);
  if (warps == 0) return;
  const unsigned blocks = static_cast<unsigned>((warps * 32 + 255) / 256);
  qk_norm_rope_kernel<<<blocks, 256, 0, stream>>>(qkv, row_stride, n, num_q_heads, num_kv_heads, head_dim,
                                                  positions, inv_freq, q_norm, k_norm, eps);
  check_launch("qk_norm_rope_kernel");
}

void silu_and_mul(const __nv_bfloat16* gate_up, int64_t n, int64_t inter, __nv_bfloat16* out,
                  cudaStream_t stream) {
  const int64_t total = n * inter;
  if (total == 0) return;
  silu_and_mul_kernel<<<static_cast<unsigned>((total + 255) / 256), 256, 0, stream>>>(gate_up, n, inter, out);
  check_launch("silu_and_mul_kernel");
}

void gather_rows(const __nv_bfloat16* rows, const int32_t* index, int64_t count, int64_t width,
                 __nv_bfloat16* out, cudaStream_t stream) {
  if (count == 0) return;
  gather_rows_kernel<<<static_cast<unsigned>(count), 256, 0, stream>>>(rows, index, width, out);
  check_launch("gather_rows_kernel");
}

}  // namespace pagedattn::engine::cuda
