#include "engine/weights.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "pagedattn/error.h"

namespace pagedattn::engine {
namespace {

std::string layer_name(int64_t i, const char* leaf) {
  return "model.layers." + std::to_string(i) + "." + leaf;
}

std::string shape_string(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

std::vector<float> to_f32(const TensorInfo& t) {
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_as_float(t.data, t.dtype, static_cast<int64_t>(i));
  return out;
}

}  // namespace

std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c) {
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  std::vector<ExpectedTensor> out = {{"model.embed_tokens.weight", {c.vocab_size, h}}};
  for (int64_t i = 0; i < c.num_layers; ++i) {
    out.push_back({layer_name(i, "input_layernorm.weight"), {h}});
    out.push_back({layer_name(i, "self_attn.q_proj.weight"), {q, h}});
    out.push_back({layer_name(i, "self_attn.k_proj.weight"), {kv, h}});
    out.push_back({layer_name(i, "self_attn.v_proj.weight"), {kv, h}});
    out.push_back({layer_name(i, "self_attn.o_proj.weight"), {h, q}});
    if (c.qk_norm) {
      out.push_back({layer_name(i, "self_attn.q_norm.weight"), {c.head_dim}});
      out.push_back({layer_name(i, "self_attn.k_norm.weight"), {c.head_dim}});
    }
    out.push_back({layer_name(i, "post_attention_layernorm.weight"), {h}});
    out.push_back({layer_name(i, "mlp.gate_proj.weight"), {c.intermediate_size, h}});
    out.push_back({layer_name(i, "mlp.up_proj.weight"), {c.intermediate_size, h}});
    out.push_back({layer_name(i, "mlp.down_proj.weight"), {h, c.intermediate_size}});
  }
  out.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, h}});
  return out;
}

void check_weights(const ModelConfig& c, const SafetensorsFolder& folder) {
  for (const ExpectedTensor& e : expected_tensors(c)) {
    const TensorInfo& t = folder.get(e.name);
    PA_CHECK(t.shape == e.shape, "tensor ", e.name, " has shape ", t.shape_string(), " but the config (",
             c.architecture, ", hidden ", c.hidden_size, ", heads ", c.num_heads, "/", c.num_kv_heads,
             ", head_dim ", c.head_dim, ") needs ", shape_string(e.shape));
    PA_CHECK(t.dtype == DType::kBFloat16 || t.dtype == DType::kFloat16 || t.dtype == DType::kFloat32,
             "tensor ", e.name, " is ", dtype_name(t.dtype), "; weights must be bf16, fp16 or fp32");
  }
}

ModelWeightsF32 ModelWeightsF32::load(const ModelConfig& c, const SafetensorsFolder& folder) {
  check_weights(c, folder);
  ModelWeightsF32 w;
  w.embed = to_f32(folder.get("model.embed_tokens.weight"));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerWeightsF32 l;
    auto get = [&](const char* leaf) { return to_f32(folder.get(layer_name(i, leaf))); };
    l.input_norm = get("input_layernorm.weight");
    l.q_proj = get("self_attn.q_proj.weight");
    l.k_proj = get("self_attn.k_proj.weight");
    l.v_proj = get("self_attn.v_proj.weight");
    l.o_proj = get("self_attn.o_proj.weight");
    if (c.qk_norm) {
      l.q_norm = get("self_attn.q_norm.weight");
      l.k_norm = get("self_attn.k_norm.weight");
    }
    l.post_norm = get("post_attention_layernorm.weight");
    l.gate_proj = get("mlp.gate_proj.weight");
    l.up_proj = get("mlp.up_proj.weight");
    l.down_proj = get("mlp.down_proj.weight");
    w.layers.push_back(std::move(l));
  }
  w.final_norm = to_f32(folder.get("model.norm.weight"));
  if (!c.tie_word_embeddings) w.lm_head = to_f32(folder.get("lm_head.weight"));
  return w;
}

ModelWeightsF32 ModelWeightsF32::random(const ModelConfig& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  auto matrix = [&](int64_t out, int64_t in) {
    std::vector<float> m(static_cast<size_t>(out * in));
    const float sd = 1.0f / std::sqrt(static_cast<float>(in));
    for (auto& x : m) x = g(rng) * sd;
    return m;
  };
  auto norm = [&](int64_t n) {
    std::vector<float> v(static_cast<size_t>(n));
    for (auto& x : v) x = 1.0f + 0.1f * g(rng);
    return v;
  };
  const int64_t h = c.hidden_size, q = c.num_heads * c.head_dim, kv = c.num_kv_heads * c.head_dim;
  ModelWeightsF32 w;
  w.embed.resize(static_cast<size_t>(c.vocab_size * h));
  for (auto& x : w.embed) x = g(rng);
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerWeightsF32 l;
    l.input_norm = norm(h);
    l.q_proj = matrix(q, h);
    l.k_proj = matrix(kv, h);
    l.v_proj = matrix(kv, h);
    l.o_proj = matrix(h, q);
    if (c.qk_norm) {
      l.q_norm = norm(c.head_dim);
      l.k_norm = norm(c.head_dim);
    }
    l.post_norm = norm(h);
    l.gate_proj = matrix(c.intermediate_size, h);
    l.up_proj = matrix(c.intermediate_size, h);
    l.down_proj = matrix(h, c.intermediate_size);
    w.layers.push_back(std::move(l));
  }
  w.final_norm = norm(h);
  if (!c.tie_word_embeddings) w.lm_head = matrix(c.vocab_size, h);
  return w;
}

void save_checkpoint(const std::string& folder, const ModelConfig& c, const ModelWeightsF32& w) {
  namespace fs = std::filesystem;
  fs::create_directories(folder);
  nlohmann::json j = {
      {"model_type", c.architecture},
      {"architectures", {c.architecture == "qwen3" ? "Qwen3ForCausalLM" : "LlamaForCausalLM"}},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_layers},
      {"num_attention_heads", c.num_heads},
      {"num_key_value_heads", c.num_kv_heads},
      {"head_dim", c.head_dim},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"max_position_embeddings", c.max_position_embeddings},
      {"hidden_act", "silu"},
      {"dtype", c.dtype == DType::kBFloat16  ? "bfloat16"
                : c.dtype == DType::kFloat16 ? "float16"
                                             : "float32"}};
  if (c.rope_scaling.type != "none") {
    j["rope_scaling"] = {
        {"rope_type", c.rope_scaling.type},
        {"factor", c.rope_scaling.factor},
        {"low_freq_factor", c.rope_scaling.low_freq_factor},
        {"high_freq_factor", c.rope_scaling.high_freq_factor},
        {"original_max_position_embeddings", c.rope_scaling.original_max_position_embeddings}};
  }
  if (c.bos_token_id >= 0) j["bos_token_id"] = c.bos_token_id;
  if (!c.eos_token_ids.empty()) j["eos_token_id"] = c.eos_token_ids;
  std::ofstream(fs::path(folder) / "config.json") << j.dump(2);

  // Every tensor in the config's dtype (the stored bytes must outlive write_safetensors).
  std::vector<std::vector<uint8_t>> storage;
  std::vector<TensorInfo> tensors;
  auto add = [&](const std::string& name, const std::vector<float>& v, std::vector<int64_t> shape) {
    std::vector<uint8_t> bytes(v.size() * dtype_size(c.dtype));
    for (size_t i = 0; i < v.size(); ++i)
      store_from_float(bytes.data(), c.dtype, static_cast<int64_t>(i), v[i]);
    storage.push_back(std::move(bytes));
    TensorInfo t;
    t.name = name;
    t.dtype = c.dtype;
    t.shape = std::move(shape);
    t.data = storage.back().data();
    t.bytes = storage.back().size();
    tensors.push_back(std::move(t));
  };
  storage.reserve(expected_tensors(c).size());
  for (const ExpectedTensor& e : expected_tensors(c)) {
    const std::vector<float>* v = nullptr;
    if (e.name == "model.embed_tokens.weight")
      v = &w.embed;
    else if (e.name == "model.norm.weight")
      v = &w.final_norm;
    else if (e.name == "lm_head.weight")
      v = &w.lm_head;
    else {
      const int64_t i = std::stoll(e.name.substr(13));  // "model.layers.<i>."
      const LayerWeightsF32& l = w.layers[static_cast<size_t>(i)];
      const std::string leaf = e.name.substr(e.name.find('.', 13) + 1);
      v = leaf == "input_layernorm.weight"            ? &l.input_norm
          : leaf == "self_attn.q_proj.weight"         ? &l.q_proj
          : leaf == "self_attn.k_proj.weight"         ? &l.k_proj
          : leaf == "self_attn.v_proj.weight"         ? &l.v_proj
          : leaf == "self_attn.o_proj.weight"         ? &l.o_proj
          : leaf == "self_attn.q_norm.weight"         ? &l.q_norm
          : leaf == "self_attn.k_norm.weight"         ? &l.k_norm
          : leaf == "post_attention_layernorm.weight" ? &l.post_norm
          : leaf == "mlp.gate_proj.weight"            ? &l.gate_proj
          : leaf == "mlp.up_proj.weight"              ? &l.up_proj
                                                      : &l.down_proj;
    }
    add(e.name, *v, e.shape);
  }
  write_safetensors((fs::path(folder) / "model.safetensors").string(), tensors);
}

}  // namespace pagedattn::engine
