// Scatter of new K/V rows into their cache slots: one warp per (token, kv head), 16-byte accesses.
#include <cuda_runtime.h>

#include <vector>

#include "cuda/attention/dependent_launch.cuh"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/device_guard.h"

namespace pagedattn::cuda {
namespace {

constexpr int kWarps = 4;

__global__ void __launch_bounds__(32 * kWarps)
    write_kv_kernel(const __grid_constant__ kernels::PagedKVArgs kv,
                    const __grid_constant__ kernels::WriteKVArgs src) {
  // The attention call that follows may become resident now (programmatic dependent launch, sm_90); it waits
  // on the device for this kernel's stores before reading the cache.
  allow_dependent_launch();
  const int64_t item =
      static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);  // token * heads + head
  if (item >= src.num_tokens * kv.num_kv_heads) return;
  const int64_t token = item / kv.num_kv_heads;
  const int head = static_cast<int>(item % kv.num_kv_heads);
  const int64_t slot = src.slot_mapping[token];
  if (slot < 0) return;
  const int64_t block = slot / kv.block_size, offset = slot % kv.block_size;
  const int elem = dtype_size(src.src_dtype);
  const int chunks = kv.head_dim * elem / 16;
  const char* ks =
      static_cast<const char*>(src.key) + (token * src.key_stride_token + head * src.key_stride_head) * elem;
  const char* vs = static_cast<const char*>(src.value) +
                   (token * src.value_stride_token + head * src.value_stride_head) * elem;
  char* kd = static_cast<char*>(const_cast<void*>(kv.k)) +
             (block * kv.k_stride_block + offset * kv.k_stride_token + head * kv.k_stride_head) * elem;
  char* vd = static_cast<char*>(const_cast<void*>(kv.v)) +
             (block * kv.v_stride_block + offset * kv.v_stride_token + head * kv.v_stride_head) * elem;
  for (int c = threadIdx.x & 31; c < chunks; c += 32) {
    reinterpret_cast<uint4*>(kd)[c] = reinterpret_cast<const uint4*>(ks)[c];
    reinterpret_cast<uint4*>(vd)[c] = reinterpret_cast<const uint4*>(vs)[c];
  }
}

void check_aligned(const void* ptr, std::initializer_list<int64_t> strides, int elem, const char* name) {
  PA_CHECK(reinterpret_cast<uintptr_t>(ptr) % 16 == 0, name, " must be 16-byte aligned for the CUDA backend");
  for (int64_t s : strides) {
    PA_CHECK((s * elem) % 16 == 0, name, " strides must be multiples of 16 bytes for the CUDA backend, got ",
             s, " elements");
  }
}

}  // namespace

void write_kv(const core::WriteKVProblem& p, Stream stream_handle, bool validate_slots) {
  DeviceGuard guard(p.device.index);
  PA_CHECK(p.kv.dtype == p.src.src_dtype && (p.kv.dtype == DType::kFloat16 || p.kv.dtype == DType::kBFloat16),
           "the CUDA backend writes fp16 and bf16 caches from keys of the same dtype, got ",
           dtype_name(p.src.src_dtype), " keys into a ", dtype_name(p.kv.dtype), " cache");
  const int elem = dtype_size(p.kv.dtype);
  check_aligned(p.src.key, {p.src.key_stride_token, p.src.key_stride_head}, elem, "key");
  check_aligned(p.src.value, {p.src.value_stride_token, p.src.value_stride_head}, elem, "value");
  check_aligned(p.kv.k, {p.kv.k_stride_block, p.kv.k_stride_token, p.kv.k_stride_head}, elem, "cache.k");
  check_aligned(p.kv.v, {p.kv.v_stride_block, p.kv.v_stride_token, p.kv.v_stride_head}, elem, "cache.v");
  const int64_t items = p.src.num_tokens * p.kv.num_kv_heads;
  if (items == 0) return;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (validate_slots) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    PA_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture == cudaStreamCaptureStatusNone) {
      std::vector<int64_t> slots(static_cast<size_t>(p.src.num_tokens));
      PA_CUDA_CHECK(cudaMemcpyAsync(slots.data(), p.src.slot_mapping, slots.size() * 8,
                                    cudaMemcpyDeviceToHost, stream));
      PA_CUDA_CHECK(cudaStreamSynchronize(stream));
      core::check_slots(slots.data(), p.src.num_tokens, p.kv);
    }
  }
  const unsigned blocks = static_cast<unsigned>((items + kWarps - 1) / kWarps);
  write_kv_kernel<<<blocks, 32 * kWarps, 0, stream>>>(p.kv, p.src);
  PA_CUDA_CHECK_LAUNCH("write_kv_kernel");
}

}  // namespace pagedattn::cuda
