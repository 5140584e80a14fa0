// The one interface every backend implements; src/core dispatches to it by device and names no backend.
#pragma once

#include <memory>
#include <string>

#include "core/validate.h"
#include "pagedattn/info.h"
#include "pagedattn/plan.h"

namespace pagedattn::core {

/// Per-device state of a backend (DeviceContext holds one).
struct ContextState {
  explicit ContextState(Device d) : device(d) {}
  virtual ~ContextState() = default;
  virtual std::string describe() const { return device_name(device); }
  Device device;
};

/// What a plan holds: the planned problem (its metadata is what run compares against), the workspace size,
/// the description, the context it was made in, and the backend's launch (opaque here).
struct PlanState {
  AttentionProblem planned;
  size_t workspace_bytes = 0;
  std::string description;
  std::shared_ptr<ContextState> context;
  std::shared_ptr<const void> launch;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::shared_ptr<ContextState> make_context(Device device) const = 0;
  /// Fills plan.workspace_bytes, plan.description and plan.launch for a checked problem.
  virtual void plan(ContextState& context, const AttentionProblem& p, PlanState& plan) const = 0;
  /// Launches a plan for a problem that check_matches_plan accepted.
  virtual void run(const PlanState& plan, const AttentionProblem& p, Workspace workspace,
                   Stream stream) const = 0;
  virtual void validate_batch(const AttentionProblem& p, Stream stream) const = 0;
  virtual void write_kv(const WriteKVProblem& p, Stream stream, bool validate_slots) const = 0;
};

/// The backend of a device; an error naming the build option when the build lacks it.
const Backend& backend_for(const Device& device);

/// Defined by each backend's sources (src/cpu, src/cuda; src/core/no_cuda.cpp returns nullptr in a build
/// without CUDA).
const Backend& cpu_backend();
const Backend* cuda_backend();

/// The CUDA backend's part of build_info() (src/cuda/device_info.cpp; nothing in a build without CUDA).
void fill_cuda_build_info(BuildInfo& info);

/// Throws, naming the first difference, when `p` does not have the shape the plan was made for.
void check_matches_plan(const PlanState& plan, const AttentionProblem& p);

}  // namespace pagedattn::core
