// The measured ceilings a run's roofline divides by (shared/ENGINE.md): the card's copy bandwidth and its
// bf16 matmul rate, measured on the spot rather than taken from a datasheet.
#pragma once

namespace pagedattn::engine {

struct DeviceCeilings {
  double copy_bytes_per_s = 0;  ///< device-to-device cudaMemcpy of 2 GiB: (read + write bytes) / time, median
  double matmul_flops_per_s = 0;  ///< cuBLAS bf16 GEMM 8192 x 8192 x 8192, fp32 accumulate, median
};

/// Measures both on CUDA device `device` (about a second).
DeviceCeilings measure_ceilings(int device);

}  // namespace pagedattn::engine
