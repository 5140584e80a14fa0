#include "problem.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <span>
#include <sstream>
#include <thread>

#include "host_cache.h"
#include "pagedattn/error.h"
#include "pagedattn/kv_format.h"
#include "reference_dtype.h"

namespace pagedattn::testing {

const char* batch_kind_name(BatchKind k) {
  switch (k) {
    case BatchKind::kDecode:
      return "decode";
    case BatchKind::kPrefill:
      return "prefill";
    case BatchKind::kChunked:
      return "chunked";
    case BatchKind::kMixed:
      return "mixed";
  }
  return "?";
}

std::string ProblemSpec::describe() const {
  std::ostringstream os;
  os << "hd=" << head_dim << " hq=" << num_q_heads << " hkv=" << num_kv_heads << " bs=" << block_size << " "
     << dtype_name(dtype) << "/" << (tq ? tq::preset_info(*tq).name : dtype_name(cache_dtype))
     << (hnd_layout ? " HND" : " NHD") << (strided ? " strided" : "")
     << (head_scales && kv_format(cache_dtype).scales == KVScales::kTensorHead ? " head-scales" : "");
  if (window_left) os << " window=" << window_left;
  if (softcap > 0) os << " softcap=" << softcap;
  if (scale > 0) os << " scale=" << scale;
  if (alibi) os << " alibi";
  if (sinks) os << " sinks";
  if (lse) os << " lse";
  if (new_kv) os << " new-kv";
  os << " seqs=" << seq_lens.size() << " [";
  for (size_t i = 0; i < seq_lens.size(); ++i) os << (i ? " " : "") << query_lens[i] << "/" << seq_lens[i];
  os << "] seed=" << seed;
  return os.str();
}

void draw_batch(ProblemSpec& spec, BatchKind kind, int num_seqs, int max_len, std::mt19937_64& rng) {
  auto uniform = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  spec.seq_lens.clear();
  spec.query_lens.clear();
  for (int i = 0; i < num_seqs; ++i) {
    BatchKind k = kind;
    int choice = -1;
    if (kind == BatchKind::kMixed) {
      choice = uniform(0, 5);
      k = choice <= 2 ? static_cast<BatchKind>(choice) : BatchKind::kDecode;
    }
    int seq_len = 0, query_len = 0;
    if (choice == 3) {  // an empty query over a cached sequence
      seq_len = uniform(1, max_len);
    } else if (choice == 4) {  // an empty sequence
    } else if (choice == 5) {  // a single token
      seq_len = query_len = 1;
    } else if (k == BatchKind::kDecode) {
      seq_len = uniform(1, max_len);
      query_len = 1;
    } else if (k == BatchKind::kPrefill) {
      seq_len = query_len = uniform(1, max_len);
    } else {
      seq_len = uniform(2, max_len);
      query_len = uniform(1, seq_len - 1);
    }
    spec.seq_lens.push_back(seq_len);
    spec.query_lens.push_back(query_len);
  }
}

namespace {

// Uniform in [-2, 2) from a splitmix64 stream seeded by rng: fast enough for multi-GB benchmark pools.
void fill_random(std::vector<uint8_t>& buf, DType t, std::mt19937_64& rng) {
  uint64_t state = rng();
  const int64_t n = static_cast<int64_t>(buf.size()) / dtype_size(t);
  for (int64_t i = 0; i < n; ++i) {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // [0, 1)
    store_from_float(buf.data(), t, i, 4.0f * u - 2.0f);
  }
}

}  // namespace

HostProblem make_problem(const ProblemSpec& spec_in) {
  HostProblem p;
  p.spec = spec_in;
  ProblemSpec& s = p.spec;
  PA_CHECK(s.seq_lens.size() == s.query_lens.size(), "make_problem: seq_lens and query_lens differ in size");
  std::mt19937_64 rng(s.seed);
  const int64_t n_seqs = static_cast<int64_t>(s.seq_lens.size());
  const int64_t bs = s.block_size, d = s.head_dim, hkv = s.num_kv_heads, hq = s.num_q_heads;

  int64_t used_blocks = 0;
  for (int32_t len : s.seq_lens) {
    const int64_t nb = (len + bs - 1) / bs;
    used_blocks += nb;
    p.max_blocks_per_seq = std::max(p.max_blocks_per_seq, nb);
  }
  p.max_blocks_per_seq = std::max<int64_t>(p.max_blocks_per_seq, 1) + 1;  // one spare column, never read
  p.num_blocks = used_blocks + s.extra_blocks;
  std::vector<int32_t> ids(static_cast<size_t>(p.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), rng);
  p.block_tables.assign(static_cast<size_t>(n_seqs * p.max_blocks_per_seq), -7);  // unread entries are junk
  size_t next = 0;
  p.query_start_loc.push_back(0);
  for (int64_t i = 0; i < n_seqs; ++i) {
    const int64_t nb = (s.seq_lens[i] + bs - 1) / bs;
    for (int64_t j = 0; j < nb; ++j) p.block_tables[i * p.max_blocks_per_seq + j] = ids[next++];
    p.seq_lens.push_back(s.seq_lens[i]);
    p.query_start_loc.push_back(p.query_start_loc.back() + s.query_lens[i]);
  }
  p.num_tokens = p.query_start_loc.back();

  const int64_t pool_elems = p.num_blocks * bs * hkv * d;
  p.k_pool.resize(static_cast<size_t>(pool_elems * dtype_size(s.cache_dtype)));
  p.v_pool.resize(p.k_pool.size());
  const KVFormat format = kv_format(s.cache_dtype);
  if (s.tq) {
    // TurboQuant: keys and values as a model has them (keys with a few large-magnitude channels and lengths
    // that vary by token, values of about +-2), written through the quantizers of pagedattn/turboquant.h.
    s.cache_dtype = DType::kUInt8;
    const tq::PresetInfo info = tq::preset_info(*s.tq);
    const tq::TokenBytes tb = tq::token_bytes(*s.tq, static_cast<int>(d));
    const int64_t rows = p.num_blocks * bs * hkv;
    p.k_pool.assign(static_cast<size_t>(rows * tb.key_codes), 0);
    p.v_pool.assign(static_cast<size_t>(rows * tb.value_codes), 0);
    if (info.key_bits != 8) p.k_norms.assign(static_cast<size_t>(rows), 0);
    p.v_scale_min.assign(static_cast<size_t>(rows * 2), 0);
    const int64_t outlier = static_cast<int64_t>(rng() % d);
    // Quantizing a large pool takes seconds: blocks are cut into a fixed number of chunks, each drawn from
    // its own seed, and the chunks spread over the machine's threads (the same pool for a seed on any
    // machine).
    constexpr int64_t kChunks = 64;
    std::vector<uint64_t> chunk_seeds(kChunks);
    for (auto& cs : chunk_seeds) cs = rng();
    auto fill_chunk = [&](int64_t chunk) {
      std::mt19937_64 crng(chunk_seeds[static_cast<size_t>(chunk)]);
      std::normal_distribution<float> g(0.0f, 1.0f);
      std::uniform_real_distribution<float> u(-2.0f, 2.0f);
      std::vector<float> key(d), value(d);
      for (int64_t block = chunk; block < p.num_blocks; block += kChunks) {
        for (int64_t slot = 0; slot < bs; ++slot) {
          for (int64_t h = 0; h < hkv; ++h) {
            const float len = std::exp(0.5f * g(crng));
            for (int64_t i = 0; i < d; ++i) key[i] = len * (i == outlier ? 8.0f : 1.0f) * g(crng);
            for (auto& x : value) x = u(crng);
            const int64_t r = s.hnd_layout ? (block * hkv + h) * bs + slot : (block * bs + slot) * hkv + h;
            uint8_t* kc = p.k_pool.data() + r * tb.key_codes;
            if (info.key_bits == 8) {
              for (int64_t i = 0; i < d; ++i) kc[i] = float_to_fp8e4m3_bits(key[i]);
            } else {
              tq::quantize_key(key.data(), static_cast<int>(d), info.key_bits, kc,
                               &p.k_norms[static_cast<size_t>(r)]);
            }
            tq::quantize_value(
                value.data(), static_cast<int>(d), info.value_bits, p.v_pool.data() + r * tb.value_codes,
                &p.v_scale_min[static_cast<size_t>(2 * r)], &p.v_scale_min[static_cast<size_t>(2 * r + 1)]);
          }
        }
      }
    };
    tq::rotation(static_cast<int>(d));  // the shared tables, made once before the threads read them
    if (info.key_bits != 8) tq::codebook(static_cast<int>(d), info.key_bits);
    std::atomic<int64_t> next_chunk{0};
    std::vector<std::thread> workers(std::max(1u, std::min(16u, std::thread::hardware_concurrency())));
    for (auto& w : workers) {
      w = std::thread([&] {
        for (int64_t c; (c = next_chunk.fetch_add(1)) < kChunks;) fill_chunk(c);
      });
    }
    for (auto& w : workers) w.join();
  } else if (format.scales == KVScales::kToken) {
    // int8: random codes and per-token scales that make values of about +-2; one head vector in 50 is zero
    // (scale 0), as write_kv stores a zero vector.
    std::uniform_int_distribution<int> code(-127, 127);
    std::uniform_real_distribution<float> scale(0.5f / 63.5f, 1.5f / 63.5f);
    for (auto* pool : {&p.k_pool, &p.v_pool}) {
      for (auto& b : *pool) b = static_cast<uint8_t>(static_cast<int8_t>(code(rng)));
    }
    for (auto* meta : {&p.k_meta, &p.v_meta}) {
      meta->resize(static_cast<size_t>(p.num_blocks * bs * hkv));
      for (auto& m : *meta) m = rng() % 50 == 0 ? 0.0f : scale(rng);
    }
  } else {
    fill_random(p.k_pool, s.cache_dtype, rng);
    fill_random(p.v_pool, s.cache_dtype, rng);
  }
  if (format.scales == KVScales::kTensorHead) {
    std::uniform_real_distribution<float> scale(0.25f, 2.0f);
    for (int64_t i = 0; i < (s.head_scales ? hkv : 1); ++i) {
      p.k_scale.push_back(scale(rng));
      p.v_scale.push_back(scale(rng));
    }
  }

  const int64_t head_gap = s.strided ? 8 : 0, token_gap = s.strided ? 24 : 0;
  p.q_stride_head = d + head_gap;
  p.q_stride_token = hq * p.q_stride_head + token_gap;
  p.o_stride_head = d + 2 * head_gap;
  p.o_stride_token = hq * p.o_stride_head + token_gap / 2;
  p.q.resize(
      static_cast<size_t>(std::max<int64_t>(p.num_tokens * p.q_stride_token, 1) * dtype_size(s.dtype)));
  fill_random(p.q, s.dtype, rng);
  if (s.new_kv) {  // independent of the pool's copy of those positions, so a read of the wrong one shows
    for (auto* t : {&p.new_k, &p.new_v}) {
      t->resize(static_cast<size_t>(std::max<int64_t>(p.num_tokens * hkv * d, 1) * dtype_size(s.dtype)));
      fill_random(*t, s.dtype, rng);
    }
  }
  p.out.resize(
      static_cast<size_t>(std::max<int64_t>(p.num_tokens * p.o_stride_token, 1) * dtype_size(s.dtype)));

  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  if (s.alibi) {
    for (int64_t h = 0; h < hq; ++h)
      p.alibi.push_back(std::exp2(-8.0f * static_cast<float>(h + 1) / static_cast<float>(hq)));
  }
  if (s.sinks) {
    for (int64_t h = 0; h < hq; ++h) p.sinks.push_back(4.0f * unit(rng) - 1.0f);
  }
  if (s.lse) p.lse.resize(static_cast<size_t>(std::max<int64_t>(p.num_tokens * hq, 1)));
  p.poison();
  return p;
}

void HostProblem::poison() {
  std::memset(out.data(), 0xff, out.size());  // all-ones is NaN in fp32, fp16 and bf16
  std::fill(lse.begin(), lse.end(), std::numeric_limits<float>::quiet_NaN());
}

PagedKVCache HostProblem::cache() {
  const int64_t bs = spec.block_size, d = spec.head_dim, h = spec.num_kv_heads;
  if (spec.tq) {
    const tq::TokenBytes tb = tq::token_bytes(*spec.tq, static_cast<int>(d));
    const bool hnd = spec.hnd_layout;
    TensorView norms;
    if (!k_norms.empty()) norms = pool_plane(k_norms.data(), DType::kFloat16, num_blocks, bs, h, 0, hnd);
    return PagedKVCache::turboquant(
        *spec.tq, d, pool_plane(k_pool.data(), DType::kUInt8, num_blocks, bs, h, tb.key_codes, hnd), norms,
        pool_plane(v_pool.data(), DType::kUInt8, num_blocks, bs, h, tb.value_codes, hnd),
        pool_plane(v_scale_min.data(), DType::kFloat16, num_blocks, bs, h, 2, hnd));
  }
  return host_cache(spec.hnd_layout, spec.cache_dtype, num_blocks, bs, h, d, k_pool, v_pool, k_scale, v_scale,
                    k_meta, v_meta);
}

BatchDesc HostProblem::batch() {
  BatchDesc b;
  const int64_t n = static_cast<int64_t>(seq_lens.size());
  b.block_tables = TensorView::contiguous(block_tables.data(), DType::kInt32, {n, max_blocks_per_seq});
  b.seq_lens = TensorView::contiguous(seq_lens.data(), DType::kInt32, {n});
  b.query_start_loc = TensorView::contiguous(query_start_loc.data(), DType::kInt32, {n + 1});
  for (int64_t i = 0; i < n; ++i) {
    b.max_query_len = std::max(b.max_query_len, query_start_loc[i + 1] - query_start_loc[i]);
    b.max_seq_len = std::max(b.max_seq_len, seq_lens[i]);
  }
  return b;
}

TensorView HostProblem::query() {
  return TensorView::strided(q.data(), spec.dtype, {num_tokens, spec.num_q_heads, spec.head_dim},
                             {q_stride_token, q_stride_head, 1});
}

TensorView HostProblem::output() {
  return TensorView::strided(out.data(), spec.dtype, {num_tokens, spec.num_q_heads, spec.head_dim},
                             {o_stride_token, o_stride_head, 1});
}

AttentionParams HostProblem::params() {
  AttentionParams a;
  a.scale = spec.scale;
  a.window_left = spec.window_left;
  a.softcap = spec.softcap;
  if (spec.alibi) a.alibi_slopes = TensorView::contiguous(alibi.data(), DType::kFloat32, {spec.num_q_heads});
  if (spec.sinks) a.sinks = TensorView::contiguous(sinks.data(), DType::kFloat32, {spec.num_q_heads});
  if (spec.lse) a.lse = TensorView::contiguous(lse.data(), DType::kFloat32, {num_tokens, spec.num_q_heads});
  if (spec.new_kv) {
    a.new_key =
        TensorView::contiguous(new_k.data(), spec.dtype, {num_tokens, spec.num_kv_heads, spec.head_dim});
    a.new_value =
        TensorView::contiguous(new_v.data(), spec.dtype, {num_tokens, spec.num_kv_heads, spec.head_dim});
  }
  return a;
}

namespace {

// A TurboQuant row decoded by the specification's definitions, independently of the library's decoder: the
// codes by their bit positions, the rotation's transpose from the explicit Walsh–Hadamard entries
// (-1)^popcount(i & j) / sqrt(block) and the signs (an O(D²) product, not the fast transform), fp16 by the
// reference decoder. Only the codebook and the signs (data) come from the library.
void dequantize_turboquant_row(const HostProblem& p, int64_t block, int64_t slot, int64_t head, double* key,
                               double* value) {
  const ProblemSpec& s = p.spec;
  const int64_t d = s.head_dim, bs = s.block_size, hkv = s.num_kv_heads;
  const tq::PresetInfo info = tq::preset_info(*s.tq);
  const tq::TokenBytes tb = tq::token_bytes(*s.tq, static_cast<int>(d));
  const int64_t r = s.hnd_layout ? (block * hkv + head) * bs + slot : (block * bs + slot) * hkv + head;
  auto code = [](const uint8_t* row, int bits, int64_t j) {
    int v = 0;
    for (int b = 0; b < bits; ++b) {
      const int64_t bit = j * bits + b;
      v |= ((row[bit / 8] >> (bit % 8)) & 1) << b;
    }
    return v;
  };
  const uint8_t* kc = p.k_pool.data() + r * tb.key_codes;
  if (info.key_bits == 8) {
    for (int64_t i = 0; i < d; ++i) key[i] = ref_decode(kc, DType::kFloat8E4M3, i);
  } else {
    const tq::Codebook& cb = tq::codebook(static_cast<int>(d), info.key_bits);
    const tq::Rotation& rot = tq::rotation(static_cast<int>(d));
    const double n = ref_decode(p.k_norms.data(), DType::kFloat16, r);
    for (int64_t i = 0; i < d; ++i) {
      const int64_t b0 = i / rot.block * rot.block;
      double x = 0;
      for (int64_t j = b0; j < b0 + rot.block; ++j) {
        const int sign = __builtin_popcountll(static_cast<uint64_t>((i - b0) & (j - b0))) % 2 ? -1 : 1;
        x += sign * static_cast<double>(cb.centroids[code(kc, info.key_bits, j)]);
      }
      key[i] = n * rot.signs[i] * x / std::sqrt(static_cast<double>(rot.block));
    }
  }
  const uint8_t* vc = p.v_pool.data() + r * tb.value_codes;
  const double scale = ref_decode(p.v_scale_min.data(), DType::kFloat16, 2 * r);
  const double minimum = ref_decode(p.v_scale_min.data(), DType::kFloat16, 2 * r + 1);
  for (int64_t i = 0; i < d; ++i) value[i] = code(vc, info.value_bits, i) * scale + minimum;
}

}  // namespace

DenseResult dense_reference(const HostProblem& p) {
  const ProblemSpec& s = p.spec;
  const int64_t bs = s.block_size, d = s.head_dim, hkv = s.num_kv_heads, hq = s.num_q_heads;
  const int64_t group = hq / hkv;
  const double scale = s.scale > 0 ? s.scale : 1.0 / std::sqrt(static_cast<double>(d));
  DenseResult r;
  r.out.assign(static_cast<size_t>(p.num_tokens * hq * d), 0.0);
  r.lse.assign(static_cast<size_t>(p.num_tokens * hq), 0.0);
  // Element (block, slot, head, i) of a pool, dequantized, by the layout the problem was built with: the
  // stored value times its scale (fp8: the tensor's or head's; int8: the token's, from the metadata plane).
  auto pool_at = [&](const std::vector<uint8_t>& pool, const std::vector<float>& head_scale,
                     const std::vector<float>& meta, int64_t block, int64_t slot, int64_t head, int64_t i) {
    const int64_t idx = s.hnd_layout ? ((block * hkv + head) * bs + slot) * d + i
                                     : ((block * bs + slot) * hkv + head) * d + i;
    if (s.cache_dtype == DType::kInt8) {
      const int64_t m = s.hnd_layout ? (block * hkv + head) * bs + slot : (block * bs + slot) * hkv + head;
      return static_cast<double>(static_cast<int8_t>(pool[static_cast<size_t>(idx)])) *
             static_cast<double>(meta[static_cast<size_t>(m)]);
    }
    const double factor = head_scale.empty() ? 1.0 : head_scale[head_scale.size() == 1 ? 0 : head];
    return ref_decode(pool.data(), s.cache_dtype, idx) * factor;
  };
  for (size_t seq = 0; seq < p.seq_lens.size(); ++seq) {
    const int64_t len = p.seq_lens[seq];
    const int64_t q0 = p.query_start_loc[seq], qlen = p.query_start_loc[seq + 1] - q0;
    // Dense K and V of the sequence: [len, hkv, d].
    std::vector<double> k(static_cast<size_t>(len * hkv * d)), v(k.size());
    const int64_t cached_end = s.new_kv ? len - qlen : len;  // new_kv: the query positions read raw K/V
    for (int64_t pos = cached_end; pos < len; ++pos) {
      for (int64_t i = 0; i < hkv * d; ++i) {
        const int64_t src = (q0 + pos - cached_end) * hkv * d + i;
        k[pos * hkv * d + i] = ref_decode(p.new_k.data(), s.dtype, src);
        v[pos * hkv * d + i] = ref_decode(p.new_v.data(), s.dtype, src);
      }
    }
    for (int64_t pos = 0; pos < cached_end; ++pos) {
      const int64_t block = p.block_tables[seq * p.max_blocks_per_seq + pos / bs];
      for (int64_t h = 0; h < hkv; ++h) {
        if (s.tq) {
          dequantize_turboquant_row(p, block, pos % bs, h, &k[(pos * hkv + h) * d], &v[(pos * hkv + h) * d]);
          continue;
        }
        for (int64_t i = 0; i < d; ++i) {
          k[(pos * hkv + h) * d + i] = pool_at(p.k_pool, p.k_scale, p.k_meta, block, pos % bs, h, i);
          v[(pos * hkv + h) * d + i] = pool_at(p.v_pool, p.v_scale, p.v_meta, block, pos % bs, h, i);
        }
      }
    }
    std::vector<double> score(static_cast<size_t>(len)), qv(static_cast<size_t>(d));
    for (int64_t t = 0; t < qlen; ++t) {
      const int64_t row = q0 + t, qpos = len - qlen + t;
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t kh = h / group;
        for (int64_t i = 0; i < d; ++i) {
          qv[i] = ref_decode(p.q.data(), s.dtype, row * p.q_stride_token + h * p.q_stride_head + i);
        }
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t j = 0; j < len; ++j) {
          const bool visible = j <= qpos && (s.window_left == 0 || qpos - j <= s.window_left);
          if (!visible) {
            score[j] = -std::numeric_limits<double>::infinity();
            continue;
          }
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += qv[i] * k[(j * hkv + kh) * d + i];
          double x = dot * scale;
          if (s.softcap > 0) x = s.softcap * std::tanh(x / s.softcap);
          if (s.alibi) x += p.alibi[h] * static_cast<double>(j - qpos);
          score[j] = x;
          mx = std::max(mx, x);
        }
        if (s.sinks) mx = std::max(mx, static_cast<double>(p.sinks[h]));
        double denom = s.sinks ? std::exp(p.sinks[h] - mx) : 0.0;
        for (int64_t j = 0; j < len; ++j) denom += std::exp(score[j] - mx);
        double* o = &r.out[(row * hq + h) * d];
        for (int64_t j = 0; j < len; ++j) {
          const double w = std::exp(score[j] - mx) / denom;
          if (w == 0) continue;
          for (int64_t i = 0; i < d; ++i) o[i] += w * v[(j * hkv + kh) * d + i];
        }
        r.lse[row * hq + h] = mx + std::log(denom);
      }
    }
  }
  return r;
}

std::string Comparison::summary() const {
  std::ostringstream os;
  os.precision(3);
  os << "rel_error=" << rel_error << " tol=" << tolerance << " lse_err=" << lse_max_error
     << " unwritten=" << unwritten << " clobbered=" << clobbered;
  return os.str();
}

Comparison compare(const HostProblem& p, const DenseResult& ref, double tolerance_factor,
                   double min_tolerance) {
  const ProblemSpec& s = p.spec;
  const int64_t hq = s.num_q_heads, d = s.head_dim;
  const int64_t esize = dtype_size(s.dtype);
  Comparison c;
  double err2 = 0, ref2 = 0, round2 = 0;
  std::vector<bool> covered(p.out.size(), false);
  for (int64_t t = 0; t < p.num_tokens; ++t) {
    for (int64_t h = 0; h < hq; ++h) {
      for (int64_t i = 0; i < d; ++i) {
        const int64_t off = t * p.o_stride_token + h * p.o_stride_head + i;
        for (int64_t b = 0; b < esize; ++b) covered[static_cast<size_t>(off * esize + b)] = true;
        const double got = ref_decode(p.out.data(), s.dtype, off);
        const double want = ref.out[(t * hq + h) * d + i];
        if (std::isnan(got)) {
          ++c.unwritten;
          continue;
        }
        err2 += (got - want) * (got - want);
        ref2 += want * want;
        const double rounded = ref_round(want, s.dtype);
        round2 += (rounded - want) * (rounded - want);
      }
      if (s.lse) {
        const double got = p.lse[t * hq + h];
        const double e =
            std::isnan(got) ? std::numeric_limits<double>::infinity() : std::fabs(got - ref.lse[t * hq + h]);
        c.lse_max_error = std::max(c.lse_max_error, e);
      }
    }
  }
  for (size_t b = 0; b < p.out.size(); ++b) {
    if (!covered[b] && p.out[b] != 0xff) ++c.clobbered;
  }
  const double norm = std::sqrt(std::max(ref2, 1e-300));
  c.rel_error = ref2 > 0 ? std::sqrt(err2) / norm : std::sqrt(err2);
  c.tolerance = std::max(tolerance_factor * std::sqrt(round2) / norm + 1e-5, min_tolerance);
  c.ok = c.unwritten == 0 && c.clobbered == 0 && c.rel_error <= c.tolerance && c.lse_max_error <= 1e-3;
  return c;
}

std::vector<GridCase> attention_grid(bool quick, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<GridCase> cases;
  const auto& head_dims_full = kSupportedHeadDims;  // the one list (pagedattn/attention.h)
  constexpr int kNumHeadDims = static_cast<int>(std::size(kSupportedHeadDims));
  const int head_dims_quick[] = {64, 80, 128, 256};
  const int ratios_full[] = {1, 2, 4, 5, 6, 8};
  const int ratios_quick[] = {1, 5, 8};
  const int block_sizes[] = {1, 3, 16, 32, 256};
  const int primes[] = {1, 2, 3, 5, 7, 11, 13};
  const BatchKind kinds[] = {BatchKind::kDecode, BatchKind::kPrefill, BatchKind::kChunked, BatchKind::kMixed};
  const std::span<const int> head_dims =
      quick ? std::span<const int>(head_dims_quick) : std::span<const int>(head_dims_full);
  const std::span<const int> ratios =
      quick ? std::span<const int>(ratios_quick) : std::span<const int>(ratios_full);

  // Rotate block size, layout, strides, dtype and variant across the (head dim, ratio, kind) product so that
  // every value of every axis meets many values of the others without a full cartesian product.
  int i = 0;
  for (int hd : head_dims) {
    for (int ratio : ratios) {
      for (BatchKind kind : kinds) {
        if (quick && (i % 2)) {
          ++i;
          continue;
        }
        ProblemSpec s;
        s.head_dim = hd;
        s.num_kv_heads = 1 + (i % 2);
        s.num_q_heads = ratio * s.num_kv_heads;
        s.block_size = block_sizes[i % 5];
        s.dtype = s.cache_dtype = (i % 2) ? DType::kBFloat16 : DType::kFloat16;
        s.hnd_layout = (i / 5) % 2;
        s.strided = i % 3 == 0;
        switch (i % 8) {
          case 1:
            s.window_left = 1 + static_cast<int>(rng() % 40);
            break;
          case 2:
            s.softcap = 5.0f + static_cast<float>(rng() % 30);
            s.scale = 0.3f;
            break;  // large logits to cap
          case 3:
            s.alibi = true;
            break;
          case 4:
            s.sinks = true;
            break;
          case 5:
            s.lse = true;
            break;
          case 6:
            s.window_left = 17;
            s.softcap = 20.0f;
            s.alibi = s.sinks = s.lse = true;
            break;
          case 7:
            // Logits in the hundreds (scale x |q.k| up to ~1000 at head dim 128), soft-cap off: exp() of them
            // overflows fp32, so only a softmax that subtracts the running max passes.
            s.scale = 8.0f;
            s.lse = true;
            break;
          default:
            break;
        }
        s.seed = rng();
        // Decode cost is linear in the context, prefill quadratic: keep the dense reference fast.
        const bool decode = kind == BatchKind::kDecode;
        const int max_len = s.block_size == 256 ? (decode ? 700 : 300) : (decode ? 300 : 120);
        const int seqs = kind == BatchKind::kPrefill ? primes[i % 4] : primes[i % 7];
        draw_batch(s, kind, seqs, max_len, rng);
        std::ostringstream group;
        group << "head_dim " << hd << " gqa " << ratio;
        cases.push_back({group.str(), s});
        ++i;
      }
    }
  }
  // The focused format groups' common tail: one attention variant (1 window, 2 soft-cap + sinks, 3 ALiBi +
  // LSE, else plain), a seed, and a batch of the case's kind.
  auto add_format_case = [&](ProblemSpec s, int variant, int k, const std::string& group) {
    switch (variant) {
      case 1:
        s.window_left = 1 + static_cast<int>(rng() % 40);
        break;
      case 2:
        s.softcap = 15.0f;
        s.sinks = true;
        break;
      case 3:
        s.alibi = s.lse = true;
        break;
      default:
        break;
    }
    s.seed = rng();
    const BatchKind kind = kinds[k % 4];
    draw_batch(s, kind, primes[k % 7], kind == BatchKind::kDecode ? 300 : 150, rng);
    cases.push_back({group, s});
  };
  // Focused groups: the quantized formats (both query dtypes, GQA 1/5/6/8, page sizes 1/7/16/128, both
  // layouts, tensor and head scales, the variants) and fp32.
  const DType quantized[] = {DType::kFloat8E4M3, DType::kFloat8E5M2, DType::kInt8};
  const int q_ratios[] = {1, 5, 6, 8};
  const int q_block_sizes[] = {1, 7, 16, 128};
  for (int k = 0; k < (quick ? 6 : 42); ++k) {
    ProblemSpec s;
    s.head_dim = head_dims_full[k % kNumHeadDims];
    s.num_kv_heads = 1 + k % 2;
    s.num_q_heads = q_ratios[k % 4] * s.num_kv_heads;
    s.block_size = q_block_sizes[(k / 3) % 4];
    s.dtype = (k / 2) % 2 ? DType::kFloat16 : DType::kBFloat16;
    s.cache_dtype = quantized[k % 3];
    s.head_scales = (k / 6) % 2;
    s.hnd_layout = (k / 4) % 2;
    s.strided = k % 5 == 0;
    add_format_case(s, k % 6, k, std::string(dtype_name(s.cache_dtype)) + " cache");
  }
  for (int k = 0; k < (quick ? 2 : 6); ++k) {
    ProblemSpec s;
    s.head_dim = head_dims_full[k % kNumHeadDims];
    s.num_kv_heads = 2;
    s.num_q_heads = 6;
    s.block_size = block_sizes[k % 5];
    s.dtype = s.cache_dtype = DType::kFloat32;
    s.seed = rng();
    draw_batch(s, BatchKind::kMixed, 5, 200, rng);
    cases.push_back({"fp32", s});
  }
  // TurboQuant caches: every preset, every head dim (80/96/112: block-diagonal rotations), GQA 1/5/6/8,
  // page sizes 1/7/16/128, both layouts, the variants, both query dtypes.
  for (int k = 0; k < (quick ? 4 : 28); ++k) {
    ProblemSpec s;
    s.tq = tq::kAllPresets[k % 4];
    s.head_dim = head_dims_full[k % kNumHeadDims];
    s.num_kv_heads = 1 + k % 2;
    s.num_q_heads = q_ratios[(k / 2) % 4] * s.num_kv_heads;
    s.block_size = q_block_sizes[(k / 3) % 4];
    s.dtype = (k / 4) % 2 ? DType::kFloat16 : DType::kBFloat16;
    s.cache_dtype = DType::kUInt8;
    s.hnd_layout = (k / 5) % 2;
    s.strided = k % 7 == 3;
    add_format_case(s, k % 5, k, std::string(tq::preset_info(*s.tq).name) + " cache");
  }
  return cases;
}

}  // namespace pagedattn::testing
