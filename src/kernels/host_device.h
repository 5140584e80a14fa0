// PAGEDATTN_HD marks the small helpers of the kernel argument structs that host code and CUDA kernels share.
#pragma once

#if defined(__CUDACC__)
#define PAGEDATTN_HD __host__ __device__ __forceinline__
#else
#define PAGEDATTN_HD inline
#endif
