// The K/V cache formats as the CUDA kernels see them (pagedattn/kv_format.h is the host side): the stored
// element type, whether tiles must be converted before the MMA reads them, where the scales come from, and
// the conversion of 8 stored codes into 8 query-type elements for the tensor cores.
//
// Every fp8 e4m3 / e5m2 value and every int8 code is exact in fp16 and in bf16, so the conversion loses
// nothing; the scales are applied to the fp32 scores and probabilities instead (see KVScales below), never
// to rounded elements.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

namespace pagedattn::cuda {

/// bf16 / fp16 caches read by queries of the same dtype: tiles go straight to the MMA.
struct KVAsQuery {
  static constexpr bool kQuantized = false;
  static constexpr bool kTokenScales = false;
  static constexpr int kBytes = 2;
};

struct KVFp8E4M3 {
  static constexpr bool kQuantized = true;
  static constexpr bool kTokenScales = false;
  static constexpr int kBytes = 1;
  static constexpr __nv_fp8_interpretation_t kInterpretation = __NV_E4M3;
};

struct KVFp8E5M2 {
  static constexpr bool kQuantized = true;
  static constexpr bool kTokenScales = false;
  static constexpr int kBytes = 1;
  static constexpr __nv_fp8_interpretation_t kInterpretation = __NV_E5M2;
};

/// int8 codes with one fp32 scale per token and KV head in the metadata planes.
struct KVInt8 {
  static constexpr bool kQuantized = true;
  static constexpr bool kTokenScales = true;
  static constexpr int kBytes = 1;
};

namespace detail {
__device__ __forceinline__ uint32_t pack2(__half2 h) {
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ uint32_t pack2(__nv_bfloat162 h) {
  return *reinterpret_cast<uint32_t*>(&h);
}
template <typename T>
__device__ __forceinline__ uint32_t from_float2(float a, float b) {
  if constexpr (std::is_same_v<T, __half>) {
    return pack2(__floats2half2_rn(a, b));
  } else {
    return pack2(__floats2bfloat162_rn(a, b));
  }
}
}  // namespace detail

/// Two fp8 codes (the low 16 bits of `pair`, the first in the low byte) -> two elements of T, exactly (NaN
/// and infinities included): the hardware's fp8x2 -> f16x2 conversion, then for bf16 through fp32.
template <typename T, typename Fmt>
__device__ __forceinline__ uint32_t fp8x2_to(uint32_t pair) {
  const __half2_raw hr =
      __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair & 0xffffu), Fmt::kInterpretation);
  if constexpr (std::is_same_v<T, __half>) {
    return static_cast<uint32_t>(hr.x) | (static_cast<uint32_t>(hr.y) << 16);
  } else {
    const float2 f = __half22float2(__half2(hr));
    return detail::from_float2<T>(f.x, f.y);
  }
}

/// Two int8 codes (the low 16 bits of `pair`, the first in the low byte) -> two elements of T, exactly.
template <typename T>
__device__ __forceinline__ uint32_t int8x2_to(uint32_t pair) {
  const float a = static_cast<float>(static_cast<int8_t>(pair & 0xffu));
  const float b = static_cast<float>(static_cast<int8_t>((pair >> 8) & 0xffu));
  return detail::from_float2<T>(a, b);
}

/// Two 1-byte codes of a quantized format -> two elements of T, exactly.
template <typename T, typename Fmt>
__device__ __forceinline__ uint32_t codes2_to(uint32_t pair) {
  if constexpr (std::is_same_v<Fmt, KVInt8>) {
    return int8x2_to<T>(pair);
  } else {
    return fp8x2_to<T, Fmt>(pair);
  }
}

/// 8 stored codes (8 bytes) -> 8 elements of T (16 bytes), exactly.
template <typename T, typename Fmt>
__device__ __forceinline__ uint4 dequantize8(uint2 raw) {
  uint32_t out[4];
  const uint32_t words[2] = {raw.x, raw.y};
#pragma unroll
  for (int w = 0; w < 2; ++w) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      out[w * 2 + h] = codes2_to<T, Fmt>(words[w] >> (16 * h));
    }
  }
  return make_uint4(out[0], out[1], out[2], out[3]);
}

/// The scales a KV tile's scores and probabilities take (attend_kv_tile): none, one per KV head (fp8), or
/// one per key from the metadata planes staged in shared memory (int8). k(n) / v(n): key n of the warp's
/// range.
struct NoKVScales {
  static constexpr bool kActive = false;
  __device__ __forceinline__ float k(int) const { return 1.0f; }
  __device__ __forceinline__ float v(int) const { return 1.0f; }
};
struct HeadKVScales {
  static constexpr bool kActive = true;
  float ks, vs;
  __device__ __forceinline__ float k(int) const { return ks; }
  __device__ __forceinline__ float v(int) const { return vs; }
};
struct TokenKVScales {
  static constexpr bool kActive = true;
  const float* ks;  // shared memory, the warp's keys
  const float* vs;
  __device__ __forceinline__ float k(int n) const { return ks[n]; }
  __device__ __forceinline__ float v(int n) const { return vs[n]; }
};

}  // namespace pagedattn::cuda
