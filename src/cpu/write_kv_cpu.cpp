// Scatter of new K/V rows into their cache slots, converting to the cache format: a plain conversion for the
// float formats, value / scale for fp8 (rounded to nearest even, saturating), and for int8 a per-token scale
// s = absmax / 127 with codes round(value / s) (symmetric; s = 0 for a zero vector; a NaN element makes s
// NaN so the vector reads back as NaN; +-inf saturate to +-127 with s taken over the finite elements); for
// TurboQuant caches the quantizers of pagedattn/turboquant.h.
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/parallel.h"
#include "pagedattn/kv_format.h"
#include "pagedattn/turboquant.h"

namespace pagedattn::cpu {
namespace {

void copy_row(const void* src, DType src_dtype, int64_t src_offset, void* dst, DType dst_dtype,
              int64_t dst_offset, int n, float scale) {
  if (src_dtype == dst_dtype) {
    const size_t e = static_cast<size_t>(dtype_size(src_dtype));
    std::memcpy(static_cast<char*>(dst) + dst_offset * e, static_cast<const char*>(src) + src_offset * e,
                n * e);
    return;
  }
  for (int i = 0; i < n; ++i)
    store_from_float(dst, dst_dtype, dst_offset + i, load_as_float(src, src_dtype, src_offset + i) / scale);
}

// int8: quantizes one head vector and returns its scale.
float quantize_int8_row(const void* src, DType src_dtype, int64_t src_offset, int8_t* dst, int n,
                        float* tmp) {
  float absmax = 0.0f;
  bool nan = false;
  for (int i = 0; i < n; ++i) {
    tmp[i] = load_as_float(src, src_dtype, src_offset + i);
    if (std::isnan(tmp[i])) nan = true;
    if (std::isfinite(tmp[i])) absmax = std::fmax(absmax, std::fabs(tmp[i]));
  }
  const float scale = nan ? std::nanf("") : absmax / 127.0f;
  for (int i = 0; i < n; ++i) {
    float code = 0.0f;
    if (std::isinf(tmp[i])) {
      code = std::copysign(127.0f, tmp[i]);
    } else if (scale > 0.0f) {
      code = std::fmin(127.0f, std::fmax(-127.0f, std::nearbyint(tmp[i] / scale)));
    }
    dst[i] = static_cast<int8_t>(code);
  }
  return scale;
}

// TurboQuant: one token and head of K and V into the code planes and their metadata.
void write_turboquant(const kernels::PagedKVArgs& kv, const float* key, const float* value, int64_t block,
                      int32_t slot, int32_t h) {
  auto* k_codes = static_cast<uint8_t*>(const_cast<void*>(kv.k.data)) + kv.k.offset(block, slot, h);
  if (kv.tq_key_bits == 8) {
    for (int i = 0; i < kv.head_dim; ++i) k_codes[i] = float_to_fp8e4m3_bits(key[i]);
  } else {
    auto* norm = const_cast<uint16_t*>(kv.k_meta.at<uint16_t>(block, slot, h));
    tq::quantize_key(key, kv.head_dim, kv.tq_key_bits, k_codes, norm);
  }
  auto* v_codes = static_cast<uint8_t*>(const_cast<void*>(kv.v.data)) + kv.v.offset(block, slot, h);
  auto* meta = const_cast<uint16_t*>(kv.v_meta.at<uint16_t>(block, slot, h));  // scale, minimum
  tq::quantize_value(value, kv.head_dim, kv.tq_value_bits, v_codes, &meta[0], &meta[1]);
}

}  // namespace

void write_kv(const core::WriteKVProblem& p) {
  const auto& kv = p.kv;
  const auto& s = p.src;
  const bool int8 = kv_format(kv.dtype).scales == KVScales::kToken;
  parallel_for(s.num_tokens, [&](int64_t t) {
    const int64_t slot_id = s.slot_mapping[t];
    if (slot_id < 0) return;
    const int64_t block = slot_id / kv.block_size;
    const int32_t slot = static_cast<int32_t>(slot_id % kv.block_size);
    std::vector<float> tmp(int8 || kv.tq_key_bits ? kv.head_dim : 0), tmp2(kv.tq_key_bits ? kv.head_dim : 0);
    for (int32_t h = 0; h < kv.num_kv_heads; ++h) {
      const int64_t k_src = t * s.key_stride_token + h * s.key_stride_head;
      const int64_t v_src = t * s.value_stride_token + h * s.value_stride_head;
      if (kv.tq_key_bits) {
        for (int i = 0; i < kv.head_dim; ++i) {
          tmp[i] = load_as_float(s.key, s.src_dtype, k_src + i);
          tmp2[i] = load_as_float(s.value, s.src_dtype, v_src + i);
        }
        write_turboquant(kv, tmp.data(), tmp2.data(), block, slot, h);
        continue;
      }
      if (int8) {
        auto* kd = static_cast<int8_t*>(const_cast<void*>(kv.k.data)) + kv.k.offset(block, slot, h);
        auto* vd = static_cast<int8_t*>(const_cast<void*>(kv.v.data)) + kv.v.offset(block, slot, h);
        *const_cast<float*>(kv.k_meta.at<float>(block, slot, h)) =
            quantize_int8_row(s.key, s.src_dtype, k_src, kd, kv.head_dim, tmp.data());
        *const_cast<float*>(kv.v_meta.at<float>(block, slot, h)) =
            quantize_int8_row(s.value, s.src_dtype, v_src, vd, kv.head_dim, tmp.data());
        continue;
      }
      copy_row(s.key, s.src_dtype, k_src, const_cast<void*>(kv.k.data), kv.dtype, kv.k.offset(block, slot, h),
               kv.head_dim, kv.k_head_scale(h));
      copy_row(s.value, s.src_dtype, v_src, const_cast<void*>(kv.v.data), kv.dtype,
               kv.v.offset(block, slot, h), kv.head_dim, kv.v_head_scale(h));
    }
  });
}

}  // namespace pagedattn::cpu
