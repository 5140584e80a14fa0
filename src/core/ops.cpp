// The flat ops: thin conveniences over plan/run (attention) and the backend's write_kv.
#include "core/backend.h"
#include "pagedattn/attention.h"
#include "pagedattn/plan.h"

namespace pagedattn {

void write_kv(const TensorView& key, const TensorView& value, const TensorView& slot_mapping,
              const PagedKVCache& cache, Stream stream, bool validate_slots) {
  const core::WriteKVProblem p = core::check_write_kv(key, value, slot_mapping, cache);
  core::backend_for(p.device).write_kv(p, stream, validate_slots);
}

size_t attention_workspace_size(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
                                const AttentionParams& params) {
  return plan_attention(query, cache, batch, params).workspace_bytes();
}

void attention(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
               const AttentionParams& params, const TensorView& out, Workspace workspace, Stream stream) {
  // The same checks as run_attention, first, so that a bad `out` is reported before anything else.
  core::check_attention(query, cache, batch, params, out);
  const AttentionPlan plan = plan_attention(query, cache, batch, params);
  if (params.validate_batch && !query.device.is_cpu()) validate_batch(query, cache, batch, stream);
  run_attention(plan, query, cache, batch, params, out, workspace, stream);
}

}  // namespace pagedattn
