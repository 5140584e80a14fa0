// Definitions of the TurboQuant attention launchers; included only by the generated instantiation files.
#pragma once

#include <cuda_fp16.h>

#include <atomic>

#include "cuda/attention/merge_kernel.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_setup.h"
#include "cuda/turboquant/tq_decode_kernel.cuh"
#include "cuda/turboquant/tq_launch.h"

namespace pagedattn::cuda {

template <typename T, typename Cfg, bool kRaw>
auto* configured_tq_kernel() {
  static_assert(Cfg::kSmemBytes <= 227 * 1024, "tile does not fit in shared memory");
  auto* kernel = tq_attention_kernel<T, Cfg, kRaw>;
  static std::atomic<uint64_t> configured_devices{0};
  raise_smem_limit_once(kernel, Cfg::kSmemBytes, configured_devices);
  return kernel;
}

template <typename T, int kKeyBits, int kValueBits, int kHeadDim>
int tq_resident_ctas_per_sm(TileShape) {
  using Cfg = TQDecodeConfig<kHeadDim, kKeyBits, kValueBits>;
  int ctas = 0;
  PA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, configured_tq_kernel<T, Cfg, false>(),
                                                              Cfg::kThreads, Cfg::kSmemBytes));
  return ctas;
}

template <typename T, int kKeyBits, int kValueBits, int kHeadDim>
void launch_tq_attention(const LaunchChoice& choice, const UnifiedParams& params, const TQLaunchArgs& args,
                         cudaStream_t stream) {
  using Cfg = TQDecodeConfig<kHeadDim, kKeyBits, kValueBits>;
  PA_CHECK(choice.shape == TileShape::kDecode && choice.block_m == Cfg::kBlockM &&
               choice.block_n == Cfg::kBlockN && choice.persistent_ctas == 0,
           "internal: the TurboQuant attention kernel has the 16 x 64 decode tile, launched as a grid");
  const int64_t rows = params.batch.num_tokens * params.attn.num_q_heads;
  if (rows == 0) return;
  tq_rotate_queries_kernel<T, kHeadDim><<<static_cast<unsigned>((rows + 3) / 4), 128, 0, stream>>>(
      params.attn, rows, args.tab, kKeyBits == 8 ? 0 : 1, args.q_rot, args.q_row_scale);
  PA_CUDA_CHECK_LAUNCH("tq_rotate_queries_kernel");

  TQAttentionParams p;
  p.u = params;
  p.q_rot = args.q_rot;
  p.q_row_scale = args.q_row_scale;
  p.tab = args.tab;
  const bool raw = params.attn.new_k != nullptr;
  if (raw) {
    // The step's raw K/V rows, staged as the queries are (the same kernel over [num_tokens, num_kv_heads]
    // rows): keys rotated into the codes' domain (tq_k8v4: not), values not; each row over its power of two.
    const auto& a = params.attn;
    const int64_t kv_rows = params.batch.num_tokens * params.kv.num_kv_heads;
    const unsigned blocks = static_cast<unsigned>((kv_rows + 3) / 4);
    kernels::AttentionArgs rows_of = a;
    rows_of.num_q_heads = params.kv.num_kv_heads;
    rows_of.q = a.new_k;
    rows_of.q_stride_token = a.new_k_stride_token;
    rows_of.q_stride_head = a.new_k_stride_head;
    tq_rotate_queries_kernel<T, kHeadDim><<<blocks, 128, 0, stream>>>(
        rows_of, kv_rows, args.tab, kKeyBits == 8 ? 0 : 1, args.raw_k, args.raw_k_scale);
    PA_CUDA_CHECK_LAUNCH("tq_rotate_queries_kernel (new keys)");
    rows_of.q = a.new_v;
    rows_of.q_stride_token = a.new_v_stride_token;
    rows_of.q_stride_head = a.new_v_stride_head;
    tq_rotate_queries_kernel<T, kHeadDim>
        <<<blocks, 128, 0, stream>>>(rows_of, kv_rows, args.tab, 0, args.raw_v, args.raw_v_scale);
    PA_CUDA_CHECK_LAUNCH("tq_rotate_queries_kernel (new values)");
    p.raw = {args.raw_k, args.raw_k_scale, args.raw_v, args.raw_v_scale};
  }
  auto* kernel = raw ? configured_tq_kernel<T, Cfg, true>() : configured_tq_kernel<T, Cfg, false>();
  const dim3 grid(static_cast<unsigned>(choice.grid_tiles), static_cast<unsigned>(params.kv.num_kv_heads),
                  static_cast<unsigned>(params.num_segments));
  kernel<<<grid, Cfg::kThreads, Cfg::kSmemBytes, stream>>>(p);
  PA_CUDA_CHECK_LAUNCH("tq_attention_kernel");

  if (params.num_segments > 1) launch_merge_segments<T, kHeadDim>(params, choice.early_merge_launch, stream);
}

}  // namespace pagedattn::cuda
