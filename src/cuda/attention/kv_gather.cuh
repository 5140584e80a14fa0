// Copies K/V tiles of one sequence and one KV head from the paged pools into shared memory with cp.async.
//
// Each thread owns one 16-byte column chunk of a fixed set of tile rows (keys). Reading a row's block id
// from the block table is a dependent global load in front of its copies; issued one at a time inside the
// copy loop, those loads serialized the whole tile behind their latency. Here a thread reads the block ids
// of all its rows of a tile in one batch (fetch_blocks), one tile ahead of the copies that use them
// (copy), so their latency overlaps the computation of the current tile.
//
// The gather moves stored bytes whatever the format (E: the stored element type, 2 bytes for bf16/fp16
// caches, 1 for the quantized ones). With kRowScales (int8), the thread of chunk 0 of a row also copies the
// row's K and V scales from the metadata planes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention/mma_sm80.cuh"
#include "kernels/kernel_args.h"

namespace pagedattn::cuda {

template <typename E, int kThreads, int kHeadDim, int kRows, bool kRowScales = false>
struct KVTileGather {
  static constexpr int kElemsPerChunk = 16 / static_cast<int>(sizeof(E));
  static constexpr int kChunks = kHeadDim / kElemsPerChunk;  // 16-byte chunks per row
  static constexpr int kRowsPerPass = kThreads / kChunks;    // rows a full pass of the CTA covers
  static_assert(kHeadDim % kElemsPerChunk == 0, "rows must be whole 16-byte chunks");
  static_assert(kRowsPerPass >= 1, "a row must fit in one pass of the CTA");
  static constexpr int kPasses = (kRows + kRowsPerPass - 1) / kRowsPerPass;

  kernels::KVPlane k, v;            // data planes
  kernels::KVPlane k_meta, v_meta;  // kRowScales: the per-token scale planes
  const int32_t* table;             // this sequence's block table row
  const kernels::FastDivmod* page;  // the pool's block size as a divisor
  int kv_head;
  int seq_len;             // keys at or past seq_len are zero-filled
  int row0, chunk;         // this thread's first row and its chunk
  bool active;             // threads past kRowsPerPass * kChunks copy nothing
  int32_t block[kPasses];  // block id of each of this thread's rows in the fetched tile, -1 = zero-fill
  int32_t slot[kPasses];   // and the row's offset inside its block

  __device__ __forceinline__ void init(const kernels::PagedKVArgs& kv, const int32_t* seq_table, int kv_head_,
                                       int seq_len_) {
    k = kv.k;
    v = kv.v;
    if constexpr (kRowScales) {
      k_meta = kv.k_meta;
      v_meta = kv.v_meta;
    }
    table = seq_table;
    page = &kv.page;
    kv_head = kv_head_;
    seq_len = seq_len_;
    const int tid = threadIdx.x;
    active = tid < kRowsPerPass * kChunks;
    row0 = tid / kChunks;
    chunk = tid % kChunks;
  }

  /// Reads the block ids of this thread's rows of the tile starting at key0 (independent loads, no wait) and
  /// splits the positions into block and slot once, so that copy() is address arithmetic only.
  __device__ __forceinline__ void fetch_blocks(int key0) {
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int n = row0 + i * kRowsPerPass;
      const int pos = key0 + n;
      const bool valid = active && n < kRows && pos < seq_len;
      int page_index = 0;
      page->divmod(pos, page_index, slot[i]);
      block[i] = valid ? __ldg(table + page_index) : -1;
    }
  }

  /// Issues the copies of the fetched tile; dst(row, col) is the byte offset of element (row, col) inside
  /// a K (or V) tile whose shared-memory bases are dk and dv. kRowScales: row n's scales go to ks[n], vs[n].
  template <typename DstOffset>
  __device__ __forceinline__ void copy(unsigned char* dk, unsigned char* dv, DstOffset dst,
                                       float* ks = nullptr, float* vs = nullptr) const {
    if (!active) return;
    const int col = chunk * kElemsPerChunk;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int n = row0 + i * kRowsPerPass;
      if (kRows % kRowsPerPass != 0 && n >= kRows) break;
      const bool valid = block[i] >= 0;
      const int64_t b = valid ? block[i] : 0;
      const uint32_t off = dst(n, col);
      cp_async_16(dk + off, k.at<E>(b, slot[i], kv_head) + col, valid ? 16 : 0);
      cp_async_16(dv + off, v.at<E>(b, slot[i], kv_head) + col, valid ? 16 : 0);
      if constexpr (kRowScales) {
        if (chunk == 0) {
          cp_async_4(ks + n, k_meta.at<float>(b, slot[i], kv_head), valid ? 4 : 0);
          cp_async_4(vs + n, v_meta.at<float>(b, slot[i], kv_head), valid ? 4 : 0);
        }
      }
    }
  }
};

}  // namespace pagedattn::cuda
