#include "engine/model_config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pagedattn/attention.h"
#include "pagedattn/error.h"

namespace pagedattn::engine {
namespace {

using json = nlohmann::json;

template <typename T>
T required(const json& j, const char* field) {
  PA_CHECK(j.contains(field), "config.json: the field \"", field, "\" is missing");
  try {
    return j.at(field).get<T>();
  } catch (const json::exception& e) {
    PA_CHECK(false, "config.json: the field \"", field, "\" has the wrong type (", e.what(), ")");
  }
}

template <typename T>
T optional(const json& j, const char* field, T fallback) {
  if (!j.contains(field) || j.at(field).is_null()) return fallback;
  try {
    return j.at(field).get<T>();
  } catch (const json::exception& e) {
    PA_CHECK(false, "config.json: the field \"", field, "\" has the wrong type (", e.what(), ")");
  }
}

DType weights_dtype(const json& j) {
  // transformers 5 writes "dtype"; earlier versions "torch_dtype".
  const std::string name =
      optional<std::string>(j, "dtype", optional<std::string>(j, "torch_dtype", "bfloat16"));
  if (name == "bfloat16") return DType::kBFloat16;
  if (name == "float16") return DType::kFloat16;
  if (name == "float32") return DType::kFloat32;
  PA_CHECK(false, "config.json: dtype \"", name,
           "\" is not supported; expected bfloat16, float16 or float32");
}

}  // namespace

ModelConfig ModelConfig::from_json(const std::string& text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    PA_CHECK(false, "config.json is not valid JSON: ", e.what());
  }
  PA_CHECK(j.is_object(), "config.json must hold a JSON object");
  ModelConfig c;
  const std::string type = required<std::string>(j, "model_type");
  PA_CHECK(type == "llama" || type == "qwen3", "model_type \"", type,
           "\" is not supported; the engine runs llama (Llama 2, Llama 3.x) and qwen3 models");
  c.architecture = type;
  c.qk_norm = type == "qwen3";
  c.vocab_size = required<int64_t>(j, "vocab_size");
  c.hidden_size = required<int64_t>(j, "hidden_size");
  c.intermediate_size = required<int64_t>(j, "intermediate_size");
  c.num_layers = required<int64_t>(j, "num_hidden_layers");
  c.num_heads = required<int64_t>(j, "num_attention_heads");
  c.num_kv_heads = optional<int64_t>(j, "num_key_value_heads", c.num_heads);
  PA_CHECK(c.num_heads > 0, "config.json: num_attention_heads must be positive, got ", c.num_heads);
  c.head_dim = optional<int64_t>(j, "head_dim", c.hidden_size / c.num_heads);
  c.rms_norm_eps = optional<double>(j, "rms_norm_eps", 1e-6);
  c.rope_theta = optional<double>(j, "rope_theta", 10000.0);
  c.tie_word_embeddings = optional<bool>(j, "tie_word_embeddings", false);
  c.max_position_embeddings = optional<int64_t>(j, "max_position_embeddings", 4096);
  c.dtype = weights_dtype(j);
  PA_CHECK(!optional<bool>(j, "attention_bias", false),
           "config.json: attention_bias = true is not supported "
           "(Llama and Qwen3 projections have no bias)");
  PA_CHECK(!optional<bool>(j, "mlp_bias", false), "config.json: mlp_bias = true is not supported");
  const std::string act = optional<std::string>(j, "hidden_act", "silu");
  PA_CHECK(act == "silu", "config.json: hidden_act \"", act, "\" is not supported; expected silu");
  // transformers 5 keeps RoPE in "rope_parameters" (rope_theta and the scaling together); earlier versions in
  // "rope_theta" and "rope_scaling".
  const char* rope_field = j.contains("rope_parameters") && !j.at("rope_parameters").is_null()
                               ? "rope_parameters"
                               : "rope_scaling";
  if (j.contains("rope_parameters") && j.at("rope_parameters").is_object()) {
    c.rope_theta = optional<double>(j.at("rope_parameters"), "rope_theta", c.rope_theta);
  }
  if (j.contains(rope_field) && !j.at(rope_field).is_null()) {
    const json& r = j.at(rope_field);
    const std::string kind =
        optional<std::string>(r, "rope_type", optional<std::string>(r, "type", "default"));
    if (kind == "llama3" || kind == "linear") {
      c.rope_scaling.type = kind;
      c.rope_scaling.factor = required<double>(r, "factor");
      if (kind == "llama3") {
        c.rope_scaling.low_freq_factor = required<double>(r, "low_freq_factor");
        c.rope_scaling.high_freq_factor = required<double>(r, "high_freq_factor");
        c.rope_scaling.original_max_position_embeddings =
            required<int64_t>(r, "original_max_position_embeddings");
      }
    } else {
      PA_CHECK(kind == "default", "config.json: rope_scaling type \"", kind,
               "\" is not supported; expected llama3 or linear");
    }
  }
  c.bos_token_id = optional<int64_t>(j, "bos_token_id", -1);
  if (j.contains("eos_token_id") && !j.at("eos_token_id").is_null()) {
    const json& e = j.at("eos_token_id");
    if (e.is_array()) {
      for (const auto& x : e) c.eos_token_ids.push_back(x.get<int64_t>());
    } else {
      c.eos_token_ids.push_back(e.get<int64_t>());
    }
  }
  c.validate();
  return c;
}

ModelConfig ModelConfig::from_file(const std::string& path) {
  std::ifstream f(path);
  PA_CHECK(f.good(), "cannot read the model config ", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json(ss.str());
}

std::vector<std::string> ModelConfig::preset_names() {
  return {"qwen3-0.6b", "llama-3.1-8b", "llama-2-7b", "llama-2-13b", "tiny-llama", "tiny-qwen3"};
}

ModelConfig ModelConfig::preset(const std::string& name) {
  ModelConfig c;
  c.head_dim = 128;
  if (name == "qwen3-0.6b") {
    c.architecture = "qwen3";
    c.qk_norm = true;
    c.num_layers = 28, c.hidden_size = 1024, c.num_heads = 16, c.num_kv_heads = 8, c.intermediate_size = 3072;
    c.vocab_size = 151936, c.rope_theta = 1e6, c.tie_word_embeddings = true, c.rms_norm_eps = 1e-6;
    c.max_position_embeddings = 40960;
    c.eos_token_ids = {151645};
  } else if (name == "llama-3.1-8b") {
    c.architecture = "llama";
    c.num_layers = 32, c.hidden_size = 4096, c.num_heads = 32, c.num_kv_heads = 8,
    c.intermediate_size = 14336;
    c.vocab_size = 128256, c.rope_theta = 500000, c.rms_norm_eps = 1e-5, c.max_position_embeddings = 131072;
    c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001, 128008, 128009};
  } else if (name == "llama-2-7b" || name == "llama-2-13b") {
    const bool big = name == "llama-2-13b";
    c.architecture = "llama";
    c.num_layers = big ? 40 : 32, c.hidden_size = big ? 5120 : 4096;
    c.num_heads = c.num_kv_heads = big ? 40 : 32, c.intermediate_size = big ? 13824 : 11008;
    c.vocab_size = 32000, c.rope_theta = 10000, c.rms_norm_eps = 1e-5, c.max_position_embeddings = 4096;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  } else if (name == "tiny-llama" || name == "tiny-qwen3") {
    // Small enough for the CPU backend in tests; the shape rules of the real ones (GQA 2, head dim 64).
    const bool qwen = name == "tiny-qwen3";
    c.architecture = qwen ? "qwen3" : "llama";
    c.qk_norm = qwen;
    c.num_layers = 2, c.hidden_size = 256, c.num_heads = 4, c.num_kv_heads = 2, c.head_dim = 64;
    c.intermediate_size = 512, c.vocab_size = 512, c.rope_theta = qwen ? 1e6 : 500000;
    c.rms_norm_eps = 1e-6, c.max_position_embeddings = 2048, c.tie_word_embeddings = qwen;
    if (!qwen) c.rope_scaling = {"llama3", 8.0, 1.0, 4.0, 256};
    c.eos_token_ids = {1};
  } else {
    std::string names;
    for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    PA_CHECK(false, "unknown model preset '", name, "'; expected one of ", names);
  }
  c.validate();
  return c;
}

void ModelConfig::validate() const {
  PA_CHECK(num_layers > 0 && hidden_size > 0 && intermediate_size > 0 && vocab_size > 0,
           "model: layers, hidden_size, intermediate_size and vocab_size must be positive");
  PA_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0, "model: num_attention_heads ", num_heads,
           " must be a multiple of num_key_value_heads ", num_kv_heads);
  PA_CHECK(std::find(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims), head_dim) !=
               std::end(kSupportedHeadDims),
           "model: head_dim ", head_dim, " is not one the attention kernels support");
  PA_CHECK(head_dim % 2 == 0, "model: RoPE needs an even head_dim, got ", head_dim);
  PA_CHECK(dtype == DType::kBFloat16 || dtype == DType::kFloat16 || dtype == DType::kFloat32,
           "model: weights must be bf16, fp16 or fp32");
  PA_CHECK(rope_scaling.type != "llama3" || rope_scaling.high_freq_factor > rope_scaling.low_freq_factor,
           "model: llama3 rope scaling needs high_freq_factor > low_freq_factor");
}

int64_t ModelConfig::num_parameters() const {
  const int64_t attn =
      hidden_size * (num_heads + 2 * num_kv_heads) * head_dim + num_heads * head_dim * hidden_size;
  const int64_t mlp = 3 * hidden_size * intermediate_size;
  const int64_t norms = 2 * hidden_size + (qk_norm ? 2 * head_dim : 0);
  const int64_t embed = vocab_size * hidden_size * (tie_word_embeddings ? 1 : 2);
  return num_layers * (attn + mlp + norms) + hidden_size + embed;
}

}  // namespace pagedattn::engine
