// Makes a device current for a scope and restores the previous one.
#pragma once

#include "cuda/cuda_check.h"

namespace pagedattn::cuda {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    PA_CUDA_CHECK(cudaGetDevice(&previous_));
    if (device != previous_) PA_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace pagedattn::cuda
