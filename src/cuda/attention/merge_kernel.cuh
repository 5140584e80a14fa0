// Merges the split-KV segments of the 3D launch: one warp per (token, query head). The sink joins the
// denominator here, once; O is written directly in the query dtype (no conversion kernel), and the LSE beside
// it.
#pragma once

#include <cuda_runtime.h>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/unified_params.h"

namespace pagedattn::cuda {

constexpr int kMergeWarps = 4;

template <typename T, int kHeadDim>
__global__ void __launch_bounds__(32 * kMergeWarps)
    merge_segments_kernel(const __grid_constant__ UnifiedParams p) {
  constexpr float kLog2e = 1.4426950408889634f;
  wait_for_prerequisite_grid();  // launched early (programmatic dependent launch): the partials are ready
  const auto& a = p.attn;
  const int lane = threadIdx.x & 31;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * kMergeWarps + (threadIdx.x >> 5);  // token * Hq + head
  if (row >= p.batch.num_tokens * a.num_q_heads) return;
  const int64_t token = row / a.num_q_heads;
  const int head = static_cast<int>(row % a.num_q_heads);
  const int n = p.num_segments;
  const float* ml = p.partial_ml + row * n * 2;

  float m = -INFINITY;
  for (int s = lane; s < n; s += 32) m = fmaxf(m, ml[2 * s]);
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
  const float sink = a.sinks != nullptr ? a.sinks[head] * kLog2e : -INFINITY;
  const float top = fmaxf(m, sink);
  float l = 0.0f;
  for (int s = lane; s < n; s += 32) {
    if (ml[2 * s] != -INFINITY) l += ml[2 * s + 1] * exp2f(ml[2 * s] - top);
  }
  for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
  if (a.sinks != nullptr) l += exp2f(sink - top);
  const float inv = 1.0f / l;

  T* dst = static_cast<T*>(a.o) + token * a.o_stride_token + head * a.o_stride_head;
  const float* po = p.partial_o + row * n * kHeadDim;
  for (int col = lane * 4; col < kHeadDim; col += 128) {
    float o[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll 4  // independent loads of several segments in flight, not one dependent chain
    for (int s = 0; s < n; ++s) {
      const float ms = ml[2 * s];
      if (ms == -INFINITY) continue;  // an empty segment: its partial O was never written
      const float f = exp2f(ms - top);
      const float4 v = *reinterpret_cast<const float4*>(po + s * kHeadDim + col);
      o[0] += v.x * f;
      o[1] += v.y * f;
      o[2] += v.z * f;
      o[3] += v.w * f;
    }
    T packed[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) packed[e] = from_float<T>(o[e] * inv);
    *reinterpret_cast<uint2*>(dst + col) = *reinterpret_cast<const uint2*>(packed);
  }
  if (a.lse != nullptr && lane == 0) {
    a.lse[token * a.lse_stride_token + head * a.lse_stride_head] = (top + log2f(l)) / kLog2e;
  }
}

}  // namespace pagedattn::cuda
