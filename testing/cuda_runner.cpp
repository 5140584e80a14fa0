// The CUDA runner: mirrors a HostProblem on the device, runs, and copies out/lse back. Timing replays a CUDA
// graph of one attention call (no validation, no host work inside), timed with events, median of reps.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "pagedattn/error.h"
#include "pagedattn/info.h"
#include "pagedattn/kv_format.h"
#include "pagedattn/plan.h"
#include "runner.h"

#define RUNNER_CUDA_CHECK(call)                                             \
  do {                                                                      \
    const cudaError_t s_ = (call);                                          \
    PA_CHECK(s_ == cudaSuccess, #call " failed: ", cudaGetErrorString(s_)); \
  } while (0)

namespace pagedattn::testing {
namespace {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) RUNNER_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

template <typename V>
DeviceBuffer upload(const V& host) {
  DeviceBuffer d(host.size() * sizeof(host[0]));
  if (d.bytes()) RUNNER_CUDA_CHECK(cudaMemcpy(d.get(), host.data(), d.bytes(), cudaMemcpyHostToDevice));
  return d;
}

TensorView on_device(TensorView t, const DeviceBuffer& buf) {
  t.data = buf.get();
  t.device = Device::cuda(0);
  return t;
}

// Device copies of every input and output of one problem, and the views the op takes.
struct DeviceProblem {
  DeviceBuffer k, v, k_scale, v_scale, k_meta, v_meta, q, out, alibi, sinks, lse, tables, lens, qsl, new_k,
      new_v, workspace;
  TensorView query, output;
  PagedKVCache cache;
  BatchDesc batch;
  AttentionParams params;

  explicit DeviceProblem(HostProblem& p)
      : k(upload(p.k_pool)),
        v(upload(p.v_pool)),
        k_scale(upload(p.k_scale)),
        v_scale(upload(p.v_scale)),
        // int8: fp32 scales; TurboQuant: fp16 key norms and (value scale, minimum) pairs.
        k_meta(p.spec.tq ? upload(p.k_norms) : upload(p.k_meta)),
        v_meta(p.spec.tq ? upload(p.v_scale_min) : upload(p.v_meta)),
        q(upload(p.q)),
        out(upload(p.out)),
        alibi(upload(p.alibi)),
        sinks(upload(p.sinks)),
        lse(upload(p.lse)),
        tables(upload(p.block_tables)),
        lens(upload(p.seq_lens)),
        qsl(upload(p.query_start_loc)),
        new_k(upload(p.new_k)),
        new_v(upload(p.new_v)) {
    query = on_device(p.query(), q);
    output = on_device(p.output(), out);
    cache = p.cache();
    cache.k = on_device(cache.k, k);
    cache.v = on_device(cache.v, v);
    if (cache.k_scale.data) cache.k_scale = on_device(cache.k_scale, k_scale);
    if (cache.v_scale.data) cache.v_scale = on_device(cache.v_scale, v_scale);
    if (cache.k_meta.data) cache.k_meta = on_device(cache.k_meta, k_meta);
    if (cache.v_meta.data) cache.v_meta = on_device(cache.v_meta, v_meta);
    batch = p.batch();
    batch.block_tables = on_device(batch.block_tables, tables);
    batch.seq_lens = on_device(batch.seq_lens, lens);
    batch.query_start_loc = on_device(batch.query_start_loc, qsl);
    params = p.params();
    params.force_segments = p.spec.force_segments;  // before the workspace is sized below
    params.max_workspace_bytes = p.spec.max_workspace_bytes;
    if (params.alibi_slopes.data) params.alibi_slopes = on_device(params.alibi_slopes, alibi);
    if (params.sinks.data) params.sinks = on_device(params.sinks, sinks);
    if (params.lse.data) params.lse = on_device(params.lse, lse);
    if (params.new_key.data) params.new_key = on_device(params.new_key, new_k);
    if (params.new_value.data) params.new_value = on_device(params.new_value, new_v);
    workspace = DeviceBuffer(attention_workspace_size(query, cache, batch, params));
  }

  void run(cudaStream_t stream) {
    attention(query, cache, batch, params, output, {workspace.get(), workspace.bytes()}, stream);
  }

  void download(HostProblem& p) {
    RUNNER_CUDA_CHECK(cudaDeviceSynchronize());
    RUNNER_CUDA_CHECK(cudaMemcpy(p.out.data(), out.get(), p.out.size(), cudaMemcpyDeviceToHost));
    if (!p.lse.empty()) {
      RUNNER_CUDA_CHECK(cudaMemcpy(p.lse.data(), lse.get(), p.lse.size() * 4, cudaMemcpyDeviceToHost));
    }
  }
};

class CudaRunner final : public BackendRunner {
 public:
  std::string name() const override { return "cuda"; }

  std::string unsupported(const ProblemSpec& s) const override {
    if (s.tq) return cuda_not_compiled(s);
    if (s.cache_dtype != s.dtype && !kv_format(s.cache_dtype).quantized())
      return "the CUDA backend reads caches of the query dtype or quantized ones";
    return cuda_not_compiled(s.dtype, s.cache_dtype, s.head_dim);
  }

  std::string unsupported(const WriteKVSpec& s) const override {
    if (kv_format(s.cache_dtype).quantized()) return "";
    if (s.cache_dtype != s.src_dtype || s.src_dtype == DType::kFloat32)
      return "the CUDA backend writes bf16/fp16 caches from keys of the same dtype";
    return "";
  }

  void run_write_kv(HostWriteKV& p) override {
    DeviceBuffer key = upload(p.key), value = upload(p.value), slots = upload(p.slots);
    DeviceBuffer k = upload(p.k_pool), v = upload(p.v_pool);
    DeviceBuffer ks = upload(p.k_scale), vs = upload(p.v_scale), km = upload(p.k_meta), vm = upload(p.v_meta);
    PagedKVCache cache = p.cache();
    cache.k = on_device(cache.k, k);
    cache.v = on_device(cache.v, v);
    if (cache.k_scale.data) cache.k_scale = on_device(cache.k_scale, ks);
    if (cache.v_scale.data) cache.v_scale = on_device(cache.v_scale, vs);
    if (cache.k_meta.data) cache.k_meta = on_device(cache.k_meta, km);
    if (cache.v_meta.data) cache.v_meta = on_device(cache.v_meta, vm);
    write_kv(on_device(p.key_view(), key), on_device(p.value_view(), value), on_device(p.slot_view(), slots),
             cache);
    RUNNER_CUDA_CHECK(cudaGetLastError());
    RUNNER_CUDA_CHECK(cudaDeviceSynchronize());
    RUNNER_CUDA_CHECK(cudaMemcpy(p.k_pool.data(), k.get(), p.k_pool.size(), cudaMemcpyDeviceToHost));
    RUNNER_CUDA_CHECK(cudaMemcpy(p.v_pool.data(), v.get(), p.v_pool.size(), cudaMemcpyDeviceToHost));
    if (!p.k_meta.empty()) {
      RUNNER_CUDA_CHECK(cudaMemcpy(p.k_meta.data(), km.get(), p.k_meta.size() * 4, cudaMemcpyDeviceToHost));
      RUNNER_CUDA_CHECK(cudaMemcpy(p.v_meta.data(), vm.get(), p.v_meta.size() * 4, cudaMemcpyDeviceToHost));
    }
  }

  void run_attention(HostProblem& p) override {
    DeviceProblem d(p);
    d.run(nullptr);
    RUNNER_CUDA_CHECK(cudaGetLastError());
    d.download(p);
  }

  HostCost host_cost(HostProblem& p, int reps) override {
    DeviceProblem d(p);
    d.run(nullptr);  // validated once; the context, occupancy and tensor maps are warm from here on
    RUNNER_CUDA_CHECK(cudaDeviceSynchronize());
    auto median_us = [](std::vector<double>& v) {
      std::nth_element(v.begin(), v.begin() + v.size() / 2, v.end());
      return v[v.size() / 2];
    };
    using clock = std::chrono::steady_clock;
    std::vector<double> plan_us, run_us;
    AttentionPlan plan;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = clock::now();
      plan = plan_attention(d.query, d.cache, d.batch, d.params);
      plan_us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
    }
    for (int i = 0; i < reps; ++i) {
      const auto t0 = clock::now();
      pagedattn::run_attention(plan, d.query, d.cache, d.batch, d.params, d.output,
                               {d.workspace.get(), d.workspace.bytes()}, nullptr);
      run_us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
      // Keep the launch queue short, so that no enqueue waits for a free slot (that would time the GPU).
      if (i % 8 == 7) RUNNER_CUDA_CHECK(cudaDeviceSynchronize());
    }
    RUNNER_CUDA_CHECK(cudaDeviceSynchronize());
    return {median_us(plan_us), median_us(run_us)};
  }

  double time_attention(HostProblem& p, int warmup, int reps) override {
    PA_CHECK(reps >= 1 && warmup >= 0, "time_attention: reps must be >= 1 and warmup >= 0, got ", reps,
             " and ", warmup);
    DeviceProblem d(p);
    cudaStream_t stream;
    RUNNER_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    d.run(stream);  // validated eager run; the graph below captures a planned run (no validation, no choice)
    const AttentionPlan plan = plan_attention(d.query, d.cache, d.batch, d.params);
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    RUNNER_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    pagedattn::run_attention(plan, d.query, d.cache, d.batch, d.params, d.output,
                             {d.workspace.get(), d.workspace.bytes()}, stream);
    RUNNER_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    RUNNER_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    for (int i = 0; i < warmup; ++i) RUNNER_CUDA_CHECK(cudaGraphLaunch(exec, stream));
    cudaEvent_t start, stop;
    RUNNER_CUDA_CHECK(cudaEventCreate(&start));
    RUNNER_CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<float> ms;
    for (int i = 0; i < reps; ++i) {
      RUNNER_CUDA_CHECK(cudaEventRecord(start, stream));
      RUNNER_CUDA_CHECK(cudaGraphLaunch(exec, stream));
      RUNNER_CUDA_CHECK(cudaEventRecord(stop, stream));
      RUNNER_CUDA_CHECK(cudaEventSynchronize(stop));
      float t = 0;
      RUNNER_CUDA_CHECK(cudaEventElapsedTime(&t, start, stop));
      ms.push_back(t);
    }
    d.download(p);
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
    std::nth_element(ms.begin(), ms.begin() + ms.size() / 2, ms.end());
    return ms[ms.size() / 2] * 1e-3;
  }
};

}  // namespace

std::string cuda_not_compiled(DType dtype, DType cache_dtype, int head_dim) {
  static const BuildInfo b = build_info();
  if (b.cuda_compiled(dtype, cache_dtype, head_dim)) return "";
  return "not compiled in this build (PAGEDATTN_DTYPES / PAGEDATTN_KV_FORMATS / PAGEDATTN_HEAD_DIMS)";
}

std::string cuda_not_compiled(const ProblemSpec& s) {
  if (!s.tq) return cuda_not_compiled(s.dtype, s.cache_dtype, static_cast<int>(s.head_dim));
  static const BuildInfo b = build_info();
  for (const auto& i : b.cuda_tq_instances) {
    if (i.query == s.dtype && i.preset == *s.tq && i.head_dim == s.head_dim) return "";
  }
  return "TurboQuant attention is not compiled for this query dtype, preset and head dim (PAGEDATTN_DTYPES / "
         "PAGEDATTN_KV_FORMATS / PAGEDATTN_HEAD_DIMS)";
}

void run_planned_layers(const std::vector<HostProblem*>& layers) {
  PA_CHECK(!layers.empty(), "run_planned_layers: no layers");
  std::vector<std::unique_ptr<DeviceProblem>> dev;
  for (HostProblem* p : layers) dev.push_back(std::make_unique<DeviceProblem>(*p));
  DeviceProblem& first = *dev[0];
  const AttentionPlan plan = plan_attention(first.query, first.cache, first.batch, first.params);
  validate_batch(first.query, first.cache, first.batch);
  for (auto& d : dev) {
    // Each layer's own params: its lse output (and alibi/sinks buffers) belong to the layer, the plan does
    // not.
    pagedattn::run_attention(plan, first.query, d->cache, first.batch, d->params, d->output,
                             {first.workspace.get(), first.workspace.bytes()}, nullptr);
    RUNNER_CUDA_CHECK(cudaGetLastError());
  }
  for (size_t i = 0; i < layers.size(); ++i) dev[i]->download(*layers[i]);
}

std::unique_ptr<BackendRunner> make_cuda_runner() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    cudaGetLastError();
    return nullptr;
  }
  return std::make_unique<CudaRunner>();
}

}  // namespace pagedattn::testing
