// Copies K/V tiles of one sequence and one KV head from the paged pools into shared memory with cp.async.
//
// Each thread owns one 16-byte column chunk of a fixed set of tile rows (keys). Reading a row's block id
// from the block table is a dependent global load in front of its copies; issued one at a time inside the
// copy loop, those loads serialized the whole tile behind their latency. Here a thread reads the block ids
// of all its rows of a tile in one batch (fetch_blocks), one tile ahead of the copies that use them
// (copy), so their latency overlaps the computation of the current tile.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/attention/mma_sm80.cuh"
#include "kernels/kernel_args.h"

namespace pagedattn::cuda {

template <typename T, int kThreads, int kChunks, int kRows>
struct KVTileGather {
  static constexpr int kRowsPerPass = kThreads / kChunks;  // rows a full pass of the CTA covers
  static_assert(kRowsPerPass >= 1, "a row must fit in one pass of the CTA");
  static constexpr int kPasses = (kRows + kRowsPerPass - 1) / kRowsPerPass;

  const T* k_base;
  const T* v_base;
  const int32_t* table;  // this sequence's block table row
  int64_t k_head_offset, v_head_offset;
  int64_t k_stride_block, k_stride_token, v_stride_block, v_stride_token;
  int block_size, bs_shift;  // bs_shift >= 0 when block_size is a power of two
  int seq_len, valid_cols;   // keys at or past seq_len and columns past valid_cols are zero-filled
  int row0, chunk;           // this thread's first row and its chunk
  bool active;               // threads past kRowsPerPass * kChunks copy nothing
  int32_t block[kPasses];    // block id of each of this thread's rows in the fetched tile, -1 = zero-fill
  int32_t slot[kPasses];     // and the row's offset inside its block

  __device__ __forceinline__ void init(const kernels::PagedKVArgs& kv, const int32_t* seq_table, int kv_head,
                                       int seq_len_, int head_dim) {
    k_base = static_cast<const T*>(kv.k);
    v_base = static_cast<const T*>(kv.v);
    table = seq_table;
    k_head_offset = static_cast<int64_t>(kv_head) * kv.k_stride_head;
    v_head_offset = static_cast<int64_t>(kv_head) * kv.v_stride_head;
    k_stride_block = kv.k_stride_block;
    k_stride_token = kv.k_stride_token;
    v_stride_block = kv.v_stride_block;
    v_stride_token = kv.v_stride_token;
    block_size = kv.block_size;
    bs_shift = (block_size & (block_size - 1)) == 0 ? __ffs(block_size) - 1 : -1;
    seq_len = seq_len_;
    valid_cols = head_dim;
    const int tid = threadIdx.x;
    active = tid < kRowsPerPass * kChunks;
    row0 = tid / kChunks;
    chunk = tid % kChunks;
  }

  __device__ __forceinline__ int page_of(int pos) const {
    return bs_shift >= 0 ? pos >> bs_shift : pos / block_size;
  }

  /// Reads the block ids of this thread's rows of the tile starting at key0 (independent loads, no wait) and
  /// splits the positions into block and slot once, so that copy() is address arithmetic only.
  __device__ __forceinline__ void fetch_blocks(int key0) {
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int n = row0 + i * kRowsPerPass;
      const int pos = key0 + n;
      const bool valid = active && n < kRows && pos < seq_len;
      const int page = page_of(pos);
      slot[i] = pos - page * block_size;
      block[i] = valid ? __ldg(table + page) : -1;
    }
  }

  /// Issues the copies of the fetched tile; dst(row, col) is the byte offset of element (row, col) inside
  /// a K (or V) tile whose shared-memory bases are dk and dv.
  template <typename DstOffset>
  __device__ __forceinline__ void copy(unsigned char* dk, unsigned char* dv, DstOffset dst) const {
    if (!active) return;
    const int col = chunk * 8;
    const bool col_valid = col < valid_cols;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int n = row0 + i * kRowsPerPass;
      if (kRows % kRowsPerPass != 0 && n >= kRows) break;
      const bool valid = block[i] >= 0 && col_valid;
      const int64_t b = valid ? block[i] : 0;
      const T* ksrc = k_base + (b * k_stride_block + slot[i] * k_stride_token + k_head_offset + col);
      const T* vsrc = v_base + (b * v_stride_block + slot[i] * v_stride_token + v_head_offset + col);
      const uint32_t off = dst(n, col);
      cp_async_16(dk + off, ksrc, valid ? 16 : 0);
      cp_async_16(dv + off, vsrc, valid ? 16 : 0);
    }
  }
};

}  // namespace pagedattn::cuda
