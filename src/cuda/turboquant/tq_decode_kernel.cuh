// Attention over TurboQuant pages (shared/TURBOQUANT.md) on the tensor cores: the codes are read from global
// memory straight into registers, decoded there into mma.sync fragments and never written back anywhere — no
// dequantized copy of the cache, in memory or in shared memory.
//
// The tile is the decode shape of the unified kernel (16 packed query rows = the G query heads of one KV head
// times the query tokens; 4 warps, each taking 16 keys of every 64-key tile), so the G heads of a KV head
// share every load, and any query length runs (prefill chunks too, at decode-shape speed). Split-KV segments
// and the merge kernel are the family's (query_tile.cuh, merge_kernel.cuh): the merge writes the query dtype.
//
// The math, per key n with codes c_n (keys) and q_n (values), key norm n'_n and value scale / minimum s_n,
// m_n:
//   score  = 2^E_row * n'_n * <q'_row, c[idx_n]>      q' = R q / 2^E_row, fp16, rotated once per call
//                                                      (tq_rotate_queries_kernel; fp8 keys: q / 2^E_row)
//   O_row  = sum_n p_n (s_n q_n + m_n) = sum_n (p_n s_n) q_n + sum_n p_n m_n
// The first sum is the P V MMA with the small integer codes q_n as exact fp16 operands and p_n s_n rounded to
// fp16; the second is one fp32 running sum per row (rescaled with O when the row max moves), added to every
// column before the epilogue. The tensor-core operands are fp16 whatever the query dtype:
// bench/turboquant_kernel_precision.py measured 4e-4..7e-4 relative error with fp16 operands against 2.6e-3
// .. 5.4e-3 with bf16 ones (the bound is 2e-3); E_row keeps a bf16 query's rotated row inside fp16's range.
//
// Fragment layouts (m16n8k16; lane = 4 g + t):
//  - S = Q K^T: a dot product does not care about the order of its terms, so lane t of a quad takes the key
//    dims [t D/4, (t+1) D/4) — a contiguous run of its key's code row, D/16 bytes at 4 bits — and k step ks
//    takes dims t D/4 + 4 ks + {0, 1} (B's b0) and + {2, 3} (b1). Q's A fragments are read in the same order.
//    Key codes become fp16 pairs through a table in shared memory indexed by a code pair (4 bits: one byte,
//    256 entries; 3 bits: 6 bits, 64 entries), one copy per lane so that every lookup is bank-conflict free.
//  - O += P V: P is the S accumulator as it is (keys 2t, 2t+1, 8+2t, 9+2t of the warp's 16); lane g supplies
//    value dims [g D/8, (g+1) D/8) as the n index of the D/8 n8 tiles, so O's columns come out permuted:
//    lane (g, t) holds dims (2t + e) D/8 + dt, which TQOStaging undoes.
// A key outside [first visible key, seq_len) is not loaded: its codes, norm, scale and minimum are zero, its
// logit is masked, so it adds exactly nothing.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/query_tile.cuh"
#include "cuda/attention/unified_params.h"
#include "cuda/attention/warp_tile_math.cuh"
#include "cuda/turboquant/hadamard_warp.cuh"
#include "cuda/turboquant/tq_tables.h"

namespace pagedattn::cuda {

constexpr int tq_gcd(int a, int b) {
  return b == 0 ? a : tq_gcd(b, a % b);
}

template <int kHeadDim_, int kKeyBits_, int kValueBits_>
struct TQDecodeConfig {
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kKeyBits = kKeyBits_;      // 8: fp8 e4m3 keys (tq_k8v4); 3, 4: rotated codes
  static constexpr int kValueBits = kValueBits_;  // 3, 4
  static_assert(kHeadDim % 16 == 0 && kHeadDim >= 64 && kHeadDim <= 256, "head dims 64..256 in steps of 16");
  static_assert(kValueBits == 3 || kValueBits == 4, "value codes of 3 or 4 bits");
  static constexpr int kBlockM = 16, kBlockN = 64, kWarps = 4, kWarpKeys = 16, kThreads = 32 * kWarps;
  static constexpr int kKeyRowBytes = kHeadDim * kKeyBits / 8;
  static constexpr int kValueRowBytes = kHeadDim * kValueBits / 8;
  // A lane's run of codes (load_lane_run): D/4 dims of a key, D/8 dims of a value.
  static constexpr int kKeyLaneBits = kHeadDim / 4 * kKeyBits;
  static constexpr int kValueLaneBits = kHeadDim / 8 * kValueBits;
  static constexpr int kKeyWords = (kKeyLaneBits + 31) / 32;
  static constexpr int kValueWords = (kValueLaneBits + 31) / 32;
  static constexpr int kLutEntries = kKeyBits == 4 ? 256 : kKeyBits == 3 ? 64 : 0;
  static constexpr int kLutBytes = kLutEntries * 32 * 4;
  static constexpr int kEpilogue = kEpilogueBytes<kHeadDim, kBlockM, kWarps>;
  // The epilogue's staging reuses the table's memory (a CTA barrier between them).
  static constexpr int kSmemBytes = kLutBytes > kEpilogue ? kLutBytes : kEpilogue;
  // Q fragments and O accumulators grow with the head dim: 3 CTAs per SM fit 168 registers per thread at
  // head dim <= 128, 2 CTAs 255 at 192 and 256.
  static constexpr int kMinBlocksPerSm = kHeadDim <= 128 ? 3 : 2;
  static constexpr bool kPrefetch = kHeadDim <= 128;  // a second register buffer for the next tile's codes
};

/// The launch parameters: the family's (cache, batch, attention, split) plus the rotated queries and tables.
/// The step's own K/V (AttentionParams::new_key/new_value), staged in the workspace by
/// tq_rotate_queries_kernel: each key row rotated like the queries (tq_k8v4: not) and each value row as it
/// is, divided by a power of two 2^E that brings its largest magnitude into [0.5, 1), in fp16, with 2^E
/// beside it. [num_tokens, num_kv_heads, head_dim] and [num_tokens, num_kv_heads].
struct TQRawChunk {
  const __half* k = nullptr;
  const float* k_scale = nullptr;
  const __half* v = nullptr;
  const float* v_scale = nullptr;
};

struct TQAttentionParams {
  UnifiedParams u;
  const __half* q_rot = nullptr;       // [num_tokens, num_q_heads, head_dim]: R q / 2^E (fp8 keys: q / 2^E)
  const float* q_row_scale = nullptr;  // [num_tokens, num_q_heads]: 2^E
  TurboQuantTables tab;
  TQRawChunk raw;  // the kRaw kernel only
};

/// kBytes bytes at src (aligned to kAlign) into little-endian words.
template <int kBytes, int kAlign>
__device__ __forceinline__ void load_code_bytes(const unsigned char* src, uint32_t (&w)[(kBytes + 3) / 4]) {
  if constexpr (kAlign >= 16 && kBytes % 16 == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / 16; ++i) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(src) + i);
      w[4 * i] = v.x, w[4 * i + 1] = v.y, w[4 * i + 2] = v.z, w[4 * i + 3] = v.w;
    }
  } else if constexpr (kAlign >= 8 && kBytes % 8 == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / 8; ++i) {
      const uint2 v = __ldg(reinterpret_cast<const uint2*>(src) + i);
      w[2 * i] = v.x, w[2 * i + 1] = v.y;
    }
  } else if constexpr (kAlign >= 4 && kBytes % 4 == 0) {
#pragma unroll
    for (int i = 0; i < kBytes / 4; ++i) w[i] = __ldg(reinterpret_cast<const unsigned int*>(src) + i);
  } else if constexpr (kAlign >= 2 && kBytes % 2 == 0) {
#pragma unroll
    for (int i = 0; i < (kBytes + 3) / 4; ++i) w[i] = 0;
#pragma unroll
    for (int i = 0; i < kBytes / 2; ++i)
      w[i / 2] |= static_cast<uint32_t>(__ldg(reinterpret_cast<const unsigned short*>(src) + i))
                  << (16 * (i % 2));
  } else {
#pragma unroll
    for (int i = 0; i < (kBytes + 3) / 4; ++i) w[i] = 0;
#pragma unroll
    for (int i = 0; i < kBytes; ++i) w[i / 4] |= static_cast<uint32_t>(__ldg(src + i)) << (8 * (i % 4));
  }
}

/// A lane's run of kBits code bits that starts inside a byte (bit `start` of a code row of kRowBytes bytes):
/// the bytes that hold it, read one at a time and none past the row, shifted so that the run starts at bit 0
/// of w. The bits past the run in the last word are the next run's; the callers read fields inside the run.
template <int kBits, int kRowBytes>
__device__ __forceinline__ void load_code_bits(const unsigned char* row, int start,
                                               uint32_t (&w)[(kBits + 31) / 32]) {
  constexpr int kWords = (kBits + 31) / 32;
  constexpr int kSpan = (kBits + 7 + 7) / 8;  // bytes a run of kBits touches at a shift of at most 7
  static_assert(kSpan <= 4 * (kWords + 1), "the span fits the raw words");
  uint32_t raw[kWords + 1];
#pragma unroll
  for (int i = 0; i <= kWords; ++i) raw[i] = 0;
  const int first = start >> 3, shift = start & 7;
#pragma unroll
  for (int i = 0; i < kSpan; ++i) {
    if (first + i < kRowBytes) raw[i / 4] |= static_cast<uint32_t>(__ldg(row + first + i)) << (8 * (i % 4));
  }
#pragma unroll
  for (int i = 0; i < kWords; ++i) w[i] = __funnelshift_r(raw[i], raw[i + 1], shift);
}

/// `bits` bits (at most 8) at bit position `pos` (compile-time after unrolling) of a little-endian word
/// array.
template <int kBits, int kWords>
__device__ __forceinline__ uint32_t code_field(const uint32_t (&w)[kWords], int pos) {
  const int word = pos >> 5, shift = pos & 31;
  const uint32_t lo = w[word];
  if (shift + kBits <= 32 || word + 1 >= kWords) return (lo >> shift) & ((1u << kBits) - 1);
  return __funnelshift_r(lo, w[word + 1], shift) & ((1u << kBits) - 1);
}

/// One warp's codes of one 64-key tile, in registers: what a lane needs for its share of S and of P V.
template <typename Cfg>
struct TQTileRegs {
  uint32_t k[2][Cfg::kKeyWords];    // key codes of keys g and 8 + g of the warp's 16, dims [t D/4, (t+1) D/4)
  uint32_t v[4][Cfg::kValueWords];  // value codes of keys 2t, 2t+1, 8+2t, 9+2t, dims [g D/8, (g+1) D/8)
  uint32_t kn[2];                   // n' (fp16 pairs) of keys (2t, 2t+1), (8+2t, 9+2t) (fp8 keys: unused)
  uint32_t vm[4];                   // value scale (low half) and minimum (high half) of the same keys
};

/// Run `index` (kLaneBits bits each) of a code row of kRowBytes bytes: a key's runs are indexed by t (dims
/// [t D/4, (t+1) D/4)), a value's by g (dims [g D/8, (g+1) D/8)). A run that starts on a byte is read with
/// loads as wide as gcd(row bytes, 16) (the host checks pointers and strides) and its length allow; one that
/// starts inside a byte (3-bit codes at head dims 80/96/112) by load_code_bits.
template <int kLaneBits, int kRowBytes>
__device__ __forceinline__ void load_lane_run(const unsigned char* row, int index,
                                              uint32_t (&w)[(kLaneBits + 31) / 32]) {
  if constexpr (kLaneBits % 8 == 0) {
    constexpr int kBytes = kLaneBits / 8;
    load_code_bytes<kBytes, tq_gcd(tq_gcd(kRowBytes, 16), kBytes)>(row + index * kBytes, w);
  } else {
    load_code_bits<kLaneBits, kRowBytes>(row, index * kLaneBits, w);
  }
}
template <typename Cfg>
__device__ __forceinline__ void load_key_run(const unsigned char* row, int t4,
                                             uint32_t (&w)[Cfg::kKeyWords]) {
  load_lane_run<Cfg::kKeyLaneBits, Cfg::kKeyRowBytes>(row, t4, w);
}
template <typename Cfg>
__device__ __forceinline__ void load_value_run(const unsigned char* row, int g,
                                               uint32_t (&w)[Cfg::kValueWords]) {
  load_lane_run<Cfg::kValueLaneBits, Cfg::kValueRowBytes>(row, g, w);
}

/// The warp's tile at keys key0 .. key0 + 15: each lane loads its 6 keys' data; keys outside [key_lo, key_hi)
/// are zero.
template <typename Cfg>
__device__ __forceinline__ void load_tq_tile(const kernels::PagedKVArgs& kv, const int32_t* table,
                                             int kv_head, int key0, int key_lo, int key_hi, int lane,
                                             TQTileRegs<Cfg>& r) {
  const int g = lane >> 2, t4 = lane & 3;
  auto where = [&](int key, int64_t& block, int32_t& slot) {
    if (key < key_lo || key >= key_hi) return false;
    int32_t page = 0;
    kv.locate(key, page, slot);
    block = __ldg(table + page);
    return true;
  };
#pragma unroll
  for (int nb = 0; nb < 2; ++nb) {
    int64_t block = 0;
    int32_t slot = 0;
    if (where(key0 + 8 * nb + g, block, slot)) {
      load_key_run<Cfg>(static_cast<const unsigned char*>(kv.k.data) + kv.k.offset(block, slot, kv_head), t4,
                        r.k[nb]);
    } else {
#pragma unroll
      for (int i = 0; i < Cfg::kKeyWords; ++i) r.k[nb][i] = 0;
    }
  }
  r.kn[0] = r.kn[1] = 0;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    int64_t block = 0;
    int32_t slot = 0;
    if (where(key0 + 2 * t4 + (j & 1) + 8 * (j >> 1), block, slot)) {
      load_value_run<Cfg>(static_cast<const unsigned char*>(kv.v.data) + kv.v.offset(block, slot, kv_head), g,
                          r.v[j]);
      r.vm[j] = __ldg(reinterpret_cast<const unsigned int*>(kv.v_meta.at<uint16_t>(block, slot, kv_head)));
      if constexpr (Cfg::kKeyBits != 8) {
        r.kn[j >> 1] |= static_cast<uint32_t>(__ldg(kv.k_meta.at<unsigned short>(block, slot, kv_head)))
                        << (16 * (j & 1));
      }
    } else {
#pragma unroll
      for (int i = 0; i < Cfg::kValueWords; ++i) r.v[j][i] = 0;
      r.vm[j] = 0;
    }
  }
}

__device__ __forceinline__ uint32_t half2_bits(__half2 h) {
  return *reinterpret_cast<uint32_t*>(&h);
}
__device__ __forceinline__ __half2 bits_half2(uint32_t u) {
  return *reinterpret_cast<__half2*>(&u);
}

/// The B operand of k step ks from one key's code run: fp16 pairs of dims 4 ks + {0, 1} (b0) and + {2, 3}
/// (b1) of the lane's run.
template <typename Cfg>
__device__ __forceinline__ void key_code_operands(const uint32_t (&k)[Cfg::kKeyWords], int ks,
                                                  const uint32_t* lut, uint32_t& b0, uint32_t& b1) {
  if constexpr (Cfg::kKeyBits == 8) {
    const uint32_t w = k[ks];  // 4 fp8 codes: dims 4 ks .. 4 ks + 3 of the lane's run
    const __half2_raw lo =
        __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w & 0xffffu), __NV_E4M3);
    const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w >> 16), __NV_E4M3);
    b0 = static_cast<uint32_t>(lo.x) | (static_cast<uint32_t>(lo.y) << 16);
    b1 = static_cast<uint32_t>(hi.x) | (static_cast<uint32_t>(hi.y) << 16);
  } else if constexpr (Cfg::kKeyBits == 4) {
    const uint32_t w = k[ks >> 1] >> (16 * (ks & 1));  // bytes 2 ks, 2 ks + 1 of the run
    b0 = lut[(w & 0xffu) << 5];
    b1 = lut[((w >> 8) & 0xffu) << 5];
  } else {
    b0 = lut[code_field<6, Cfg::kKeyWords>(k, 12 * ks) << 5];
    b1 = lut[code_field<6, Cfg::kKeyWords>(k, 12 * ks + 6) << 5];
  }
}

/// Raw scores of the warp's 16 rows against its 16 keys (before n' and the row scale).
template <typename Cfg>
__device__ __forceinline__ void tq_scores(const TQTileRegs<Cfg>& r,
                                          const uint32_t (&q_frag)[Cfg::kHeadDim / 16][4],
                                          const uint32_t* lut, float (&s)[2][4]) {
  constexpr int D = Cfg::kHeadDim;
  // One accumulator per n8 block: the two blocks' MMAs interleave, so each chain waits on every other MMA.
#pragma unroll
  for (int nb = 0; nb < 2; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
    for (int nb = 0; nb < 2; ++nb) {
      uint32_t b0, b1;
      key_code_operands<Cfg>(r.k[nb], ks, lut, b0, b1);
      Mma<__half>::run(s[nb], q_frag[ks], b0, b1);
    }
  }
}

/// Four 4-bit codes of two keys (16-bit lanes of y: key a low, key b high; code i at bits 4i) -> the fp16
/// pairs (a_i, b_i), exactly: a code q placed in the mantissa of 1024 (0x6400) is 1024 + q, and 16 q + 1024
/// for the odd ones, undone by one subtract or multiply-add.
__device__ __forceinline__ void nibbles_to_half2(uint32_t y, uint32_t (&out)[4]) {
  const __half2 k1024 = __float2half2_rn(1024.0f), k16th = __float2half2_rn(1.0f / 16.0f),
                kMinus64 = __float2half2_rn(-64.0f);
  const uint32_t y8 = y >> 8;
  out[0] = half2_bits(__hsub2(bits_half2((y & 0x000f000fu) | 0x64006400u), k1024));
  out[1] = half2_bits(__hfma2(bits_half2((y & 0x00f000f0u) | 0x64006400u), k16th, kMinus64));
  out[2] = half2_bits(__hsub2(bits_half2((y8 & 0x000f000fu) | 0x64006400u), k1024));
  out[3] = half2_bits(__hfma2(bits_half2((y8 & 0x00f000f0u) | 0x64006400u), k16th, kMinus64));
}

/// O += P V for the warp's 16 keys (pf: the probabilities times the value scales, fp16 A fragment).
template <typename Cfg>
__device__ __forceinline__ void tq_pv(const TQTileRegs<Cfg>& r, const uint32_t (&pf)[4],
                                      WarpSoftmaxState<Cfg::kHeadDim>& st) {
  constexpr int kDims = Cfg::kHeadDim / 8;  // the lane's value dims = n8 tiles of O
  if constexpr (Cfg::kValueBits == 4) {
#pragma unroll
    for (int w = 0; w < Cfg::kValueWords; ++w) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {  // dims 8 w + 4 half + {0 .. 3}
        const uint32_t sel = half ? 0x7632u : 0x5410u;
        uint32_t b0[4], b1[4];
        nibbles_to_half2(__byte_perm(r.v[0][w], r.v[1][w], sel), b0);  // keys 2t, 2t+1
        nibbles_to_half2(__byte_perm(r.v[2][w], r.v[3][w], sel), b1);  // keys 8+2t, 9+2t
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int dt = 8 * w + 4 * half + i;
          if (dt < kDims) Mma<__half>::run(st.o[dt], pf, b0[i], b1[i]);
        }
      }
    }
  } else {
    const __half2 k1024 = __float2half2_rn(1024.0f);
#pragma unroll
    for (int dt = 0; dt < kDims; ++dt) {
      uint32_t b[2];
#pragma unroll
      for (int k = 0; k < 2; ++k) {
        const uint32_t lo = code_field<3, Cfg::kValueWords>(r.v[2 * k], 3 * dt);
        const uint32_t hi = code_field<3, Cfg::kValueWords>(r.v[2 * k + 1], 3 * dt);
        b[k] = half2_bits(__hsub2(bits_half2(lo | (hi << 16) | 0x64006400u), k1024));
      }
      Mma<__half>::run(st.o[dt], pf, b[0], b[1]);
    }
  }
}

/// The epilogue staging of O (warp_tile_math.cuh's contract): lane (g, t) holds, for rows g and g + 8, dims
/// (2t + e) D/8 + dt in element e of n8 tile dt — D/8 contiguous dims per (t, e), written as float4s. Plain
/// addresses would put the 8 lanes of a quarter warp on 4 bank groups; float4 chunk c of row r goes to chunk
/// c ^ ((((c / (D/16)) & 3) << 1) | (r & 1)) instead: 8 distinct groups (a bijection within each 8-chunk
/// group of the row; at D = 128 the same map as CodeOStaging).
template <int kHeadDim>
struct TQOStaging {
  __device__ __forceinline__ static int chunk(int row, int c) {
    return c ^ ((((c / (kHeadDim / 16)) & 3) << 1) | (row & 1));
  }
  template <int D>
  __device__ __forceinline__ static void store(const WarpSoftmaxState<D>& st, float* o0, float* o1,
                                               int lane) {
    static_assert(D == kHeadDim, "staging and state agree on the head dim");
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
#pragma unroll
      for (int q = 0; q < D / 32; ++q) {
        const int dt = 4 * q;
        const int c0 = chunk(g, (2 * t + e) * (D / 32) + q), c1 = chunk(g + 8, (2 * t + e) * (D / 32) + q);
        *reinterpret_cast<float4*>(o0 + 4 * c0) =
            make_float4(st.o[dt][e], st.o[dt + 1][e], st.o[dt + 2][e], st.o[dt + 3][e]);
        *reinterpret_cast<float4*>(o1 + 4 * c1) =
            make_float4(st.o[dt][2 + e], st.o[dt + 1][2 + e], st.o[dt + 2][2 + e], st.o[dt + 3][2 + e]);
      }
    }
  }
};

/// The epilogue staging of the other head dims (80, 96, 112, 192, where the swizzle above is not a
/// bijection or D/8 is not a whole number of float4s): O's columns in their natural order, as float2 pairs
/// (D/8 is even), no swizzle.
template <int kHeadDim>
struct TQOStagingNatural {
  __device__ __forceinline__ static int chunk(int, int c) { return c; }
  template <int D>
  __device__ __forceinline__ static void store(const WarpSoftmaxState<D>& st, float* o0, float* o1,
                                               int lane) {
    static_assert(D == kHeadDim && D / 8 % 2 == 0, "staging and state agree on the head dim; D/8 even");
    const int t = lane & 3;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int base = (2 * t + e) * (D / 8);
#pragma unroll
      for (int dt = 0; dt < D / 8; dt += 2) {
        *reinterpret_cast<float2*>(o0 + base + dt) = make_float2(st.o[dt][e], st.o[dt + 1][e]);
        *reinterpret_cast<float2*>(o1 + base + dt) = make_float2(st.o[dt][2 + e], st.o[dt + 1][2 + e]);
      }
    }
  }
};

/// TQOStaging's swizzle is a bijection on each row's float4 chunks at head dims 64, 128 and 256.
template <int kHeadDim>
using TQOStagingFor = std::conditional_t<kHeadDim == 64 || kHeadDim == 128 || kHeadDim == 256,
                                         TQOStaging<kHeadDim>, TQOStagingNatural<kHeadDim>>;

/// The warp's 16 scores -> the fp16 P operand of P V. Per key j (keys 2t + (j & 1) + 8 (j >> 1) of the 16):
/// its score scale (n', or a raw row's 2^E) with the row's power of two on the scores, the softmax step (O
/// and sum p m rescaled with it when a row max moves), then p m into the running sum and the value scale on
/// p.
template <int D>
__device__ __forceinline__ void tq_probabilities(const kernels::AttentionArgs& a, const QueryTile& t,
                                                 int key0, float (&s)[2][4], const float (&key_scale)[4],
                                                 const float (&value_scale)[4], const float (&value_min)[4],
                                                 const float (&row_scale)[2], const int (&row_qpos)[2],
                                                 const float (&row_slope)[2], float unit,
                                                 WarpSoftmaxState<D>& st, int lane, float (&v_min_sum)[2],
                                                 uint32_t (&pf)[4]) {
  constexpr int kWarpKeys = 16;
#pragma unroll
  for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nb][e] *= key_scale[2 * nb + (e & 1)] * row_scale[e >> 1];
  }
  const float old_max[2] = {st.row_max[0], st.row_max[1]};
  scores_to_probabilities<D, 2>(a, s, key0, keys_unmasked(a, t, key0, kWarpKeys), row_qpos, row_slope, unit,
                                st, lane, NoKVScales{});
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    if (st.row_max[i] != old_max[i]) v_min_sum[i] *= fast_exp2((old_max[i] - st.row_max[i]) * unit);
  }
#pragma unroll
  for (int nb = 0; nb < 2; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      v_min_sum[e >> 1] += s[nb][e] * value_min[2 * nb + (e & 1)];
      s[nb][e] *= value_scale[2 * nb + (e & 1)];
    }
  }
  pf[0] = Mma<__half>::pack(s[0][0], s[0][1]);
  pf[1] = Mma<__half>::pack(s[0][2], s[0][3]);
  pf[2] = Mma<__half>::pack(s[1][0], s[1][1]);
  pf[3] = Mma<__half>::pack(s[1][2], s[1][3]);
}

/// A KV tile that holds some of the step's own tokens (positions >= t.ctx, read raw from p.raw): each of the
/// warp's keys comes from its codes (before t.ctx) or from the staged raw rows, as fp16 operands with one
/// scale per key on its scores (n' or the raw row's 2^E) and one on its probabilities (the value scale, or
/// the raw row's 2^E with minimum 0), so the code keys and the raw keys share one score and one P V
/// computation. Only the tiles at the end of a sequence take this path: per-key branches and loads inside the
/// MMA loops.
template <typename Cfg>
__device__ __forceinline__ void attend_mixed_tile(const TQAttentionParams& p, const QueryTile& t,
                                                  const int32_t* table, int kv_head, int key0, int lane,
                                                  const uint32_t (&q_frag)[Cfg::kHeadDim / 16][4],
                                                  const uint32_t* lut, const float (&row_scale)[2],
                                                  const int (&row_qpos)[2], const float (&row_slope)[2],
                                                  float unit, WarpSoftmaxState<Cfg::kHeadDim>& st,
                                                  float (&v_min_sum)[2]) {
  constexpr int D = Cfg::kHeadDim;
  if (key0 >= t.seq_len || key0 + Cfg::kWarpKeys <= t.first_key) return;
  const auto& u = p.u;
  const auto& kv = u.kv;
  const int g = lane >> 2, t4 = lane & 3;
  enum Source { kNoKey, kFromCodes, kFromRaw };
  auto source = [&](int key) {
    return key < t.first_key || key >= t.seq_len ? kNoKey : key < t.ctx ? kFromCodes : kFromRaw;
  };
  auto raw_row = [&](int key) {
    return (static_cast<int64_t>(t.q_begin) + key - t.ctx) * kv.num_kv_heads + kv_head;
  };
  auto locate = [&](int key, int64_t& block, int32_t& slot) {
    int32_t page = 0;
    kv.locate(key, page, slot);
    block = __ldg(table + page);
  };

  // S: the lane's B columns are keys g and 8 + g.
  float s[2][4];
  uint32_t kc[2][Cfg::kKeyWords];
  const uint2* kr[2] = {nullptr, nullptr};
  Source ks_src[2];
#pragma unroll
  for (int nb = 0; nb < 2; ++nb) {
    s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
    const int key = key0 + 8 * nb + g;
    ks_src[nb] = source(key);
#pragma unroll
    for (int i = 0; i < Cfg::kKeyWords; ++i) kc[nb][i] = 0;
    if (ks_src[nb] == kFromCodes) {
      int64_t block;
      int32_t slot;
      locate(key, block, slot);
      load_key_run<Cfg>(static_cast<const unsigned char*>(kv.k.data) + kv.k.offset(block, slot, kv_head), t4,
                        kc[nb]);
    } else if (ks_src[nb] == kFromRaw) {
      kr[nb] = reinterpret_cast<const uint2*>(p.raw.k + raw_row(key) * D + t4 * (D / 4));
    }
  }
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
    for (int nb = 0; nb < 2; ++nb) {
      uint32_t b0 = 0, b1 = 0;
      if (ks_src[nb] == kFromRaw) {
        const uint2 w = __ldg(kr[nb] + ks);  // dims 4 ks .. 4 ks + 3 of the lane's run, fp16
        b0 = w.x;
        b1 = w.y;
      } else if (ks_src[nb] == kFromCodes) {
        key_code_operands<Cfg>(kc[nb], ks, lut, b0, b1);
      }
      Mma<__half>::run(s[nb], q_frag[ks], b0, b1);
    }
  }

  // The four keys of the lane's score columns and P V rows: 2t, 2t + 1, 8 + 2t, 9 + 2t.
  float k_scale[4], v_scale[4], v_min[4];
  uint32_t vc[4][Cfg::kValueWords];
  const __half* vr[4] = {nullptr, nullptr, nullptr, nullptr};
  Source vs_src[4];
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int key = key0 + 2 * t4 + (j & 1) + 8 * (j >> 1);
    vs_src[j] = source(key);
    k_scale[j] = v_scale[j] = v_min[j] = 0.0f;
#pragma unroll
    for (int i = 0; i < Cfg::kValueWords; ++i) vc[j][i] = 0;
    if (vs_src[j] == kFromCodes) {
      int64_t block;
      int32_t slot;
      locate(key, block, slot);
      load_value_run<Cfg>(static_cast<const unsigned char*>(kv.v.data) + kv.v.offset(block, slot, kv_head), g,
                          vc[j]);
      const float2 sm = __half22float2(bits_half2(
          __ldg(reinterpret_cast<const unsigned int*>(kv.v_meta.at<uint16_t>(block, slot, kv_head)))));
      v_scale[j] = sm.x;
      v_min[j] = sm.y;
      k_scale[j] =
          Cfg::kKeyBits == 8
              ? 1.0f
              : __half2float(__ushort_as_half(__ldg(kv.k_meta.at<unsigned short>(block, slot, kv_head))));
    } else if (vs_src[j] == kFromRaw) {
      const int64_t row = raw_row(key);
      vr[j] = p.raw.v + row * D + g * (D / 8);
      v_scale[j] = __ldg(p.raw.v_scale + row);
      k_scale[j] = __ldg(p.raw.k_scale + row);
    }
  }
  uint32_t pf[4];
  tq_probabilities<D>(u.attn, t, key0, s, k_scale, v_scale, v_min, row_scale, row_qpos, row_slope, unit, st,
                      lane, v_min_sum, pf);
  // O += P V: dims g D/8 + dt and + dt + 1 of the four keys as fp16 pairs (a code q is exactly q in fp16).
  static_assert(D / 8 % 2 == 0, "value dims come in pairs");
#pragma unroll
  for (int dt = 0; dt < D / 8; dt += 2) {
    uint32_t w[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (vs_src[j] == kFromRaw) {
        w[j] = __ldg(reinterpret_cast<const unsigned int*>(vr[j] + dt));
      } else {
        const uint32_t c0 = code_field<Cfg::kValueBits, Cfg::kValueWords>(vc[j], Cfg::kValueBits * dt);
        const uint32_t c1 = code_field<Cfg::kValueBits, Cfg::kValueWords>(vc[j], Cfg::kValueBits * (dt + 1));
        w[j] = half2_bits(__halves2half2(__ushort2half_rn(static_cast<unsigned short>(c0)),
                                         __ushort2half_rn(static_cast<unsigned short>(c1))));
      }
    }
    Mma<__half>::run(st.o[dt], pf, __byte_perm(w[0], w[1], 0x5410), __byte_perm(w[2], w[3], 0x5410));
    Mma<__half>::run(st.o[dt + 1], pf, __byte_perm(w[0], w[1], 0x7632), __byte_perm(w[2], w[3], 0x7632));
  }
}

/// kRaw: the step's own tokens (positions t.ctx .. seq_len - 1 of each sequence) are read raw from p.raw
/// instead of the cache (AttentionParams::new_key): the KV tiles that hold any of them take the mixed path
/// below, the tiles before them the code path.
template <typename T, typename Cfg, bool kRaw>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocksPerSm)
    tq_attention_kernel(const __grid_constant__ TQAttentionParams p) {
  constexpr int D = Cfg::kHeadDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN;
  extern __shared__ uint4 tq_smem[];
  __shared__ float s_ml[Cfg::kWarps][BM][2];
  const UnifiedParams& u = p.u;
  const auto& a = u.attn;
  const int kv_head = static_cast<int>(blockIdx.y), segment = static_cast<int>(blockIdx.z);
  allow_dependent_launch();  // the merge of a split launch may start launching (it waits for our partials)
  QueryTile t;
  if (!plan_query_tile<BM, BN>(u, static_cast<int>(blockIdx.x), segment, t)) return;
  if (t.tile_lo >= t.tile_hi) {
    mark_empty_segment(u, t, kv_head, segment);
    return;
  }
  const int lane = threadIdx.x & 31, wn = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;

  // The key codebook as code-pair -> fp16-pair tables, entry e of lane l at word 32 e + l.
  uint32_t* lut = reinterpret_cast<uint32_t*>(tq_smem);
  if constexpr (Cfg::kLutEntries > 0) {
    constexpr int kMask = (1 << Cfg::kKeyBits) - 1;
    for (int i = threadIdx.x; i < Cfg::kLutEntries * 32; i += Cfg::kThreads) {
      const int e = i >> 5;
      lut[i] = half2_bits(__floats2half2_rn(p.tab.centroids[e & kMask], p.tab.centroids[e >> Cfg::kKeyBits]));
    }
  }

  // Q: the rows' rotated fp16 vectors in the k order of tq_scores, and their power-of-two scales.
  uint32_t q_frag[D / 16][4];
  float row_scale[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = g + 8 * i;
    const uint2* src = nullptr;
    row_scale[i] = 1.0f;
    if (r < t.rows_valid) {
      int token, head;
      t.row_target(r, u.group, kv_head, token, head);
      const int64_t row = static_cast<int64_t>(token) * a.num_q_heads + head;
      src = reinterpret_cast<const uint2*>(p.q_rot + row * D + t4 * (D / 4));
      row_scale[i] = p.q_row_scale[row];
    }
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const uint2 v = src != nullptr ? src[ks] : make_uint2(0, 0);
      q_frag[ks][i] = v.x;      // a0 / a1: dims 4 ks + {0, 1}
      q_frag[ks][2 + i] = v.y;  // a2 / a3: dims 4 ks + {2, 3}
    }
  }
  int row_qpos[2];
  float row_slope[2];
  row_facts(u, t, kv_head, 0, lane, row_qpos, row_slope);
  const float unit = logit_unit(a);
  const int32_t* table = u.batch.block_tables + static_cast<int64_t>(t.seq) * u.batch.block_table_stride;
  const uint32_t* my_lut = lut + lane;
  __syncthreads();  // the tables are written

  WarpSoftmaxState<D> st;
  st.clear();
  float v_min_sum[2] = {0.0f, 0.0f};  // sum_n p_n m_n of rows g, g + 8 (the lane's keys)
  TQTileRegs<Cfg> cur, next = {};
  auto key0_of = [&](int tile) { return t.kv_begin + tile * BN + wn * Cfg::kWarpKeys; };
  auto load = [&](int tile, TQTileRegs<Cfg>& regs) {
    load_tq_tile<Cfg>(u.kv, table, kv_head, key0_of(tile), t.first_key, t.seq_len, lane, regs);
  };
  auto attend = [&](int tile, const TQTileRegs<Cfg>& regs) {
    const int key0 = key0_of(tile);
    if (key0 < t.seq_len && key0 + Cfg::kWarpKeys > t.first_key) {
      float s[2][4];
      tq_scores<Cfg>(regs, q_frag, my_lut, s);
      float k_scale[4], v_scale[4], v_min[4];  // of keys 2t, 2t + 1, 8 + 2t, 9 + 2t
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const float2 kn = __half22float2(bits_half2(regs.kn[j >> 1]));
        k_scale[j] = Cfg::kKeyBits == 8 ? 1.0f : (j & 1 ? kn.y : kn.x);
        const float2 sm = __half22float2(bits_half2(regs.vm[j]));  // (scale, minimum)
        v_scale[j] = sm.x;
        v_min[j] = sm.y;
      }
      uint32_t pf[4];
      tq_probabilities<D>(a, t, key0, s, k_scale, v_scale, v_min, row_scale, row_qpos, row_slope, unit, st,
                          lane, v_min_sum, pf);
      tq_pv<Cfg>(regs, pf, st);
    }
  };
  // With the step's raw K/V, the tiles from the one holding position t.ctx on hold raw keys: the code path
  // stops before them.
  const int coded_hi = kRaw ? min(t.tile_hi, max(t.tile_lo, max(0, t.ctx - t.kv_begin) / BN)) : t.tile_hi;
  // The next tile's codes are requested before this one is computed: their latency hides behind it.
  // (Two buffers used in turn without the copy, the loop unrolled by two, spilled more at head dim 128.)
  // At head dim 256, Q and O alone take 192 registers: no second buffer (it spilled 440 bytes); the warps of
  // the other CTA on the SM hide the loads instead.
  if constexpr (Cfg::kPrefetch) {
    if (t.tile_lo < coded_hi) load(t.tile_lo, cur);
    for (int tile = t.tile_lo; tile < coded_hi; ++tile) {
      if (tile + 1 < coded_hi) load(tile + 1, next);
      attend(tile, cur);
      cur = next;
    }
  } else {
    for (int tile = t.tile_lo; tile < coded_hi; ++tile) {
      load(tile, cur);
      attend(tile, cur);
    }
  }
  if constexpr (kRaw) {
    for (int tile = coded_hi; tile < t.tile_hi; ++tile) {
      attend_mixed_tile<Cfg>(p, t, table, kv_head, key0_of(tile), lane, q_frag, my_lut, row_scale, row_qpos,
                             row_slope, unit, st, v_min_sum);
    }
  }

  // The minima's share, summed over the quad's keys, joins every column of its row.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    v_min_sum[i] += __shfl_xor_sync(0xffffffffu, v_min_sum[i], 1);
    v_min_sum[i] += __shfl_xor_sync(0xffffffffu, v_min_sum[i], 2);
  }
#pragma unroll
  for (int dt = 0; dt < D / 8; ++dt) {
    st.o[dt][0] += v_min_sum[0];
    st.o[dt][1] += v_min_sum[0];
    st.o[dt][2] += v_min_sum[1];
    st.o[dt][3] += v_min_sum[1];
  }
  __syncthreads();  // every warp is done with the tables: the staging takes their memory
  merge_warps_and_store<T, D, BM, Cfg::kWarps, Cfg::kThreads, TQOStagingFor<D>>(
      u, t, kv_head, segment, st, unit, reinterpret_cast<float*>(tq_smem), s_ml, 0, wn,
      [] { __syncthreads(); });
}

/// q' = R q (fp8 keys: q) of every (token, query head) row, divided by the power of two 2^E that brings its
/// largest magnitude into [0.5, 1), stored as fp16 with 2^E beside it. One warp per row.
template <typename T, int kHeadDim>
__global__ void __launch_bounds__(128)
    tq_rotate_queries_kernel(const __grid_constant__ kernels::AttentionArgs a, int64_t rows,
                             const __grid_constant__ TurboQuantTables tab, int rotate, __half* q_rot,
                             float* q_row_scale) {
  __shared__ float s_y[4][kHeadDim];
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * 4 + w;
  if (row >= rows) return;
  const int64_t token = row / a.num_q_heads;
  const int head = static_cast<int>(row % a.num_q_heads);
  const T* q = static_cast<const T*>(a.q) + token * a.q_stride_token + head * a.q_stride_head;
  float* y = s_y[w];
  for (int j = lane; j < kHeadDim; j += 32) {
    const float x = static_cast<float>(q[j]);
    y[j] = rotate && (tab.negative[j >> 5] >> (j & 31) & 1u) ? -x : x;
  }
  if (rotate) {
    hadamard_butterflies_warp(y, kHeadDim, tab.hadamard_block, lane);
  } else {
    __syncwarp();
  }
  const float norm = rotate ? tab.hadamard_norm : 1.0f;
  float peak = 0.0f;
  for (int j = lane; j < kHeadDim; j += 32) peak = fmaxf(peak, fabsf(y[j] * norm));
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) peak = fmaxf(peak, __shfl_xor_sync(0xffffffffu, peak, m));
  int e = 0;
  if (peak > 0.0f && isfinite(peak)) frexpf(peak, &e);  // peak = f 2^e, f in [0.5, 1)
  const float down = ldexpf(norm, -e);
  for (int j = lane; j < kHeadDim; j += 32) q_rot[row * kHeadDim + j] = __float2half_rn(y[j] * down);
  if (lane == 0) q_row_scale[row] = ldexpf(1.0f, e);
}

}  // namespace pagedattn::cuda
