// Definitions of the launchers; included only by the generated instantiation files.
#pragma once

#include <atomic>
#include <type_traits>

#include "cuda/attention/decode_sm90_kernel.cuh"
#include "cuda/attention/merge_kernel.cuh"
#include "cuda/attention/prefill_sm90_kernel.cuh"
#include "cuda/attention/unified_kernel.cuh"
#include "cuda/attention/unified_launch.h"
#include "cuda/cuda_check.h"
#include "cuda/kernel_setup.h"

namespace pagedattn::cuda {

// Decode streams K/V: three stages (two tiles in flight while one is computed) where shared memory still
// allows two CTAs per SM; prefill reuses each tile across 64 rows and stays at two stages.
template <int kHeadDim, typename Fmt = KVAsQuery>
using DecodeConfig = UnifiedConfig<kHeadDim, 1, 4, 64, (kHeadDim <= 128 ? 3 : 2), Fmt>;
template <int kHeadDim, typename Fmt = KVAsQuery>
using PrefillConfig = UnifiedConfig<kHeadDim, 4, 1, (kHeadDim <= 128 ? 64 : 32), 2, Fmt>;

template <int kHeadDim>
using PrefillSm90 = PrefillSm90Config<kHeadDim>;
// The TMA decode kernel is compiled (CMake option PAGEDATTN_TMA, sm_90 targets) for bf16/fp16, fp8 and int8
// caches whose head dim is whole 128-byte panels (64 bf16/fp16 or 128 one-byte columns, kv_tensor_map.h).
// Elsewhere the host never selects it, and the alias names the cp.async config so that nothing uncompilable
// is instantiated.
#ifdef PAGEDATTN_HAS_TMA
constexpr bool kTmaCompiled = true;
#else
constexpr bool kTmaCompiled = false;
#endif
template <int kHeadDim, typename Fmt>
constexpr bool kTmaDecodeCompiled = kTmaCompiled&& kHeadDim % (128 / Fmt::kBytes) == 0;
template <int kHeadDim, typename Fmt = KVAsQuery>
using DecodeSm90 =
    std::conditional_t<kTmaDecodeCompiled<kHeadDim, Fmt>,
                       DecodeSm90Config<(kTmaDecodeCompiled<kHeadDim, Fmt> ? kHeadDim : 128), Fmt>,
                       DecodeConfig<kHeadDim, Fmt>>;

// The kernel and its launch facts for each (dtype, config).
template <typename T, typename Cfg>
struct KernelOf {
  static constexpr auto kernel = unified_attention_kernel<T, Cfg>;
  static constexpr const char* name = "unified_attention_kernel";
};
template <typename T, int kHeadDim>
struct KernelOf<T, PrefillSm90Config<kHeadDim>> {
  static constexpr auto kernel = prefill_sm90_kernel<T, PrefillSm90Config<kHeadDim>>;
  static constexpr const char* name = "prefill_sm90_kernel";
};

template <typename T, int kHeadDim, typename Fmt>
struct KernelOf<T, DecodeSm90Config<kHeadDim, Fmt>> {
  static constexpr auto kernel = decode_sm90_kernel<T, DecodeSm90Config<kHeadDim, Fmt>>;
  static constexpr const char* name = "decode_sm90_kernel";
};

template <typename T, typename Cfg>
auto* configured_kernel() {
  static_assert(Cfg::kSmemBytes <= 227 * 1024, "tile does not fit in shared memory");
  auto* kernel = KernelOf<T, Cfg>::kernel;
  static std::atomic<uint64_t> configured_devices{0};
  raise_smem_limit_once(kernel, Cfg::kSmemBytes, configured_devices);
  return kernel;
}

template <typename T, typename Cfg>
int resident_ctas() {
  int ctas = 0;
  PA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&ctas, configured_kernel<T, Cfg>(),
                                                              Cfg::kThreads, Cfg::kSmemBytes));
  return ctas;
}

// The sm_90a wgmma prefill kernel reads bf16/fp16 caches only and the TMA decode kernel bf16/fp16/fp8 ones:
// for other formats they are not instantiated, and the host never selects them (attention_cuda.cu logs that
// once).
template <typename T, typename Fmt, int kHeadDim>
int resident_ctas_per_sm(TileShape shape) {
  switch (shape) {
    case TileShape::kDecode:
      return resident_ctas<T, DecodeConfig<kHeadDim, Fmt>>();
    case TileShape::kPrefill:
      return resident_ctas<T, PrefillConfig<kHeadDim, Fmt>>();
    case TileShape::kPrefillSm90:
      if constexpr (!Fmt::kQuantized) return resident_ctas<T, PrefillSm90<kHeadDim>>();
      return 0;
    case TileShape::kDecodeSm90:
      if constexpr (kTmaDecodeCompiled<kHeadDim, Fmt>) return resident_ctas<T, DecodeSm90<kHeadDim, Fmt>>();
      return 0;
  }
  return 0;
}

template <typename T, typename Cfg>
void launch_shape(const LaunchChoice& choice, const UnifiedParams& params, cudaStream_t stream) {
  PA_CHECK(choice.block_m == Cfg::kBlockM && choice.block_n == Cfg::kBlockN,
           "internal: launch choice and kernel config disagree on the tile shape");
  auto* kernel = configured_kernel<T, Cfg>();
  dim3 grid(static_cast<unsigned>(choice.grid_tiles), static_cast<unsigned>(params.kv.num_kv_heads),
            static_cast<unsigned>(params.num_segments));
  if (choice.persistent_ctas > 0) {
    PA_CHECK(params.work_counter != nullptr, "internal: a persistent launch needs its work counter");
    // The counter starts at zero on every launch (a memset node when captured into a CUDA graph).
    PA_CUDA_CHECK(cudaMemsetAsync(params.work_counter, 0, sizeof(uint32_t), stream));
    grid = dim3(static_cast<unsigned>(choice.persistent_ctas));
  }
  launch_kernel(kernel, KernelOf<T, Cfg>::name, grid, dim3(Cfg::kThreads), Cfg::kSmemBytes, stream,
                choice.early_start, params);
}

template <typename T, typename Fmt, int kHeadDim>
void launch_attention(const LaunchChoice& choice, const UnifiedParams& params, cudaStream_t stream) {
  switch (choice.shape) {
    case TileShape::kDecode:
      launch_shape<T, DecodeConfig<kHeadDim, Fmt>>(choice, params, stream);
      break;
    case TileShape::kPrefill:
      launch_shape<T, PrefillConfig<kHeadDim, Fmt>>(choice, params, stream);
      break;
    case TileShape::kPrefillSm90:
      if constexpr (Fmt::kQuantized) {
        PA_CHECK(false, "internal: the wgmma prefill kernel reads bf16/fp16 caches only");
      } else {
        launch_shape<T, PrefillSm90<kHeadDim>>(choice, params, stream);
      }
      break;
    case TileShape::kDecodeSm90:
      if constexpr (kTmaDecodeCompiled<kHeadDim, Fmt>) {
        launch_shape<T, DecodeSm90<kHeadDim, Fmt>>(choice, params, stream);
      } else {
        PA_CHECK(false, "internal: the TMA decode kernel is not compiled for head dim ", kHeadDim,
                 " over this cache format");
      }
      break;
  }
  if (params.num_segments > 1) launch_merge_segments<T, kHeadDim>(params, choice.early_merge_launch, stream);
}

}  // namespace pagedattn::cuda
