// Plan once per batch, run once per layer.
//
// A serving step builds one batch (block tables, lengths, query layout) and runs attention over it in every
// layer of the model. plan_attention() answers everything that depends only on the batch's shape, once per
// step: whether the configuration is supported (or a clear error), the kernel, tile and split-KV choice, the
// workspace size. run_attention() then makes no choices, allocates nothing and never synchronizes: it checks
// that the tensors it is given match the plan, and launches. It is what a model calls per layer and what a
// CUDA graph captures (a captured run replays the planned launch; plan again for another batch shape).
//
//   pagedattn::AttentionPlan plan = pagedattn::plan_attention(query, cache_of_layer0, batch, params);
//   workspace = allocate(plan.workspace_bytes());            // or a slice of a buffer reserved once
//   pagedattn::validate_batch(query, cache_of_layer0, batch, stream);   // optional: synchronizes
//   for (layer ...) pagedattn::run_attention(plan, query, cache[layer], batch, params, out, workspace,
//   stream);
//
// plan_attention reads metadata only (shapes, dtypes, strides, the batch's host hints): no tensor contents,
// and on the GPU no device memory. The caches of all layers must share the planned geometry and format.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "pagedattn/attention.h"

namespace pagedattn {

namespace core {
struct ContextState;
struct PlanState;
}  // namespace core

/// Per-device state behind every plan on that device: the device's facts (SM count, compute capability), the
/// decisions of the PAGEDATTN_WGMMA / PAGEDATTN_USE_TMA / PAGEDATTN_PDL switches (read when the context is
/// made), kernel occupancy and the encoded tensor maps of the pools seen so far. Thread-safe. The flat ops
/// and plan_attention without a context use default_context(device).
class DeviceContext {
 public:
  /// A fresh context: queries the device and reads the environment switches now.
  explicit DeviceContext(Device device);
  Device device() const;
  /// One line: the device and what the switches decided ("cuda:0 sm_90 132 SMs: prefill wgmma, decode tma,
  /// early start on").
  std::string describe() const;
  const std::shared_ptr<core::ContextState>& state() const { return state_; }

 private:
  std::shared_ptr<core::ContextState> state_;
};

/// The process-wide context of a device, made on first use.
DeviceContext& default_context(Device device);

/// What plan_attention decided for one batch shape. Cheap to copy (shared, immutable).
class AttentionPlan {
 public:
  AttentionPlan() = default;
  explicit AttentionPlan(std::shared_ptr<const core::PlanState> state) : state_(std::move(state)) {}

  bool empty() const { return state_ == nullptr; }
  /// Device bytes run_attention needs as workspace (16-byte aligned); 0 on the CPU.
  size_t workspace_bytes() const;
  Device device() const;
  /// The choice in words: kernel, tile, split-KV segments, grid, workspace.
  std::string describe() const;
  const core::PlanState& state() const;

 private:
  std::shared_ptr<const core::PlanState> state_;
};

/// Plans attention for this shape of batch (see the file comment). Same arguments and checks as attention();
/// `out` is not needed. An unsupported or uncompiled configuration is an error here, never at run time.
AttentionPlan plan_attention(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
                             const AttentionParams& params = {});
AttentionPlan plan_attention(DeviceContext& context, const TensorView& query, const PagedKVCache& cache,
                             const BatchDesc& batch, const AttentionParams& params = {});

/// Runs a plan: attention of `query` over `cache` into `out` (see attention()). The query, cache and batch
/// must have the planned shapes, dtypes, format and hints (an error names the first difference); their data,
/// strides and the per-call params (scale, soft-cap, ALiBi slopes, sinks, LSE) may change from call to call,
/// except that the plan fixes the sliding window, force_segments and whether new_key/new_value are given
/// (max_workspace_bytes is read by the plan only: its choice already fits).
/// params.validate_batch is ignored (see validate_batch(); the CPU backend checks the batch contents on every
/// run). workspace must hold plan.workspace_bytes().
void run_attention(const AttentionPlan& plan, const TensorView& query, const PagedKVCache& cache,
                   const BatchDesc& batch, const AttentionParams& params, const TensorView& out,
                   Workspace workspace = {}, Stream stream = nullptr);

/// Checks the batch's contents (block ids inside the pool, tables covering seq_lens, query_start_loc
/// monotone and consistent with the query rows, query_len <= seq_len, the host hints not below the real
/// maxima). GPU: copies them to the host and synchronizes the stream (skipped while it captures a CUDA
/// graph). Once per step is enough: every layer reads the same batch.
void validate_batch(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
                    Stream stream = nullptr);

}  // namespace pagedattn
