#include "engine/cuda/cuda_runner.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "engine/cuda/model_kernels.cuh"
#include "engine/cuda/sampling.cuh"
#include "pagedattn/attention.h"
#include "pagedattn/block_manager.h"
#include "pagedattn/error.h"
#include "pagedattn/plan.h"
#include "pagedattn/turboquant.h"
#include "pagedattn/workspace.h"

namespace pagedattn::engine {
namespace {

#define RUNNER_CUDA(call)                                                                     \
  do {                                                                                        \
    const cudaError_t e_ = (call);                                                            \
    PA_CHECK(e_ == cudaSuccess, "CUDA runner: ", #call, " failed: ", cudaGetErrorString(e_)); \
  } while (0)
#define RUNNER_CUBLAS(call)                                                                  \
  do {                                                                                       \
    const cublasStatus_t s_ = (call);                                                        \
    PA_CHECK(s_ == CUBLAS_STATUS_SUCCESS, "CUDA runner: ", #call, " failed: cuBLAS status ", \
             static_cast<int>(s_));                                                          \
  } while (0)

// Device memory owned by the runner.
template <typename T>
class DeviceArray {
 public:
  DeviceArray() = default;
  explicit DeviceArray(size_t n) { resize(n); }
  DeviceArray(const DeviceArray&) = delete;
  DeviceArray& operator=(const DeviceArray&) = delete;
  ~DeviceArray() { cudaFree(ptr_); }
  void resize(size_t n) {
    if (n <= size_) return;
    cudaFree(ptr_);
    ptr_ = nullptr;
    RUNNER_CUDA(cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T)));
    size_ = n;
  }
  T* get() const { return ptr_; }
  size_t size() const { return size_; }

 private:
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

// Pinned host memory owned by the runner (the logits' landing place: a pageable copy would run at a fraction
// of the link's speed and need a second copy).
template <typename T>
class PinnedArray {
 public:
  PinnedArray() = default;
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;
  ~PinnedArray() { cudaFreeHost(ptr_); }
  void resize(size_t n) {
    if (n <= size_) return;
    cudaFreeHost(ptr_);
    ptr_ = nullptr;
    RUNNER_CUDA(cudaMallocHost(&ptr_, std::max<size_t>(n, 1) * sizeof(T)));
    size_ = n;
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

// Host fp32 -> device bf16 (or fp32 for norms).
DeviceArray<__nv_bfloat16>* upload_bf16(std::vector<std::unique_ptr<DeviceArray<__nv_bfloat16>>>& keep,
                                        std::initializer_list<const std::vector<float>*> parts) {
  size_t n = 0;
  for (const auto* p : parts) n += p->size();
  std::vector<__nv_bfloat16> host(n);
  size_t at = 0;
  for (const auto* p : parts) {
    for (float v : *p) host[at++] = __float2bfloat16(v);
  }
  keep.push_back(std::make_unique<DeviceArray<__nv_bfloat16>>(n));
  RUNNER_CUDA(cudaMemcpy(keep.back()->get(), host.data(), n * sizeof(__nv_bfloat16), cudaMemcpyHostToDevice));
  return keep.back().get();
}

DeviceArray<float>* upload_f32(std::vector<std::unique_ptr<DeviceArray<float>>>& keep,
                               const std::vector<float>& v) {
  keep.push_back(std::make_unique<DeviceArray<float>>(v.size()));
  RUNNER_CUDA(cudaMemcpy(keep.back()->get(), v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice));
  return keep.back().get();
}

// Where the runner's weights come from: a host copy (a model folder, or the CPU's random weights in tests),
// or random numbers drawn on the device (a preset's dummy weights: an 8B model's 16 GB never pass through the
// host).
struct WeightSource {
  const ModelWeightsF32* host = nullptr;
  uint64_t seed = 0;
};

// Decode steps replay CUDA graphs captured per (batch bucket, sequence-length bucket): the batch padded to
// the next bucket (pad rows attend over one token of block 0 and write no K/V: slot -1), the attention plan
// made for the bucket's longest sequence (a hint: shorter sequences are exact, their extra split segments
// empty).
constexpr int32_t kGraphBatchBuckets[] = {1,  2,   4,   8,   16,  24,  32,  40,  48,  56,  64, 80,
                                          96, 112, 128, 144, 160, 176, 192, 208, 224, 240, 256};
constexpr int32_t kGraphMinSeqBucket = 1024;

class CudaRunner final : public ModelRunner {
 public:
  CudaRunner(const ModelConfig& c, WeightSource source, const CudaRunnerOptions& o)
      : c_(c),
        o_(o),
        tq_(o.kv_cache_dtype.starts_with("tq_") ? std::optional{tq::parse_preset(o.kv_cache_dtype)}
                                                : std::nullopt),
        kv_dtype_(tq_                          ? DType::kUInt8
                  : o.kv_cache_dtype == "auto" ? DType::kBFloat16
                                               : parse_dtype(o.kv_cache_dtype)) {
    PA_CHECK(
        tq_ || kv_dtype_ == DType::kBFloat16 || kv_dtype_ == DType::kFloat8E4M3 ||
            kv_dtype_ == DType::kFloat8E5M2 || kv_dtype_ == DType::kInt8,
        "kv_cache_dtype ", o.kv_cache_dtype,
        ": the CUDA runner keeps bf16, fp8_e4m3, fp8_e5m2, int8 or TurboQuant (tq_k8v4, tq_k4v4, tq_k3v4, "
        "tq_k3v3) caches");
    PA_CHECK(o.max_num_seqs >= 1 && o.max_num_batched_tokens >= 1 && o.max_model_len >= 1,
             "CUDA runner: max_num_seqs, max_num_batched_tokens and max_model_len must be positive");
    RUNNER_CUDA(cudaSetDevice(o.device));
    RUNNER_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    RUNNER_CUBLAS(cublasCreate(&cublas_));
    RUNNER_CUBLAS(cublasSetStream(cublas_, stream_));
    // cuBLAS's own workspace, fixed, so a graph capture never sees it allocate.
    cublas_workspace_.resize(size_t{32} << 20);
    RUNNER_CUBLAS(cublasSetWorkspace(cublas_, cublas_workspace_.get(), cublas_workspace_.size()));
    load_weights(source);
    allocate_activations();
    allocate_pools();
    reserve_workspace();
    RUNNER_CUDA(cudaStreamSynchronize(stream_));
  }
  ~CudaRunner() override {
    for (auto& [key, g] : graphs_) cudaGraphExecDestroy(g.exec);
    cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
  }

  std::span<const float> forward(std::span<const int32_t> tokens, HostBatch& batch) override {
    run_eager(tokens, batch);
    const int32_t seqs = batch.num_seqs;
    const size_t count = static_cast<size_t>(seqs) * c_.vocab_size;
    host_logits_.resize(count);
    RUNNER_CUDA(cudaMemcpyAsync(host_logits_.get(), logits_.get(), count * sizeof(float),
                                cudaMemcpyDeviceToHost, stream_));
    RUNNER_CUDA(cudaStreamSynchronize(stream_));
    for (int32_t s = 0; s < seqs; ++s) {  // a sequence without new tokens has no logits
      if (batch.query_start_loc[s + 1] == batch.query_start_loc[s]) {
        std::fill_n(host_logits_.get() + static_cast<int64_t>(s) * c_.vocab_size, c_.vocab_size,
                    std::numeric_limits<float>::quiet_NaN());
      }
    }
    return {host_logits_.get(), count};
  }

  // The model, then the sampler on the device: only the tokens come back. Decode-only steps replay a graph.
  std::vector<int32_t> forward_and_sample(std::span<const int32_t> tokens, HostBatch& batch,
                                          std::span<const SampleRow> rows) override {
    const int32_t seqs = batch.num_seqs;
    PA_CHECK(static_cast<int64_t>(rows.size()) == seqs, "forward_and_sample: ", rows.size(), " rows for ",
             seqs, " sequences");
    const int32_t bucket = graph_bucket(batch);
    const int32_t padded = bucket > 0 ? bucket : seqs;
    std::vector<cuda::DeviceSampleRow> device_rows(static_cast<size_t>(padded));  // pad rows: no draw
    for (size_t i = 0; i < rows.size(); ++i) {
      const SampleRow& r = rows[i];
      if (r.params != nullptr)
        device_rows[i] = {r.params->temperature, r.params->top_p, r.params->top_k, 0, r.seed, r.counter};
    }
    copy_in(sample_rows_, device_rows);
    if (bucket > 0) {
      replay_decode(tokens, batch, bucket);
    } else {
      run_eager(tokens, batch);
      cuda::sample_rows(logits_.get(), c_.vocab_size, sample_rows_.get(), seqs, sampled_.get(), stream_);
    }
    RUNNER_CUDA(cudaMemcpyAsync(host_sampled_.get(), sampled_.get(),
                                static_cast<size_t>(seqs) * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                stream_));
    RUNNER_CUDA(cudaStreamSynchronize(stream_));
    return {host_sampled_.get(), host_sampled_.get() + seqs};
  }

  int32_t num_blocks() const override { return o_.num_blocks; }

  void copy_blocks(std::span<const BlockCopy> copies) override {
    RUNNER_CUDA(cudaSetDevice(o_.device));
    const size_t block = static_cast<size_t>(o_.block_size) * c_.num_kv_heads;  // token-head rows per block
    const PlaneRowBytes rb = plane_row_bytes();
    for (const BlockCopy& cp : copies) {
      for (Layer& L : layers_) {
        const std::pair<DeviceArray<unsigned char>*, size_t> planes[] = {{L.k_pool.get(), rb.k},
                                                                         {L.v_pool.get(), rb.v},
                                                                         {L.k_meta.get(), rb.k_meta},
                                                                         {L.v_meta.get(), rb.v_meta}};
        for (const auto& [plane, row_bytes] : planes) {
          if (plane == nullptr) continue;
          const size_t bytes = block * row_bytes;
          RUNNER_CUDA(cudaMemcpyAsync(plane->get() + cp.dst * bytes, plane->get() + cp.src * bytes, bytes,
                                      cudaMemcpyDeviceToDevice, stream_));
        }
      }
    }
  }

 private:
  struct Layer {
    DeviceArray<__nv_bfloat16>*qkv = nullptr, *o = nullptr, *gate_up = nullptr, *down = nullptr;
    DeviceArray<float>*input_norm = nullptr, *post_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
    // The cache's planes (pagedattn/paged_kv.h): data in kv_dtype_ (TurboQuant: code rows), and int8's fp32
    // scales or TurboQuant's fp16 key norms and value (scale, minimum) pairs.
    std::unique_ptr<DeviceArray<unsigned char>> k_pool, v_pool, k_meta, v_meta;
  };

  // Bytes of one token-head row of each plane (0: no such plane).
  struct PlaneRowBytes {
    size_t k = 0, v = 0, k_meta = 0, v_meta = 0;
  };
  PlaneRowBytes plane_row_bytes() const {
    if (tq_) {
      const tq::TokenBytes tb = tq::token_bytes(*tq_, static_cast<int>(c_.head_dim));
      return {static_cast<size_t>(tb.key_codes), static_cast<size_t>(tb.value_codes),
              static_cast<size_t>(tb.key_norm), static_cast<size_t>(tb.value_meta)};
    }
    const size_t data = static_cast<size_t>(c_.head_dim) * dtype_size(kv_dtype_);
    const size_t meta = kv_dtype_ == DType::kInt8 ? sizeof(float) : 0;
    return {data, data, meta, meta};
  }

  // One step's shape as the kernels see it (a graph's: the padded batch and its bucket's hints).
  struct StepShape {
    int64_t tokens = 0;
    int32_t seqs = 0, table_width = 0, max_query_len = 0, max_seq_len = 0;
  };

  struct Graph {
    cudaGraphExec_t exec = nullptr;
  };

  void load_weights(const WeightSource& source) {
    const int64_t h = c_.hidden_size, d = c_.head_dim, q = c_.num_heads * d, kv = c_.num_kv_heads * d,
                  inter = c_.intermediate_size;
    uint64_t tensor = 0;  // a stream per tensor of the device draw
    auto drawn = [&](int64_t n, float sd) {
      bf16_.push_back(std::make_unique<DeviceArray<__nv_bfloat16>>(static_cast<size_t>(n)));
      cuda::fill_normal(bf16_.back()->get(), n, source.seed, tensor++, sd, stream_);
      return bf16_.back().get();
    };
    // Projections [out, in] ~ N(0, 1 / in), as ModelWeightsF32::random draws them.
    auto matrix = [&](std::initializer_list<const std::vector<float>*> parts, int64_t out, int64_t in) {
      return source.host != nullptr ? upload_bf16(bf16_, parts)
                                    : drawn(out * in, 1.0f / std::sqrt(static_cast<float>(in)));
    };
    auto norm = [&](const std::vector<float>& v, int64_t n) {
      if (source.host != nullptr) return upload_f32(f32_, v);
      f32_.push_back(std::make_unique<DeviceArray<float>>(static_cast<size_t>(n)));
      cuda::fill_normal(f32_.back()->get(), n, source.seed, tensor++, 1.0f, 0.1f, stream_);
      return f32_.back().get();
    };
    static const ModelWeightsF32 kNone;
    static const LayerWeightsF32 kNoLayer;
    const ModelWeightsF32& w = source.host != nullptr ? *source.host : kNone;
    embed_ = source.host != nullptr ? upload_bf16(bf16_, {&w.embed}) : drawn(c_.vocab_size * h, 1.0f);
    lm_head_ = c_.tie_word_embeddings ? embed_ : matrix({&w.lm_head}, c_.vocab_size, h);
    final_norm_ = norm(w.final_norm, h);
    inv_freq_ = upload_f32(f32_, rope_inv_freq(c_));
    for (int64_t i = 0; i < c_.num_layers; ++i) {
      const LayerWeightsF32& l = source.host != nullptr ? w.layers[static_cast<size_t>(i)] : kNoLayer;
      Layer L;
      L.qkv = matrix({&l.q_proj, &l.k_proj, &l.v_proj}, q + 2 * kv, h);  // [(hq + 2 hkv) d, hidden]
      L.o = matrix({&l.o_proj}, h, q);
      L.gate_up = matrix({&l.gate_proj, &l.up_proj}, 2 * inter, h);  // [2 inter, hidden]
      L.down = matrix({&l.down_proj}, h, inter);
      L.input_norm = norm(l.input_norm, h);
      L.post_norm = norm(l.post_norm, h);
      if (c_.qk_norm) {
        L.q_norm = norm(l.q_norm, d);
        L.k_norm = norm(l.k_norm, d);
      }
      layers_.push_back(std::move(L));
    }
  }

  void allocate_pools() {
    // One block across layers, every plane of the format (the library's one definition of its bytes).
    const KVCacheGeometry geometry{c_.num_layers, c_.num_kv_heads, c_.head_dim,
                                   o_.block_size, kv_dtype_,       tq_};
    const size_t per_block = static_cast<size_t>(geometry.bytes_per_block());
    if (o_.num_blocks <= 0) {
      // What the card has left after the weights and the step buffers, less a reserve for the attention
      // workspace (reserve_workspace: its floor, or the split-KV partials of the largest decode step), the
      // decode graphs and allocator slack.
      constexpr size_t kReserve = size_t{768} << 20;
      size_t free = 0, total = 0;
      RUNNER_CUDA(cudaMemGetInfo(&free, &total));
      const double used = static_cast<double>(total - free);
      const double budget = o_.gpu_memory_utilization * static_cast<double>(total) - used - kReserve;
      PA_CHECK(budget >= static_cast<double>(per_block), "gpu_memory_utilization ", o_.gpu_memory_utilization,
               " leaves no room for a KV block: weights and step buffers hold ", used / (1 << 30),
               " GiB of the card's ", static_cast<double>(total) / (1 << 30), " GiB (plus a ", kReserve >> 20,
               " MiB reserve)");
      o_.num_blocks =
          static_cast<int32_t>(std::min<double>(budget / static_cast<double>(per_block), INT32_MAX));
    }
    const size_t rows = static_cast<size_t>(o_.num_blocks) * o_.block_size * c_.num_kv_heads;
    const PlaneRowBytes rb = plane_row_bytes();
    auto plane = [&](size_t row_bytes) {
      return row_bytes == 0 ? nullptr : std::make_unique<DeviceArray<unsigned char>>(rows * row_bytes);
    };
    for (Layer& L : layers_) {
      L.k_pool = plane(rb.k);
      L.v_pool = plane(rb.v);
      L.k_meta = plane(rb.k_meta);
      L.v_meta = plane(rb.v_meta);
    }
  }

  // Every per-step buffer at its largest, once: a captured graph holds their addresses.
  void allocate_activations() {
    const int64_t h = c_.hidden_size, d = c_.head_dim, width = (c_.num_heads + 2 * c_.num_kv_heads) * d;
    const int32_t largest_bucket = o_.enforce_eager ? 0 : std::end(kGraphBatchBuckets)[-1];
    max_seqs_ = std::max(o_.max_num_seqs, largest_bucket);
    max_tokens_ = std::max<int64_t>(o_.max_num_batched_tokens, max_seqs_);
    max_table_width_ = static_cast<int32_t>((o_.max_model_len + o_.block_size - 1) / o_.block_size);
    const auto n = static_cast<size_t>(max_tokens_), s = static_cast<size_t>(max_seqs_);
    tokens_.resize(n);
    positions_.resize(n);
    slots_.resize(n);
    tables_.resize(s * static_cast<size_t>(max_table_width_));
    lens_.resize(s);
    qsl_.resize(s + 1);
    last_.resize(s);
    x_.resize(n * h);
    normed_.resize(n * h);
    qkv_.resize(n * width);
    attn_.resize(n * c_.num_heads * d);
    delta_.resize(n * h);
    gate_up_.resize(n * 2 * c_.intermediate_size);
    act_.resize(n * c_.intermediate_size);
    picked_.resize(s * h);
    logits_.resize(s * c_.vocab_size);
    sample_rows_.resize(s);
    sampled_.resize(s);
    host_sampled_.resize(s);
  }

  template <typename T>
  void copy_in(DeviceArray<T>& d, const std::vector<T>& h) {
    PA_CHECK(h.size() <= d.size(), "CUDA runner: a step needs ", h.size(), " entries of a buffer sized for ",
             d.size(), " (max_num_batched_tokens / max_num_seqs / max_model_len were set lower)");
    if (!h.empty())
      RUNNER_CUDA(cudaMemcpyAsync(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice, stream_));
  }

  // The step's inputs, the batch padded to `padded` sequences (pad rows: one token of block 0, slot -1) with
  // block tables `width` entries wide.
  void upload(std::span<const int32_t> tokens, const HostBatch& batch, int32_t padded, int32_t width) {
    const int32_t seqs = batch.num_seqs;
    std::vector<int32_t> tok(tokens.begin(), tokens.end()), pos = batch.positions, lens = batch.seq_lens,
                                                            qsl = batch.query_start_loc;
    std::vector<int64_t> slots = batch.slot_mapping;
    std::vector<int32_t> tables(static_cast<size_t>(padded) * width, 0);
    for (int32_t s = 0; s < seqs; ++s) {
      std::copy_n(batch.block_tables.begin() + static_cast<int64_t>(s) * batch.max_blocks_per_seq,
                  std::min(width, batch.max_blocks_per_seq),
                  tables.begin() + static_cast<int64_t>(s) * width);
    }
    for (int32_t s = seqs; s < padded; ++s) {
      tok.push_back(0);
      pos.push_back(0);
      slots.push_back(-1);
      lens.push_back(1);
      qsl.push_back(qsl.back() + 1);
    }
    std::vector<int32_t> last;  // each sequence's last new token (a sequence without new tokens reads row 0)
    for (int32_t s = 0; s < padded; ++s) last.push_back(std::max(0, qsl[s + 1] - 1));
    copy_in(tokens_, tok);
    copy_in(positions_, pos);
    copy_in(slots_, slots);
    copy_in(tables_, tables);
    copy_in(lens_, lens);
    copy_in(qsl_, qsl);
    copy_in(last_, last);
  }

  BatchDesc device_batch(const StepShape& s) const {
    const Device dev = Device::cuda(o_.device);
    BatchDesc desc;
    desc.block_tables = TensorView::contiguous(tables_.get(), DType::kInt32, {s.seqs, s.table_width}, dev);
    desc.seq_lens = TensorView::contiguous(lens_.get(), DType::kInt32, {s.seqs}, dev);
    desc.query_start_loc = TensorView::contiguous(qsl_.get(), DType::kInt32, {s.seqs + 1}, dev);
    desc.max_query_len = s.max_query_len;
    desc.max_seq_len = s.max_seq_len;
    return desc;
  }

  TensorView query_view(int64_t n) const {
    const int64_t d = c_.head_dim, hq = c_.num_heads, width = (hq + 2 * c_.num_kv_heads) * d;
    return TensorView::strided(qkv_.get(), DType::kBFloat16, {n, hq, d}, {width, d, 1},
                               Device::cuda(o_.device));
  }

  // The step's new keys and values in the qkv buffer: [n, num_kv_heads, head_dim] after the queries.
  TensorView key_view(int64_t n) const { return qkv_part_view(n, c_.num_heads); }
  TensorView value_view(int64_t n) const { return qkv_part_view(n, c_.num_heads + c_.num_kv_heads); }
  TensorView qkv_part_view(int64_t n, int64_t head_offset) const {
    const int64_t d = c_.head_dim, hkv = c_.num_kv_heads, width = (c_.num_heads + 2 * hkv) * d;
    return TensorView::strided(qkv_.get() + head_offset * d, DType::kBFloat16, {n, hkv, d}, {width, d, 1},
                               Device::cuda(o_.device));
  }

  // Attention's params for a step of n tokens: TurboQuant caches read the step's own K/V raw (the spec's
  // prefill rule, as the CPU runner does).
  AttentionParams attention_params(int64_t n) const {
    AttentionParams params;
    params.validate_batch = false;  // the engine builds the batch itself
    if (tq_) {
      params.new_key = key_view(n);
      params.new_value = value_view(n);
    }
    return params;
  }

  // workspace_cap 0: the plan's free choice (to size the reservation); else its workspace stays within it.
  AttentionPlan plan_for(const StepShape& s, size_t workspace_cap) const {
    AttentionParams params = attention_params(s.tokens);
    params.max_workspace_bytes = workspace_cap;
    return plan_attention(query_view(s.tokens), cache(0), device_batch(s), params);
  }
  AttentionPlan plan_for(const StepShape& s) const { return plan_for(s, reservation_.bytes()); }

  // One attention workspace for every step and every captured graph (they run one after another on stream_),
  // allocated once: sized from the free plans of the largest steps this runner takes (each decode graph
  // bucket at max_model_len, an eager decode and the largest prefill step, with a floor so that small steps
  // keep their best split), then locked. Every later plan is made under that cap, so no step ever needs more
  // (a step that would like more splits takes fewer) and no graph holds a workspace of its own.
  void reserve_workspace() {
    constexpr size_t kFloor = size_t{16} << 20;
    const int32_t longest = static_cast<int32_t>(std::min<int64_t>(o_.max_model_len, INT32_MAX));
    const int32_t budget = static_cast<int32_t>(std::min<int64_t>(o_.max_num_batched_tokens, INT32_MAX));
    const int32_t seqs = std::min(o_.max_num_seqs, budget);
    auto declare = [&](int64_t tokens, int32_t num_seqs, int32_t max_query_len) {
      reservation_.declare(plan_for({tokens, num_seqs, max_table_width_, max_query_len, longest}, 0));
    };
    if (!o_.enforce_eager) {
      for (int32_t b : kGraphBatchBuckets) declare(b, b, 1);
    }
    declare(seqs, seqs, 1);
    declare(budget, seqs, std::min(budget, longest));
    reservation_.declare_bytes(kFloor);
    reservation_.lock();
    workspace_.resize(reservation_.bytes());
  }

  void run_eager(std::span<const int32_t> tokens, HostBatch& batch) {
    RUNNER_CUDA(cudaSetDevice(o_.device));
    const int32_t width = std::max(batch.max_blocks_per_seq, 1);
    PA_CHECK(width <= max_table_width_, "CUDA runner: a block table of ", width,
             " blocks exceeds max_model_len ", o_.max_model_len);
    upload(tokens, batch, batch.num_seqs, width);
    const BatchDesc hints = batch.desc();
    const StepShape s{batch.num_tokens(), batch.num_seqs, width, static_cast<int32_t>(hints.max_query_len),
                      static_cast<int32_t>(hints.max_seq_len)};
    const AttentionPlan plan = plan_for(s);
    launch_model(s, plan, reservation_.for_plan(plan, {workspace_.get(), workspace_.size()}));
  }

  // The graph bucket of a decode-only step, or 0 when it runs eagerly.
  int32_t graph_bucket(const HostBatch& batch) const {
    if (o_.enforce_eager || batch.num_tokens() != batch.num_seqs || batch.num_seqs == 0) return 0;
    for (int32_t b : kGraphBatchBuckets) {
      if (b >= batch.num_seqs) return b;
    }
    return 0;
  }

  void replay_decode(std::span<const int32_t> tokens, HostBatch& batch, int32_t bucket) {
    RUNNER_CUDA(cudaSetDevice(o_.device));
    int32_t longest = 1;
    for (int32_t len : batch.seq_lens) longest = std::max(longest, len);
    int64_t seq_bucket = kGraphMinSeqBucket;
    while (seq_bucket < longest) seq_bucket *= 2;
    seq_bucket = std::min<int64_t>(seq_bucket, std::max<int64_t>(o_.max_model_len, longest));
    const int32_t width = static_cast<int32_t>((seq_bucket + o_.block_size - 1) / o_.block_size);
    PA_CHECK(width <= max_table_width_, "CUDA runner: a block table of ", width,
             " blocks exceeds max_model_len ", o_.max_model_len);
    upload(tokens, batch, bucket, width);
    const StepShape s{bucket, bucket, width, 1, static_cast<int32_t>(seq_bucket)};
    auto it = graphs_.find({bucket, seq_bucket});
    if (it == graphs_.end()) it = graphs_.emplace(std::make_pair(bucket, seq_bucket), capture(s)).first;
    RUNNER_CUDA(cudaGraphLaunch(it->second.exec, stream_));
  }

  Graph capture(const StepShape& s) {
    Graph g;
    const AttentionPlan plan = plan_for(s);
    const Workspace ws = reservation_.for_plan(plan, {workspace_.get(), workspace_.size()});
    RUNNER_CUDA(cudaStreamSynchronize(stream_));  // the inputs are in place before the capture starts
    cudaGraph_t graph = nullptr;
    RUNNER_CUDA(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      launch_model(s, plan, ws);
      cuda::sample_rows(logits_.get(), c_.vocab_size, sample_rows_.get(), s.seqs, sampled_.get(), stream_);
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph != nullptr) cudaGraphDestroy(graph);
      throw;
    }
    RUNNER_CUDA(cudaStreamEndCapture(stream_, &graph));
    const cudaError_t e = cudaGraphInstantiate(&g.exec, graph, 0);
    cudaGraphDestroy(graph);
    RUNNER_CUDA(e);
    return g;
  }

  // Embedding through the LM head: logits_ [seqs, vocab] (stream-ordered; no allocation, no sync:
  // capturable).
  void launch_model(const StepShape& s, const AttentionPlan& plan, Workspace ws) {
    const int64_t n = s.tokens, h = c_.hidden_size, d = c_.head_dim, hq = c_.num_heads, hkv = c_.num_kv_heads,
                  inter = c_.intermediate_size, width = (hq + 2 * hkv) * d;
    const Device dev = Device::cuda(o_.device);
    const BatchDesc desc = device_batch(s);
    const TensorView q = query_view(n), k = key_view(n), v = value_view(n);
    const TensorView out = TensorView::contiguous(attn_.get(), DType::kBFloat16, {n, hq, d}, dev);
    const TensorView slots = TensorView::contiguous(slots_.get(), DType::kInt64, {n}, dev);
    const AttentionParams params = attention_params(n);
    Stream stream = stream_;
    const auto eps = static_cast<float>(c_.rms_norm_eps);
    cuda::embed_tokens(embed_->get(), tokens_.get(), n, h, x_.get(), stream_);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& L = layers_[l];
      cuda::add_rms_norm(x_.get(), l == 0 ? nullptr : delta_.get(), L.input_norm->get(), n, h, eps,
                         normed_.get(), stream_);
      gemm(normed_.get(), n, h, L.qkv->get(), width, qkv_.get());
      cuda::qk_norm_rope(qkv_.get(), width, n, static_cast<int>(hq), static_cast<int>(hkv),
                         static_cast<int>(d), positions_.get(), inv_freq_->get(),
                         L.q_norm ? L.q_norm->get() : nullptr, L.k_norm ? L.k_norm->get() : nullptr, eps,
                         stream_);
      const PagedKVCache kv = cache(l);
      write_kv(k, v, slots, kv, stream, /*validate_slots=*/false);
      run_attention(plan, q, kv, desc, params, out, ws, stream);
      gemm(attn_.get(), n, hq * d, L.o->get(), h, delta_.get());
      cuda::add_rms_norm(x_.get(), delta_.get(), L.post_norm->get(), n, h, eps, normed_.get(), stream_);
      gemm(normed_.get(), n, h, L.gate_up->get(), 2 * inter, gate_up_.get());
      cuda::silu_and_mul(gate_up_.get(), n, inter, act_.get(), stream_);
      gemm(act_.get(), n, inter, L.down->get(), h, delta_.get());
    }
    cuda::add_rms_norm(x_.get(), delta_.get(), final_norm_->get(), n, h, eps, normed_.get(), stream_);
    cuda::gather_rows(normed_.get(), last_.get(), s.seqs, h, picked_.get(), stream_);
    // Logits in fp32: [seqs, vocab] = picked [seqs, hidden] x lm_head [vocab, hidden]^T.
    const float one = 1.0f, zero = 0.0f;
    RUNNER_CUBLAS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(c_.vocab_size), s.seqs,
                               static_cast<int>(h), &one, lm_head_->get(), CUDA_R_16BF, static_cast<int>(h),
                               picked_.get(), CUDA_R_16BF, static_cast<int>(h), &zero, logits_.get(),
                               CUDA_R_32F, static_cast<int>(c_.vocab_size), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
  }

  // The layer's cache in the runner's format (fp8: scale 1.0, as vLLM's uncalibrated default).
  PagedKVCache cache(size_t l) const {
    const Device dev = Device::cuda(o_.device);
    const Layer& L = layers_[l];
    const int64_t nb = o_.num_blocks, bs = o_.block_size, hkv = c_.num_kv_heads;
    if (tq_) {
      const PlaneRowBytes rb = plane_row_bytes();
      TensorView norms;
      if (L.k_meta) norms = TensorView::contiguous(L.k_meta->get(), DType::kFloat16, {nb, bs, hkv}, dev);
      return PagedKVCache::turboquant(
          *tq_, c_.head_dim,
          TensorView::contiguous(L.k_pool->get(), DType::kUInt8, {nb, bs, hkv, static_cast<int64_t>(rb.k)},
                                 dev),
          norms,
          TensorView::contiguous(L.v_pool->get(), DType::kUInt8, {nb, bs, hkv, static_cast<int64_t>(rb.v)},
                                 dev),
          TensorView::contiguous(L.v_meta->get(), DType::kFloat16, {nb, bs, hkv, 2}, dev));
    }
    const std::initializer_list<int64_t> shape = {nb, bs, hkv, c_.head_dim};
    PagedKVCache kv(TensorView::contiguous(L.k_pool->get(), kv_dtype_, shape, dev),
                    TensorView::contiguous(L.v_pool->get(), kv_dtype_, shape, dev));
    if (kv_dtype_ == DType::kInt8) {
      const std::initializer_list<int64_t> planes = {nb, bs, hkv};
      kv.k_meta = TensorView::contiguous(L.k_meta->get(), DType::kFloat32, planes, dev);
      kv.v_meta = TensorView::contiguous(L.v_meta->get(), DType::kFloat32, planes, dev);
    }
    return kv;
  }

  // y[n, out] = x[n, in] W[out, in]^T, bf16 in and out, fp32 accumulation.
  void gemm(const __nv_bfloat16* x, int64_t n, int64_t in, const __nv_bfloat16* w, int64_t out,
            __nv_bfloat16* y) const {
    if (n == 0) return;
    const float one = 1.0f, zero = 0.0f;
    RUNNER_CUBLAS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out), static_cast<int>(n),
                               static_cast<int>(in), &one, w, CUDA_R_16BF, static_cast<int>(in), x,
                               CUDA_R_16BF, static_cast<int>(in), &zero, y, CUDA_R_16BF,
                               static_cast<int>(out), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  ModelConfig c_;
  CudaRunnerOptions o_;
  std::optional<tq::Preset> tq_;  // a TurboQuant cache (kv_dtype_ is then uint8)
  DType kv_dtype_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  DeviceArray<unsigned char> cublas_workspace_;
  std::vector<std::unique_ptr<DeviceArray<__nv_bfloat16>>> bf16_;
  std::vector<std::unique_ptr<DeviceArray<float>>> f32_;
  DeviceArray<__nv_bfloat16>*embed_ = nullptr, *lm_head_ = nullptr;
  DeviceArray<float>*final_norm_ = nullptr, *inv_freq_ = nullptr;
  std::vector<Layer> layers_;
  int32_t max_seqs_ = 0, max_table_width_ = 0;
  int64_t max_tokens_ = 0;
  DeviceArray<int32_t> tokens_, positions_, tables_, lens_, qsl_, last_, sampled_;
  DeviceArray<int64_t> slots_;
  DeviceArray<float> x_, logits_;
  DeviceArray<__nv_bfloat16> normed_, qkv_, attn_, delta_, gate_up_, act_, picked_;
  DeviceArray<cuda::DeviceSampleRow> sample_rows_;
  DeviceArray<unsigned char> workspace_;  // the attention workspace of every step and graph
  WorkspaceReservation reservation_;
  PinnedArray<float> host_logits_;
  PinnedArray<int32_t> host_sampled_;
  std::map<std::pair<int32_t, int64_t>, Graph> graphs_;
};

}  // namespace

std::unique_ptr<ModelRunner> make_cuda_runner(const ModelConfig& config, const ModelWeightsF32& weights,
                                              const CudaRunnerOptions& options) {
  return std::make_unique<CudaRunner>(config, WeightSource{&weights, 0}, options);
}

std::unique_ptr<ModelRunner> make_cuda_runner(const ModelConfig& config, uint64_t weights_seed,
                                              const CudaRunnerOptions& options) {
  return std::make_unique<CudaRunner>(config, WeightSource{nullptr, weights_seed}, options);
}

}  // namespace pagedattn::engine
