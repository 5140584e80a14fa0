// Host side of CUDA attention: checks what only the CUDA path requires, optionally validates the batch
// contents, asks the selection function for the launch and dispatches to the compiled instantiation.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "core/log.h"
#include "cuda/attention/kv_tensor_map.h"
#include "cuda/attention/launch_selection.h"
#include "cuda/attention/unified_launch.h"
#include "cuda/cuda_backend.h"
#include "cuda/cuda_check.h"
#include "cuda/device_guard.h"
#include "pagedattn/kv_format.h"
#include "pagedattn_cuda_instances.h"

namespace pagedattn::cuda {
namespace {

struct DeviceFacts {
  int sm_count = 0;
  int major = 0;  // compute capability
};

DeviceFacts device_facts(int device) {
  static std::mutex mutex;
  static std::vector<DeviceFacts> facts;
  std::lock_guard<std::mutex> lock(mutex);
  if (device >= static_cast<int>(facts.size())) facts.resize(device + 1);
  if (facts[device].sm_count == 0) {
    PA_CUDA_CHECK(cudaDeviceGetAttribute(&facts[device].major, cudaDevAttrComputeCapabilityMajor, device));
    PA_CUDA_CHECK(cudaDeviceGetAttribute(&facts[device].sm_count, cudaDevAttrMultiProcessorCount, device));
  }
  return facts[device];
}

// Inputs are read 16 bytes at a time; outputs are written 4 elements (8 bytes) at a time.
void check_vector_access(const void* ptr, std::initializer_list<int64_t> strides, int vector,
                         const char* name, int bytes = 0) {
  if (bytes == 0) bytes = 2 * vector;
  PA_CHECK(reinterpret_cast<uintptr_t>(ptr) % bytes == 0, name, " must be ", bytes,
           "-byte aligned for the CUDA backend (vector accesses of ", vector, " elements)");
  for (int64_t s : strides) {
    PA_CHECK(s % vector == 0, name, " strides must be multiples of ", vector,
             " elements for the CUDA backend, got ", s);
  }
}

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

int resident(const Instance& inst, int device, DType dtype, int head_dim, TileShape shape) {
  static std::mutex mutex;
  static std::map<std::tuple<int, int, int, int, const void*>, int> cache;
  const auto key = std::make_tuple(device, static_cast<int>(dtype), head_dim, static_cast<int>(shape),
                                   reinterpret_cast<const void*>(inst.resident));
  std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, inst.resident(shape)).first;
  return it->second;
}

// The launch for a problem. When it takes the TMA decode tile, `maps` receives the pools' tensor maps; a
// pool the driver cannot describe moves the launch to the cp.async tile (logged once with the reason).
// attention_workspace_size() asks the same question, so both see the same segment count.
LaunchChoice choose(const core::AttentionProblem& p, KVTensorMaps* maps) {
  const Instance inst = find_instance(p.attn.q_dtype, p.kv.dtype, p.kv.head_dim);
  const bool quantized = kv_format(p.kv.dtype).quantized();
  LaunchInputs in;
  in.tma_decode = tma_decode_enabled(p.device.index);
  if (in.tma_decode && quantized) {
    core::log_once(std::string("decode tiles over ") + std::string(dtype_name(p.kv.dtype)) +
                   " caches use the cp.async gather: the TMA decode kernel reads bf16/fp16 pages only");
    in.tma_decode = false;
  }
  if (in.tma_decode) {
    const std::string limit = tma_decode_shape_limit(p.kv.head_dim, p.kv.block_size);
    if (!limit.empty()) {
      core::log_once("decode tiles use the cp.async gather: " + limit);
      in.tma_decode = false;
    }
  }
  auto decode_shape = [&] { return in.tma_decode ? TileShape::kDecodeSm90 : TileShape::kDecode; };
  in.resident_decode = resident(inst, p.device.index, p.attn.q_dtype, p.kv.head_dim, decode_shape());
  in.wgmma_prefill = wgmma_prefill_enabled(p.device.index);
  if (in.wgmma_prefill && quantized) {
    core::log_once(std::string("prefill tiles over ") + std::string(dtype_name(p.kv.dtype)) +
                   " caches use the mma.sync kernel: the wgmma prefill kernel reads bf16/fp16 pages only");
    in.wgmma_prefill = false;
  }
  in.resident_prefill = resident(inst, p.device.index, p.attn.q_dtype, p.kv.head_dim,
                                 in.wgmma_prefill ? TileShape::kPrefillSm90 : TileShape::kPrefill);
  const DeviceFacts facts = device_facts(p.device.index);
  in.sm_count = facts.sm_count;
  in.early_merge_launch = facts.major >= 9;
  in.early_start = early_start_enabled(p.device.index);
  in.num_seqs = p.batch.num_seqs;
  in.num_tokens = p.batch.num_tokens;
  in.num_q_heads = p.attn.num_q_heads;
  in.num_kv_heads = p.kv.num_kv_heads;
  in.head_dim = p.kv.head_dim;
  in.max_query_len = p.max_query_len;
  in.max_seq_len = p.max_seq_len;
  in.force_segments = p.force_segments;
  LaunchChoice choice = choose_launch(in);
  if (choice.shape == TileShape::kDecodeSm90) {
    KVTensorMaps local;
    const std::string why = encode_kv_tensor_maps(p.kv, maps != nullptr ? *maps : local);
    if (!why.empty()) {
      core::log_once("decode tiles use the cp.async gather: " + why);
      in.tma_decode = false;
      in.resident_decode = resident(inst, p.device.index, p.attn.q_dtype, p.kv.head_dim, decode_shape());
      choice = choose_launch(in);
    }
  }
  return choice;
}

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

// A kernel choice behind a tri-state environment variable: unset = use it where it can run, "1" = required
// (an error naming `why` where it cannot run), "0" = never. Decided once per device; every time the kernel is
// not used, the reason is logged once. `facts(device, why)` says whether it can run there, and why not.
template <typename Facts>
bool decide_switch(const char* variable, const std::string& alternative, int device, Facts facts) {
  static std::mutex mutex;
  static std::map<std::pair<std::string, int>, bool> decided;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(std::string(variable), device);
  if (auto it = decided.find(key); it != decided.end()) return it->second;
  const char* env = std::getenv(variable);
  PA_CHECK(env == nullptr || std::strcmp(env, "0") == 0 || std::strcmp(env, "1") == 0, variable,
           " must be unset, 0 or 1, got '", env ? env : "", "'");
  std::string why;
  const bool can_run = facts(device, why);
  bool use = can_run;
  if (env != nullptr && env[0] == '1') {
    PA_CHECK(can_run, variable, "=1 but ", why);
  } else if (env != nullptr && env[0] == '0') {
    use = false;
    core::log_once(std::string(variable) + "=0: " + alternative);
  } else if (!can_run) {
    core::log_once(alternative + ": " + why);
  }
  decided[key] = use;
  return use;
}

[[maybe_unused]] std::pair<int, int> compute_capability(int device) {
  int major = 0, minor = 0;
  PA_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  PA_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  return {major, minor};
}

}  // namespace

// Whether long queries take the sm_90a wgmma tile (PAGEDATTN_WGMMA): where the build has sm_90a code and the
// device is compute capability 9.0.
bool wgmma_prefill_enabled(int device) {
  return decide_switch("PAGEDATTN_WGMMA", "prefill tiles use the portable mma.sync kernel", device,
                       [](int dev, std::string& why) {
#ifdef PAGEDATTN_HAS_SM90A
                         const auto [major, minor] = compute_capability(dev);
                         why = "device " + std::to_string(dev) + " is sm_" + std::to_string(major) +
                               std::to_string(minor) + ", the wgmma kernel runs on sm_90a only";
                         return major == 9 && minor == 0;
#else
                         why = std::string("this build has no sm_90a code (PAGEDATTN_CUDA_ARCHS=") +
                               PAGEDATTN_CUDA_ARCHS_STRING + ")";
                         (void)dev;
                         return false;
#endif
                       });
}

// Whether short-query tiles load K/V with TMA (PAGEDATTN_USE_TMA; decode_sm90_kernel.cuh): where the build
// has the kernel and the device is compute capability 9.x. A cache the kernel cannot read (head dim, page
// size, strides) takes the cp.async path either way; choose() logs that with its reason.
bool tma_decode_enabled(int device) {
  return decide_switch("PAGEDATTN_USE_TMA", "decode tiles use the cp.async gather", device,
                       [](int dev, std::string& why) {
#ifdef PAGEDATTN_HAS_TMA
                         const int major = compute_capability(dev).first;
                         why = "device " + std::to_string(dev) + " has compute capability " +
                               std::to_string(major) + ".x; the TMA decode kernel runs on 9.x only";
                         return major == 9;
#else
                         why = std::string(
                                   "this build has no TMA decode kernel (PAGEDATTN_TMA=OFF or no sm_90 target in "
                                   "PAGEDATTN_CUDA_ARCHS=") +
                               PAGEDATTN_CUDA_ARCHS_STRING + ")";
                         (void)dev;
                         return false;
#endif
                       });
}

// Whether attention kernels start early (PAGEDATTN_PDL; LaunchChoice::early_start): on compute capability
// 9.x, where programmatic dependent launch exists.
bool early_start_enabled(int device) {
  return decide_switch("PAGEDATTN_PDL", "attention kernels start after the previous kernel ends", device,
                       [](int dev, std::string& why) {
                         const int major = compute_capability(dev).first;
                         why = "device " + std::to_string(dev) + " has compute capability " +
                               std::to_string(major) + ".x; programmatic dependent launch needs 9.0 or newer";
                         return major >= 9;
                       });
}

size_t attention_workspace_size(const core::AttentionProblem& p) {
  DeviceGuard guard(p.device.index);
  return choose(p, nullptr).workspace_bytes;
}

void attention(const core::AttentionProblem& p, Workspace workspace, Stream stream_handle) {
  DeviceGuard guard(p.device.index);
  check_supported(p);
  const Instance inst = find_instance(p.attn.q_dtype, p.kv.dtype, p.kv.head_dim);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  if (p.validate_batch) {
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    PA_CUDA_CHECK(cudaStreamIsCapturing(stream, &capture));
    if (capture == cudaStreamCaptureStatusNone) validate_on_host(p, stream);
  }
  if (p.batch.num_tokens == 0) return;
  UnifiedParams params;
  const LaunchChoice choice = choose(p, &params.tma);
  PA_CHECK(workspace.bytes >= choice.workspace_bytes, "workspace of ", workspace.bytes,
           " bytes is smaller than the ", choice.workspace_bytes,
           " bytes this launch needs; size it with attention_workspace_size()");
  params.kv = p.kv;
  params.batch = p.batch;
  params.attn = p.attn;
  params.group = FastDivmod(p.attn.group_size);
  params.num_segments = choice.num_segments;
  params.grid_tiles = static_cast<int32_t>(choice.grid_tiles);
  params.one_tile_per_seq = choice.one_tile_per_seq ? 1 : 0;
  PA_CHECK(choice.workspace_bytes == 0 || reinterpret_cast<uintptr_t>(workspace.data) % 16 == 0,
           "workspace must be 16-byte aligned");
  unsigned char* scratch = static_cast<unsigned char*>(workspace.data);
  if (choice.persistent_ctas > 0) {
    params.work_counter = reinterpret_cast<uint32_t*>(scratch);
    scratch += kWorkCounterBytes;
  }
  if (choice.num_segments > 1) {
    params.partial_o = reinterpret_cast<float*>(scratch);
    params.partial_ml = params.partial_o + static_cast<size_t>(p.batch.num_tokens) * p.attn.num_q_heads *
                                               choice.num_segments * p.kv.head_dim;
  }
  inst.launch(choice, params, stream);
}

}  // namespace pagedattn::cuda
