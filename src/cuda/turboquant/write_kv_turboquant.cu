// write_kv into a TurboQuant cache, one warp per (token, kv head), bit-identical to the CPU writer
// (src/turboquant/quantize.cpp) by doing the same arithmetic in the same order:
//  - key (3-4 bits): |k| and the centroid norm as double sums in the warp order both sides use (32 strided
//    partial sums, then halving), x = k * (1 / (|k| + 1e-8)), the sign flip, the normalized Walsh-Hadamard
//    butterflies in the CPU's pair order (each pair combined once, so the order of pairs does not matter),
//    the bucket as the count of midpoints <= y, n' = |k| / sqrt(sum c^2) in double, fp16 bits as the CPU
//    rounds them (NaN as sign | 0x7e00);
//  - key (8 bits, tq_k8v4): fp8 e4m3, round to nearest even, saturating, NaN as sign | 0x7f;
//  - value: min / max with the CPU's comparisons (a NaN leaves them alone, then makes scale and minimum NaN
//    and the codes 0), s = max((hi - lo) / levels, 1e-8), codes floor((x - lo) / s + 0.5) clamped.
// IEEE division and square root (no fast-math), and no multiply-add pair that the compiler could fuse.
// Codes are packed LSB first from a per-warp byte buffer in shared memory, each lane assembling whole bytes.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cmath>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/cuda_check.h"
#include "cuda/turboquant/hadamard_warp.cuh"
#include "cuda/turboquant/tq_tables.h"
#include "cuda/turboquant/write_kv_turboquant.h"
#include "cuda/write_kv_rows.cuh"
#include "pagedattn/error.h"
#include "pagedattn/turboquant.h"

namespace pagedattn::cuda {
namespace {

constexpr int kMaxDim = 256;

// fp16 bits as pagedattn/dtype.h's float_to_fp16_bits gives them (the hardware rounds alike; NaN differs).
__device__ __forceinline__ uint16_t fp16_bits(float f) {
  if (isnan(f)) return static_cast<uint16_t>((__float_as_uint(f) >> 16 & 0x8000u) | 0x7e00u);
  return __half_as_ushort(__float2half_rn(f));
}

// fp8 e4m3 bits as float_to_fp8e4m3_bits gives them.
__device__ __forceinline__ uint8_t fp8_e4m3_bits(float f) {
  if (isnan(f)) return static_cast<uint8_t>((__float_as_uint(f) >> 24 & 0x80u) | 0x7fu);
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(f, __NV_SATFINITE, __NV_E4M3));
}

// The warp's double sum of one term per lane-strided element, in the order the CPU writer uses.
__device__ __forceinline__ double warp_sum(double partial) {
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) partial = partial + __shfl_xor_sync(0xffffffffu, partial, m);
  return partial;
}

// Packs the warp's `n` b-bit codes from `codes` into `dst` (LSB first), each lane writing whole bytes.
__device__ __forceinline__ void pack_codes_warp(const uint8_t* codes, int n, int bits, uint8_t* dst,
                                                int lane) {
  const int bytes = n * bits / 8;
  for (int i = lane; i < bytes; i += 32) {
    uint32_t out = 0;
    for (int j = (8 * i) / bits; j < n && j * bits < 8 * i + 8; ++j) {
      const int shift = j * bits - 8 * i;
      const uint32_t c = codes[j];
      out |= shift >= 0 ? c << shift : c >> -shift;
    }
    dst[i] = static_cast<uint8_t>(out & 0xffu);
  }
}

__device__ void quantize_key(const kernels::PagedKVArgs& kv, const kernels::WriteKVArgs& src, int64_t k_src,
                             const TurboQuantTables& tab, int64_t block, int32_t slot, int head, float* y,
                             uint8_t* idx, int lane) {
  const int d = kv.head_dim, bits = kv.tq_key_bits;
  uint8_t* codes = const_cast<uint8_t*>(kv.k.at<uint8_t>(block, slot, head));
  if (bits == 8) {
    for (int j = lane; j < d; j += 32)
      codes[j] = fp8_e4m3_bits(load_float(src.key, src.src_dtype, k_src + j));
    return;
  }
  double sq = 0.0;
  for (int j = lane; j < d; j += 32) {
    const float x = load_float(src.key, src.src_dtype, k_src + j);
    y[j] = x;
    sq = sq + static_cast<double>(x) * static_cast<double>(x);  // exact product: no fused rounding to differ
  }
  const float n = static_cast<float>(sqrt(warp_sum(sq)));
  const float inv = 1.0f / (n + 1e-8f);
  __syncwarp();
  for (int j = lane; j < d; j += 32) {
    const float x = __fmul_rn(y[j], inv);
    y[j] = (tab.negative[j >> 5] >> (j & 31) & 1u) ? -x : x;
  }
  hadamard_butterflies_warp(y, d, tab.hadamard_block, lane);
  const int levels = 1 << bits;
  double cn = 0.0;
  for (int j = lane; j < d; j += 32) {
    const float v = __fmul_rn(y[j], tab.hadamard_norm);
    int b = 0;
    for (int m = 0; m < levels - 1; ++m) b += tab.midpoints[m] <= v ? 1 : 0;  // NaN: 0
    idx[j] = static_cast<uint8_t>(b);
    const double c = tab.centroids[b];
    cn = cn + c * c;
  }
  const double cnorm = warp_sum(cn);
  __syncwarp();
  pack_codes_warp(idx, d, bits, codes, lane);
  if (lane == 0) {
    // A NaN norm is the positive quiet NaN on both sides, whatever NaN the arithmetic produced.
    const float corrected = static_cast<float>(static_cast<double>(n) / sqrt(cnorm));
    *const_cast<uint16_t*>(kv.k_meta.at<uint16_t>(block, slot, head)) =
        isnan(corrected) ? uint16_t{0x7e00} : fp16_bits(fminf(corrected, 65504.0f));
  }
}

__device__ void quantize_value(const kernels::PagedKVArgs& kv, const kernels::WriteKVArgs& src, int64_t v_src,
                               int64_t block, int32_t slot, int head, float* x, uint8_t* q, int lane) {
  const int d = kv.head_dim, bits = kv.tq_value_bits, levels = (1 << bits) - 1;
  // The CPU's std::min / std::max over j = 0, 1, ... keep the first of equal extremes (-0 and +0 compare
  // equal) and ignore NaN: the same here, the lanes' results combined by (value, first index).
  bool nan = false;
  float lo = INFINITY, hi = -INFINITY;
  int lo_j = d, hi_j = d;
  for (int j = lane; j < d; j += 32) {
    float v = load_float(src.value, src.src_dtype, v_src + j);
    nan = nan || isnan(v);
    v = v < -65504.0f ? -65504.0f : (65504.0f < v ? 65504.0f : v);  // std::clamp: NaN passes through
    x[j] = v;
    if (v < lo) lo = v, lo_j = j;
    if (hi < v) hi = v, hi_j = j;
  }
#pragma unroll
  for (int m = 16; m >= 1; m >>= 1) {
    const float olo = __shfl_xor_sync(0xffffffffu, lo, m), ohi = __shfl_xor_sync(0xffffffffu, hi, m);
    const int olo_j = __shfl_xor_sync(0xffffffffu, lo_j, m), ohi_j = __shfl_xor_sync(0xffffffffu, hi_j, m);
    if (olo < lo || (olo == lo && olo_j < lo_j)) lo = olo, lo_j = olo_j;
    if (hi < ohi || (ohi == hi && ohi_j < hi_j)) hi = ohi, hi_j = ohi_j;
  }
  nan = __any_sync(0xffffffffu, nan);
  uint16_t* meta = const_cast<uint16_t*>(kv.v_meta.at<uint16_t>(block, slot, head));
  const float s_raw = __fdiv_rn(__fsub_rn(hi, lo), static_cast<float>(levels));
  const float s = s_raw < 1e-8f ? 1e-8f : s_raw;
  __syncwarp();
  for (int j = lane; j < d; j += 32) {
    float code = 0.0f;
    if (!nan) {
      const float t = floorf(__fadd_rn(__fdiv_rn(__fsub_rn(x[j], lo), s), 0.5f));
      code = t < 0.0f ? 0.0f : (static_cast<float>(levels) < t ? static_cast<float>(levels) : t);
    }
    q[j] = static_cast<uint8_t>(code);
  }
  __syncwarp();
  pack_codes_warp(q, d, bits, const_cast<uint8_t*>(kv.v.at<uint8_t>(block, slot, head)), lane);
  if (lane == 0) {
    meta[0] = nan ? fp16_bits(NAN) : fp16_bits(s);
    meta[1] = nan ? fp16_bits(NAN) : fp16_bits(lo);
  }
}

__global__ void __launch_bounds__(32 * kWriteWarps)
    write_kv_turboquant_kernel(const __grid_constant__ kernels::PagedKVArgs kv,
                               const __grid_constant__ kernels::WriteKVArgs src,
                               const __grid_constant__ TurboQuantTables tab) {
  allow_dependent_launch();
  __shared__ float s_x[kWriteWarps][kMaxDim];
  __shared__ uint8_t s_codes[kWriteWarps][kMaxDim];
  int64_t token = 0, block = 0;
  int head = 0;
  int32_t slot = 0;
  if (!warp_item(kv, src, token, head, block, slot)) return;
  const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t k_src = token * src.key_stride_token + head * src.key_stride_head;
  const int64_t v_src = token * src.value_stride_token + head * src.value_stride_head;
  quantize_key(kv, src, k_src, tab, block, slot, head, s_x[w], s_codes[w], lane);
  __syncwarp();  // the buffers are reused for the value
  quantize_value(kv, src, v_src, block, slot, head, s_x[w], s_codes[w], lane);
}

}  // namespace

TurboQuantTables make_turboquant_tables(int head_dim, int key_bits) {
  TurboQuantTables tab{};
  if (key_bits == 8) return tab;
  const tq::Codebook& cb = tq::codebook(head_dim, key_bits);
  const tq::Rotation& rot = tq::rotation(head_dim);
  for (size_t i = 0; i < cb.midpoints.size(); ++i) tab.midpoints[i] = cb.midpoints[i];
  for (size_t i = 0; i < cb.centroids.size(); ++i) tab.centroids[i] = cb.centroids[i];
  for (int i = 0; i < head_dim; ++i) {
    if (rot.signs[static_cast<size_t>(i)] < 0) tab.negative[i >> 5] |= 1u << (i & 31);
  }
  tab.hadamard_block = rot.block;
  tab.hadamard_norm = 1.0f / std::sqrt(static_cast<float>(rot.block));  // as quantize.cpp's fwht_blocks
  return tab;
}

void write_kv_turboquant(const core::WriteKVProblem& p, cudaStream_t stream) {
  const int d = p.kv.head_dim;
  PA_CHECK(d <= kMaxDim, "TurboQuant head dims are at most ", kMaxDim, ", got ", d);
  const TurboQuantTables tab = make_turboquant_tables(d, p.kv.tq_key_bits);
  const int64_t items = p.src.num_tokens * p.kv.num_kv_heads;
  if (items == 0) return;
  const unsigned blocks = static_cast<unsigned>((items + kWriteWarps - 1) / kWriteWarps);
  write_kv_turboquant_kernel<<<blocks, 32 * kWriteWarps, 0, stream>>>(p.kv, p.src, tab);
  PA_CUDA_CHECK_LAUNCH("write_kv_turboquant_kernel");
}

}  // namespace pagedattn::cuda
