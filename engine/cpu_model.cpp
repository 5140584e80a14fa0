#include "engine/cpu_model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "pagedattn/attention.h"
#include "pagedattn/error.h"
#include "pagedattn/kv_format.h"
#include "pagedattn/plan.h"

namespace pagedattn::engine {
namespace {

constexpr double kPi = 3.14159265358979323846;

// y[n, out] = x[n, in] · W[out, in]ᵀ (row-major weights as stored by Hugging Face).
void linear(const float* x, int64_t n, int64_t in, const std::vector<float>& w, int64_t out, float* y) {
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = x + r * in;
    for (int64_t o = 0; o < out; ++o) {
      const float* wr = w.data() + o * in;
      float acc[8] = {};
      int64_t i = 0;
      for (; i + 8 <= in; i += 8) {
        for (int j = 0; j < 8; ++j) acc[j] += xr[i + j] * wr[i + j];
      }
      float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
      for (; i < in; ++i) s += xr[i] * wr[i];
      y[r * out + o] = s;
    }
  }
}

// x <- x / rms(x) * weight over each run of `dim` values.
void rms_norm(float* x, int64_t rows, int64_t dim, const std::vector<float>& weight, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    float* v = x + r * dim;
    double ss = 0;
    for (int64_t i = 0; i < dim; ++i) ss += static_cast<double>(v[i]) * v[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(dim) + eps));
    for (int64_t i = 0; i < dim; ++i) v[i] = v[i] * inv * weight[i];
  }
}

// Rotates each head of x [tokens, heads, d] at its token's position: the "rotate half" pairing (i, i + d/2).
void rope(float* x, int64_t tokens, int64_t heads, int64_t d, std::span<const int32_t> positions,
          const std::vector<float>& inv_freq) {
  const int64_t half = d / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * inv_freq[i];
      const float c = std::cos(angle), s = std::sin(angle);
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + (t * heads + h) * d;
        const float a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
      }
    }
  }
}

}  // namespace

std::vector<float> rope_inv_freq(const ModelConfig& c) {
  const int64_t half = c.head_dim / 2;
  std::vector<float> f(half);
  for (int64_t i = 0; i < half; ++i) {
    double inv = 1.0 / std::pow(c.rope_theta, static_cast<double>(2 * i) / static_cast<double>(c.head_dim));
    const RopeScaling& r = c.rope_scaling;
    if (r.type == "linear") {
      inv /= r.factor;
    } else if (r.type == "llama3") {
      // Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth blend between.
      const double wavelen = 2 * kPi / inv;
      const double low_wavelen = static_cast<double>(r.original_max_position_embeddings) / r.low_freq_factor;
      const double high_wavelen =
          static_cast<double>(r.original_max_position_embeddings) / r.high_freq_factor;
      if (wavelen > low_wavelen) {
        inv /= r.factor;
      } else if (wavelen >= high_wavelen) {
        const double smooth =
            (static_cast<double>(r.original_max_position_embeddings) / wavelen - r.low_freq_factor) /
            (r.high_freq_factor - r.low_freq_factor);
        inv = (1 - smooth) * inv / r.factor + smooth * inv;
      }
    }
    f[i] = static_cast<float>(inv);
  }
  return f;
}

HostKVCache::HostKVCache(const ModelConfig& c, int32_t num_blocks, int32_t block_size,
                         const std::string& format)
    : num_blocks_(num_blocks), block_size_(block_size), kv_heads_(c.num_kv_heads), head_dim_(c.head_dim) {
  const int64_t d = head_dim_;
  k_meta_ = v_meta_ = {DType::kFloat32, -1, {}};  // inner -1: the plane is absent
  if (format.rfind("tq_", 0) == 0) {
    tq_ = tq::parse_preset(format);
    const tq::TokenBytes b = tq::token_bytes(*tq_, static_cast<int>(d));
    k_ = {DType::kUInt8, b.key_codes, {}};
    v_ = {DType::kUInt8, b.value_codes, {}};
    if (b.key_norm) k_meta_ = {DType::kFloat16, 0, {}};
    v_meta_ = {DType::kFloat16, 2, {}};
  } else {
    const DType t = parse_dtype(format);
    PA_CHECK(
        t == DType::kFloat32 || kv_format(t).quantized(), "KV cache format '", format,
        "': the CPU runner computes in fp32, so its cache is fp32 or a quantized format (fp8_e4m3, fp8_e5m2, "
        "int8, tq_k8v4, tq_k4v4, tq_k3v4, tq_k3v3)");
    k_ = v_ = {t, d, {}};
    if (kv_format(t).scales == KVScales::kToken) k_meta_ = v_meta_ = {DType::kFloat32, 0, {}};
  }
  const size_t rows = static_cast<size_t>(num_blocks) * block_size * kv_heads_;
  for (Plane* p : {&k_, &v_, &k_meta_, &v_meta_}) {
    if (p->inner < 0) continue;
    const size_t bytes = rows * static_cast<size_t>(std::max<int64_t>(p->inner, 1)) * dtype_size(p->dtype);
    // Unwritten float slots are NaN (0xff bytes) so that reading one shows; codes are whatever 0xff decodes
    // to.
    for (int64_t l = 0; l < c.num_layers; ++l) p->layers.emplace_back(bytes, uint8_t{0xff});
  }
}

int64_t HostKVCache::bytes_per_token_layer() const {
  int64_t total = 0;
  for (const Plane* p : {&k_, &v_, &k_meta_, &v_meta_}) {
    if (p->inner >= 0) total += kv_heads_ * std::max<int64_t>(p->inner, 1) * dtype_size(p->dtype);
  }
  return total;
}

PagedKVCache HostKVCache::layer(int64_t i) {
  auto view = [&](Plane& p) {
    if (p.inner < 0) return TensorView{};
    void* data = p.layers[static_cast<size_t>(i)].data();
    return p.inner == 0
               ? TensorView::contiguous(data, p.dtype, {num_blocks_, block_size_, kv_heads_})
               : TensorView::contiguous(data, p.dtype, {num_blocks_, block_size_, kv_heads_, p.inner});
  };
  if (tq_) return PagedKVCache::turboquant(*tq_, head_dim_, view(k_), view(k_meta_), view(v_), view(v_meta_));
  PagedKVCache c(view(k_), view(v_));
  c.k_meta = view(k_meta_);
  c.v_meta = view(v_meta_);
  return c;
}

void HostKVCache::copy_block(int32_t src, int32_t dst) {
  PA_CHECK(src >= 0 && src < num_blocks_ && dst >= 0 && dst < num_blocks_, "copy_block: block ", src, " -> ",
           dst, " outside the pool of ", num_blocks_);
  for (Plane* p : {&k_, &v_, &k_meta_, &v_meta_}) {
    if (p->inner < 0) continue;
    const size_t block =
        static_cast<size_t>(block_size_) * kv_heads_ * std::max<int64_t>(p->inner, 1) * dtype_size(p->dtype);
    for (auto& layer : p->layers) std::copy_n(layer.data() + src * block, block, layer.data() + dst * block);
  }
}

CpuModel::CpuModel(ModelConfig config, ModelWeightsF32 weights)
    : config_(std::move(config)), w_(std::move(weights)), inv_freq_(rope_inv_freq(config_)) {
  config_.validate();
  PA_CHECK(static_cast<int64_t>(w_.layers.size()) == config_.num_layers, "CpuModel: ", w_.layers.size(),
           " layers of weights for a config of ", config_.num_layers);
}

std::vector<float> CpuModel::forward(std::span<const int32_t> tokens, HostBatch& batch,
                                     HostKVCache& cache) const {
  const ModelConfig& c = config_;
  const int64_t n = batch.num_tokens(), h = c.hidden_size, d = c.head_dim;
  const int64_t hq = c.num_heads, hkv = c.num_kv_heads, inter = c.intermediate_size;
  PA_CHECK(static_cast<int64_t>(tokens.size()) == n, "forward: ", tokens.size(), " tokens for a batch of ",
           n);
  for (int32_t t : tokens)
    PA_CHECK(t >= 0 && t < c.vocab_size, "forward: token id ", t, " is outside the vocabulary");

  std::vector<float> x(static_cast<size_t>(n * h)), xn(x.size()), q(static_cast<size_t>(n * hq * d)),
      k(static_cast<size_t>(n * hkv * d)), v(k.size()), o(q.size()), gate(static_cast<size_t>(n * inter)),
      up(gate.size()), tmp(x.size());
  for (int64_t t = 0; t < n; ++t) std::copy_n(w_.embed.data() + tokens[t] * h, h, x.data() + t * h);

  const BatchDesc desc = batch.desc();
  const TensorView qv = TensorView::contiguous(q.data(), DType::kFloat32, {n, hq, d});
  const TensorView ov = TensorView::contiguous(o.data(), DType::kFloat32, {n, hq, d});
  const TensorView kview = TensorView::contiguous(k.data(), DType::kFloat32, {n, hkv, d});
  const TensorView vview = TensorView::contiguous(v.data(), DType::kFloat32, {n, hkv, d});
  AttentionParams params;
  if (cache.turboquant()) {  // the new tokens attend to their raw K/V, earlier ones to the codes
    params.new_key = kview;
    params.new_value = vview;
  }
  const AttentionPlan plan = plan_attention(qv, cache.layer(0), desc, params);  // once per step
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const LayerWeightsF32& L = w_.layers[static_cast<size_t>(l)];
    xn = x;
    rms_norm(xn.data(), n, h, L.input_norm, c.rms_norm_eps);
    linear(xn.data(), n, h, L.q_proj, hq * d, q.data());
    linear(xn.data(), n, h, L.k_proj, hkv * d, k.data());
    linear(xn.data(), n, h, L.v_proj, hkv * d, v.data());
    if (c.qk_norm) {
      rms_norm(q.data(), n * hq, d, L.q_norm, c.rms_norm_eps);
      rms_norm(k.data(), n * hkv, d, L.k_norm, c.rms_norm_eps);
    }
    rope(q.data(), n, hq, d, batch.positions, inv_freq_);
    rope(k.data(), n, hkv, d, batch.positions, inv_freq_);
    const PagedKVCache kv = cache.layer(l);
    write_kv(kview, vview, batch.slot_view(), kv);
    run_attention(plan, qv, kv, desc, params, ov);
    linear(o.data(), n, hq * d, L.o_proj, h, tmp.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
    xn = x;
    rms_norm(xn.data(), n, h, L.post_norm, c.rms_norm_eps);
    linear(xn.data(), n, h, L.gate_proj, inter, gate.data());
    linear(xn.data(), n, h, L.up_proj, inter, up.data());
    for (size_t i = 0; i < gate.size(); ++i)
      gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];  // SiLU(g)·u
    linear(gate.data(), n, inter, L.down_proj, h, tmp.data());
    for (size_t i = 0; i < x.size(); ++i) x[i] += tmp[i];
  }
  // The last new token of each sequence: final norm and LM head.
  const std::vector<float>& head = c.tie_word_embeddings ? w_.embed : w_.lm_head;
  std::vector<float> logits(static_cast<size_t>(batch.num_seqs * c.vocab_size),
                            std::numeric_limits<float>::quiet_NaN());
  std::vector<float> last(static_cast<size_t>(h));
  for (int32_t s = 0; s < batch.num_seqs; ++s) {
    const int32_t end = batch.query_start_loc[s + 1];
    if (end == batch.query_start_loc[s]) continue;
    std::copy_n(x.data() + static_cast<int64_t>(end - 1) * h, h, last.data());
    rms_norm(last.data(), 1, h, w_.final_norm, c.rms_norm_eps);
    linear(last.data(), 1, h, head, c.vocab_size, logits.data() + static_cast<int64_t>(s) * c.vocab_size);
  }
  return logits;
}

}  // namespace pagedattn::engine
