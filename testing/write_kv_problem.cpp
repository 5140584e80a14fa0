#include "write_kv_problem.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <tuple>

#include "pagedattn/error.h"
#include "reference_dtype.h"

namespace pagedattn::testing {

std::string WriteKVSpec::describe() const {
  std::ostringstream os;
  os << "write_kv hd=" << head_dim << " hkv=" << num_kv_heads << " bs=" << block_size
     << " blocks=" << num_blocks << " tokens=" << num_tokens << " " << dtype_name(src_dtype) << "->"
     << dtype_name(cache_dtype) << (hnd_layout ? " HND" : " NHD") << (strided ? " strided" : "")
     << " seed=" << seed;
  return os.str();
}

HostWriteKV make_write_kv_problem(const WriteKVSpec& s) {
  PA_CHECK(s.num_blocks >= 3, "make_write_kv_problem: at least 3 blocks (first, middle and last are edges)");
  HostWriteKV p;
  p.spec = s;
  std::mt19937_64 rng(s.seed);
  const int64_t d = s.head_dim, h = s.num_kv_heads, bs = s.block_size,
                slots_total = int64_t{s.num_blocks} * bs;
  PA_CHECK(s.num_tokens <= slots_total, "make_write_kv_problem: more tokens than slots");
  const int64_t es = dtype_size(s.src_dtype), ec = dtype_size(s.cache_dtype);
  // Strided sources keep rows 16-byte aligned (what the CUDA backend requires): gaps of 16 bytes.
  const int64_t head_gap = s.strided ? 16 / es : 0, token_gap = s.strided ? 32 / es : 0;
  p.src_stride_head = d + head_gap;
  p.src_stride_token = h * p.src_stride_head + token_gap;
  const int64_t src_elems = std::max<int64_t>(s.num_tokens * p.src_stride_token, 1);
  p.key.resize(static_cast<size_t>(src_elems * es));
  p.value.resize(p.key.size());
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (int64_t i = 0; i < src_elems; ++i) {
    store_from_float(p.key.data(), s.src_dtype, i, u(rng));
    store_from_float(p.value.data(), s.src_dtype, i, u(rng));
  }

  // The edges first, then distinct random slots.
  const int64_t middle = s.num_blocks / 2;
  std::vector<int64_t> edges = {0, slots_total - 1, middle * bs, middle * bs + bs - 1};
  edges.erase(std::unique(edges.begin(), edges.end()),
              edges.end());  // block size 1: first == last of a block
  std::vector<int64_t> rest(static_cast<size_t>(slots_total));
  std::iota(rest.begin(), rest.end(), 0);
  std::erase_if(rest, [&](int64_t x) { return std::find(edges.begin(), edges.end(), x) != edges.end(); });
  std::shuffle(rest.begin(), rest.end(), rng);
  p.slots = edges;
  for (int64_t x : rest) {
    if (static_cast<int64_t>(p.slots.size()) == s.num_tokens) break;
    p.slots.push_back(x);
  }
  p.slots.resize(static_cast<size_t>(s.num_tokens));
  for (size_t t = edges.size(); t < p.slots.size(); t += 5) p.slots[t] = -1;
  // The edge slots sit at random token positions (a kernel that mishandles token 0 or the last token must not
  // be the only thing tested either).
  std::shuffle(p.slots.begin(), p.slots.end(), rng);

  const int64_t pool_bytes = slots_total * h * d * ec;
  p.k_pool.assign(static_cast<size_t>(pool_bytes), 0xab);
  p.v_pool.assign(static_cast<size_t>(pool_bytes), 0xcd);
  p.k_before = p.k_pool;
  p.v_before = p.v_pool;
  return p;
}

TensorView HostWriteKV::key_view() {
  return TensorView::strided(key.data(), spec.src_dtype, {spec.num_tokens, spec.num_kv_heads, spec.head_dim},
                             {src_stride_token, src_stride_head, 1});
}

TensorView HostWriteKV::value_view() {
  return TensorView::strided(value.data(), spec.src_dtype,
                             {spec.num_tokens, spec.num_kv_heads, spec.head_dim},
                             {src_stride_token, src_stride_head, 1});
}

TensorView HostWriteKV::slot_view() {
  return TensorView::contiguous(slots.data(), DType::kInt64, {spec.num_tokens});
}

PagedKVCache HostWriteKV::cache() {
  const int64_t n = spec.num_blocks, bs = spec.block_size, h = spec.num_kv_heads, d = spec.head_dim;
  PagedKVCache c;
  for (auto [view, buf] : {std::pair{&c.k, &k_pool}, std::pair{&c.v, &v_pool}}) {
    *view = spec.hnd_layout ? TensorView::strided(buf->data(), spec.cache_dtype, {n, bs, h, d},
                                                  {h * bs * d, d, bs * d, 1})
                            : TensorView::contiguous(buf->data(), spec.cache_dtype, {n, bs, h, d});
  }
  return c;
}

std::string check_write_kv(const HostWriteKV& p) {
  const WriteKVSpec& s = p.spec;
  const int64_t d = s.head_dim, h = s.num_kv_heads, bs = s.block_size, ec = dtype_size(s.cache_dtype);
  std::vector<bool> written(p.k_pool.size() / ec, false);
  std::ostringstream why;
  for (int64_t t = 0; t < s.num_tokens; ++t) {
    const int64_t slot = p.slots[t];
    if (slot < 0) continue;
    const int64_t block = slot / bs, offset = slot % bs;
    for (int64_t head = 0; head < h; ++head) {
      for (int64_t i = 0; i < d; ++i) {
        const int64_t dst = s.hnd_layout ? ((block * h + head) * bs + offset) * d + i
                                         : ((block * bs + offset) * h + head) * d + i;
        const int64_t src = t * p.src_stride_token + head * p.src_stride_head + i;
        written[static_cast<size_t>(dst)] = true;
        for (auto [pool, source, name] :
             {std::tuple{&p.k_pool, &p.key, "k"}, std::tuple{&p.v_pool, &p.value, "v"}}) {
          const double want = ref_round(ref_decode(source->data(), s.src_dtype, src), s.cache_dtype);
          const double got = ref_decode(pool->data(), s.cache_dtype, dst);
          if (got != want && !(std::isnan(got) && std::isnan(want))) {
            why << name << " of token " << t << " (slot " << slot << "), head " << head << ", element " << i
                << ": " << got << ", expected " << want;
            return why.str();
          }
        }
      }
    }
  }
  for (size_t e = 0; e < written.size(); ++e) {
    if (written[e]) continue;
    for (auto [now, before, name] :
         {std::tuple{&p.k_pool, &p.k_before, "k"}, std::tuple{&p.v_pool, &p.v_before, "v"}}) {
      if (std::memcmp(now->data() + e * ec, before->data() + e * ec, static_cast<size_t>(ec)) != 0) {
        why << name << " pool element " << e << " (slot " << e / d / h
            << ") was written, but no token maps there";
        return why.str();
      }
    }
  }
  return "";
}

std::vector<WriteKVSpec> write_kv_grid(bool quick, uint64_t seed) {
  std::mt19937_64 rng(seed);
  struct Formats {
    DType src, cache;
  };
  const Formats formats[] = {{DType::kBFloat16, DType::kBFloat16},  {DType::kFloat16, DType::kFloat16},
                             {DType::kFloat32, DType::kFloat32},    {DType::kBFloat16, DType::kFloat8E4M3},
                             {DType::kFloat16, DType::kFloat8E4M3}, {DType::kFloat32, DType::kFloat8E4M3}};
  const int block_sizes[] = {1, 3, 16, 256, 7};
  const int head_dims[] = {64, 80, 96, 112, 128, 192, 256};
  std::vector<WriteKVSpec> grid;
  const int n = quick ? 10 : 35;
  for (int i = 0; i < n; ++i) {
    WriteKVSpec s;
    s.src_dtype = formats[i % 6].src;
    s.cache_dtype = formats[i % 6].cache;
    s.block_size = block_sizes[i % 5];
    s.head_dim = head_dims[i % 7];
    s.num_kv_heads = 1 + i % 3;
    s.hnd_layout = (i / 2) % 2;
    s.strided = (i / 3) % 2;
    s.num_blocks = 3 + static_cast<int>(rng() % 6) + (s.block_size == 1 ? 40 : 0);
    const int slots = s.num_blocks * s.block_size;
    s.num_tokens = std::min(slots, 4 + static_cast<int>(rng() % 60));
    s.seed = rng();
    grid.push_back(s);
  }
  return grid;
}

}  // namespace pagedattn::testing
