// The math the mma.sync attention kernels share (unified_kernel.cuh, decode_sm90_kernel.cuh): one warp's 16
// packed query rows against its keys of a KV tile in shared memory (S = QK^T, logits, online softmax,
// O += PV), and the epilogue that merges the key-splitting warps' softmax states and writes each row's O and
// LSE (or its segment's partials). The kernels differ only in how a tile sits in shared memory (padded rows
// filled by cp.async, or 128-byte swizzled panels filled by TMA): they pass the element addressing in.
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "cuda/attention/kv_format.cuh"
#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/query_tile.cuh"
#include "cuda/attention/unified_params.h"

namespace pagedattn::cuda {

/// One warp's running softmax state: 16 rows x kHeadDim of O in mma C fragments (rows g and g + 8 of the
/// thread's quad), the rows' max (in logit units, query_tile.cuh) and the thread's share of their sums.
template <int kHeadDim>
struct WarpSoftmaxState {
  float o[kHeadDim / 8][4];
  float row_max[2];
  float row_sum[2];

  __device__ __forceinline__ void clear() {
#pragma unroll
    for (int i = 0; i < kHeadDim / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
    row_max[0] = row_max[1] = -INFINITY;
    row_sum[0] = row_sum[1] = 0.0f;
  }
};

/// Copies the tile's Q rows into shared memory (row-major, row stride `stride` elements) with cp.async;
/// rows past rows_valid are zero. Called by kThreads threads, `thread` = 0 .. kThreads - 1; the caller
/// commits and waits.
template <typename T, int kHeadDim, int kBlockM, int kThreads>
__device__ __forceinline__ void load_q_tile_async(const UnifiedParams& p, const QueryTile& t, int kv_head,
                                                  T* sQ, int stride, int thread) {
  constexpr int kChunks = kHeadDim / 8;
  const auto& a = p.attn;
  const T* q_base = static_cast<const T*>(a.q);
  for (int c = thread; c < kBlockM * kChunks; c += kThreads) {
    const int r = c / kChunks, ch = c % kChunks;
    const T* src = q_base;
    int bytes = 0;
    if (r < t.rows_valid) {
      int token, head;
      t.row_target(r, p.group, kv_head, token, head);
      src = q_base + token * a.q_stride_token + head * a.q_stride_head + ch * 8;
      bytes = 16;
    }
    cp_async_16(sQ + r * stride + ch * 8, src, bytes);
  }
}

/// The A fragments of a warp's 16 query rows (ldmatrix from a row-major tile; q_at(row, col) = address).
template <int kHeadDim, typename QAt>
__device__ __forceinline__ void load_q_fragments(uint32_t (&q_frag)[kHeadDim / 16][4], QAt q_at, int lane) {
#pragma unroll
  for (int ks = 0; ks < kHeadDim / 16; ++ks) {
    const int r = (lane & 7) + ((lane >> 3) & 1) * 8;
    const int col = ks * 16 + (lane >> 4) * 8;
    ldmatrix_x4(q_frag[ks], q_at(r, col));
  }
}

/// One warp's scores of a KV tile (s: kNTiles n8 tiles of mma C fragments, keys key0 + nt * 8 + 2 * (lane
/// & 3) + {0, 1}) -> the probabilities P V takes: the K scale, logits in the log2 domain (scale, soft-cap,
/// ALiBi, mask), the online softmax update of st (O rescaled when a row max moves), then the V scale.
template <int kHeadDim, int kNTiles, typename Scales>
__device__ __forceinline__ void scores_to_probabilities(const kernels::AttentionArgs& a,
                                                        float (&s)[kNTiles][4], int key0, bool full_tile,
                                                        const int (&row_qpos)[2], const float (&row_slope)[2],
                                                        float unit, WarpSoftmaxState<kHeadDim>& st, int lane,
                                                        Scales scales) {
  const int t4 = lane & 3;
  if constexpr (Scales::kActive) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      const float k0 = scales.k(nt * 8 + 2 * t4), k1 = scales.k(nt * 8 + 2 * t4 + 1);
      s[nt][0] *= k0;
      s[nt][1] *= k1;
      s[nt][2] *= k0;
      s[nt][3] *= k1;
    }
  }

  float tile_max[2] = {-INFINITY, -INFINITY};
  scores_to_logits<kNTiles>(a, &s[0][0], key0, t4, row_qpos, row_slope, full_tile, tile_max);
  float rescale[2];
  online_softmax_step<kNTiles>(&s[0][0], tile_max, unit, st.row_max, st.row_sum, rescale);
  if (o_needs_rescale(rescale)) {
#pragma unroll
    for (int dt = 0; dt < kHeadDim / 8; ++dt) {
      st.o[dt][0] *= rescale[0];
      st.o[dt][1] *= rescale[0];
      st.o[dt][2] *= rescale[1];
      st.o[dt][3] *= rescale[1];
    }
  }

  if constexpr (Scales::kActive) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
      const float v0 = scales.v(nt * 8 + 2 * t4), v1 = scales.v(nt * 8 + 2 * t4 + 1);
      s[nt][0] *= v0;
      s[nt][1] *= v1;
      s[nt][2] *= v0;
      s[nt][3] *= v1;
    }
  }
}

/// One warp, one KV tile: its 16 rows against kWarpKeys keys from key0. k_at(n, col) / v_at(n, col) give
/// the shared-memory address of the 8 elements (col .. col + 7) of the warp's key n. full_tile: no key of
/// the warp's range is masked for any row (the mask is skipped). scales (kv_format.cuh): a quantized cache's
/// dequantization, applied in fp32 to each key's scores (K scale) and, after the softmax statistics, to its
/// probabilities (V scale): sum_n p_n (s_n v_n) = sum_n (p_n s_n) v_n.
template <typename T, int kHeadDim, int kWarpKeys, typename KAt, typename VAt, typename Scales = NoKVScales>
__device__ __forceinline__ void attend_kv_tile(const kernels::AttentionArgs& a,
                                               const uint32_t (&q_frag)[kHeadDim / 16][4], KAt k_at, VAt v_at,
                                               int key0, bool full_tile, const int (&row_qpos)[2],
                                               const float (&row_slope)[2], float unit,
                                               WarpSoftmaxState<kHeadDim>& st, int lane, Scales scales = {}) {
  constexpr int kNTiles = kWarpKeys / 8;  // n8 score tiles
  constexpr int kDTiles = kHeadDim / 8;   // n8 output tiles
  static_assert(kWarpKeys % 16 == 0, "a warp's keys must form whole k16 steps of P V");

  // S = Q K^T for 16 rows x kWarpKeys keys.
  float s[kNTiles][4];
#pragma unroll
  for (int nt = 0; nt < kNTiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
  for (int ks = 0; ks < kHeadDim / 16; ++ks) {
#pragma unroll
    for (int nt = 0; nt < kNTiles; nt += 2) {
      uint32_t kf[4];
      const int n = nt * 8 + (lane & 7) + (lane >> 4) * 8;
      const int col = ks * 16 + ((lane >> 3) & 1) * 8;
      ldmatrix_x4(kf, k_at(n, col));
      Mma<T>::run(s[nt], q_frag[ks], kf[0], kf[1]);
      Mma<T>::run(s[nt + 1], q_frag[ks], kf[2], kf[3]);
    }
  }

  scores_to_probabilities<kHeadDim, kNTiles>(a, s, key0, full_tile, row_qpos, row_slope, unit, st, lane,
                                             scales);

  // O += P V: two score tiles (16 keys) form one A fragment.
#pragma unroll
  for (int kk = 0; kk < kNTiles / 2; ++kk) {
    uint32_t pf[4];
    pf[0] = Mma<T>::pack(s[2 * kk][0], s[2 * kk][1]);
    pf[1] = Mma<T>::pack(s[2 * kk][2], s[2 * kk][3]);
    pf[2] = Mma<T>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    pf[3] = Mma<T>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int dt = 0; dt < kDTiles; dt += 2) {
      uint32_t vf[4];
      const int n = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
      const int col = dt * 8 + (lane >> 4) * 8;
      ldmatrix_x4_trans(vf, v_at(n, col));
      Mma<T>::run(st.o[dt], pf, vf[0], vf[1]);
      Mma<T>::run(st.o[dt + 1], pf, vf[2], vf[3]);
    }
  }
}

/// How the epilogue stages a warp's O accumulators (fp32, row-major (row, head-dim column) of kHeadDim per
/// row): store() writes the thread's rows g and g + 8 (o0, o1: their staging rows), and chunk(row, c) is
/// where the 4 columns 4c .. 4c + 3 of a row sit (in float4 units). Here the mma C layout as it is: element n
/// of n8 tile dt is column dt * 8 + n. Code tiles (code_tile_math.cuh) hold other columns and swizzle.
struct NaturalOStaging {
  template <int kHeadDim>
  __device__ __forceinline__ static void store(const WarpSoftmaxState<kHeadDim>& st, float* o0, float* o1,
                                               int lane) {
    const int t4 = lane & 3;
#pragma unroll
    for (int dt = 0; dt < kHeadDim / 8; ++dt) {
      const int col = dt * 8 + 2 * t4;
      *reinterpret_cast<float2*>(o0 + col) = make_float2(st.o[dt][0], st.o[dt][1]);
      *reinterpret_cast<float2*>(o1 + col) = make_float2(st.o[dt][2], st.o[dt][3]);
    }
  }
  __device__ __forceinline__ static int chunk(int, int c) {
    return c;
  }
};

/// Shared memory the epilogue stages its fp32 partial states in: (kWarpsN, kBlockM, kHeadDim).
template <int kHeadDim, int kBlockM, int kWarpsN>
constexpr int kEpilogueBytes = kWarpsN* kBlockM* kHeadDim * 4;

/// The epilogue of a CTA whose kWarpsM x kWarpsN warps split rows (wm) and keys (wn): merges the kWarpsN
/// states of each row through shared memory (s_o: kEpilogueBytes, s_ml: (kWarpsN, kBlockM, 2)) and writes
/// the row's O and LSE, or its segment's partials for the merge kernel. Called by the kThreads computing
/// threads (ids 0 .. kThreads - 1); sync() is a barrier among exactly them.
template <typename T, int kHeadDim, int kBlockM, int kWarpsN, int kThreads,
          typename OStaging = NaturalOStaging, typename Sync>
__device__ __forceinline__ void merge_warps_and_store(const UnifiedParams& p, const QueryTile& t, int kv_head,
                                                      int segment, WarpSoftmaxState<kHeadDim>& st, float unit,
                                                      float* s_o, float (*s_ml)[kBlockM][2], int wm, int wn,
                                                      Sync sync) {
  constexpr int D = kHeadDim, BM = kBlockM;
  const int tid = threadIdx.x, lane = tid & 31, g = lane >> 2, t4 = lane & 3;
  const auto& a = p.attn;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    st.row_sum[i] += __shfl_xor_sync(0xffffffffu, st.row_sum[i], 1);
    st.row_sum[i] += __shfl_xor_sync(0xffffffffu, st.row_sum[i], 2);
  }
  {
    const int r = wm * 16 + g;
    if (t4 == 0) {
      s_ml[wn][r][0] = st.row_max[0] * unit;
      s_ml[wn][r][1] = st.row_sum[0];
      s_ml[wn][r + 8][0] = st.row_max[1] * unit;
      s_ml[wn][r + 8][1] = st.row_sum[1];
    }
    float* o0 = s_o + (wn * BM + r) * D;
    OStaging::template store<D>(st, o0, o0 + 8 * D, lane);
  }
  sync();

  constexpr int kVec = 4;  // output elements per thread per step
  for (int c = tid; c < t.rows_valid * (D / kVec); c += kThreads) {
    const int r = c / (D / kVec), col = (c % (D / kVec)) * kVec;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarpsN; ++w) m = fmaxf(m, s_ml[w][r][0]);
    const float base = m == -INFINITY ? 0.0f : m;
    float l = 0.0f;
    float o[kVec] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int w = 0; w < kWarpsN; ++w) {
      const float f = exp2f(s_ml[w][r][0] - base);
      l += s_ml[w][r][1] * f;
      const float4 v =
          *reinterpret_cast<const float4*>(s_o + (w * BM + r) * D + 4 * OStaging::chunk(r, col / 4));
      o[0] += v.x * f;
      o[1] += v.y * f;
      o[2] += v.z * f;
      o[3] += v.w * f;
    }
    int token, head;
    t.row_target(r, p.group, kv_head, token, head);
    if (p.num_segments > 1) {
      store_partial<D, kVec>(p, token, head, segment, col, o, col == 0, m, l);
      continue;
    }
    float lse;
    const float inv = finalize_row(sink_log2(a, head), m, l, lse);
    T* dst = static_cast<T*>(a.o) + token * a.o_stride_token + head * a.o_stride_head + col;
    T packed[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) packed[e] = from_float<T>(o[e] * inv);
    *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(packed);
    if (a.lse != nullptr && col == 0) a.lse[token * a.lse_stride_token + head * a.lse_stride_head] = lse;
  }
}

/// Query position and ALiBi slope of the two rows (g, g + 8 of the warp's 16-row block wm) a thread holds.
__device__ __forceinline__ void row_facts(const UnifiedParams& p, const QueryTile& t, int kv_head, int wm,
                                          int lane, int (&row_qpos)[2], float (&row_slope)[2]) {
  const auto& a = p.attn;
  const int g = lane >> 2;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int r = wm * 16 + g + 8 * i;
    const bool valid = r < t.rows_valid;
    row_qpos[i] = t.row_qpos(r, p.group);
    row_slope[i] = (a.alibi_slopes != nullptr && valid)
                       ? a.alibi_slopes[kv_head * a.group_size + t.row_head_in_group(r, p.group)]
                       : 0.0f;
  }
}

/// Whether no key of [key0, key0 + keys) is masked for any row of the tile (causal and window).
__device__ __forceinline__ bool keys_unmasked(const kernels::AttentionArgs& a, const QueryTile& t, int key0,
                                              int keys) {
  return key0 + keys - 1 <= t.qpos_min && (a.window_left == 0 || key0 >= t.qpos_max - a.window_left);
}

}  // namespace pagedattn::cuda
