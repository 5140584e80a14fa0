// TurboQuant-style K/V codes (shared/TURBOQUANT.md): the host side that every backend shares — presets and
// their byte counts, the Lloyd–Max codebooks, the rotation, and the exact quantizers of one key or value
// vector. The CPU backend's write path and the tests use these functions; the CUDA kernels are given the same
// codebooks and signs, so that both write the same bytes.
//
// A key k (head dim D) is stored as a norm and, per rotated coordinate, a b-bit index into a codebook:
//   x = k / (|k| + 1e-8);  y = R x,  R = H · diag(s)  (block-diagonal normalized Walsh–Hadamard, ±1 signs)
//   idx_j = #{midpoints m_i <= y_j};  n' = |k| / |c[idx]|  (so that the dequantized key has norm |k|)
//   k~ = n' · Rᵀ c[idx];  score(q, k~) = n' · <R q, c[idx]>
// A value v is stored as b-bit codes of an asymmetric uniform grid: s = max((vmax - vmin) / (2^b - 1), 1e-8),
// q_j = clamp(floor((v_j - vmin) / s + 0.5), 0, 2^b - 1), with s and vmin in fp16; v~_j = q_j s + vmin.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace pagedattn::tq {

/// The presets of the specification: key bits (8 = fp8 e4m3 keys, no rotation) and value bits.
enum class Preset : uint8_t { kK8V4, kK4V4, kK3V4, kK3V3 };

struct PresetInfo {
  const char* name;  ///< "tq_k8v4", ...
  int key_bits;      ///< 8: fp8 e4m3 keys; 3 or 4: rotated MSE codes
  int value_bits;
};
PresetInfo preset_info(Preset p);
/// The preset of a name ("tq_k4v4"), or an error listing the presets.
Preset parse_preset(const std::string& name);
/// The preset of (key bits, value bits), or an error.
Preset preset_of_bits(int key_bits, int value_bits);
inline constexpr Preset kAllPresets[] = {Preset::kK8V4, Preset::kK4V4, Preset::kK3V4, Preset::kK3V3};

/// Bytes one token of one KV head costs, by plane (no alignment padding: D * bits is a whole number of bytes
/// for every supported head dim, and each plane's row is stored dense).
struct TokenBytes {
  int key_codes = 0;    ///< D (fp8) or D * bits / 8
  int key_norm = 0;     ///< 2 (fp16 n'); 0 for fp8 keys
  int value_codes = 0;  ///< D * bits / 8
  int value_meta = 0;   ///< 4: fp16 scale and fp16 minimum
  int total() const { return key_codes + key_norm + value_codes + value_meta; }
};
TokenBytes token_bytes(Preset p, int head_dim);

/// The documented seed of the rotation's sign vectors: s_i = +1 or -1 from bit 0 of splitmix64(seed + i).
inline constexpr uint64_t kSignSeed = 0x7475726271756131ull;  // "turbqua1"

/// The rotation of a head dim: a block-diagonal normalized Walsh–Hadamard transform (blocks of the largest
/// power-of-two divisor of D: 80 -> 5 x 16, 96 -> 3 x 32, 112 -> 7 x 16; 64, 128, 256 -> one block) after a
/// ±1 sign flip per coordinate. Orthogonal: R⁻¹ = Rᵀ.
struct Rotation {
  int head_dim = 0;
  int block = 0;              ///< Walsh–Hadamard block size
  std::vector<int8_t> signs;  ///< s, [head_dim]
  /// y = R x (O(D log D)). x and y may alias.
  void apply(const float* x, float* y) const;
  /// x = Rᵀ y. x and y may alias.
  void apply_transpose(const float* y, float* x) const;
};
const Rotation& rotation(int head_dim);

/// Lloyd–Max codebook for one coordinate of a uniformly random unit vector in R^D (density ∝ (1 -
/// x²)^((D-3)/2) on [-1, 1]), computed once per (D, bits) in double precision, deterministically.
struct Codebook {
  int head_dim = 0, bits = 0;
  std::vector<float> centroids;  ///< 2^bits, strictly increasing, symmetric: c_i = -c_{2^b - 1 - i}
  std::vector<float> midpoints;  ///< 2^bits - 1: (c_i + c_{i+1}) / 2; the middle one is exactly 0
  double distortion = 0;         ///< E |x - x~|² for a unit vector x (D times the per-coordinate MSE)
};
const Codebook& codebook(int head_dim, int bits);

/// The same solver on the standard normal density (for checking it against the published N(0, 1) tables).
Codebook gaussian_codebook(int bits);

/// Index of y in the codebook: the number of midpoints <= y (ties go up). NaN gives 0.
int bucket(const Codebook& cb, float y);

/// Bit packing of b-bit codes, code j at bits [j b, j b + b) of the row (LSB first, little-endian bytes).
void pack_codes(std::span<const uint8_t> codes, int bits, uint8_t* out);
void unpack_codes(const uint8_t* packed, int bits, std::span<uint8_t> codes);

/// One key vector [D] -> packed indices [D * bits / 8] and n' as fp16 bits (norms past 65504 saturate to
/// 65504: a key longer than fp16's range keeps its direction and takes the largest representable norm; NaN
/// coordinates give index 0 and a NaN norm, so the key's scores are NaN as they would be in a bf16 cache).
void quantize_key(const float* k, int head_dim, int bits, uint8_t* codes, uint16_t* norm_fp16);
/// The key in the rotated domain, n' c[idx] (so that <q, k~> = <R q, n' c[idx]>: attention rotates each query
/// once instead of every key).
void rotated_key(const uint8_t* codes, uint16_t norm_fp16, int head_dim, int bits, float* y);
/// The dequantized key k~ = n' Rᵀ c[idx].
void dequantize_key(const uint8_t* codes, uint16_t norm_fp16, int head_dim, int bits, float* k);

/// One value vector [D] -> packed codes [D * bits / 8], fp16 scale and minimum (values are clamped to fp16's
/// finite range first; a NaN anywhere makes the scale NaN, so the row reads back as NaN).
void quantize_value(const float* v, int head_dim, int bits, uint8_t* codes, uint16_t* scale_fp16,
                    uint16_t* min_fp16);
void dequantize_value(const uint8_t* codes, uint16_t scale_fp16, uint16_t min_fp16, int head_dim, int bits,
                      float* v);

}  // namespace pagedattn::tq
