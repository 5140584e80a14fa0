// Programmatic dependent launch (sm_90+): a kernel launched with
// cudaLaunchAttributeProgrammaticStreamSerialization may start before the previous kernel in the stream
// finishes; it must wait for that kernel's results with wait_for_prerequisite_grid() before reading them.
// Both calls are no-ops for ordinary launches and on older architectures.
#pragma once

#include <cuda_runtime.h>

namespace pagedattn::cuda {

/// Called by the attention kernels once every CTA is running: a dependent (the split-KV merge) may launch.
__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

/// Blocks until the prerequisite grid has completed and its memory operations are visible.
__device__ __forceinline__ void wait_for_prerequisite_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

}  // namespace pagedattn::cuda
