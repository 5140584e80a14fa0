// A model's shape, read from a Hugging Face config.json (Llama family and Qwen3) or taken from a named
// preset. Every field the engine depends on is checked here, with an error that names the field.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pagedattn/dtype.h"

namespace pagedattn::engine {

/// RoPE frequency scaling: none, "linear" (positions divided by factor) or "llama3" (Llama 3.1's per-band
/// wavelength scaling).
struct RopeScaling {
  std::string type = "none";
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  std::string architecture;  ///< "llama" (Llama 2 / 3.x) or "qwen3" (q/k RMSNorm per head)
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  double rms_norm_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool qk_norm = false;  ///< Qwen3: RMSNorm over each head of q and k before RoPE
  int64_t max_position_embeddings = 4096;
  DType dtype = DType::kBFloat16;  ///< the weights' dtype (bf16 or fp16)
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;

  /// Parses config.json text; throws pagedattn::Error naming the missing or unsupported field.
  static ModelConfig from_json(const std::string& text);
  static ModelConfig from_file(const std::string& path);
  /// Named shapes with random weights for benchmarks and tests: qwen3-0.6b, llama-3.1-8b, llama-2-7b,
  /// llama-2-13b, and the tiny tiny-llama / tiny-qwen3.
  static ModelConfig preset(const std::string& name);
  static std::vector<std::string> preset_names();

  /// Throws when the shape is inconsistent (heads not a multiple of kv heads, a head dim the kernels
  /// lack...).
  void validate() const;
  /// Parameters of the model (embeddings counted once when tied).
  int64_t num_parameters() const;
};

}  // namespace pagedattn::engine
