// The CPU backend behind core::Backend: no launch to choose, so a plan only records the problem's shape.
#include "cpu/cpu_backend.h"
#include "core/backend.h"

namespace pagedattn::core {
namespace {

class CpuBackend final : public Backend {
 public:
  std::shared_ptr<ContextState> make_context(Device device) const override {
    return std::make_shared<ContextState>(device);
  }
  void plan(ContextState&, const AttentionProblem&, PlanState& plan) const override {
    plan.workspace_bytes = 0;
    plan.description = "cpu: one pass per (token, query head), fp32 accumulation, no workspace";
  }
  // The CPU reads the batch on the host anyway: it checks the contents on every run (a bad block id is an
  // error, never an out-of-bounds read), at a cost that is small beside the attention itself.
  void run(const PlanState&, const AttentionProblem& p, Workspace, Stream) const override {
    check_batch_contents(p.batch, p.kv);
    cpu::attention(p);
  }
  void validate_batch(const AttentionProblem& p, Stream) const override {
    check_batch_contents(p.batch, p.kv);
  }
  void write_kv(const WriteKVProblem& p, Stream, bool) const override {
    check_slots(p.src.slot_mapping, p.src.num_tokens, p.kv);  // the CPU always checks: it costs nothing here
    cpu::write_kv(p);
  }
};

}  // namespace

const Backend& cpu_backend() {
  static const CpuBackend backend;
  return backend;
}

}  // namespace pagedattn::core
