// The bulk tensor copy engine of sm_90 (TMA): one instruction copies a box of a tensor described by a tensor
// map (built on the host, kv_tensor_map.h) into shared memory and reports its bytes to an mbarrier, which
// completes its phase once the expected bytes have landed (and its arrivals have arrived).
#pragma once

#include <cuda.h>

#include <cstdint>

namespace pagedattn::cuda::sm90 {

/// One arrival that also announces `bytes` more to land in this phase (the producer, before its copies).
__device__ __forceinline__ void mbarrier_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile(
      "{\n .reg .b64 state;\n mbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(bar),
      "r"(bytes)
      : "memory");
}

/// Copies the box at coordinates (c0 innermost .. c3) of a rank-4 tensor map into shared memory at dst;
/// its bytes complete on bar. The map must live in kernel parameter, constant or global memory.
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0,
                                            int c1, int c2, int c3) {
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, "
      "%5, %6}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3)
      : "memory");
}

/// Brings a tensor map into the copy engine's descriptor cache ahead of its first use.
__device__ __forceinline__ void prefetch_tensor_map(const CUtensorMap* map) {
  asm volatile("prefetch.tensormap [%0];\n" ::"l"(reinterpret_cast<uint64_t>(map)) : "memory");
}

}  // namespace pagedattn::cuda::sm90
