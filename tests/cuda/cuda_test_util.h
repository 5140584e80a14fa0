// What the GPU test files share: whether a device is present, and a checked CUDA call.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

namespace pagedattn::test {

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace pagedattn::test

#define ASSERT_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call
#define REQUIRE_GPU() \
  if (!::pagedattn::test::have_gpu()) GTEST_SKIP() << "no CUDA device"
