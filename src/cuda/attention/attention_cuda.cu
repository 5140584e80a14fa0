// Host side of CUDA attention: plan (check what only the CUDA path requires, find the compiled instance, ask
// the one selection function for the launch), run (fill the kernel's parameters from the plan and launch:
// no choice, no allocation, no synchronization) and the optional host check of the batch contents.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <memory>
#include <string>
#include <vector>

#include "core/log.h"
#include "cuda/attention/attention_params.h"
#include "cuda/attention/kv_tensor_map.h"
#include "cuda/attention/launch_selection.h"
#include "cuda/attention/unified_launch.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_context.h"
#include "cuda/device_guard.h"
#include "cuda/turboquant/attention_turboquant.h"
#include "pagedattn/kv_format.h"
#include "pagedattn_cuda_instances.h"

namespace pagedattn::cuda {

// Inputs are read 16 bytes at a time; outputs are written 4 elements (8 bytes) at a time.
void check_vector_access(const void* ptr, std::initializer_list<int64_t> strides, int vector,
                         const char* name, int bytes) {
  if (bytes == 0) bytes = 2 * vector;
  PA_CHECK(reinterpret_cast<uintptr_t>(ptr) % bytes == 0, name, " must be ", bytes,
           "-byte aligned for the CUDA backend (vector accesses of ", vector, " elements)");
  for (int64_t s : strides) {
    PA_CHECK(s % vector == 0, name, " strides must be multiples of ", vector,
             " elements for the CUDA backend, got ", s);
  }
}

namespace {

void check_supported(const core::AttentionProblem& p) {
  PA_CHECK(p.attn.q_dtype == DType::kFloat16 || p.attn.q_dtype == DType::kBFloat16,
           "the CUDA backend supports fp16 and bf16 queries, got ", dtype_name(p.attn.q_dtype));
  PA_CHECK(p.kv.dtype == p.attn.q_dtype || kv_format(p.kv.dtype).quantized(), "the CUDA backend reads ",
           dtype_name(p.attn.q_dtype), " queries over ", dtype_name(p.attn.q_dtype),
           ", fp8_e4m3, fp8_e5m2 or int8 caches; a ", dtype_name(p.kv.dtype), " cache is CPU-only");
  check_vector_access(p.attn.q, {p.attn.q_stride_token, p.attn.q_stride_head}, 8, "query");
  check_vector_access(p.attn.o, {p.attn.o_stride_token, p.attn.o_stride_head}, 4, "out");
  // K/V rows are read 16 bytes at a time whatever the format: 8 bf16/fp16 elements or 16 one-byte codes.
  const int per16 = 16 / dtype_size(p.kv.dtype);
  check_vector_access(p.kv.k.data, {p.kv.k.stride_block, p.kv.k.stride_token, p.kv.k.stride_head}, per16,
                      "cache.k", 16);
  check_vector_access(p.kv.v.data, {p.kv.v.stride_block, p.kv.v.stride_token, p.kv.v.stride_head}, per16,
                      "cache.v", 16);
  if (p.kv.k_meta.data != nullptr) {  // int8 scales: 4-byte copies
    check_vector_access(p.kv.k_meta.data, {}, 1, "cache.k_meta", 4);
    check_vector_access(p.kv.v_meta.data, {}, 1, "cache.v_meta", 4);
  }
}

// The compiled entry points of one (query dtype, K/V format, head dim) instantiation.
struct Instance {
  void (*launch)(const LaunchChoice&, const UnifiedParams&, cudaStream_t);
  int (*resident)(TileShape);
};

Instance find_instance(DType dtype, DType cache_dtype, int head_dim) {
#define PAGEDATTN_MATCH(TYPE, DTYPE, FORMAT, CACHE_DTYPE, HEAD_DIM)         \
  if (dtype == DTYPE && cache_dtype == CACHE_DTYPE && head_dim == HEAD_DIM) \
    return {&launch_attention<TYPE, FORMAT, HEAD_DIM>, &resident_ctas_per_sm<TYPE, FORMAT, HEAD_DIM>};
  PAGEDATTN_FOR_EACH_INSTANCE(PAGEDATTN_MATCH)
#undef PAGEDATTN_MATCH
  PA_CHECK(false, "head_dim ", head_dim, " with ", dtype_name(dtype), " queries over a ",
           dtype_name(cache_dtype), " cache is not compiled into this build (head dims ",
           PAGEDATTN_HEAD_DIMS_STRING, ", dtypes ", PAGEDATTN_DTYPES_STRING, ", K/V formats ",
           PAGEDATTN_KV_FORMATS_STRING,
           "); reconfigure with -DPAGEDATTN_HEAD_DIMS / -DPAGEDATTN_DTYPES / -DPAGEDATTN_KV_FORMATS");
}

// The launch for a problem. When it takes the TMA decode tile, `maps` receives the pools' tensor maps; a
// pool the driver cannot describe moves the launch to the cp.async tile (logged once with the reason).
LaunchChoice choose(CudaContext& ctx, const Instance& inst, const core::AttentionProblem& p,
                    KVTensorMaps& maps) {
  const bool quantized = kv_format(p.kv.dtype).quantized();
  LaunchInputs in;
  in.tma_decode = ctx.tma_decode();
  if (in.tma_decode) {
    const std::string limit = tma_decode_shape_limit(p.kv.head_dim, p.kv.block_size, p.kv.dtype);
    if (!limit.empty()) {
      core::log_once("decode tiles use the cp.async gather: " + limit);
      in.tma_decode = false;
    }
  }
  auto decode_shape = [&] { return in.tma_decode ? TileShape::kDecodeSm90 : TileShape::kDecode; };
  const void* kernel = reinterpret_cast<const void*>(inst.resident);
  in.resident_decode = ctx.resident(kernel, decode_shape(), inst.resident);
  in.wgmma_prefill = ctx.wgmma_prefill();
  if (in.wgmma_prefill && quantized) {
    core::log_once(std::string("prefill tiles over ") + std::string(dtype_name(p.kv.dtype)) +
                   " caches use the mma.sync kernel: the wgmma prefill kernel reads bf16/fp16 pages only");
    in.wgmma_prefill = false;
  }
  in.resident_prefill =
      ctx.resident(kernel, in.wgmma_prefill ? TileShape::kPrefillSm90 : TileShape::kPrefill, inst.resident);
  in.sm_count = ctx.sm_count();
  in.early_merge_launch = ctx.major() >= 9;
  in.early_start = ctx.early_start();
  fill_batch_inputs(p, in);
  in.converted_kv = quantized;
  LaunchChoice choice = choose_launch(in);
  if (choice.shape == TileShape::kDecodeSm90) {
    const std::string why = ctx.tensor_maps().encode(p.kv, maps);
    if (!why.empty()) {
      core::log_once("decode tiles use the cp.async gather: " + why);
      in.tma_decode = false;
      in.resident_decode = ctx.resident(kernel, decode_shape(), inst.resident);
      choice = choose_launch(in);
    }
  }
  return choice;
}

const char* shape_name(TileShape shape) {
  switch (shape) {
    case TileShape::kDecode:
      return "decode (cp.async)";
    case TileShape::kDecodeSm90:
      return "decode (TMA)";
    case TileShape::kPrefill:
      return "prefill (mma.sync)";
    case TileShape::kPrefillSm90:
      return "prefill (wgmma)";
  }
  return "?";
}

// What run needs from the plan: the instance and the launch.
struct CudaLaunch {
  Instance inst;
  LaunchChoice choice;
};

// Copies the batch description to the host and runs the same checks as the CPU path (same messages).
void validate_on_host(const core::AttentionProblem& p, cudaStream_t stream) {
  const auto& b = p.batch;
  std::vector<int32_t> qsl(b.num_seqs + 1), lens(b.num_seqs);
  const size_t table_elems =
      b.num_seqs == 0 ? 0 : (b.num_seqs - 1) * b.block_table_stride + b.max_blocks_per_seq;
  std::vector<int32_t> tables(table_elems);
  PA_CUDA_CHECK(
      cudaMemcpyAsync(qsl.data(), b.query_start_loc, qsl.size() * 4, cudaMemcpyDeviceToHost, stream));
  PA_CUDA_CHECK(cudaMemcpyAsync(lens.data(), b.seq_lens, lens.size() * 4, cudaMemcpyDeviceToHost, stream));
  if (table_elems) {
    PA_CUDA_CHECK(
        cudaMemcpyAsync(tables.data(), b.block_tables, table_elems * 4, cudaMemcpyDeviceToHost, stream));
  }
  PA_CUDA_CHECK(cudaStreamSynchronize(stream));
  kernels::BatchArgs host = b;
  host.query_start_loc = qsl.data();
  host.seq_lens = lens.data();
  host.block_tables = tables.data();
  core::check_batch_contents(host, p.kv);
  for (int32_t s = 0; s < b.num_seqs; ++s) {
    PA_CHECK(p.max_query_len < 0 || qsl[s + 1] - qsl[s] <= p.max_query_len, "max_query_len hint ",
             p.max_query_len, " is below sequence ", s, "'s query_len ", qsl[s + 1] - qsl[s]);
    PA_CHECK(p.max_seq_len < 0 || lens[s] <= p.max_seq_len, "max_seq_len hint ", p.max_seq_len,
             " is below seq_lens[", s, "] = ", lens[s]);
  }
}

}  // namespace

void fill_unified_params(const LaunchChoice& choice, const core::AttentionProblem& p, unsigned char* scratch,
                         UnifiedParams& params) {
  params.kv = p.kv;
  params.batch = p.batch;
  params.attn = p.attn;
  params.group = FastDivmod(p.attn.group_size);
  params.num_segments = choice.num_segments;
  params.grid_tiles = static_cast<int32_t>(choice.grid_tiles);
  params.one_tile_per_seq = choice.one_tile_per_seq ? 1 : 0;
  if (choice.persistent_ctas > 0) {
    params.work_counter = reinterpret_cast<uint32_t*>(scratch);
    scratch += kWorkCounterBytes;
  }
  if (choice.num_segments > 1) {
    params.partial_o = reinterpret_cast<float*>(scratch);
    params.partial_ml = params.partial_o + static_cast<size_t>(p.batch.num_tokens) * p.attn.num_q_heads *
                                               choice.num_segments * p.kv.head_dim;
  }
}

void fill_batch_inputs(const core::AttentionProblem& p, LaunchInputs& in) {
  in.num_seqs = p.batch.num_seqs;
  in.num_tokens = p.batch.num_tokens;
  in.num_q_heads = p.attn.num_q_heads;
  in.num_kv_heads = p.kv.num_kv_heads;
  in.head_dim = p.kv.head_dim;
  in.max_query_len = p.max_query_len;
  in.max_seq_len = p.max_seq_len;
  in.window_left = p.attn.window_left;
  in.force_segments = p.force_segments;
  in.workspace_limit = p.max_workspace_bytes;
}

void plan_attention(CudaContext& ctx, const core::AttentionProblem& p, core::PlanState& plan) {
  if (p.kv.tq_key_bits != 0) return plan_turboquant_attention(ctx, p, plan);
  PA_CHECK(
      p.attn.new_k == nullptr,
      "attention with the step's raw K/V (params.new_key / new_value) is implemented by the CUDA backend "
      "for TurboQuant caches only (the CPU backend runs it for every format); a ",
      dtype_name(p.kv.dtype), " cache holds what write_kv wrote: leave them out");
  DeviceGuard guard(p.device.index);
  check_supported(p);
  auto launch = std::make_shared<CudaLaunch>();
  launch->inst = find_instance(p.attn.q_dtype, p.kv.dtype, p.kv.head_dim);
  KVTensorMaps maps;
  launch->choice = choose(ctx, launch->inst, p, maps);
  const LaunchChoice& c = launch->choice;
  plan.workspace_bytes = c.workspace_bytes;
  plan.description = std::string(shape_name(c.shape)) + " tile " + std::to_string(c.block_m) + "x" +
                     std::to_string(c.block_n) + ", " + std::to_string(c.num_segments) + " segment(s), " +
                     (c.persistent_ctas > 0 ? "persistent " + std::to_string(c.persistent_ctas) + " CTAs"
                                            : "grid " + std::to_string(c.grid_tiles) + " tiles") +
                     ", workspace " + std::to_string(c.workspace_bytes) + " B";
  plan.launch = std::move(launch);
}

void run_attention(const core::PlanState& plan, const core::AttentionProblem& p, Workspace workspace,
                   Stream stream_handle) {
  if (p.kv.tq_key_bits != 0) return run_turboquant_attention(plan, p, workspace, stream_handle);
  // This run's tensors (another layer's cache, the real `out`, which the plan never saw) must meet the vector
  // access rules too: a few modulo tests, not a choice.
  check_supported(p);
  if (p.batch.num_tokens == 0) return;
  DeviceGuard guard(p.device.index);
  const auto& launch = *static_cast<const CudaLaunch*>(plan.launch.get());
  const LaunchChoice& choice = launch.choice;
  UnifiedParams params;
  if (choice.shape == TileShape::kDecodeSm90) {
    // The pools of this layer (same geometry as planned; the maps are remembered per pool).
    auto& ctx = static_cast<CudaContext&>(*plan.context);
    const std::string why = ctx.tensor_maps().encode(p.kv, params.tma);
    PA_CHECK(why.empty(),
             "run_attention: the plan loads K/V with TMA, but this cache's pools cannot be "
             "described to it (",
             why, "); plan with this cache");
  }
  fill_unified_params(choice, p, static_cast<unsigned char*>(workspace.data), params);
  launch.inst.launch(choice, params, static_cast<cudaStream_t>(stream_handle));
}

void validate_batch(const core::AttentionProblem& p, Stream stream_handle) {
  DeviceGuard guard(p.device.index);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  PA_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
  if (capture == cudaStreamCaptureStatusNone) validate_on_host(p, stream);
}

}  // namespace pagedattn::cuda
