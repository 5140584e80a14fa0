// The CUDA backend behind core::Backend.
#include "cuda/cuda_backend.h"

#include "cuda/cuda_context.h"

namespace pagedattn::core {
namespace {

class CudaBackend final : public Backend {
 public:
  std::shared_ptr<ContextState> make_context(Device device) const override {
    return std::make_shared<cuda::CudaContext>(device);
  }
  void plan(ContextState& context, const AttentionProblem& p, PlanState& plan) const override {
    cuda::plan_attention(static_cast<cuda::CudaContext&>(context), p, plan);
  }
  void run(const PlanState& plan, const AttentionProblem& p, Workspace workspace,
           Stream stream) const override {
    cuda::run_attention(plan, p, workspace, stream);
  }
  void validate_batch(const AttentionProblem& p, Stream stream) const override {
    cuda::validate_batch(p, stream);
  }
  void write_kv(const WriteKVProblem& p, Stream stream, bool validate_slots) const override {
    cuda::write_kv(p, stream, validate_slots);
  }
};

}  // namespace

const Backend* cuda_backend() {
  static const CudaBackend backend;
  return &backend;
}

}  // namespace pagedattn::core
