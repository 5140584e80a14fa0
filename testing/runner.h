// Runs a HostProblem through one backend: upload (where needed), run, download into the problem's host
// buffers.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "problem.h"
#include "write_kv_problem.h"

namespace pagedattn::testing {

class BackendRunner {
 public:
  virtual ~BackendRunner() = default;
  virtual std::string name() const = 0;
  /// "" when this backend (as built) runs the problem; else why not (e.g. a dtype or head dim not compiled).
  virtual std::string unsupported(const ProblemSpec& spec) const = 0;
  virtual std::string unsupported(const WriteKVSpec& spec) const = 0;
  /// Runs attention; afterwards p.out and p.lse hold the backend's results.
  virtual void run_attention(HostProblem& p) = 0;
  /// Runs write_kv; afterwards p.k_pool and p.v_pool hold the backend's pools.
  virtual void run_write_kv(HostWriteKV& p) = 0;
  /// Median seconds of one attention call over reps runs after warmup runs (inputs stay resident).
  virtual double time_attention(HostProblem& p, int warmup, int reps) = 0;
  /// Host time, in microseconds (medians over reps), of plan_attention and of one run_attention call's
  /// enqueue (what a model pays per layer on the CPU side). {-1, -1} where it means nothing (the CPU
  /// backend computes inside the call).
  struct HostCost {
    double plan_us = -1, run_us = -1;
  };
  virtual HostCost host_cost(HostProblem&, int /*reps*/) { return {}; }
};

std::unique_ptr<BackendRunner> make_cpu_runner();
/// nullptr when this build has no CUDA backend or the machine has no GPU.
std::unique_ptr<BackendRunner> make_cuda_runner();

/// The per-layer loop of a model on the GPU: plans attention once with layers[0]'s query, cache and batch and
/// runs the plan over every layer's cache with layers[0]'s query, batch and params; layer i's out receives
/// its result (its own query and batch are not read). Needs a GPU.
void run_planned_layers(const std::vector<HostProblem*>& layers);

/// "" when the CUDA kernels of this build were compiled for the query dtype, cache format and head dim; else
/// why not.
std::string cuda_not_compiled(DType dtype, DType cache_dtype, int head_dim);
/// The same for a problem, TurboQuant caches (compiled per query dtype, preset and head dim) included.
std::string cuda_not_compiled(const ProblemSpec& s);

/// Backends usable here: "cpu", and "cuda" when built and a GPU is present.
std::vector<std::string> available_backends();
std::unique_ptr<BackendRunner> make_runner(const std::string& backend);

}  // namespace pagedattn::testing
