// Host side of attention over TurboQuant caches: plan (checks, the compiled instance, the launch choice, the
// workspace layout) and run (parameters from the plan, the launches).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <memory>
#include <numeric>
#include <string>

#include "cuda/attention/attention_params.h"
#include "cuda/attention/launch_selection.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "cuda/device_guard.h"
#include "cuda/turboquant/attention_turboquant.h"
#include "cuda/turboquant/tq_launch.h"
#include "pagedattn/turboquant.h"
#include "pagedattn_cuda_instances.h"

namespace pagedattn::cuda {
namespace {

struct TQInstance {
  void (*launch)(const LaunchChoice&, const UnifiedParams&, const TQLaunchArgs&, cudaStream_t);
  int (*resident)(TileShape);
};

TQInstance find_tq_instance(DType dtype, int key_bits, int value_bits, int head_dim) {
#define PAGEDATTN_TQ_MATCH(TYPE, DTYPE, KEY_BITS, VALUE_BITS, HEAD_DIM)                           \
  if (dtype == DTYPE && key_bits == KEY_BITS && value_bits == VALUE_BITS && head_dim == HEAD_DIM) \
    return {&launch_tq_attention<TYPE, KEY_BITS, VALUE_BITS, HEAD_DIM>,                           \
            &tq_resident_ctas_per_sm<TYPE, KEY_BITS, VALUE_BITS, HEAD_DIM>};
  PAGEDATTN_FOR_EACH_TQ_INSTANCE(PAGEDATTN_TQ_MATCH)
#undef PAGEDATTN_TQ_MATCH
  PA_CHECK(false, "attention over a ", tq::preset_info(tq::preset_of_bits(key_bits, value_bits)).name,
           " cache with head dim ", head_dim, " and ", dtype_name(dtype),
           " queries is not compiled into this build's CUDA kernels (-DPAGEDATTN_HEAD_DIMS = ",
           PAGEDATTN_HEAD_DIMS_STRING, ", query dtypes ", PAGEDATTN_DTYPES_STRING, ", formats ",
           PAGEDATTN_KV_FORMATS_STRING, "); the CPU backend runs every head dim");
}

// A code plane's rows are read with loads as wide as gcd(row bytes, 16) allows: its pointer and strides must
// keep every row on that alignment.
void check_code_plane(const kernels::KVPlane& plane, int row_bytes, const char* name) {
  const int align = std::gcd(row_bytes, 16);
  check_vector_access(plane.data, {plane.stride_block, plane.stride_token, plane.stride_head}, align, name,
                      align);
}

void check_supported_tq(const core::AttentionProblem& p) {
  PA_CHECK(p.attn.q_dtype == DType::kFloat16 || p.attn.q_dtype == DType::kBFloat16,
           "the CUDA backend supports fp16 and bf16 queries, got ", dtype_name(p.attn.q_dtype));
  const int d = p.kv.head_dim;
  check_code_plane(p.kv.k, d * p.kv.tq_key_bits / 8, "cache.k (key codes)");
  check_code_plane(p.kv.v, d * p.kv.tq_value_bits / 8, "cache.v (value codes)");
  // Each token's value scale and minimum are one 4-byte load.
  check_vector_access(p.kv.v_meta.data,
                      {p.kv.v_meta.stride_block, p.kv.v_meta.stride_token, p.kv.v_meta.stride_head}, 2,
                      "cache.v_meta (value scale, minimum)", 4);
  check_vector_access(p.attn.o, {p.attn.o_stride_token, p.attn.o_stride_head}, 4, "out");
}

constexpr size_t align256(size_t n) {
  return (n + 255) / 256 * 256;
}

struct TQPlan {
  TQInstance inst;
  LaunchChoice choice;
  size_t q_rot_offset = 0;    // workspace bytes before the rotated queries
  size_t q_scale_offset = 0;  // and before their row scales
  // With the step's raw K/V: its staged key and value rows and their row scales (0: none).
  size_t raw_k_offset = 0, raw_k_scale_offset = 0, raw_v_offset = 0, raw_v_scale_offset = 0;
  TurboQuantTables tab;
};

}  // namespace

void plan_turboquant_attention(CudaContext& ctx, const core::AttentionProblem& p, core::PlanState& plan) {
  DeviceGuard guard(p.device.index);
  check_supported_tq(p);
  auto launch = std::make_shared<TQPlan>();
  launch->inst = find_tq_instance(p.attn.q_dtype, p.kv.tq_key_bits, p.kv.tq_value_bits, p.kv.head_dim);
  LaunchInputs in;
  in.decode_shape_only = true;  // the kernel has the one 16 x 64 tile
  in.resident_decode = ctx.resident(reinterpret_cast<const void*>(launch->inst.resident), TileShape::kDecode,
                                    launch->inst.resident);
  in.sm_count = ctx.sm_count();
  in.early_merge_launch = ctx.major() >= 9;
  fill_batch_inputs(p, in);
  in.converted_kv = true;
  const size_t rows = static_cast<size_t>(p.batch.num_tokens) * p.attn.num_q_heads;
  const size_t kv_rows = static_cast<size_t>(p.batch.num_tokens) * p.kv.num_kv_heads;
  // Behind the split-KV partials: the rotated queries (fp16) and their row scales, then with the step's raw
  // K/V its staged keys and values (fp16) and their row scales, each 256-aligned. All sized by the step's
  // tokens, never by the context.
  const size_t staged_kv =
      p.attn.new_k != nullptr
          ? 2 * (align256(kv_rows * p.kv.head_dim * sizeof(__half)) + align256(kv_rows * sizeof(float)))
          : 0;
  const size_t rotated_bytes =
      align256(rows * p.kv.head_dim * sizeof(__half)) + align256(rows * sizeof(float)) + staged_kv;
  if (p.max_workspace_bytes > 0) {
    PA_CHECK(p.max_workspace_bytes >= rotated_bytes + 256, "max_workspace_bytes ", p.max_workspace_bytes,
             " is below the ", rotated_bytes + 256, " bytes a TurboQuant plan of ", rows,
             " query rows needs for its rotated queries");
    in.workspace_limit = p.max_workspace_bytes - rotated_bytes - 255;  // 255: the partials' alignment
  }
  launch->choice = choose_launch(in);
  const LaunchChoice& c = launch->choice;
  launch->q_rot_offset = align256(c.workspace_bytes);
  launch->q_scale_offset = launch->q_rot_offset + align256(rows * p.kv.head_dim * sizeof(__half));
  plan.workspace_bytes = launch->q_scale_offset + align256(rows * sizeof(float));
  if (p.attn.new_k != nullptr) {
    const size_t staged_rows = align256(kv_rows * p.kv.head_dim * sizeof(__half)),
                 staged_scales = align256(kv_rows * sizeof(float));
    launch->raw_k_offset = plan.workspace_bytes;
    launch->raw_k_scale_offset = launch->raw_k_offset + staged_rows;
    launch->raw_v_offset = launch->raw_k_scale_offset + staged_scales;
    launch->raw_v_scale_offset = launch->raw_v_offset + staged_rows;
    plan.workspace_bytes = launch->raw_v_scale_offset + staged_scales;
  }
  launch->tab = make_turboquant_tables(p.kv.head_dim, p.kv.tq_key_bits);
  plan.description = "TurboQuant (" + std::to_string(p.kv.tq_key_bits) + "-bit keys, " +
                     std::to_string(p.kv.tq_value_bits) + "-bit values" +
                     (p.attn.new_k != nullptr ? ", the step's own K/V raw" : "") + ") decode tile 16x64, " +
                     std::to_string(c.num_segments) + " segment(s), grid " + std::to_string(c.grid_tiles) +
                     " tiles, workspace " + std::to_string(plan.workspace_bytes) + " B";
  plan.launch = std::move(launch);
}

void run_turboquant_attention(const core::PlanState& plan, const core::AttentionProblem& p,
                              Workspace workspace, Stream stream) {
  check_supported_tq(p);  // this run's tensors (another layer's cache, the real `out`)
  if (p.batch.num_tokens == 0) return;
  DeviceGuard guard(p.device.index);
  const auto& launch = *static_cast<const TQPlan*>(plan.launch.get());
  UnifiedParams params;
  unsigned char* scratch = static_cast<unsigned char*>(workspace.data);
  fill_unified_params(launch.choice, p, scratch, params);
  TQLaunchArgs args;
  args.q_rot = reinterpret_cast<__half*>(scratch + launch.q_rot_offset);
  args.q_row_scale = reinterpret_cast<float*>(scratch + launch.q_scale_offset);
  args.tab = launch.tab;
  if (launch.raw_k_offset != 0) {
    args.raw_k = reinterpret_cast<__half*>(scratch + launch.raw_k_offset);
    args.raw_k_scale = reinterpret_cast<float*>(scratch + launch.raw_k_scale_offset);
    args.raw_v = reinterpret_cast<__half*>(scratch + launch.raw_v_offset);
    args.raw_v_scale = reinterpret_cast<float*>(scratch + launch.raw_v_scale_offset);
  }
  launch.inst.launch(launch.choice, params, args, static_cast<cudaStream_t>(stream));
}

}  // namespace pagedattn::cuda
