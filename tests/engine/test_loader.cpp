// The engine's model config and safetensors loader: configs parsed with clear errors, checkpoints written and
// read back, and every corruption of a file or mismatch with the config named.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "engine/model_config.h"
#include "engine/safetensors.h"
#include "engine/weights.h"
#include "test_util.h"

namespace pagedattn::engine {
namespace {

namespace fs = std::filesystem;

fs::path temp_dir(const std::string& name) {
  const fs::path p =
      fs::temp_directory_path() / ("pagedattn_" + name + "_" + std::to_string(std::random_device{}()));
  fs::create_directories(p);
  return p;
}

const char* kLlama31 = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256, "hidden_size": 4096,
  "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "max_position_embeddings": 131072, "torch_dtype": "bfloat16",
  "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "bos_token_id": 128000, "eos_token_id": [128001, 128008, 128009], "tie_word_embeddings": false,
  "hidden_act": "silu", "attention_bias": false, "mlp_bias": false})";

TEST(ModelConfig, ParsesLlamaAndMatchesItsPreset) {
  const ModelConfig c = ModelConfig::from_json(kLlama31);
  const ModelConfig p = ModelConfig::preset("llama-3.1-8b");
  EXPECT_EQ(c.architecture, "llama");
  EXPECT_EQ(c.head_dim, 128);  // hidden / heads when the config has no head_dim
  EXPECT_EQ(c.num_kv_heads, p.num_kv_heads);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.num_parameters(), p.num_parameters());
  EXPECT_NEAR(static_cast<double>(p.num_parameters()), 8.03e9, 0.01e9);
  EXPECT_NEAR(static_cast<double>(ModelConfig::preset("qwen3-0.6b").num_parameters()), 0.596e9, 0.005e9);
  EXPECT_NEAR(static_cast<double>(ModelConfig::preset("llama-2-13b").num_parameters()), 13.0e9, 0.05e9);
}

// transformers 5 writes RoPE as "rope_parameters" (theta and scaling in one object).
TEST(ModelConfig, ReadsTransformers5RopeParameters) {
  std::string v5 = kLlama31;
  const size_t a = v5.find("\"rope_theta\": 500000.0,");
  v5.erase(a, std::string("\"rope_theta\": 500000.0,").size());
  const size_t b = v5.find("\"rope_scaling\": {");
  v5.replace(b, std::string("\"rope_scaling\": {").size(),
             "\"rope_parameters\": {\"rope_theta\": 500000.0, ");
  const ModelConfig c = ModelConfig::from_json(v5);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  const ModelConfig plain = ModelConfig::from_json(
      R"({"model_type": "qwen3", "vocab_size": 64, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 1,
          "num_attention_heads": 1, "head_dim": 64, "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}})");
  EXPECT_EQ(plain.rope_theta, 1e6);
  EXPECT_EQ(plain.rope_scaling.type, "none");
}

TEST(ModelConfig, ErrorsNameTheField) {
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json("{"), "config.json is not valid JSON");
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(R"({"model_type": "gpt2"})"),
                        "model_type \"gpt2\" is not supported");
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(R"({"model_type": "llama", "vocab_size": 10})"),
                        "the field \"hidden_size\" is missing");
  std::string bad = kLlama31;
  bad.replace(bad.find("\"num_key_value_heads\": 8"), 24, "\"num_key_value_heads\": 5");
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(bad),
                        "num_attention_heads 32 must be a multiple of num_key_value_heads 5");
  bad = kLlama31;
  bad.replace(bad.find("\"llama3\""), 8, "\"yarn\"");
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(bad), "rope_scaling type \"yarn\" is not supported");
  bad = kLlama31;
  bad.replace(bad.find("\"attention_bias\": false"), 23, "\"attention_bias\": true");
  EXPECT_ERROR_CONTAINS(ModelConfig::from_json(bad), "attention_bias = true is not supported");
  EXPECT_ERROR_CONTAINS(ModelConfig::preset("gpt-5"), "unknown model preset 'gpt-5'");
}

// save_checkpoint writes what the loader reads back: every tensor, bit-exactly in the config's dtype.
TEST(Safetensors, CheckpointRoundTrip) {
  for (const char* name : {"tiny-llama", "tiny-qwen3"}) {
    SCOPED_TRACE(name);
    const ModelConfig c = ModelConfig::preset(name);
    const ModelWeightsF32 w = ModelWeightsF32::random(c, 5);
    const fs::path dir = temp_dir(name);
    save_checkpoint(dir.string(), c, w);
    const ModelConfig back = ModelConfig::from_file((dir / "config.json").string());
    EXPECT_EQ(back.num_parameters(), c.num_parameters());
    EXPECT_EQ(back.qk_norm, c.qk_norm);
    EXPECT_EQ(back.rope_scaling.type, c.rope_scaling.type);
    const SafetensorsFolder folder(dir.string());
    const ModelWeightsF32 loaded = ModelWeightsF32::load(back, folder);
    ASSERT_EQ(loaded.embed.size(), w.embed.size());
    for (size_t i = 0; i < w.embed.size(); i += 97) {
      EXPECT_EQ(loaded.embed[i], bf16_bits_to_float(float_to_bf16_bits(w.embed[i])));
    }
    EXPECT_EQ(loaded.layers.size(), static_cast<size_t>(c.num_layers));
    EXPECT_EQ(loaded.layers[1].down_proj.size(), w.layers[1].down_proj.size());
    EXPECT_EQ(loaded.lm_head.empty(), c.tie_word_embeddings);
    fs::remove_all(dir);
  }
}

// One small file per corruption: each is refused with a message naming the file's problem.
TEST(Safetensors, CorruptFilesAreNamed) {
  const fs::path dir = temp_dir("corrupt");
  std::vector<uint8_t> a(16), b(8);
  TensorInfo ta{"a", DType::kFloat32, {2, 2}, a.data(), a.size()},
      tb{"b", DType::kBFloat16, {4}, b.data(), b.size()};
  const std::string good = (dir / "good.safetensors").string();
  write_safetensors(good, {ta, tb});
  const SafetensorsFile f(good);
  EXPECT_EQ(f.tensors().at("a").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(f.tensors().at("b").dtype, DType::kBFloat16);

  std::ifstream in(good, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto write = [&](const std::string& name, const std::vector<char>& content) {
    const std::string p = (dir / name).string();
    std::ofstream(p, std::ios::binary).write(content.data(), static_cast<std::streamsize>(content.size()));
    return p;
  };
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write("short", {'a', 'b'})), "too short for a safetensors file");
  std::vector<char> truncated(bytes.begin(), bytes.end() - 4);
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write("truncated", truncated)), "run past the file's data");
  std::vector<char> huge_header = bytes;
  huge_header[6] = 1;  // header length ~2^48
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write("huge", huge_header)), "the header claims");
  std::vector<char> garbage = bytes;
  garbage[8] = '[';
  garbage[9] = '{';
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write("garbage", garbage)), "the header is not valid JSON");
  std::vector<char> extra = bytes;
  extra.push_back(0);
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write("extra", extra)), "bytes after the last tensor");
  // A shape that disagrees with its byte span.
  std::string text(bytes.begin() + 8, bytes.end() - 24);
  const size_t at = text.find("[2,2]");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 5, "[2,3]");
  std::vector<char> reshaped(bytes.begin(), bytes.begin() + 8);
  reshaped.insert(reshaped.end(), text.begin(), text.end());
  reshaped.insert(reshaped.end(), bytes.end() - 24, bytes.end());
  EXPECT_ERROR_CONTAINS(SafetensorsFile(write("reshaped", reshaped)), "shape [2, 3] of F32 is 24 bytes");
  fs::remove_all(dir);
}

// A checkpoint that does not match its config: a missing tensor and a wrong shape are named.
TEST(Safetensors, WeightsMustMatchTheConfig) {
  const ModelConfig c = ModelConfig::preset("tiny-llama");
  const fs::path dir = temp_dir("mismatch");
  save_checkpoint(dir.string(), c, ModelWeightsF32::random(c, 1));
  ModelConfig wider = c;
  wider.intermediate_size = 640;
  EXPECT_ERROR_CONTAINS(check_weights(wider, SafetensorsFolder(dir.string())),
                        "tensor model.layers.0.mlp.gate_proj.weight has shape [512, 256] but the config");
  ModelConfig qwen = c;
  qwen.qk_norm = true;
  EXPECT_ERROR_CONTAINS(check_weights(qwen, SafetensorsFolder(dir.string())),
                        "has no tensor model.layers.0.self_attn.q_norm.weight");
  EXPECT_ERROR_CONTAINS(SafetensorsFolder((dir / "nope").string()), "does not exist");
  fs::remove_all(dir);
}

}  // namespace
}  // namespace pagedattn::engine
