// K/V cache formats: what one cached key or value costs and which scales come with it. The cache's data
// dtype names its format; every size the library reports (block manager budgets, workspace) asks here.
#pragma once

#include <cstdint>

#include "pagedattn/dtype.h"

namespace pagedattn {

/// Where a quantized format keeps its dequantization scales.
enum class KVScales : uint8_t {
  kNone,        ///< bf16 / fp16 / fp32: values are stored as they are
  kTensorHead,  ///< fp8: optional fp32 k_scale / v_scale, one per tensor or per KV head (vLLM's k_scale,
                ///< v_scale); the cache stores value / scale, default scale 1.0
  kToken,       ///< int8: a metadata plane with one fp32 scale per token and KV head (absmax / 127)
};

/// The properties of one K/V cache format.
struct KVFormat {
  DType data = DType::kBFloat16;  ///< element type of the data plane
  KVScales scales = KVScales::kNone;
  int meta_bytes_per_head = 0;  ///< bytes of the metadata plane per token and KV head (int8: one fp32 scale)

  /// Bytes of one token of one KV head in one of K or V: data plus metadata.
  constexpr int64_t bytes_per_token_head(int64_t head_dim) const {
    return head_dim * dtype_size(data) + meta_bytes_per_head;
  }
  /// Whether stored values are codes that need a scale to read (fp8, int8).
  constexpr bool quantized() const {
    return data == DType::kFloat8E4M3 || data == DType::kFloat8E5M2 || data == DType::kInt8;
  }
};

/// Whether a dtype names a K/V cache format: fp32 (CPU), fp16, bf16, fp8_e4m3, fp8_e5m2, int8.
constexpr bool is_kv_format(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16 || t == DType::kFloat8E4M3 ||
         t == DType::kFloat8E5M2 || t == DType::kInt8;
}

/// The format a cache of this data dtype has (is_kv_format(t) must hold).
constexpr KVFormat kv_format(DType t) {
  switch (t) {
    case DType::kFloat8E4M3:
    case DType::kFloat8E5M2:
      return {t, KVScales::kTensorHead, 0};
    case DType::kInt8:
      return {t, KVScales::kToken, 4};
    default:
      return {t, KVScales::kNone, 0};
  }
}

/// Bytes one token costs in one layer's cache: K and V, data and metadata planes.
constexpr int64_t kv_bytes_per_token(DType cache_dtype, int64_t num_kv_heads, int64_t head_dim) {
  return 2 * num_kv_heads * kv_format(cache_dtype).bytes_per_token_head(head_dim);
}

}  // namespace pagedattn
