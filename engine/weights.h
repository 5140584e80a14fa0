// The tensors a Llama / Qwen3 model needs, checked by name, dtype and shape against its config, and the host
// (fp32) copy the CPU path computes with.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/safetensors.h"

namespace pagedattn::engine {

struct ExpectedTensor {
  std::string name;
  std::vector<int64_t> shape;
};

/// Hugging Face names and shapes of every tensor the model reads (lm_head.weight only when untied).
std::vector<ExpectedTensor> expected_tensors(const ModelConfig& c);

/// Throws, naming the tensor, when the folder lacks one the model reads or holds it with another shape, or in
/// a dtype other than bf16, fp16 or fp32.
void check_weights(const ModelConfig& c, const SafetensorsFolder& folder);

/// One layer's weights in fp32, row-major as stored ([out, in] for projections).
struct LayerWeightsF32 {
  std::vector<float> input_norm, q_proj, k_proj, v_proj, o_proj, q_norm, k_norm, post_norm, gate_proj,
      up_proj, down_proj;
};

struct ModelWeightsF32 {
  std::vector<float> embed;  // [vocab, hidden]
  std::vector<LayerWeightsF32> layers;
  std::vector<float> final_norm;
  std::vector<float> lm_head;  // [vocab, hidden]; empty when tied to embed

  /// From a checked folder (every tensor converted to fp32).
  static ModelWeightsF32 load(const ModelConfig& c, const SafetensorsFolder& folder);
  /// Random weights (like vLLM's --load-format dummy): projections ~ N(0, 1/fan_in) scaled so activations
  /// stay O(1) through the layers, norms ~ 1 + small noise. Deterministic for a seed.
  static ModelWeightsF32 random(const ModelConfig& c, uint64_t seed);
};

/// Writes a Hugging Face model folder (config.json + model.safetensors, in the config's dtype) holding these
/// weights; what transformers' save_pretrained would write for the same model.
void save_checkpoint(const std::string& folder, const ModelConfig& c, const ModelWeightsF32& w);

}  // namespace pagedattn::engine
