// Shared-memory barriers (mbarrier) and warpgroup register budgets of sm_90, for kernels whose warpgroups
// specialize: a producer that copies tiles into shared memory and consumers that compute on them.
//
// An mbarrier completes a phase when its expected number of arrivals has arrived; waiters name the phase by
// its parity. A stage of a pipeline has two: `full` (the producer's copies landed) and `empty` (every
// consumer is done with the stage). A producer starts at parity 1 on `empty` (the phase before the first
// counts as complete, so every stage starts free) and a consumer at parity 0 on `full`.
#pragma once

#include <cstdint>

namespace pagedattn::cuda::sm90 {

__device__ __forceinline__ void mbarrier_init(uint32_t bar, int arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(arrivals) : "memory");
}
/// Makes the initialized barriers visible to the other threads (followed by a CTA barrier).
__device__ __forceinline__ void mbarrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
/// One arrival (release: this thread's earlier shared-memory writes are visible to the waiters).
__device__ __forceinline__ void mbarrier_arrive(uint32_t bar) {
  asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar)
               : "memory");
}
/// One arrival once all of this thread's earlier cp.async copies have landed (counts as an expected arrival).
__device__ __forceinline__ void mbarrier_arrive_after_copies(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
/// Blocks until the phase of the given parity has completed (acquire). The loop sits inside one asm
/// statement so that the warp leaves it converged, as the wgmma instructions that follow require.
__device__ __forceinline__ void mbarrier_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n"
      " .reg .pred done;\n"
      "wait_%=:\n"
      " mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      " @!done bra wait_%=;\n"
      "}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}

/// The producer side of a one-slot mailbox guarded by an `empty` / `full` barrier pair, through which the
/// persistent kernels hand each work item's plan and Q tile (or "no more work") to their consumers: waits
/// until the consumers have released the slot's previous use (`uses` counts the uses so far), lets `fill`
/// write it (plain stores by the leader, cp.async copies by any producer thread), then arrives on `full` once
/// each thread's copies have landed, and the leader once more, which publishes its stores. `full` expects
/// the producer threads' arrivals + 1. The consumer side reads the plan with read_plan (query_tile.cuh): by
/// the one lane per warp that also arrives on `empty`.
template <typename Fill>
__device__ __forceinline__ void mailbox_publish(uint32_t empty, uint32_t full, uint32_t uses, bool leader,
                                                Fill fill) {
  mbarrier_wait(empty, (uses & 1) ^ 1);
  fill();
  mbarrier_arrive_after_copies(full);
  if (leader) mbarrier_arrive(full);
}

/// Warpgroup register budgets: the producer gives registers back, the consumers take them (every warp of the
/// warpgroup executes the same instruction; counts are multiples of 8 in [24, 256]).
template <int kRegisters>
__device__ __forceinline__ void release_registers() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void claim_registers() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

}  // namespace pagedattn::cuda::sm90
