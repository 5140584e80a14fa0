// The TurboQuant constants a CUDA kernel needs (codebook, rotation signs, Walsh-Hadamard block), passed to
// kernels by value: a few hundred bytes, no device allocation, nothing to free. The write kernel quantizes
// with them (write_kv_turboquant.cu); the attention kernels rotate queries and decode key codes with them
// (attention_turboquant.cu).
#pragma once

#include <cstdint>

namespace pagedattn::cuda {

struct TurboQuantTables {
  float midpoints[15];   // key codebook: 2^bits - 1 midpoints
  float centroids[16];   // and its 2^bits centroids
  uint32_t negative[8];  // bit i: coordinate i's sign flip is -1
  int hadamard_block = 0;
  float hadamard_norm = 1.0f;  // 1 / sqrt(block), as the host computes it
};

/// The tables of a head dim and key bit count (3 or 4; 8 = fp8 keys: no codebook, no rotation, all zero).
TurboQuantTables make_turboquant_tables(int head_dim, int key_bits);

}  // namespace pagedattn::cuda
