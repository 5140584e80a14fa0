#include "engine/cuda/cuda_runner.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "engine/cuda/model_kernels.cuh"
#include "pagedattn/attention.h"
#include "pagedattn/error.h"
#include "pagedattn/plan.h"

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

template <typename T>
void to_device(DeviceArray<T>& d, const std::vector<T>& h, cudaStream_t stream) {
  d.resize(h.size());
  if (!h.empty())
    RUNNER_CUDA(cudaMemcpyAsync(d.get(), h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice, stream));
}

class CudaRunner final : public ModelRunner {
 public:
  CudaRunner(const ModelConfig& c, const ModelWeightsF32& w, int32_t num_blocks, int32_t block_size,
             int device)
      : c_(c), device_(device), num_blocks_(num_blocks), block_size_(block_size) {
    RUNNER_CUDA(cudaSetDevice(device));
    RUNNER_CUDA(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    RUNNER_CUBLAS(cublasCreate(&cublas_));
    RUNNER_CUBLAS(cublasSetStream(cublas_, stream_));
    embed_ = upload_bf16(bf16_, {&w.embed});
    lm_head_ = c.tie_word_embeddings ? embed_ : upload_bf16(bf16_, {&w.lm_head});
    final_norm_ = upload_f32(f32_, w.final_norm);
    inv_freq_ = upload_f32(f32_, rope_inv_freq(c));
    const size_t pool = static_cast<size_t>(num_blocks) * block_size * c.num_kv_heads * c.head_dim;
    for (const LayerWeightsF32& l : w.layers) {
      Layer L;
      L.qkv = upload_bf16(bf16_, {&l.q_proj, &l.k_proj, &l.v_proj});  // [(hq + 2 hkv) d, hidden]
      L.o = upload_bf16(bf16_, {&l.o_proj});
      L.gate_up = upload_bf16(bf16_, {&l.gate_proj, &l.up_proj});  // [2 inter, hidden]
      L.down = upload_bf16(bf16_, {&l.down_proj});
      L.input_norm = upload_f32(f32_, l.input_norm);
      L.post_norm = upload_f32(f32_, l.post_norm);
      if (c.qk_norm) {
        L.q_norm = upload_f32(f32_, l.q_norm);
        L.k_norm = upload_f32(f32_, l.k_norm);
      }
      L.k_pool = std::make_unique<DeviceArray<__nv_bfloat16>>(pool);
      L.v_pool = std::make_unique<DeviceArray<__nv_bfloat16>>(pool);
      layers_.push_back(std::move(L));
    }
  }
  ~CudaRunner() override {
    cublasDestroy(cublas_);
    cudaStreamDestroy(stream_);
  }

  std::span<const float> forward(std::span<const int32_t> tokens, HostBatch& batch) override {
    RUNNER_CUDA(cudaSetDevice(device_));
    const int64_t n = batch.num_tokens(), h = c_.hidden_size, d = c_.head_dim, hq = c_.num_heads,
                  hkv = c_.num_kv_heads, inter = c_.intermediate_size, width = (hq + 2 * hkv) * d;
    const int32_t seqs = batch.num_seqs;
    // The step's inputs.
    to_device(tokens_, std::vector<int32_t>(tokens.begin(), tokens.end()), stream_);
    to_device(positions_, batch.positions, stream_);
    to_device(slots_, batch.slot_mapping, stream_);
    to_device(tables_, batch.block_tables, stream_);
    to_device(lens_, batch.seq_lens, stream_);
    to_device(qsl_, batch.query_start_loc, stream_);
    std::vector<int32_t> last;  // each sequence's last new token (a sequence without new tokens reads row 0)
    for (int32_t s = 0; s < seqs; ++s) last.push_back(std::max(0, batch.query_start_loc[s + 1] - 1));
    to_device(last_, last, stream_);
    x_.resize(static_cast<size_t>(n * h));
    normed_.resize(static_cast<size_t>(n * h));
    qkv_.resize(static_cast<size_t>(n * width));
    attn_.resize(static_cast<size_t>(n * hq * d));
    delta_.resize(static_cast<size_t>(n * h));
    gate_up_.resize(static_cast<size_t>(n * 2 * inter));
    act_.resize(static_cast<size_t>(n * inter));
    picked_.resize(static_cast<size_t>(std::max(seqs, 1) * h));
    logits_.resize(static_cast<size_t>(std::max(seqs, 1) * c_.vocab_size));

    const Device dev = Device::cuda(device_);
    BatchDesc desc;
    desc.block_tables =
        TensorView::contiguous(tables_.get(), DType::kInt32, {seqs, batch.max_blocks_per_seq}, dev);
    desc.seq_lens = TensorView::contiguous(lens_.get(), DType::kInt32, {seqs}, dev);
    desc.query_start_loc = TensorView::contiguous(qsl_.get(), DType::kInt32, {seqs + 1}, dev);
    const BatchDesc host_desc = batch.desc();  // the host hints (max query / sequence length)
    desc.max_query_len = host_desc.max_query_len;
    desc.max_seq_len = host_desc.max_seq_len;
    const TensorView q = TensorView::strided(qkv_.get(), DType::kBFloat16, {n, hq, d}, {width, d, 1}, dev);
    const TensorView k =
        TensorView::strided(qkv_.get() + hq * d, DType::kBFloat16, {n, hkv, d}, {width, d, 1}, dev);
    const TensorView v =
        TensorView::strided(qkv_.get() + (hq + hkv) * d, DType::kBFloat16, {n, hkv, d}, {width, d, 1}, dev);
    const TensorView o = TensorView::contiguous(attn_.get(), DType::kBFloat16, {n, hq, d}, dev);
    const TensorView slots = TensorView::contiguous(slots_.get(), DType::kInt64, {n}, dev);
    AttentionParams params;
    params.validate_batch = false;  // the engine builds the batch itself
    const AttentionPlan plan = plan_attention(q, cache(0), desc, params);
    workspace_.resize(plan.workspace_bytes());
    const Workspace ws{workspace_.get(), workspace_.size()};
    Stream stream = stream_;

    cuda::embed_tokens(embed_->get(), tokens_.get(), n, h, x_.get(), stream_);
    for (size_t l = 0; l < layers_.size(); ++l) {
      const Layer& L = layers_[l];
      cuda::add_rms_norm(x_.get(), l == 0 ? nullptr : delta_.get(), L.input_norm->get(), n, h,
                         static_cast<float>(c_.rms_norm_eps), normed_.get(), stream_);
      gemm(normed_.get(), n, h, L.qkv->get(), width, qkv_.get());
      cuda::qk_norm_rope(qkv_.get(), width, n, static_cast<int>(hq), static_cast<int>(hkv),
                         static_cast<int>(d), positions_.get(), inv_freq_->get(),
                         L.q_norm ? L.q_norm->get() : nullptr, L.k_norm ? L.k_norm->get() : nullptr,
                         static_cast<float>(c_.rms_norm_eps), stream_);
      const PagedKVCache kv = cache(l);
      write_kv(k, v, slots, kv, stream, /*validate_slots=*/false);
      run_attention(plan, q, kv, desc, params, o, ws, stream);
      gemm(attn_.get(), n, hq * d, L.o->get(), h, delta_.get());
      cuda::add_rms_norm(x_.get(), delta_.get(), L.post_norm->get(), n, h,
                         static_cast<float>(c_.rms_norm_eps), normed_.get(), stream_);
      gemm(normed_.get(), n, h, L.gate_up->get(), 2 * inter, gate_up_.get());
      cuda::silu_and_mul(gate_up_.get(), n, inter, act_.get(), stream_);
      gemm(act_.get(), n, inter, L.down->get(), h, delta_.get());
    }
    cuda::add_rms_norm(x_.get(), delta_.get(), final_norm_->get(), n, h, static_cast<float>(c_.rms_norm_eps),
                       normed_.get(), stream_);
    cuda::gather_rows(normed_.get(), last_.get(), seqs, h, picked_.get(), stream_);
    // Logits in fp32: [seqs, vocab] = picked [seqs, hidden] x lm_head [vocab, hidden]^T.
    const float one = 1.0f, zero = 0.0f;
    RUNNER_CUBLAS(cublasGemmEx(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(c_.vocab_size), seqs,
                               static_cast<int>(h), &one, lm_head_->get(), CUDA_R_16BF, static_cast<int>(h),
                               picked_.get(), CUDA_R_16BF, static_cast<int>(h), &zero, logits_.get(),
                               CUDA_R_32F, static_cast<int>(c_.vocab_size), CUBLAS_COMPUTE_32F,
                               CUBLAS_GEMM_DEFAULT));
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

  void copy_blocks(std::span<const BlockCopy> copies) override {
    RUNNER_CUDA(cudaSetDevice(device_));
    const size_t block = static_cast<size_t>(block_size_) * c_.num_kv_heads * c_.head_dim;
    for (const BlockCopy& cp : copies) {
      for (Layer& L : layers_) {
        for (auto* pool : {L.k_pool.get(), L.v_pool.get()}) {
          RUNNER_CUDA(cudaMemcpyAsync(pool->get() + cp.dst * block, pool->get() + cp.src * block,
                                      block * sizeof(__nv_bfloat16), cudaMemcpyDeviceToDevice, stream_));
        }
      }
    }
  }

 private:
  struct Layer {
    DeviceArray<__nv_bfloat16>*qkv = nullptr, *o = nullptr, *gate_up = nullptr, *down = nullptr;
    DeviceArray<float>*input_norm = nullptr, *post_norm = nullptr, *q_norm = nullptr, *k_norm = nullptr;
    std::unique_ptr<DeviceArray<__nv_bfloat16>> k_pool, v_pool;
  };

  PagedKVCache cache(size_t l) const {
    const Device dev = Device::cuda(device_);
    const std::initializer_list<int64_t> shape = {num_blocks_, block_size_, c_.num_kv_heads, c_.head_dim};
    return PagedKVCache(TensorView::contiguous(layers_[l].k_pool->get(), DType::kBFloat16, shape, dev),
                        TensorView::contiguous(layers_[l].v_pool->get(), DType::kBFloat16, shape, dev));
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
  int device_;
  int32_t num_blocks_, block_size_;
  cudaStream_t stream_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::vector<std::unique_ptr<DeviceArray<__nv_bfloat16>>> bf16_;
  std::vector<std::unique_ptr<DeviceArray<float>>> f32_;
  DeviceArray<__nv_bfloat16>*embed_ = nullptr, *lm_head_ = nullptr;
  DeviceArray<float>*final_norm_ = nullptr, *inv_freq_ = nullptr;
  std::vector<Layer> layers_;
  DeviceArray<int32_t> tokens_, positions_, tables_, lens_, qsl_, last_;
  DeviceArray<int64_t> slots_;
  DeviceArray<float> x_, logits_;
  DeviceArray<__nv_bfloat16> normed_, qkv_, attn_, delta_, gate_up_, act_, picked_;
  DeviceArray<unsigned char> workspace_;
  PinnedArray<float> host_logits_;
};

}  // namespace

std::unique_ptr<ModelRunner> make_cuda_runner(const ModelConfig& config, const ModelWeightsF32& weights,
                                              int32_t num_blocks, int32_t block_size, int device) {
  return std::make_unique<CudaRunner>(config, weights, num_blocks, block_size, device);
}

}  // namespace pagedattn::engine
