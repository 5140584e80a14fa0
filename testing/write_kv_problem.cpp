#include "write_kv_problem.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <tuple>

#include "host_cache.h"
#include "pagedattn/error.h"
#include "pagedattn/kv_format.h"
#include "reference_dtype.h"

namespace pagedattn::testing {

std::string WriteKVSpec::describe() const {
  std::ostringstream os;
  os << "write_kv hd=" << head_dim << " hkv=" << num_kv_heads << " bs=" << block_size
     << " blocks=" << num_blocks << " tokens=" << num_tokens << " " << dtype_name(src_dtype) << "->"
     << dtype_name(cache_dtype) << (hnd_layout ? " HND" : " NHD") << (strided ? " strided" : "")
     << (head_scales ? " head-scales" : "") << (specials ? " specials" : "") << " seed=" << seed;
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
  if (s.specials) {
    // Token 0: NaN in K's first head, +-inf in V's; token 1: an all-zero head vector; token 2: values far
    // past every format's range (fp8 saturates, int8 takes them as its absmax).
    const float big = s.src_dtype == DType::kFloat16 ? 60000.0f : 1e30f;
    auto set = [&](std::vector<uint8_t>& buf, int64_t t, int64_t head, int64_t i, float x) {
      if (t < s.num_tokens)
        store_from_float(buf.data(), s.src_dtype, t * p.src_stride_token + head * p.src_stride_head + i, x);
    };
    set(p.key, 0, 0, 3, std::nanf(""));
    set(p.value, 0, 0, 1, INFINITY);
    set(p.value, 0, 0, 5, -INFINITY);
    for (int64_t i = 0; i < d; ++i) set(p.key, 1, 0, i, 0.0f);
    for (int64_t i = 0; i < d; i += 3) set(p.value, 2, h - 1, i, (i % 2 ? -big : big));
  }
  const KVFormat format = kv_format(s.cache_dtype);
  if (format.scales == KVScales::kTensorHead) {
    std::uniform_real_distribution<float> scale(0.05f, 4.0f);
    for (int64_t i = 0; i < (s.head_scales ? h : 1); ++i) {
      p.k_scale.push_back(scale(rng));
      p.v_scale.push_back(scale(rng));
    }
  }
  if (format.scales == KVScales::kToken) {
    p.k_meta.assign(static_cast<size_t>(slots_total * h), -77.0f);  // never a scale a write produces
    p.v_meta.assign(p.k_meta.size(), -55.0f);
    p.k_meta_before = p.k_meta;
    p.v_meta_before = p.v_meta;
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
  return host_cache(spec.hnd_layout, spec.cache_dtype, spec.num_blocks, spec.block_size, spec.num_kv_heads,
                    spec.head_dim, k_pool, v_pool, k_scale, v_scale, k_meta, v_meta);
}

namespace {

// The reference encoding of one head vector (d source values) in the cache format: the stored values, and
// the int8 scale (NaN when the vector holds a NaN).
struct Encoded {
  std::vector<double> values;
  double scale = 1.0;
};

Encoded encode_reference(const std::vector<double>& x, DType cache, double head_scale) {
  Encoded e;
  e.values.resize(x.size());
  if (cache == DType::kInt8) {
    double absmax = 0;
    bool nan = false;
    for (double v : x) {
      nan = nan || std::isnan(v);
      if (std::isfinite(v)) absmax = std::max(absmax, std::fabs(v));
    }
    // fp32 division is correctly rounded, and rounding the double quotient to fp32 gives the same value.
    e.scale = nan ? std::nan("") : ref_round(absmax / 127.0, DType::kFloat32);
    for (size_t i = 0; i < x.size(); ++i) {
      double code = 0;
      if (std::isinf(x[i])) {
        code = std::copysign(127.0, x[i]);
      } else if (e.scale > 0) {
        code = std::clamp(std::nearbyint(ref_round(x[i] / e.scale, DType::kFloat32)), -127.0, 127.0);
      }
      e.values[i] = code;
    }
    return e;
  }
  for (size_t i = 0; i < x.size(); ++i) {
    const double q = head_scale == 1.0 ? x[i] : ref_round(x[i] / head_scale, DType::kFloat32);
    e.values[i] = ref_round(q, cache);
  }
  return e;
}

double stored(const std::vector<uint8_t>& pool, DType t, int64_t i) {
  if (t == DType::kInt8) return static_cast<double>(static_cast<int8_t>(pool[static_cast<size_t>(i)]));
  return ref_decode(pool.data(), t, i);
}

}  // namespace

std::string check_write_kv(const HostWriteKV& p) {
  const WriteKVSpec& s = p.spec;
  const int64_t d = s.head_dim, h = s.num_kv_heads, bs = s.block_size, ec = dtype_size(s.cache_dtype);
  std::vector<bool> written(p.k_pool.size() / ec, false);
  std::vector<bool> meta_written(p.k_meta.size(), false);
  std::ostringstream why;
  for (int64_t t = 0; t < s.num_tokens; ++t) {
    const int64_t slot = p.slots[t];
    if (slot < 0) continue;
    const int64_t block = slot / bs, offset = slot % bs;
    for (int64_t head = 0; head < h; ++head) {
      const int64_t row =
          s.hnd_layout ? ((block * h + head) * bs + offset) * d : ((block * bs + offset) * h + head) * d;
      const int64_t meta = s.hnd_layout ? (block * h + head) * bs + offset : (block * bs + offset) * h + head;
      for (auto [pool, source, scales, metas, name] :
           {std::tuple{&p.k_pool, &p.key, &p.k_scale, &p.k_meta, "k"},
            std::tuple{&p.v_pool, &p.value, &p.v_scale, &p.v_meta, "v"}}) {
        std::vector<double> x(static_cast<size_t>(d));
        for (int64_t i = 0; i < d; ++i)
          x[i] =
              ref_decode(source->data(), s.src_dtype, t * p.src_stride_token + head * p.src_stride_head + i);
        const double head_scale = scales->empty() ? 1.0 : (*scales)[scales->size() == 1 ? 0 : head];
        const Encoded want = encode_reference(x, s.cache_dtype, head_scale);
        if (!metas->empty()) {
          meta_written[static_cast<size_t>(meta)] = true;
          const double got = (*metas)[static_cast<size_t>(meta)];
          const bool same = got == want.scale || (std::isnan(got) && std::isnan(want.scale));
          if (!same) {
            why << name << " scale of token " << t << " (slot " << slot << "), head " << head << ": " << got
                << ", expected " << want.scale;
            return why.str();
          }
          if (std::isnan(want.scale)) {  // the codes of a NaN vector are not specified
            for (int64_t i = 0; i < d; ++i) written[static_cast<size_t>(row + i)] = true;
            continue;
          }
        }
        for (int64_t i = 0; i < d; ++i) {
          written[static_cast<size_t>(row + i)] = true;
          const double got = stored(*pool, s.cache_dtype, row + i);
          const double w = want.values[static_cast<size_t>(i)];
          if (got != w && !(std::isnan(got) && std::isnan(w))) {
            why << name << " of token " << t << " (slot " << slot << "), head " << head << ", element " << i
                << ": " << got << ", expected " << w << " (source " << x[i] << ")";
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
  for (size_t e = 0; e < meta_written.size(); ++e) {
    if (meta_written[e]) continue;
    if (p.k_meta[e] != p.k_meta_before[e] || p.v_meta[e] != p.v_meta_before[e]) {
      why << "metadata entry " << e << " was written, but no token maps there";
      return why.str();
    }
  }
  return "";
}

std::vector<WriteKVSpec> write_kv_grid(bool quick, uint64_t seed) {
  std::mt19937_64 rng(seed);
  struct Formats {
    DType src, cache;
  };
  const Formats formats[] = {{DType::kBFloat16, DType::kBFloat16},   {DType::kFloat16, DType::kFloat16},
                             {DType::kFloat32, DType::kFloat32},     {DType::kBFloat16, DType::kFloat8E4M3},
                             {DType::kFloat16, DType::kFloat8E4M3},  {DType::kFloat32, DType::kFloat8E4M3},
                             {DType::kBFloat16, DType::kFloat8E5M2}, {DType::kFloat16, DType::kFloat8E5M2},
                             {DType::kBFloat16, DType::kInt8},       {DType::kFloat16, DType::kInt8},
                             {DType::kFloat32, DType::kInt8}};
  constexpr int kFormats = sizeof(formats) / sizeof(formats[0]);
  const int block_sizes[] = {1, 3, 16, 256, 7};
  const auto& head_dims = kSupportedHeadDims;  // the one list (pagedattn/attention.h)
  std::vector<WriteKVSpec> grid;
  const int n = quick ? 22 : 77;
  for (int i = 0; i < n; ++i) {
    WriteKVSpec s;
    s.src_dtype = formats[i % kFormats].src;
    s.cache_dtype = formats[i % kFormats].cache;
    s.head_scales = (i / kFormats) % 2;
    s.specials = i % 4 == 1;
    s.block_size = block_sizes[i % 5];
    s.head_dim = head_dims[i % std::size(head_dims)];
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
