// Scatter of new K/V rows into their cache slots, converting to the cache dtype.
#include <cstring>

#include "cpu/cpu_backend.h"
#include "cpu/parallel.h"

namespace pagedattn::cpu {
namespace {

void copy_row(const void* src, DType src_dtype, int64_t src_offset, void* dst, DType dst_dtype,
              int64_t dst_offset, int n) {
  if (src_dtype == dst_dtype) {
    const size_t e = static_cast<size_t>(dtype_size(src_dtype));
    std::memcpy(static_cast<char*>(dst) + dst_offset * e, static_cast<const char*>(src) + src_offset * e,
                n * e);
    return;
  }
  for (int i = 0; i < n; ++i)
    store_from_float(dst, dst_dtype, dst_offset + i, load_as_float(src, src_dtype, src_offset + i));
}

}  // namespace

void write_kv(const core::WriteKVProblem& p) {
  const auto& kv = p.kv;
  const auto& s = p.src;
  parallel_for(s.num_tokens, [&](int64_t t) {
    const int64_t slot = s.slot_mapping[t];
    if (slot < 0) return;
    const int64_t block = slot / kv.block_size;
    const int64_t offset = slot % kv.block_size;
    for (int32_t h = 0; h < kv.num_kv_heads; ++h) {
      copy_row(s.key, s.src_dtype, t * s.key_stride_token + h * s.key_stride_head, const_cast<void*>(kv.k),
               kv.dtype, block * kv.k_stride_block + offset * kv.k_stride_token + h * kv.k_stride_head,
               kv.head_dim);
      copy_row(s.value, s.src_dtype, t * s.value_stride_token + h * s.value_stride_head,
               const_cast<void*>(kv.v), kv.dtype,
               block * kv.v_stride_block + offset * kv.v_stride_token + h * kv.v_stride_head, kv.head_dim);
    }
  });
}

}  // namespace pagedattn::cpu
