// Random write_kv problems owned in host memory, their check, and the grid that the tests and `pagedattn
// check` run through every backend.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pagedattn/attention.h"

namespace pagedattn::testing {

struct WriteKVSpec {
  int head_dim = 128;
  int num_kv_heads = 2;
  int block_size = 16;
  int num_blocks = 8;
  int num_tokens = 37;
  DType src_dtype = DType::kBFloat16;
  DType cache_dtype = DType::kBFloat16;
  bool hnd_layout = false;   // pools stored [num_blocks, num_kv_heads, block_size, head_dim]
  bool strided = false;      // key/value with gaps after each head and token
  bool head_scales = false;  // fp8: k_scale/v_scale per kv head (else one per tensor)
  bool specials = false;     // sources hold NaN, +-inf, values past the format's range and all-zero vectors
  uint64_t seed = 0;

  std::string describe() const;
};

/// A write_kv problem. Slots always include, in this order at the front, the first and last slot of the pool
/// and the first and last slot of one block in the middle (the edges an off-by-one misses); then distinct
/// random slots, every fifth token skipped with -1. Pools start as a byte pattern that no write produces by
/// chance in the checked places (the check compares the bytes of every unwritten element).
struct HostWriteKV {
  WriteKVSpec spec;
  std::vector<uint8_t> key, value, k_pool, v_pool, k_before, v_before;
  std::vector<int64_t> slots;
  std::vector<float> k_scale, v_scale;                              // fp8: [1] or [num_kv_heads]
  std::vector<float> k_meta, v_meta, k_meta_before, v_meta_before;  // int8: [num_blocks, block_size, heads]
  int64_t src_stride_token = 0, src_stride_head = 0;

  TensorView key_view();
  TensorView value_view();
  TensorView slot_view();
  PagedKVCache cache();
};

HostWriteKV make_write_kv_problem(const WriteKVSpec& spec);

/// "" when every written element is the source encoded in the cache format by the reference's own rounding
/// (fp8: value / scale, saturating; int8: the per-token scale absmax / 127 and codes round(value / scale))
/// and every other pool byte and metadata entry is unchanged; else what differs first.
std::string check_write_kv(const HostWriteKV& p);

/// Grid of write_kv cases: source/cache dtypes, layouts, strides, block sizes 1..256, head dims.
std::vector<WriteKVSpec> write_kv_grid(bool quick, uint64_t seed);

}  // namespace pagedattn::testing
