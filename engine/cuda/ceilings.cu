#include "engine/cuda/ceilings.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <vector>

#include "pagedattn/error.h"

namespace pagedattn::engine {
namespace {

#define CEILING_CUDA(call)                                                                         \
  do {                                                                                             \
    const cudaError_t e_ = (call);                                                                 \
    PA_CHECK(e_ == cudaSuccess, "measure_ceilings: ", #call, " failed: ", cudaGetErrorString(e_)); \
  } while (0)

// The median time in seconds of `reps` runs of `body` on the default stream, after two warm-ups.
template <typename Body>
double median_seconds(int reps, Body&& body) {
  cudaEvent_t start, stop;
  CEILING_CUDA(cudaEventCreate(&start));
  CEILING_CUDA(cudaEventCreate(&stop));
  body();
  body();
  std::vector<float> ms;
  for (int i = 0; i < reps; ++i) {
    CEILING_CUDA(cudaEventRecord(start));
    body();
    CEILING_CUDA(cudaEventRecord(stop));
    CEILING_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    CEILING_CUDA(cudaEventElapsedTime(&t, start, stop));
    ms.push_back(t);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2] * 1e-3;
}

}  // namespace

DeviceCeilings measure_ceilings(int device) {
  CEILING_CUDA(cudaSetDevice(device));
  DeviceCeilings c;
  const size_t bytes = size_t{2} << 30;  // far past L2
  void *a = nullptr, *b = nullptr;
  CEILING_CUDA(cudaMalloc(&a, bytes));
  CEILING_CUDA(cudaMalloc(&b, bytes));
  CEILING_CUDA(cudaMemset(a, 1, bytes));
  const double copy_s =
      median_seconds(9, [&] { CEILING_CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); });
  c.copy_bytes_per_s = 2.0 * static_cast<double>(bytes) / copy_s;
  CEILING_CUDA(cudaFree(a));
  CEILING_CUDA(cudaFree(b));

  const int n = 8192;
  const size_t elems = static_cast<size_t>(n) * n;
  __nv_bfloat16 *x = nullptr, *w = nullptr, *y = nullptr;
  CEILING_CUDA(cudaMalloc(&x, elems * sizeof(__nv_bfloat16)));
  CEILING_CUDA(cudaMalloc(&w, elems * sizeof(__nv_bfloat16)));
  CEILING_CUDA(cudaMalloc(&y, elems * sizeof(__nv_bfloat16)));
  CEILING_CUDA(cudaMemset(x, 0x3c, elems * sizeof(__nv_bfloat16)));  // ~0.01: finite products, no overflow
  CEILING_CUDA(cudaMemset(w, 0x3c, elems * sizeof(__nv_bfloat16)));
  cublasHandle_t h = nullptr;
  PA_CHECK(cublasCreate(&h) == CUBLAS_STATUS_SUCCESS, "measure_ceilings: cublasCreate failed");
  const float one = 1.0f, zero = 0.0f;
  bool ok = true;
  const double gemm_s = median_seconds(9, [&] {
    ok &=
        cublasGemmEx(h, CUBLAS_OP_T, CUBLAS_OP_N, n, n, n, &one, w, CUDA_R_16BF, n, x, CUDA_R_16BF, n, &zero,
                     y, CUDA_R_16BF, n, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS;
  });
  cublasDestroy(h);
  cudaFree(x);
  cudaFree(w);
  cudaFree(y);
  PA_CHECK(ok, "measure_ceilings: the cuBLAS GEMM failed");
  c.matmul_flops_per_s = 2.0 * n * static_cast<double>(n) * n / gemm_s;
  return c;
}

}  // namespace pagedattn::engine
