#include "pagedattn/workspace.h"

#include <algorithm>

#include "pagedattn/error.h"

namespace pagedattn {

void WorkspaceReservation::declare(const AttentionPlan& plan) {
  declare_bytes(plan.workspace_bytes());
}

void WorkspaceReservation::declare_bytes(size_t bytes) {
  PA_CHECK(!locked_ || bytes <= bytes_, "WorkspaceReservation: locked at ", this->bytes(),
           " bytes; a declaration of ", bytes,
           " bytes after the lock would need a new allocation (declare the "
           "largest step before locking)");
  bytes_ = std::max(bytes_, bytes);
}

Workspace WorkspaceReservation::for_plan(const AttentionPlan& plan, Workspace memory) const {
  PA_CHECK(plan.workspace_bytes() <= bytes(), "this step needs ", plan.workspace_bytes(),
           " bytes of workspace but ", bytes(), " were reserved", locked_ ? " and locked" : "",
           ": declare its plan (the largest step shape) before allocating");
  PA_CHECK(memory.bytes >= bytes(), "the workspace allocation has ", memory.bytes,
           " bytes; the reservation is ", bytes(), " (allocate WorkspaceReservation::bytes())");
  return {memory.data, memory.bytes};
}

}  // namespace pagedattn
