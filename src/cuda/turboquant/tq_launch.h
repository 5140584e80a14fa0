// Launchers of attention over TurboQuant pages, one instantiation per (query dtype, preset, head dim):
// generated from tq_attention_instance.cu.in by src/cuda/CMakeLists.txt.
#pragma once

#include <cuda_runtime.h>

#include "cuda/attention/launch_selection.h"
#include "cuda/attention/unified_params.h"
#include "cuda/turboquant/tq_tables.h"

namespace pagedattn::cuda {

/// What the launch needs beyond the family's parameters: the workspace's rotated-query region.
struct TQLaunchArgs {
  __half* q_rot = nullptr;
  float* q_row_scale = nullptr;
  TurboQuantTables tab;
  // With the step's raw K/V (params.attn.new_k): their staged rows and row scales, [num_tokens, num_kv_heads,
  // head_dim] fp16 and [num_tokens, num_kv_heads] fp32 (TQRawChunk).
  __half* raw_k = nullptr;
  float* raw_k_scale = nullptr;
  __half* raw_v = nullptr;
  float* raw_v_scale = nullptr;
};

/// Rotates the queries (and stages the step's raw K/V when params.attn.new_k is set), launches the attention
/// kernel (decode tile shape) and, when choice.num_segments > 1, the merge kernel, on stream.
template <typename T, int kKeyBits, int kValueBits, int kHeadDim>
void launch_tq_attention(const LaunchChoice& choice, const UnifiedParams& params, const TQLaunchArgs& args,
                         cudaStream_t stream);

/// CTAs of the attention kernel resident per SM (the occupancy API).
template <typename T, int kKeyBits, int kValueBits, int kHeadDim>
int tq_resident_ctas_per_sm(TileShape shape);

}  // namespace pagedattn::cuda
