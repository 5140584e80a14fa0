// One workspace for every layer and every step: sized once from the plans of the largest steps the caller
// declares, allocated once by the caller (cudaMalloc, torch, a graph's pool), locked before CUDA-graph
// capture. After the lock a step that would need more is a clear error, never a crash or an allocation. The
// library itself still allocates nothing: this only does the bookkeeping and the checks.
#pragma once

#include <cstddef>
#include <string>

#include "pagedattn/attention.h"
#include "pagedattn/plan.h"

namespace pagedattn {

class WorkspaceReservation {
 public:
  /// Widens the reservation to cover this plan (a step shape the caller will run). An error once locked.
  void declare(const AttentionPlan& plan);
  /// Widens it by bytes (other users of the same scratch memory). An error once locked.
  void declare_bytes(size_t bytes);
  /// The bytes to allocate: the largest declared need, rounded up to 256.
  size_t bytes() const { return (bytes_ + 255) / 256 * 256; }
  /// No more declarations: what is allocated now is all there will be (call before capturing CUDA graphs).
  void lock() { locked_ = true; }
  bool locked() const { return locked_; }
  /// The workspace for a plan, from the caller's allocation of bytes(): an error naming both sizes when the
  /// plan needs more than was reserved (it was not declared before the lock), or when `memory` is smaller
  /// than bytes().
  Workspace for_plan(const AttentionPlan& plan, Workspace memory) const;

 private:
  size_t bytes_ = 0;
  bool locked_ = false;
};

}  // namespace pagedattn
