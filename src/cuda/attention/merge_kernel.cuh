// Merges the split-KV segments of the 3D launch: one warp per (token, query head). The sink joins the
// denominator here, once; O is written directly in the query dtype (no conversion kernel), and the LSE beside
// it.
#pragma once

#include <cuda_runtime.h>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/unified_params.h"
#include "cuda/kernel_setup.h"

namespace pagedattn::cuda {

constexpr int kMergeWarps = 4;

/// Folds partial (max, sum) pair b into a: the pair for the union of both key ranges. An empty range has
/// max -inf and sum 0, and folding two of them stays empty (no -inf - -inf).
__device__ __forceinline__ void fold_max_sum(float& m, float& l, float mb, float lb) {
  const float top = fmaxf(m, mb);
  if (top == -INFINITY) return;
  l = l * exp2f(m - top) + lb * exp2f(mb - top);
  m = top;
}

/// One warp per (token, query head). Latency, not bandwidth, sets its time (a few KB per row, just written
/// and still in L2), so each round trip counts: the partial outputs of the first kSegmentsInFlight segments
/// are requested together with the (max, sum) pairs, before the pairs are reduced; a typical split (<= 16
/// segments at head dim <= 128) then costs one round trip to L2 and the store.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(32 * kMergeWarps)
    merge_segments_kernel(const __grid_constant__ UnifiedParams p) {
  constexpr float kLog2e = 1.4426950408889634f;
  constexpr int kColGroups = (kHeadDim + 127) / 128;  // float4 columns per lane per segment
  constexpr int kSegmentsInFlight = 16 / kColGroups;  // 64 registers of partial O per lane
  allow_dependent_launch();      // the next attention call may start early (it waits for us)
  wait_for_prerequisite_grid();  // launched early (programmatic dependent launch): the partials are ready
  const auto& a = p.attn;
  const int lane = threadIdx.x & 31;
  const int64_t row =
      static_cast<int64_t>(blockIdx.x) * kMergeWarps + (threadIdx.x >> 5);  // token * Hq + head
  if (row >= p.batch.num_tokens * a.num_q_heads) return;
  const int64_t token = row / a.num_q_heads;
  const int head = static_cast<int>(row % a.num_q_heads);
  const int n = p.num_segments;
  const float2* ml = reinterpret_cast<const float2*>(p.partial_ml + row * n * 2);
  const float* po = p.partial_o + row * n * kHeadDim;

  // Requests first: this lane's (max, sum) pairs and the first segments' partial O columns.
  float2 own = lane < n ? ml[lane] : make_float2(-INFINITY, 0.0f);
  float4 v[kSegmentsInFlight][kColGroups];
#pragma unroll
  for (int s = 0; s < kSegmentsInFlight; ++s) {
#pragma unroll
    for (int g = 0; g < kColGroups; ++g) {
      const int col = g * 128 + lane * 4;
      if (s < n && col < kHeadDim) v[s][g] = *reinterpret_cast<const float4*>(po + s * kHeadDim + col);
    }
  }
  float m = own.x, l = own.y;
  for (int s = lane + 32; s < n; s += 32) fold_max_sum(m, l, ml[s].x, ml[s].y);
  for (int off = 16; off > 0; off >>= 1) {
    fold_max_sum(m, l, __shfl_xor_sync(0xffffffffu, m, off), __shfl_xor_sync(0xffffffffu, l, off));
  }
  // The sink joins the denominator here, once.
  if (a.sinks != nullptr) fold_max_sum(m, l, a.sinks[head] * kLog2e, 1.0f);
  const float top = m, inv = 1.0f / l;

  // An empty segment (max -inf) never wrote its partial O: its weight is 0 and its values are not read into
  // the sum (they may be anything, NaN included).
  auto weight = [&](int s) {
    const float ms = s < 32 ? __shfl_sync(0xffffffffu, own.x, s) : ml[s].x;
    return ms == -INFINITY ? 0.0f : exp2f(ms - top);
  };
  float o[kColGroups][4] = {};
  auto accumulate = [&](const float4& x, float f, float* acc) {
    if (f == 0.0f) return;
    acc[0] += x.x * f;
    acc[1] += x.y * f;
    acc[2] += x.z * f;
    acc[3] += x.w * f;
  };
#pragma unroll
  for (int s = 0; s < kSegmentsInFlight; ++s) {
    if (s < n) {
      const float f = weight(s);
#pragma unroll
      for (int g = 0; g < kColGroups; ++g) accumulate(v[s][g], f, o[g]);
    }
  }
  for (int s = kSegmentsInFlight; s < n; ++s) {
    const float f = weight(s);
#pragma unroll
    for (int g = 0; g < kColGroups; ++g) {
      const int col = g * 128 + lane * 4;
      if (col < kHeadDim) accumulate(*reinterpret_cast<const float4*>(po + s * kHeadDim + col), f, o[g]);
    }
  }

  T* dst = static_cast<T*>(a.o) + token * a.o_stride_token + head * a.o_stride_head;
#pragma unroll
  for (int g = 0; g < kColGroups; ++g) {
    const int col = g * 128 + lane * 4;
    if (col >= kHeadDim) continue;
    T packed[4];
#pragma unroll
    for (int e = 0; e < 4; ++e) packed[e] = from_float<T>(o[g][e] * inv);
    *reinterpret_cast<uint2*>(dst + col) = *reinterpret_cast<const uint2*>(packed);
  }
  if (a.lse != nullptr && lane == 0) {
    a.lse[token * a.lse_stride_token + head * a.lse_stride_head] = (top + log2f(l)) / kLog2e;
  }
}

/// Launches the merge of a split launch's partials (params.num_segments > 1), one warp per (token, query
/// head); `early`: while the attention kernel still runs (it waits for the partials on the device).
template <typename T, int kHeadDim>
void launch_merge_segments(const UnifiedParams& params, bool early, cudaStream_t stream) {
  const int64_t rows = params.batch.num_tokens * params.attn.num_q_heads;
  const unsigned blocks = static_cast<unsigned>((rows + kMergeWarps - 1) / kMergeWarps);
  if (blocks == 0) return;
  launch_kernel(merge_segments_kernel<T, kHeadDim>, "merge_segments_kernel", dim3(blocks),
                dim3(32 * kMergeWarps), 0, stream, early, params);
}

}  // namespace pagedattn::cuda
