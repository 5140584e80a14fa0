// Views of a test problem's host K/V buffers as the ops take them: one definition of the NHD / HND layouts
// for the attention and write_kv problems.
#pragma once

#include <cstdint>
#include <vector>

#include "pagedattn/paged_kv.h"

namespace pagedattn::testing {

/// A plane [blocks, block_size, heads, inner] (inner 0: [blocks, block_size, heads]) of `data`, stored in
/// that order (NHD) or with heads before slots (HND).
TensorView pool_plane(void* data, DType dtype, int64_t blocks, int64_t block_size, int64_t heads,
                      int64_t inner, bool hnd);

/// The cache over host pools of `dtype` with the format's optional fp8 scales and int8 scale planes (empty
/// vectors: absent).
PagedKVCache host_cache(bool hnd, DType dtype, int64_t blocks, int64_t block_size, int64_t heads,
                        int64_t head_dim, std::vector<uint8_t>& k_pool, std::vector<uint8_t>& v_pool,
                        std::vector<float>& k_scale, std::vector<float>& v_scale, std::vector<float>& k_meta,
                        std::vector<float>& v_meta);

}  // namespace pagedattn::testing
