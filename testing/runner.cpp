#include "runner.h"

#include <algorithm>
#include <chrono>

#include "pagedattn/error.h"
#include "pagedattn/info.h"

namespace pagedattn::testing {
namespace {

class CpuRunner final : public BackendRunner {
 public:
  std::string name() const override { return "cpu"; }
  std::string unsupported(const ProblemSpec&) const override { return ""; }
  std::string unsupported(const WriteKVSpec&) const override { return ""; }
  void run_attention(HostProblem& p) override {
    attention(p.query(), p.cache(), p.batch(), p.params(), p.output());
  }
  void run_write_kv(HostWriteKV& p) override {
    write_kv(p.key_view(), p.value_view(), p.slot_view(), p.cache());
  }
  double time_attention(HostProblem& p, int warmup, int reps) override {
    PA_CHECK(reps >= 1 && warmup >= 0, "time_attention: reps must be >= 1 and warmup >= 0, got ", reps,
             " and ", warmup);
    for (int i = 0; i < warmup; ++i) run_attention(p);
    std::vector<double> t;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = std::chrono::steady_clock::now();
      run_attention(p);
      t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::nth_element(t.begin(), t.begin() + t.size() / 2, t.end());
    return t[t.size() / 2];
  }
};

}  // namespace

std::unique_ptr<BackendRunner> make_cpu_runner() {
  return std::make_unique<CpuRunner>();
}

#ifndef PAGEDATTN_TESTING_WITH_CUDA
std::unique_ptr<BackendRunner> make_cuda_runner() {
  return nullptr;
}
std::string cuda_not_compiled(DType, DType, int) {
  return "this build has no CUDA backend";
}
std::string cuda_not_compiled(const ProblemSpec&) {
  return "this build has no CUDA backend";
}
#endif

std::vector<std::string> available_backends() {
  std::vector<std::string> names{"cpu"};
  if (make_cuda_runner()) names.push_back("cuda");
  return names;
}

std::unique_ptr<BackendRunner> make_runner(const std::string& backend) {
  if (backend == "cpu") return make_cpu_runner();
  if (backend == "cuda") {
    auto r = make_cuda_runner();
    PA_CHECK(r != nullptr, "backend cuda is not available: ", cuda_unavailable_reason());
    return r;
  }
  PA_CHECK(false, "unknown backend '", backend, "'; expected cpu, cuda or all");
}

}  // namespace pagedattn::testing
