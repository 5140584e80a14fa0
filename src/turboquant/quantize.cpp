// TurboQuant presets, the rotation, bit packing and the exact per-vector quantizers (shared/TURBOQUANT.md).
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <mutex>

#include "pagedattn/dtype.h"
#include "pagedattn/error.h"
#include "pagedattn/turboquant.h"

namespace pagedattn::tq {
namespace {
constexpr int kMaxHeadDim = 256;  // the largest supported head dim (pagedattn/attention.h)
}  // namespace

PresetInfo preset_info(Preset p) {
  switch (p) {
    case Preset::kK8V4:
      return {"tq_k8v4", 8, 4};
    case Preset::kK4V4:
      return {"tq_k4v4", 4, 4};
    case Preset::kK3V4:
      return {"tq_k3v4", 3, 4};
    case Preset::kK3V3:
      return {"tq_k3v3", 3, 3};
  }
  return {"?", 0, 0};
}

Preset parse_preset(const std::string& name) {
  for (Preset p : kAllPresets) {
    if (name == preset_info(p).name) return p;
  }
  PA_CHECK(false, "unknown TurboQuant preset '", name, "'; expected tq_k8v4, tq_k4v4, tq_k3v4 or tq_k3v3");
}

Preset preset_of_bits(int key_bits, int value_bits) {
  for (Preset p : kAllPresets) {
    if (preset_info(p).key_bits == key_bits && preset_info(p).value_bits == value_bits) return p;
  }
  PA_CHECK(false, "no TurboQuant preset has ", key_bits, "-bit keys and ", value_bits, "-bit values");
}

TokenBytes token_bytes(Preset p, int head_dim) {
  const PresetInfo info = preset_info(p);
  PA_CHECK(head_dim % 8 == 0, "TurboQuant codes need a head dim that is a multiple of 8, got ", head_dim);
  TokenBytes b;
  b.key_codes = info.key_bits == 8 ? head_dim : head_dim * info.key_bits / 8;
  b.key_norm = info.key_bits == 8 ? 0 : 2;
  b.value_codes = head_dim * info.value_bits / 8;
  b.value_meta = 4;
  return b;
}

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// In-place normalized Walsh–Hadamard transform of each `block`-sized run of v (H symmetric and orthonormal).
void fwht_blocks(float* v, int n, int block) {
  const float norm = 1.0f / std::sqrt(static_cast<float>(block));
  for (int b0 = 0; b0 < n; b0 += block) {
    float* x = v + b0;
    for (int len = 1; len < block; len <<= 1) {
      for (int i = 0; i < block; i += 2 * len) {
        for (int j = i; j < i + len; ++j) {
          const float a = x[j], c = x[j + len];
          x[j] = a + c;
          x[j + len] = a - c;
        }
      }
    }
    for (int i = 0; i < block; ++i) x[i] *= norm;
  }
}

}  // namespace

void Rotation::apply(const float* x, float* y) const {
  for (int i = 0; i < head_dim; ++i) y[i] = signs[i] * x[i];
  fwht_blocks(y, head_dim, block);
}

void Rotation::apply_transpose(const float* y, float* x) const {
  if (x != y) std::copy(y, y + head_dim, x);
  fwht_blocks(x, head_dim, block);
  for (int i = 0; i < head_dim; ++i) x[i] *= signs[i];
}

const Rotation& rotation(int head_dim) {
  PA_CHECK(head_dim >= 1, "head_dim must be positive, got ", head_dim);
  static std::mutex mutex;
  static std::map<int, Rotation> made;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = made.find(head_dim);
  if (it == made.end()) {
    Rotation r;
    r.head_dim = head_dim;
    r.block = head_dim & -head_dim;  // the largest power-of-two divisor: never a sliced Hadamard matrix
    r.signs.resize(head_dim);
    for (int i = 0; i < head_dim; ++i)
      r.signs[i] = (splitmix64(kSignSeed + static_cast<uint64_t>(i)) & 1) ? 1 : -1;
    it = made.emplace(head_dim, std::move(r)).first;
  }
  return it->second;
}

void pack_codes(std::span<const uint8_t> codes, int bits, uint8_t* out) {
  const size_t bytes = (codes.size() * bits + 7) / 8;
  std::fill(out, out + bytes, uint8_t{0});
  for (size_t j = 0; j < codes.size(); ++j) {
    const size_t bit = j * bits;
    const uint32_t v = static_cast<uint32_t>(codes[j] & ((1u << bits) - 1)) << (bit % 8);
    out[bit / 8] = static_cast<uint8_t>(out[bit / 8] | (v & 0xffu));
    if (bit % 8 + bits > 8) out[bit / 8 + 1] = static_cast<uint8_t>(out[bit / 8 + 1] | (v >> 8));
  }
}

void unpack_codes(const uint8_t* packed, int bits, std::span<uint8_t> codes) {
  for (size_t j = 0; j < codes.size(); ++j) {
    const size_t bit = j * bits;
    uint32_t v = packed[bit / 8] >> (bit % 8);
    if (bit % 8 + bits > 8) v |= static_cast<uint32_t>(packed[bit / 8 + 1]) << (8 - bit % 8);
    codes[j] = static_cast<uint8_t>(v & ((1u << bits) - 1));
  }
}

namespace {

// fp16 bits of a non-negative norm, saturating at the largest finite fp16 (65504); NaN gives the positive
// quiet NaN whatever NaN it is (the CUDA writer's arithmetic does not keep NaN signs).
uint16_t norm_to_fp16(float n) {
  if (std::isnan(n)) return float_to_fp16_bits(NAN);
  return float_to_fp16_bits(std::min(n, 65504.0f));
}

// A sum of n terms in the order a warp reduces it, so that the CUDA writer (write_kv_turboquant.cu) gets the
// same bits: lane l adds terms l, l + 32, ... in turn, then the lanes' sums are halved pairwise (l + 16, l +
// 8,
// ... into l).
template <typename Term>
double warp_order_sum(int n, Term term) {
  std::array<double, 32> s{};
  for (int j = 0; j < n; ++j) s[static_cast<size_t>(j % 32)] += term(j);
  for (int m = 16; m >= 1; m /= 2) {
    for (int l = 0; l < m; ++l) s[static_cast<size_t>(l)] += s[static_cast<size_t>(l + m)];
  }
  return s[0];
}

}  // namespace

void quantize_key(const float* k, int head_dim, int bits, uint8_t* codes, uint16_t* norm_fp16) {
  const Codebook& cb = codebook(head_dim, bits);
  const Rotation& rot = rotation(head_dim);
  const double sum = warp_order_sum(head_dim, [&](int j) { return static_cast<double>(k[j]) * k[j]; });
  const float n = static_cast<float>(std::sqrt(sum));
  std::vector<float> y(head_dim);
  const float inv = 1.0f / (n + 1e-8f);
  for (int j = 0; j < head_dim; ++j) y[j] = k[j] * inv;
  rot.apply(y.data(), y.data());
  std::vector<uint8_t> idx(head_dim);
  for (int j = 0; j < head_dim; ++j) idx[j] = static_cast<uint8_t>(bucket(cb, y[j]));
  const double cnorm = warp_order_sum(head_dim, [&](int j) {
    const double c = cb.centroids[idx[static_cast<size_t>(j)]];
    return c * c;
  });
  pack_codes(idx, bits, codes);
  // Norm correction: the dequantized key n' Rᵀ c[idx] has norm exactly n (R is orthogonal).
  *norm_fp16 = norm_to_fp16(static_cast<float>(n / std::sqrt(cnorm)));
}

void rotated_key(const uint8_t* codes, uint16_t norm_fp16, int head_dim, int bits, float* y) {
  const Codebook& cb = codebook(head_dim, bits);
  PA_CHECK(head_dim <= kMaxHeadDim, "TurboQuant head dims are at most ", kMaxHeadDim, ", got ", head_dim);
  std::array<uint8_t, kMaxHeadDim> idx_buf;  // no allocation: the CPU backend calls this per cached token
  const std::span<uint8_t> idx(idx_buf.data(), static_cast<size_t>(head_dim));
  unpack_codes(codes, bits, idx);
  const float n = fp16_bits_to_float(norm_fp16);
  for (int j = 0; j < head_dim; ++j) y[j] = n * cb.centroids[idx[j]];
}

void dequantize_key(const uint8_t* codes, uint16_t norm_fp16, int head_dim, int bits, float* k) {
  rotated_key(codes, norm_fp16, head_dim, bits, k);
  rotation(head_dim).apply_transpose(k, k);  // linear: the norm may scale before the rotation
}

void quantize_value(const float* v, int head_dim, int bits, uint8_t* codes, uint16_t* scale_fp16,
                    uint16_t* min_fp16) {
  PA_CHECK(bits == 2 || bits == 3 || bits == 4 || bits == 8, "TurboQuant values have 2, 3, 4 or 8 bits, got ",
           bits);
  const int levels = (1 << bits) - 1;
  bool nan = false;
  float lo = INFINITY, hi = -INFINITY;
  std::vector<float> x(head_dim);
  for (int j = 0; j < head_dim; ++j) {
    nan = nan || std::isnan(v[j]);
    x[j] = std::clamp(v[j], -65504.0f, 65504.0f);  // fp16's finite range (NaN passes through)
    lo = std::min(lo, x[j]);
    hi = std::max(hi, x[j]);
  }
  std::vector<uint8_t> q(head_dim, 0);
  if (nan) {
    *scale_fp16 = float_to_fp16_bits(NAN);
    *min_fp16 = float_to_fp16_bits(NAN);
  } else {
    const float s = std::max((hi - lo) / static_cast<float>(levels), 1e-8f);
    for (int j = 0; j < head_dim; ++j) {
      const float t = std::floor((x[j] - lo) / s + 0.5f);
      q[j] = static_cast<uint8_t>(std::clamp(t, 0.0f, static_cast<float>(levels)));
    }
    *scale_fp16 = float_to_fp16_bits(s);
    *min_fp16 = float_to_fp16_bits(lo);
  }
  pack_codes(q, bits, codes);
}

void dequantize_value(const uint8_t* codes, uint16_t scale_fp16, uint16_t min_fp16, int head_dim, int bits,
                      float* v) {
  PA_CHECK(head_dim <= kMaxHeadDim, "TurboQuant head dims are at most ", kMaxHeadDim, ", got ", head_dim);
  std::array<uint8_t, kMaxHeadDim> q_buf;
  const std::span<uint8_t> q(q_buf.data(), static_cast<size_t>(head_dim));
  unpack_codes(codes, bits, q);
  const float s = fp16_bits_to_float(scale_fp16), lo = fp16_bits_to_float(min_fp16);
  for (int j = 0; j < head_dim; ++j) v[j] = static_cast<float>(q[j]) * s + lo;
}

}  // namespace pagedattn::tq
