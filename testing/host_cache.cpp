#include "host_cache.h"

#include <utility>

namespace pagedattn::testing {

TensorView pool_plane(void* data, DType dtype, int64_t blocks, int64_t bs, int64_t heads, int64_t inner,
                      bool hnd) {
  if (inner == 0) {
    return hnd ? TensorView::strided(data, dtype, {blocks, bs, heads}, {heads * bs, 1, bs})
               : TensorView::contiguous(data, dtype, {blocks, bs, heads});
  }
  return hnd ? TensorView::strided(data, dtype, {blocks, bs, heads, inner},
                                   {heads * bs * inner, inner, bs * inner, 1})
             : TensorView::contiguous(data, dtype, {blocks, bs, heads, inner});
}

PagedKVCache host_cache(bool hnd, DType dtype, int64_t blocks, int64_t bs, int64_t heads, int64_t d,
                        std::vector<uint8_t>& k_pool, std::vector<uint8_t>& v_pool,
                        std::vector<float>& k_scale, std::vector<float>& v_scale, std::vector<float>& k_meta,
                        std::vector<float>& v_meta) {
  PagedKVCache c(pool_plane(k_pool.data(), dtype, blocks, bs, heads, d, hnd),
                 pool_plane(v_pool.data(), dtype, blocks, bs, heads, d, hnd));
  if (!k_scale.empty()) {
    c.k_scale =
        TensorView::contiguous(k_scale.data(), DType::kFloat32, {static_cast<int64_t>(k_scale.size())});
    c.v_scale =
        TensorView::contiguous(v_scale.data(), DType::kFloat32, {static_cast<int64_t>(v_scale.size())});
  }
  for (auto [view, buf] : {std::pair{&c.k_meta, &k_meta}, std::pair{&c.v_meta, &v_meta}}) {
    if (!buf->empty()) *view = pool_plane(buf->data(), DType::kFloat32, blocks, bs, heads, 0, hnd);
  }
  return c;
}

}  // namespace pagedattn::testing
