// The unified paged attention kernel: one CTA = one tile of packed query rows (query token x query head of
// one KV head's group) x one KV segment. K/V tiles are gathered through the block table with cp.async into
// double-buffered shared memory, scores and probabilities stay in registers (online softmax), and S = QK^T
// and O += PV run on tensor cores (mma.sync m16n8k16, fp32 accumulation).
//
// Warps form a kWarpsM x kWarpsN grid: kWarpsM warps split the 16-row blocks of the tile, kWarpsN warps split
// the keys of each KV tile (each keeps its own softmax state; the states merge through shared memory at the
// end).
#pragma once

#include <cuda_runtime.h>

#include <cfloat>
#include <cstdint>

#include "cuda/attention/mma_sm80.cuh"
#include "cuda/attention/unified_params.h"

namespace pagedattn::cuda {

constexpr float kLog2e = 1.4426950408889634f;

template <int kHeadDim_, int kWarpsM_, int kWarpsN_, int kBlockN_, int kStages_>
struct UnifiedConfig {
  static constexpr int kStages = kStages_;  // K/V tiles in flight + the one being computed
  static_assert(kStages >= 2, "the pipeline needs at least two stages");
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kWarpsM = kWarpsM_;
  static constexpr int kWarpsN = kWarpsN_;
  static constexpr int kBlockN = kBlockN_;      // keys per KV tile
  static constexpr int kBlockM = 16 * kWarpsM;  // packed query rows per CTA
  static constexpr int kThreads = 32 * kWarpsM * kWarpsN;
  static constexpr int kWarpKeys = kBlockN / kWarpsN;  // keys of a tile each warp scores
  static constexpr int kStride = kHeadDim + 8;  // smem row stride (elements): +16 B avoids bank conflicts
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static_assert(kHeadDim % 16 == 0 && kWarpKeys % 16 == 0, "tile shape must match the m16n8k16 instruction");
  // Shared memory: Q tile, then kStages stages of K and V tiles; the K/V region is reused by the epilogue.
  static constexpr int kQBytes = kBlockM * kStride * 2;
  static constexpr int kKVBytes = kStages * 2 * kBlockN * kStride * 2;
  static constexpr int kMergeBytes = kWarpsN * kBlockM * kHeadDim * 4;
  static_assert(kMergeBytes <= kKVBytes, "epilogue staging must fit in the K/V region");
  static constexpr int kSmemBytes = kQBytes + kKVBytes;
};

/// Index of the sequence owning CTA tile `tile`, or -1: tile_start(s) = floor(qsl[s] * G / kBlockM) + s is
/// non-decreasing and leaves room for every sequence's ceil(query_len * G / kBlockM) tiles.
template <int kBlockM>
__device__ __forceinline__ int find_sequence(const int32_t* qsl, int num_seqs, int group, int tile,
                                             int& first_tile) {
  int lo = 0, hi = num_seqs - 1, found = -1;
  while (lo <= hi) {
    const int mid = (lo + hi) >> 1;
    const int start = static_cast<int>((static_cast<int64_t>(qsl[mid]) * group) / kBlockM) + mid;
    if (start <= tile) {
      found = mid;
      first_tile = start;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads)
    unified_attention_kernel(const __grid_constant__ UnifiedParams p) {
  constexpr int D = Cfg::kHeadDim, BM = Cfg::kBlockM, BN = Cfg::kBlockN, S = Cfg::kStride;
  constexpr int kNTiles = Cfg::kWarpKeys / 8;  // n8 score tiles per warp per KV tile
  constexpr int kDTiles = D / 8;               // n8 output tiles per warp
  extern __shared__ __align__(16) unsigned char smem[];
  T* sQ = reinterpret_cast<T*>(smem);                 // (BM, S)
  T* sK = reinterpret_cast<T*>(smem + Cfg::kQBytes);  // (kStages, BN, S)
  T* sV = sK + Cfg::kStages * BN * S;                 // (kStages, BN, S)
  __shared__ float s_ml[Cfg::kWarpsN][BM][2];

  const auto& kv = p.kv;
  const auto& b = p.batch;
  const auto& a = p.attn;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wm = warp / Cfg::kWarpsN, wn = warp % Cfg::kWarpsN;
  const int G = a.group_size;
  const int kv_head = blockIdx.y, segment = blockIdx.z;

  int first_tile = 0;
  const int seq = find_sequence<BM>(b.query_start_loc, b.num_seqs, G, blockIdx.x, first_tile);
  if (seq < 0) return;
  const int q_begin = b.query_start_loc[seq];
  const int query_len = b.query_start_loc[seq + 1] - q_begin;
  const int seq_len = b.seq_lens[seq];
  const int row0 = (blockIdx.x - first_tile) * BM;  // first packed row (token * G + g) of this tile
  const int rows_total = query_len * G;
  if (row0 >= rows_total) return;
  const int rows_valid = min(BM, rows_total - row0);
  const int ctx = seq_len - query_len;  // position of query token 0 minus 0
  const int qpos_min = ctx + row0 / G;
  const int qpos_max = ctx + (row0 + rows_valid - 1) / G;

  // KV range of the tile, then this segment's share of it (in whole KV tiles).
  const int kv_begin = a.window_left > 0 ? max(0, qpos_min - a.window_left) : 0;
  const int kv_end = qpos_max + 1;
  const int num_kv_tiles = (kv_end - kv_begin + BN - 1) / BN;
  const int tiles_per_segment = (num_kv_tiles + p.num_segments - 1) / p.num_segments;
  const int tile_lo = segment * tiles_per_segment;
  const int tile_hi = min(num_kv_tiles, tile_lo + tiles_per_segment);

  auto out_index = [&](int r, int& token, int& head) {
    const int R = row0 + r;
    token = q_begin + R / G;
    head = kv_head * G + R % G;
  };

  if (tile_lo >= tile_hi) {  // an empty segment: tell the reduce kernel to skip it
    if (p.num_segments > 1) {
      for (int r = tid; r < rows_valid; r += Cfg::kThreads) {
        int token, head;
        out_index(r, token, head);
        float* ml = p.partial_ml +
                    ((static_cast<int64_t>(token) * a.num_q_heads + head) * p.num_segments + segment) * 2;
        ml[0] = -INFINITY;
        ml[1] = 0.0f;
      }
    }
    return;
  }

  // ---- Q tile -> shared memory (rows past rows_valid are zero)
  // --------------------------------------------------
  const T* q_base = static_cast<const T*>(a.q);
  for (int c = tid; c < BM * Cfg::kChunks; c += Cfg::kThreads) {
    const int r = c / Cfg::kChunks, ch = c % Cfg::kChunks;
    const T* src = q_base;
    int bytes = 0;
    if (r < rows_valid) {
      int token, head;
      out_index(r, token, head);
      src = q_base + token * a.q_stride_token + head * a.q_stride_head + ch * 8;
      bytes = 16;
    }
    cp_async_16(sQ + r * S + ch * 8, src, bytes);
  }
  cp_async_commit();

  // ---- K/V tile loader: key positions through the block table; rows at or past seq_len are zero
  // ------------------
  const T* k_base = static_cast<const T*>(kv.k);
  const T* v_base = static_cast<const T*>(kv.v);
  const int32_t* table = b.block_tables + static_cast<int64_t>(seq) * b.block_table_stride;
  auto load_kv_tile = [&](int kv_tile, int stage) {
    const int key0 = kv_begin + kv_tile * BN;
    T* dk = sK + stage * BN * S;
    T* dv = sV + stage * BN * S;
    for (int c = tid; c < BN * Cfg::kChunks; c += Cfg::kThreads) {
      const int n = c / Cfg::kChunks, ch = c % Cfg::kChunks;
      const int pos = key0 + n;
      const T* ksrc = k_base;
      const T* vsrc = v_base;
      int bytes = 0;
      if (pos < seq_len) {
        const int64_t block = table[pos / kv.block_size];
        const int64_t slot = pos % kv.block_size;
        ksrc = k_base + block * kv.k_stride_block + slot * kv.k_stride_token + kv_head * kv.k_stride_head +
               ch * 8;
        vsrc = v_base + block * kv.v_stride_block + slot * kv.v_stride_token + kv_head * kv.v_stride_head +
               ch * 8;
        bytes = 16;
      }
      cp_async_16(dk + n * S + ch * 8, ksrc, bytes);
      cp_async_16(dv + n * S + ch * 8, vsrc, bytes);
    }
  };
  // Prologue: the first kStages - 1 tiles in flight, one commit group each (empty groups keep the count
  // uniform).
#pragma unroll
  for (int st = 0; st < Cfg::kStages - 1; ++st) {
    if (tile_lo + st < tile_hi) load_kv_tile(tile_lo + st, st);
    cp_async_commit();
  }

  // ---- per-thread row facts: this thread holds rows g and g + 8 of its warp's 16-row block
  // ------------------------
  const int g = lane >> 2, t4 = lane & 3;
  int row_qpos[2];
  float row_slope[2];
  for (int i = 0; i < 2; ++i) {
    const int r = wm * 16 + g + 8 * i;
    const bool valid = r < rows_valid;
    row_qpos[i] = valid ? ctx + (row0 + r) / G : -1;  // -1: every key masked
    row_slope[i] = (a.alibi_slopes != nullptr && valid) ? a.alibi_slopes[kv_head * G + (row0 + r) % G] : 0.0f;
  }

  cp_async_wait<Cfg::kStages - 1>();  // Q has landed (only the prologue's tile groups may be pending)
  __syncthreads();
  uint32_t q_frag[D / 16][4];
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    const int r = wm * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
    const int col = ks * 16 + (lane >> 4) * 8;
    ldmatrix_x4(q_frag[ks], sQ + r * S + col);
  }

  float o_acc[kDTiles][4];
#pragma unroll
  for (int i = 0; i < kDTiles; ++i) o_acc[i][0] = o_acc[i][1] = o_acc[i][2] = o_acc[i][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};  // log2 domain
  float row_sum[2] = {0.0f, 0.0f};  // this thread's columns only; reduced across the quad at the end

  for (int kv_tile = tile_lo; kv_tile < tile_hi; ++kv_tile) {
    const int it = kv_tile - tile_lo;
    const int stage = it % Cfg::kStages;
    // Committed so far: Q, kStages - 1 prologue groups, one per earlier iteration. Tile `it` is group it + 1,
    // so all but the newest kStages - 2 groups must be complete.
    cp_async_wait<Cfg::kStages - 2>();
    __syncthreads();  // tile `it` is visible to all warps, and every warp is done with the stage refilled
                      // next
    if (kv_tile + Cfg::kStages - 1 < tile_hi) {
      load_kv_tile(kv_tile + Cfg::kStages - 1, (it + Cfg::kStages - 1) % Cfg::kStages);
    }
    cp_async_commit();
    const T* tk = sK + stage * BN * S + wn * Cfg::kWarpKeys * S;
    const T* tv = sV + stage * BN * S + wn * Cfg::kWarpKeys * S;
    const int key0 = kv_begin + kv_tile * BN + wn * Cfg::kWarpKeys;

    // S = Q K^T for this warp's 16 rows x kWarpKeys keys.
    float s[kNTiles][4];
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
#pragma unroll
      for (int nt = 0; nt < kNTiles; nt += 2) {
        uint32_t kf[4];
        const int n = nt * 8 + (lane & 7) + (lane >> 4) * 8;
        const int col = ks * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(kf, tk + n * S + col);
        Mma<T>::run(s[nt], q_frag[ks], kf[0], kf[1]);
        Mma<T>::run(s[nt + 1], q_frag[ks], kf[2], kf[3]);
      }
    }

    // Logits in the log2 domain: scale, soft-cap, ALiBi, mask. Then the online softmax update.
    const bool full_tile =
        key0 + Cfg::kWarpKeys - 1 <= qpos_min && (a.window_left == 0 || key0 >= qpos_max - a.window_left);
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int i = e >> 1;
        const int key = key0 + nt * 8 + 2 * t4 + (e & 1);
        float x = s[nt][e] * a.scale;
        if (a.softcap > 0.0f) x = a.softcap * tanhf(x / a.softcap);
        x = (x + row_slope[i] * static_cast<float>(key - row_qpos[i])) * kLog2e;
        if (!full_tile) {
          const int qp = row_qpos[i];
          if (key > qp || (a.window_left > 0 && qp - key > a.window_left)) x = -INFINITY;
        }
        s[nt][e] = x;
        tile_max[i] = fmaxf(tile_max[i], x);
      }
    }
    float rescale[2];
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 1));
      tile_max[i] = fmaxf(tile_max[i], __shfl_xor_sync(0xffffffffu, tile_max[i], 2));
      const float new_max = fmaxf(row_max[i], tile_max[i]);
      const float base =
          new_max == -INFINITY ? 0.0f : new_max;  // a row with no visible key yet stays at zero
      rescale[i] = exp2f(row_max[i] - base);
      row_max[i] = new_max;
      row_sum[i] *= rescale[i];
      tile_max[i] = base;
    }
#pragma unroll
    for (int nt = 0; nt < kNTiles; ++nt) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[nt][e] = exp2f(s[nt][e] - tile_max[e >> 1]);
        row_sum[e >> 1] += s[nt][e];
      }
    }
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      o_acc[dt][0] *= rescale[0];
      o_acc[dt][1] *= rescale[0];
      o_acc[dt][2] *= rescale[1];
      o_acc[dt][3] *= rescale[1];
    }

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
        ldmatrix_x4_trans(vf, tv + n * S + col);
        Mma<T>::run(o_acc[dt], pf, vf[0], vf[1]);
        Mma<T>::run(o_acc[dt + 1], pf, vf[2], vf[3]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with the K/V stages: the epilogue reuses them

  // ---- epilogue: merge the kWarpsN partial states per row through shared memory
  // ----------------------------------
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 1);
    row_sum[i] += __shfl_xor_sync(0xffffffffu, row_sum[i], 2);
  }
  float* s_o = reinterpret_cast<float*>(smem + Cfg::kQBytes);  // (kWarpsN, BM, D), reusing the K/V region
  {
    const int r = wm * 16 + g;
    if (t4 == 0) {
      s_ml[wn][r][0] = row_max[0];
      s_ml[wn][r][1] = row_sum[0];
      s_ml[wn][r + 8][0] = row_max[1];
      s_ml[wn][r + 8][1] = row_sum[1];
    }
    float* o0 = s_o + (wn * BM + r) * D;
    float* o1 = o0 + 8 * D;
#pragma unroll
    for (int dt = 0; dt < kDTiles; ++dt) {
      const int col = dt * 8 + 2 * t4;
      *reinterpret_cast<float2*>(o0 + col) = make_float2(o_acc[dt][0], o_acc[dt][1]);
      *reinterpret_cast<float2*>(o1 + col) = make_float2(o_acc[dt][2], o_acc[dt][3]);
    }
  }
  __syncthreads();

  constexpr int kVec = 4;  // output elements per thread per step
  for (int c = tid; c < rows_valid * (D / kVec); c += Cfg::kThreads) {
    const int r = c / (D / kVec), col = (c % (D / kVec)) * kVec;
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < Cfg::kWarpsN; ++w) m = fmaxf(m, s_ml[w][r][0]);
    const float base = m == -INFINITY ? 0.0f : m;
    float l = 0.0f;
    float o[kVec] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
    for (int w = 0; w < Cfg::kWarpsN; ++w) {
      const float f = exp2f(s_ml[w][r][0] - base);
      l += s_ml[w][r][1] * f;
      const float4 v = *reinterpret_cast<const float4*>(s_o + (w * BM + r) * D + col);
      o[0] += v.x * f;
      o[1] += v.y * f;
      o[2] += v.z * f;
      o[3] += v.w * f;
    }
    int token, head;
    out_index(r, token, head);
    if (p.num_segments > 1) {
      const int64_t idx = (static_cast<int64_t>(token) * a.num_q_heads + head) * p.num_segments + segment;
      *reinterpret_cast<float4*>(p.partial_o + idx * D + col) = make_float4(o[0], o[1], o[2], o[3]);
      if (col == 0) {
        p.partial_ml[idx * 2] = m;
        p.partial_ml[idx * 2 + 1] = l;
      }
      continue;
    }
    // 2D launch: add the sink to the denominator, normalize, write O (and LSE) in the query dtype.
    float top = m;
    if (a.sinks != nullptr) top = fmaxf(top, a.sinks[head] * kLog2e);
    const float f = exp2f(m - top);
    const float denom = l * f + (a.sinks != nullptr ? exp2f(a.sinks[head] * kLog2e - top) : 0.0f);
    const float inv = f / denom;
    T* dst = static_cast<T*>(a.o) + token * a.o_stride_token + head * a.o_stride_head + col;
    T packed[kVec];
#pragma unroll
    for (int e = 0; e < kVec; ++e) packed[e] = from_float<T>(o[e] * inv);
    *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(packed);
    if (a.lse != nullptr && col == 0) {
      a.lse[token * a.lse_stride_token + head * a.lse_stride_head] = (top + log2f(denom)) / kLog2e;
    }
  }
}

}  // namespace pagedattn::cuda
