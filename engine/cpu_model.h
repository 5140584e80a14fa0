// A Llama / Qwen3 forward pass on the CPU over the paged cache: the same per-step structure the GPU model
// runner has (embedding, then per layer RMSNorm -> QKV -> [q/k norm] -> RoPE -> write_kv -> attention (one
// plan per step, run per layer) -> O -> residual -> RMSNorm -> SwiGLU MLP -> residual; final norm; LM head on
// each sequence's last token), in fp32. It runs tiny models in CI and is the engine's CPU backend.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "engine/model_config.h"
#include "engine/weights.h"
#include "pagedattn/batch_builder.h"
#include "pagedattn/paged_kv.h"

namespace pagedattn::engine {

/// RoPE inverse frequencies of a config (head_dim / 2 of them), with its scaling applied (llama3, linear).
std::vector<float> rope_inv_freq(const ModelConfig& c);

/// The paged K/V cache of every layer on the host, in any format the CPU backend reads: "fp32" (the default),
/// "bf16", "fp16", "fp8_e4m3", "fp8_e5m2", "int8" (with its scale planes) or a TurboQuant preset "tq_k4v4",
/// ... (codes, norms, value scales). Each plane is [num_blocks, block_size, num_kv_heads, inner] bytes.
class HostKVCache {
 public:
  HostKVCache(const ModelConfig& c, int32_t num_blocks, int32_t block_size,
              const std::string& format = "fp32");
  PagedKVCache layer(int64_t i);
  /// Copies block src into dst in every layer's planes (copy-on-write).
  void copy_block(int32_t src, int32_t dst);
  int32_t num_blocks() const { return num_blocks_; }
  int32_t block_size() const { return block_size_; }
  /// Bytes of one token of one layer, every plane (K and V).
  int64_t bytes_per_token_layer() const;
  /// A TurboQuant cache: attention reads the step's own tokens raw (AttentionParams::new_key), the spec's
  /// prefill semantics.
  bool turboquant() const { return tq_.has_value(); }

 private:
  struct Plane {
    DType dtype;
    int64_t inner;  // elements per (block, slot, head); 0: a rank-3 plane of one element
    std::vector<std::vector<uint8_t>> layers;
  };
  int32_t num_blocks_, block_size_;
  int64_t kv_heads_, head_dim_;
  std::optional<tq::Preset> tq_;
  Plane k_, v_, k_meta_, v_meta_;
};

class CpuModel {
 public:
  CpuModel(ModelConfig config, ModelWeightsF32 weights);
  const ModelConfig& config() const { return config_; }

  /// One step: tokens [batch.num_tokens()] at batch.positions, K/V written at batch.slot_mapping, attention
  /// over the cache. Returns the logits of each sequence's last new token, [num_seqs, vocab] (a sequence with
  /// no new token gets a row of NaN).
  std::vector<float> forward(std::span<const int32_t> tokens, HostBatch& batch, HostKVCache& cache) const;

 private:
  ModelConfig config_;
  ModelWeightsF32 w_;
  std::vector<float> inv_freq_;
};

}  // namespace pagedattn::engine
