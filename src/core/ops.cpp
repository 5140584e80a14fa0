// The public ops: validate, then dispatch to the backend of the tensors' device.
#include "core/validate.h"
#include "cpu/cpu_backend.h"
#include "pagedattn/attention.h"
#include "pagedattn/error.h"
#ifdef PAGEDATTN_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace pagedattn {
namespace {

[[noreturn, maybe_unused]] void no_cuda(const Device& d) {
  PA_CHECK(false, "tensors are on ", device_name(d), " but this build of pagedattn has no CUDA backend ",
           "(configure with -DPAGEDATTN_CUDA=ON)");
}

}  // namespace

void write_kv(const TensorView& key, const TensorView& value, const TensorView& slot_mapping,
              const PagedKVCache& cache, Stream stream, bool validate_slots) {
  const core::WriteKVProblem p = core::check_write_kv(key, value, slot_mapping, cache);
  if (p.device.is_cpu()) {
    core::check_slots(p.src.slot_mapping, p.src.num_tokens, p.kv);
    cpu::write_kv(p);
    return;
  }
#ifdef PAGEDATTN_WITH_CUDA
  cuda::write_kv(p, stream, validate_slots);
#else
  (void)stream;
  (void)validate_slots;
  no_cuda(p.device);
#endif
}

size_t attention_workspace_size(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
                                const AttentionParams& params) {
  const core::AttentionProblem p = core::check_attention(query, cache, batch, params, query);
  if (p.device.is_cpu()) return 0;
#ifdef PAGEDATTN_WITH_CUDA
  return cuda::attention_workspace_size(p);
#else
  no_cuda(p.device);
#endif
}

void attention(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
               const AttentionParams& params, const TensorView& out, Workspace workspace, Stream stream) {
  const core::AttentionProblem p = core::check_attention(query, cache, batch, params, out);
  if (p.device.is_cpu()) {
    core::check_batch_contents(p.batch, p.kv);
    cpu::attention(p);
    return;
  }
#ifdef PAGEDATTN_WITH_CUDA
  cuda::attention(p, workspace, stream);
#else
  (void)workspace;
  (void)stream;
  no_cuda(p.device);
#endif
}

}  // namespace pagedattn
