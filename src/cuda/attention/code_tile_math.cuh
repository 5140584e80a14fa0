// One warp's 16 keys of a KV tile of 1-byte codes (fp8, int8), read from the TMA stage (128-byte swizzled
// panels of codes) straight into mma.sync fragments: no converted copy in shared memory, no ldmatrix.
//
// Why: the first fp8 decode (bench/NOTES.md version 21) converted each warp's rows into bf16 panels (shared
// loads, conversions, shared stores, a warp barrier) and then read them again with ldmatrix: a long chain of
// dependent shared-memory round trips per tile on a warp that has no other warp on its scheduler, so the
// tile took as long as a bf16 tile of twice the bytes (0.87x bf16's time where half was the aim).
//
// How the fragments line up. A dot product does not care in which order its terms are summed, and P V does
// not care in which order its keys are, as long as both operands agree:
//  - S = Q K^T: lane (g = lane / 4, t = lane % 4) holds key g of each n8 block; k16 step ks takes the 4 codes
//    at byte columns (ks / 8) * 128 + 32 t + 4 (ks % 8) + {0, 1, 2, 3} as its k slots {2t, 2t+1, 2t+8, 2t+9}.
//    One 16-byte shared load is four k steps; Q's A fragments are gathered with the same columns
//    (load_q_fragments_for_codes), once per work item.
//  - O += P V: the P fragment holds keys {2t, 2t+1, 8+2t, 9+2t} of the 16 (the S accumulators as they are).
//    Lane g takes V's head-dim columns j * 128 + 16 g + {0 .. 15} of panel j as the n index g of n8 tiles
//    dt = 16 j + {0 .. 15}: one 16-byte load per key and panel, and byte permutes pair two keys' codes into
//    a B fragment. O's columns come out permuted, which the epilogue's staging undoes (CodeOStaging).
// Both access patterns hit 8 distinct 16-byte bank groups per quarter warp under the 128-byte swizzle.
//
// The conversion is exact (codes2_to in kv_format.cuh); the scales (per KV head for fp8, per token for int8)
// are applied to the fp32 scores and probabilities as for every quantized tile (scores_to_probabilities).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention/kv_format.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/warp_tile_math.cuh"

namespace pagedattn::cuda {

/// The 16 bytes at byte column 16 * col_unit of `row` in a tile of 128-byte swizzled code panels (kBlockN
/// rows per panel; the TMA SWIZZLE_128B layout: 16-byte unit u of row r sits at unit u ^ (r % 8)).
template <int kBlockN>
__device__ __forceinline__ uint4 load_code_unit(const unsigned char* tile, int row, int col_unit) {
  const int panel = col_unit >> 3, unit = col_unit & 7;
  return *reinterpret_cast<const uint4*>(tile + panel * kBlockN * 128 + row * 128 +
                                         ((unit ^ (row & 7)) << 4));
}

/// The epilogue staging of code tiles' O (warp_tile_math.cuh's NaturalOStaging is the plain one). Lane (g, t)
/// holds, for rows g and g + 8, columns 128 j + 32 t + 16 e + (dt % 16) in element e of n8 tile dt = 16 j +
/// (dt % 16): 32 contiguous columns per panel j, written as float4s. Unswizzled, the 8 lanes of each quarter
/// warp would write one 16-byte bank group (rows D floats apart, t 32 floats apart); the float4 chunk c of
/// row r goes to chunk c ^ ((((c >> 3) & 3) << 1) | (r & 1)) instead, 8 distinct groups for the 8 lanes.
struct CodeOStaging {
  __device__ __forceinline__ static int chunk(int row, int c) {
    return c ^ ((((c >> 3) & 3) << 1) | (row & 1));
  }
  template <int kHeadDim>
  __device__ __forceinline__ static void store(const WarpSoftmaxState<kHeadDim>& st, float* o0, float* o1,
                                               int lane) {
    const int g = lane >> 2, t = lane & 3;
#pragma unroll
    for (int j = 0; j < kHeadDim / 128; ++j) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int dt = 16 * j + 4 * q, c = chunk(g, 32 * j + 8 * t + 4 * e + q);
          *reinterpret_cast<float4*>(o0 + 4 * c) =
              make_float4(st.o[dt][e], st.o[dt + 1][e], st.o[dt + 2][e], st.o[dt + 3][e]);
          *reinterpret_cast<float4*>(o1 + 4 * c) =
              make_float4(st.o[dt][2 + e], st.o[dt + 1][2 + e], st.o[dt + 2][2 + e], st.o[dt + 3][2 + e]);
        }
      }
    }
  }
};

/// Q's A fragments in the code tiles' k order (above), from a row-major tile in shared memory (row stride
/// `stride` elements).
template <typename T, int kHeadDim>
__device__ __forceinline__ void load_q_fragments_for_codes(uint32_t (&q_frag)[kHeadDim / 16][4], const T* sQ,
                                                           int stride, int lane) {
  static_assert(kHeadDim % 128 == 0, "code tiles are whole 128-byte panels");
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int ks = 0; ks < kHeadDim / 16; ++ks) {
    const int col = (ks >> 3) * 128 + 32 * t + 4 * (ks & 7);
    const uint2 r0 = *reinterpret_cast<const uint2*>(sQ + g * stride + col);
    const uint2 r1 = *reinterpret_cast<const uint2*>(sQ + (g + 8) * stride + col);
    q_frag[ks][0] = r0.x;
    q_frag[ks][1] = r1.x;
    q_frag[ks][2] = r0.y;
    q_frag[ks][3] = r1.y;
  }
}

__device__ __forceinline__ uint32_t word_of(const uint4& u, int w) {
  return w == 0 ? u.x : w == 1 ? u.y : w == 2 ? u.z : u.w;
}

/// S = Q K^T for the warp's 16 rows x its 16 keys (tile rows row0 ..) from the K codes. Two accumulators per
/// n8 block (even and odd k steps) halve the dependent MMA chain where registers allow. The codes are read 16
/// bytes (four k steps) at a time inside the loop, so that at head dim 256 they need not all be live at once.
template <typename T, typename Fmt, int kHeadDim, int kBlockN>
__device__ __forceinline__ void code_scores(const unsigned char* k_tile, int row0,
                                            const uint32_t (&q_frag)[kHeadDim / 16][4], float (&s)[2][4],
                                            int lane) {
  // Not at head dim 256, where Q and O fill the registers already.
  constexpr bool kSplit = kHeadDim <= 128;
  const int g = lane >> 2, t = lane & 3;
  float acc[2][2][4];
#pragma unroll
  for (int nb = 0; nb < 2; ++nb)
#pragma unroll
    for (int h = 0; h < 2; ++h) acc[nb][h][0] = acc[nb][h][1] = acc[nb][h][2] = acc[nb][h][3] = 0.0f;
#pragma unroll
  for (int u = 0; u < kHeadDim / 64; ++u) {  // 16-byte units of the lane's columns: 4 k steps each
    uint4 k[2];
#pragma unroll
    for (int nb = 0; nb < 2; ++nb)
      k[nb] = load_code_unit<kBlockN>(k_tile, row0 + nb * 8 + g, (u >> 1) * 8 + 2 * t + (u & 1));
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int ks = 4 * u + w;
#pragma unroll
      for (int nb = 0; nb < 2; ++nb) {
        const uint32_t word = word_of(k[nb], w);
        Mma<T>::run(acc[nb][kSplit ? ks & 1 : 0], q_frag[ks], codes2_to<T, Fmt>(word),
                    codes2_to<T, Fmt>(word >> 16));
      }
    }
  }
#pragma unroll
  for (int nb = 0; nb < 2; ++nb)
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nb][e] = acc[nb][0][e] + acc[nb][1][e];
}

/// O += P V for the warp's 16 keys (tile rows row0 ..) from the V codes (O's columns as CodeOStaging
/// describes), one 128-column panel at a time. `release` runs once every code is in registers (the stage may
/// be refilled).
template <typename T, typename Fmt, int kHeadDim, int kBlockN, typename Release>
__device__ __forceinline__ void code_pv(const unsigned char* v_tile, int row0, const float (&s)[2][4],
                                        WarpSoftmaxState<kHeadDim>& st, int lane, Release release) {
  constexpr int kPanels = kHeadDim / 128;
  const int g = lane >> 2, t = lane & 3;
  uint32_t pf[4];
  pf[0] = Mma<T>::pack(s[0][0], s[0][1]);
  pf[1] = Mma<T>::pack(s[0][2], s[0][3]);
  pf[2] = Mma<T>::pack(s[1][0], s[1][1]);
  pf[3] = Mma<T>::pack(s[1][2], s[1][3]);
#pragma unroll
  for (int j = 0; j < kPanels; ++j) {
    uint4 v[4];  // keys 2t, 2t+1, 8+2t, 9+2t: columns 16 g .. 16 g + 15 of panel j
#pragma unroll
    for (int i = 0; i < 4; ++i)
      v[i] = load_code_unit<kBlockN>(v_tile, row0 + 2 * t + (i & 1) + 8 * (i >> 1), j * 8 + g);
    if (j + 1 == kPanels) release();
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      // Bytes 4w .. 4w + 3 of the four keys: n8 tiles dt = 16 j + 4 w + {0 .. 3}. A byte permute pairs keys
      // (2t, 2t+1) and (8+2t, 9+2t) column by column: the B fragment's b0 and b1.
      const uint32_t a = word_of(v[0], w), b = word_of(v[1], w);
      const uint32_t c = word_of(v[2], w), d = word_of(v[3], w);
      const uint32_t lo01 = __byte_perm(a, b, 0x5140), hi01 = __byte_perm(a, b, 0x7362);
      const uint32_t lo89 = __byte_perm(c, d, 0x5140), hi89 = __byte_perm(c, d, 0x7362);
      const int dt = 16 * j + 4 * w;
      Mma<T>::run(st.o[dt + 0], pf, codes2_to<T, Fmt>(lo01), codes2_to<T, Fmt>(lo89));
      Mma<T>::run(st.o[dt + 1], pf, codes2_to<T, Fmt>(lo01 >> 16), codes2_to<T, Fmt>(lo89 >> 16));
      Mma<T>::run(st.o[dt + 2], pf, codes2_to<T, Fmt>(hi01), codes2_to<T, Fmt>(hi89));
      Mma<T>::run(st.o[dt + 3], pf, codes2_to<T, Fmt>(hi01 >> 16), codes2_to<T, Fmt>(hi89 >> 16));
    }
  }
}

}  // namespace pagedattn::cuda
