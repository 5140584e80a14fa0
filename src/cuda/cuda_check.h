// Every CUDA runtime call is checked; a failure becomes a pagedattn::Error naming the call.
#pragma once

#include <cuda_runtime.h>

#include "pagedattn/error.h"

#define PA_CUDA_CHECK(call)                                                                                  \
  do {                                                                                                       \
    const cudaError_t pa_status_ = (call);                                                                   \
    PA_CHECK(pa_status_ == cudaSuccess, #call " failed: ", cudaGetErrorString(pa_status_), " at ", __FILE__, \
             ":", __LINE__);                                                                                 \
  } while (0)

/// Checks the launch of kernel `name` that was just issued (configuration errors surface here, not at the
/// next sync).
#define PA_CUDA_CHECK_LAUNCH(name)                                                                        \
  do {                                                                                                    \
    const cudaError_t pa_status_ = cudaPeekAtLastError();                                                 \
    PA_CHECK(pa_status_ == cudaSuccess, "launch of ", name, " failed: ", cudaGetErrorString(pa_status_)); \
  } while (0)
