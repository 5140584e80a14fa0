// Scatter of new K/V rows into their cache slots, one warp per (token, kv head): 16-byte copies for a
// bf16/fp16 cache of the key dtype; for the quantized formats each lane encodes 8 elements at a time, exactly
// as the CPU backend does (write_kv_cpu.cpp): fp8 = value / scale rounded to nearest even and saturated, int8
// = codes round(value / s) with s = absmax / 127 of the head vector, found by a warp reduction. TurboQuant
// caches go to their own writer (turboquant/write_kv_turboquant.cu).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <vector>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/device_guard.h"
#include "cuda/turboquant/write_kv_turboquant.h"
#include "cuda/write_kv_rows.cuh"
#include "pagedattn/kv_format.h"

namespace pagedattn::cuda {
namespace {

__global__ void __launch_bounds__(32 * kWriteWarps)
    write_kv_kernel(const __grid_constant__ kernels::PagedKVArgs kv,
                    const __grid_constant__ kernels::WriteKVArgs src) {
  // The attention call that follows may become resident now (programmatic dependent launch, sm_90); it waits
  // on the device for this kernel's stores before reading the cache.
  allow_dependent_launch();
  int64_t token = 0, block = 0;
  int head = 0;
  int32_t slot = 0;
  if (!warp_item(kv, src, token, head, block, slot)) return;
  const int elem = dtype_size(src.src_dtype);
  const int chunks = kv.head_dim * elem / 16;
  const char* ks =
      static_cast<const char*>(src.key) + (token * src.key_stride_token + head * src.key_stride_head) * elem;
  const char* vs = static_cast<const char*>(src.value) +
                   (token * src.value_stride_token + head * src.value_stride_head) * elem;
  char* kd = const_cast<char*>(kv.k.at<char>(0, 0, 0)) + kv.k.offset(block, slot, head) * elem;
  char* vd = const_cast<char*>(kv.v.at<char>(0, 0, 0)) + kv.v.offset(block, slot, head) * elem;
  for (int c = threadIdx.x & 31; c < chunks; c += 32) {
    reinterpret_cast<uint4*>(kd)[c] = reinterpret_cast<const uint4*>(ks)[c];
    reinterpret_cast<uint4*>(vd)[c] = reinterpret_cast<const uint4*>(vs)[c];
  }
}

// fp8: 8 elements per lane step, value / scale, round to nearest even, saturate (infinities too), NaN kept.
template <__nv_fp8_interpretation_t kInterpretation>
__device__ __forceinline__ void encode_fp8_row(const void* src, DType src_dtype, int64_t src_offset,
                                               uint8_t* dst, int head_dim, float scale) {
  for (int c = (threadIdx.x & 31) * 8; c < head_dim; c += 32 * 8) {
    uint32_t words[2];
#pragma unroll
    for (int w = 0; w < 2; ++w) {
      uint32_t word = 0;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int i = c + w * 4 + h * 2;
        const float2 x = make_float2(load_float(src, src_dtype, src_offset + i) / scale,
                                     load_float(src, src_dtype, src_offset + i + 1) / scale);
        const uint32_t pair = __nv_cvt_float2_to_fp8x2(x, __NV_SATFINITE, kInterpretation);
        word |= (pair & 0xffffu) << (16 * h);
      }
      words[w] = word;
    }
    *reinterpret_cast<uint2*>(dst + c) = make_uint2(words[0], words[1]);
  }
}

// int8: the warp finds the head vector's finite absmax (and whether it holds a NaN), then encodes.
__device__ __forceinline__ float encode_int8_row(const void* src, DType src_dtype, int64_t src_offset,
                                                 int8_t* dst, int head_dim) {
  const int lane = threadIdx.x & 31;
  float absmax = 0.0f;
  bool nan = false;
  for (int i = lane; i < head_dim; i += 32) {
    const float x = load_float(src, src_dtype, src_offset + i);
    nan = nan || isnan(x);
    if (isfinite(x)) absmax = fmaxf(absmax, fabsf(x));
  }
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) absmax = fmaxf(absmax, __shfl_xor_sync(0xffffffffu, absmax, off));
  nan = __any_sync(0xffffffffu, nan);
  const float scale = nan ? __int_as_float(0x7fc00000) : absmax / 127.0f;
  for (int c = lane * 8; c < head_dim; c += 32 * 8) {
    uint32_t words[2] = {0, 0};
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const float x = load_float(src, src_dtype, src_offset + c + e);
      float code = 0.0f;
      if (isinf(x)) {
        code = copysignf(127.0f, x);
      } else if (scale > 0.0f) {
        code = fminf(127.0f, fmaxf(-127.0f, rintf(x / scale)));
      }
      words[e / 4] |= (static_cast<uint32_t>(static_cast<int>(code)) & 0xffu) << (8 * (e % 4));
    }
    *reinterpret_cast<uint2*>(dst + c) = make_uint2(words[0], words[1]);
  }
  return scale;
}

__global__ void __launch_bounds__(32 * kWriteWarps)
    write_kv_quantized_kernel(const __grid_constant__ kernels::PagedKVArgs kv,
                              const __grid_constant__ kernels::WriteKVArgs src) {
  allow_dependent_launch();
  int64_t token = 0, block = 0;
  int head = 0;
  int32_t slot = 0;
  if (!warp_item(kv, src, token, head, block, slot)) return;
  const int64_t k_src = token * src.key_stride_token + head * src.key_stride_head;
  const int64_t v_src = token * src.value_stride_token + head * src.value_stride_head;
  auto* kd = const_cast<uint8_t*>(kv.k.at<uint8_t>(block, slot, head));
  auto* vd = const_cast<uint8_t*>(kv.v.at<uint8_t>(block, slot, head));
  switch (kv.dtype) {
    case DType::kFloat8E4M3:
      encode_fp8_row<__NV_E4M3>(src.key, src.src_dtype, k_src, kd, kv.head_dim, kv.k_head_scale(head));
      encode_fp8_row<__NV_E4M3>(src.value, src.src_dtype, v_src, vd, kv.head_dim, kv.v_head_scale(head));
      break;
    case DType::kFloat8E5M2:
      encode_fp8_row<__NV_E5M2>(src.key, src.src_dtype, k_src, kd, kv.head_dim, kv.k_head_scale(head));
      encode_fp8_row<__NV_E5M2>(src.value, src.src_dtype, v_src, vd, kv.head_dim, kv.v_head_scale(head));
      break;
    default: {  // int8
      const float k_scale =
          encode_int8_row(src.key, src.src_dtype, k_src, reinterpret_cast<int8_t*>(kd), kv.head_dim);
      const float v_scale =
          encode_int8_row(src.value, src.src_dtype, v_src, reinterpret_cast<int8_t*>(vd), kv.head_dim);
      if ((threadIdx.x & 31) == 0) {
        *const_cast<float*>(kv.k_meta.at<float>(block, slot, head)) = k_scale;
        *const_cast<float*>(kv.v_meta.at<float>(block, slot, head)) = v_scale;
      }
    }
  }
}

void check_aligned(const void* ptr, std::initializer_list<int64_t> strides, int elem, const char* name) {
  PA_CHECK(reinterpret_cast<uintptr_t>(ptr) % 16 == 0, name, " must be 16-byte aligned for the CUDA backend");
  for (int64_t s : strides) {
    PA_CHECK((s * elem) % 16 == 0, name, " strides must be multiples of 16 bytes for the CUDA backend, got ",
             s, " elements");
  }
}

}  // namespace

void write_kv(const core::WriteKVProblem& p, Stream stream_handle, bool validate_slots) {
  DeviceGuard guard(p.device.index);
  const bool turboquant = p.kv.tq_key_bits > 0;
  const bool quantized = kv_format(p.kv.dtype).quantized();
  PA_CHECK(
      turboquant || quantized ||
          (p.kv.dtype == p.src.src_dtype &&
           (p.kv.dtype == DType::kFloat16 || p.kv.dtype == DType::kBFloat16)),
      "the CUDA backend writes fp16 and bf16 caches from keys of the same dtype, and fp8_e4m3, fp8_e5m2 ",
      "and int8 caches from any key dtype; got ", dtype_name(p.src.src_dtype), " keys into a ",
      dtype_name(p.kv.dtype), " cache");
  const int src_elem = dtype_size(p.src.src_dtype), cache_elem = dtype_size(p.kv.dtype);
  if (!turboquant) {  // the TurboQuant writer reads and writes element by element: any alignment
    check_aligned(p.src.key, {p.src.key_stride_token, p.src.key_stride_head}, src_elem, "key");
    check_aligned(p.src.value, {p.src.value_stride_token, p.src.value_stride_head}, src_elem, "value");
    check_aligned(p.kv.k.data, {p.kv.k.stride_block, p.kv.k.stride_token, p.kv.k.stride_head}, cache_elem,
                  "cache.k");
    check_aligned(p.kv.v.data, {p.kv.v.stride_block, p.kv.v.stride_token, p.kv.v.stride_head}, cache_elem,
                  "cache.v");
  }
  const int64_t items = p.src.num_tokens * p.kv.num_kv_heads;
  if (items == 0) return;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (validate_slots) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    PA_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture == cudaStreamCaptureStatusNone) {
      std::vector<int64_t> slots(static_cast<size_t>(p.src.num_tokens));
      PA_CUDA_CHECK(cudaMemcpyAsync(slots.data(), p.src.slot_mapping, slots.size() * 8,
                                    cudaMemcpyDeviceToHost, stream));
      PA_CUDA_CHECK(cudaStreamSynchronize(stream));
      core::check_slots(slots.data(), p.src.num_tokens, p.kv);
    }
  }
  if (turboquant) {
    write_kv_turboquant(p, stream);
    return;
  }
  const unsigned blocks = static_cast<unsigned>((items + kWriteWarps - 1) / kWriteWarps);
  if (quantized) {
    write_kv_quantized_kernel<<<blocks, 32 * kWriteWarps, 0, stream>>>(p.kv, p.src);
    PA_CUDA_CHECK_LAUNCH("write_kv_quantized_kernel");
  } else {
    write_kv_kernel<<<blocks, 32 * kWriteWarps, 0, stream>>>(p.kv, p.src);
    PA_CUDA_CHECK_LAUNCH("write_kv_kernel");
  }
}

}  // namespace pagedattn::cuda
