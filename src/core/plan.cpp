// Plan/run and the device contexts: the dispatch from the public API to the backend of the tensors' device.
#include "pagedattn/plan.h"

#include <map>
#include <mutex>

#include "core/backend.h"
#include "pagedattn/error.h"

namespace pagedattn {
namespace core {

const Backend& backend_for(const Device& device) {
  if (device.is_cpu()) return cpu_backend();
  const Backend* cuda = cuda_backend();
  PA_CHECK(cuda != nullptr, "tensors are on ", device_name(device),
           " but this build of pagedattn has no CUDA backend (configure with -DPAGEDATTN_CUDA=ON)");
  return *cuda;
}

namespace {

template <typename A>
void expect_same(const char* what, const A& planned, const A& given) {
  PA_CHECK(planned == given, "run_attention: ", what, " is ", given, " but the plan was made for ", planned,
           "; plan again for this batch");
}

}  // namespace

// What the plan's choice depends on must be what it was planned for; data, strides and per-call values
// (scale, soft-cap, slopes, sinks, LSE) are checked by check_attention on every run and read from the run.
void check_matches_plan(const PlanState& plan, const AttentionProblem& p) {
  const AttentionProblem& q = plan.planned;
  PA_CHECK(q.device == p.device, "run_attention: tensors are on ", device_name(p.device),
           " but the plan was made for ", device_name(q.device));
  expect_same("the query dtype", std::string(dtype_name(q.attn.q_dtype)),
              std::string(dtype_name(p.attn.q_dtype)));
  expect_same("the cache format", std::string(dtype_name(q.kv.dtype)), std::string(dtype_name(p.kv.dtype)));
  expect_same("the TurboQuant key bits", q.kv.tq_key_bits, p.kv.tq_key_bits);
  expect_same("the TurboQuant value bits", q.kv.tq_value_bits, p.kv.tq_value_bits);
  expect_same("num_tokens (query rows)", q.batch.num_tokens, p.batch.num_tokens);
  expect_same("num_seqs", q.batch.num_seqs, p.batch.num_seqs);
  expect_same("num_q_heads", q.attn.num_q_heads, p.attn.num_q_heads);
  expect_same("num_kv_heads", q.kv.num_kv_heads, p.kv.num_kv_heads);
  expect_same("head_dim", q.kv.head_dim, p.kv.head_dim);
  expect_same("block_size", q.kv.block_size, p.kv.block_size);
  expect_same("the max_query_len hint", q.max_query_len, p.max_query_len);
  expect_same("the max_seq_len hint", q.max_seq_len, p.max_seq_len);
  expect_same("window_left", q.attn.window_left, p.attn.window_left);
  expect_same("force_segments", q.force_segments, p.force_segments);
  expect_same("the presence of new_key/new_value (1 = given)", q.attn.new_k != nullptr ? 1 : 0,
              p.attn.new_k != nullptr ? 1 : 0);
  expect_same("the K/V scales' layout (per head = 1)", q.kv.scale_per_head, p.kv.scale_per_head);
}

}  // namespace core

DeviceContext::DeviceContext(Device device) : state_(core::backend_for(device).make_context(device)) {}

Device DeviceContext::device() const {
  return state_->device;
}

std::string DeviceContext::describe() const {
  return state_->describe();
}

DeviceContext& default_context(Device device) {
  static std::mutex mutex;
  static std::map<std::pair<int, int>, std::unique_ptr<DeviceContext>> contexts;
  const auto key = std::make_pair(static_cast<int>(device.kind), device.index);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = contexts.find(key);
  if (it == contexts.end()) it = contexts.emplace(key, std::make_unique<DeviceContext>(device)).first;
  return *it->second;
}

size_t AttentionPlan::workspace_bytes() const {
  return state().workspace_bytes;
}

Device AttentionPlan::device() const {
  return state().planned.device;
}

std::string AttentionPlan::describe() const {
  return state().description;
}

const core::PlanState& AttentionPlan::state() const {
  PA_CHECK(state_ != nullptr, "this AttentionPlan is empty: make one with plan_attention()");
  return *state_;
}

AttentionPlan plan_attention(DeviceContext& context, const TensorView& query, const PagedKVCache& cache,
                             const BatchDesc& batch, const AttentionParams& params) {
  auto plan = std::make_shared<core::PlanState>();
  plan->planned = core::check_attention(query, cache, batch, params, query);
  PA_CHECK(plan->planned.device == context.device(), "plan_attention: tensors are on ",
           device_name(plan->planned.device), " but the context is for ", device_name(context.device()));
  plan->context = context.state();
  core::backend_for(plan->planned.device).plan(*plan->context, plan->planned, *plan);
  return AttentionPlan(std::move(plan));
}

AttentionPlan plan_attention(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
                             const AttentionParams& params) {
  return plan_attention(default_context(query.device), query, cache, batch, params);
}

void run_attention(const AttentionPlan& plan, const TensorView& query, const PagedKVCache& cache,
                   const BatchDesc& batch, const AttentionParams& params, const TensorView& out,
                   Workspace workspace, Stream stream) {
  const core::PlanState& state = plan.state();
  const core::AttentionProblem p = core::check_attention(query, cache, batch, params, out);
  core::check_matches_plan(state, p);
  PA_CHECK(workspace.bytes >= state.workspace_bytes, "workspace of ", workspace.bytes,
           " bytes is smaller than the ", state.workspace_bytes,
           " bytes this plan needs (AttentionPlan::workspace_bytes())");
  PA_CHECK(state.workspace_bytes == 0 || reinterpret_cast<uintptr_t>(workspace.data) % 16 == 0,
           "workspace must be 16-byte aligned");
  core::backend_for(p.device).run(state, p, workspace, stream);
}

void validate_batch(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
                    Stream stream) {
  const core::AttentionProblem p = core::check_attention(query, cache, batch, AttentionParams{}, query);
  core::backend_for(p.device).validate_batch(p, stream);
}

}  // namespace pagedattn
