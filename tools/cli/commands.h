// Subcommands of the pagedattn CLI. main.cpp parses and validates every flag (CLI11) into these options
// before any work starts; each run_* returns the process exit code.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pagedattn::cli {

struct CheckOptions {
  std::string backend = "all";  // cpu | cuda | all
  bool quick = false;
  std::optional<uint64_t> seed;  // unset: a fresh random seed (printed)
};

struct BenchOptions {
  std::string backend;  // cpu | cuda; empty: the best available
  std::string op = "decode";
  std::string workload;           // one label of the op's grid; empty: all
  std::string json_path;          // empty: no JSON
  std::string kv_dtype = "bf16";  // the cache format: bf16 (the query dtype) or a quantized one
  std::optional<int> reps;
  int warmup = 2;
  int segments = 0;  // > 0: force the split-KV segment count (exploring the launch model)
};

struct EngineOptions {
  std::string model = "tiny-llama";  // a Hugging Face folder or a preset (random weights)
  int block_size = 16;
  int num_blocks = 0;  // 0: enough for the run (bench-engine) or 1024 (generate)
  int max_num_seqs = 256;
  int64_t max_num_batched_tokens = 8192;
  int64_t max_model_len = 0;
  bool no_prefix_caching = false;
  std::string kv_layout = "paged";  // paged | contiguous
  std::string device = "cpu";       // cpu | cuda | cuda:N
  std::string kv_cache_dtype = "auto";
  double gpu_memory_utilization = 0;  // > 0 with --num-blocks 0 on CUDA: the pool takes what this leaves
  uint64_t seed = 0;
};

struct SamplingOptions {
  float temperature = 1.0f;
  int top_k = 0;
  float top_p = 1.0f;
  int64_t seed = -1;
  int max_tokens = 16;
  bool ignore_eos = false;
};

struct GenerateOptions {
  EngineOptions engine;
  SamplingOptions sampling;
  std::vector<std::string> prompt_ids;  // each "1,2,3"
};

struct BenchEngineOptions {
  EngineOptions engine;
  SamplingOptions sampling;
  int input_len = 128, output_len = 64, num_prompts = 16;
  double random_range_ratio = 0.0;
  bool enforce_eager = false;
  bool warmup = true;
  double kv_cache_gib = 0;  ///< with --num-blocks 0: cap the pool at this many GiB
  std::string requests_file;
  std::string output_json;
};

/// `pagedattn kv-quality`: how closely each KV format tracks a reference format through the CPU model.
struct KvQualityOptions {
  std::string model = "tiny-llama";  // a Hugging Face folder or a preset (random weights)
  std::string reference = "fp32";    // the CPU runner's unquantized cache (it computes in fp32)
  std::vector<std::string> formats = {"fp8_e4m3", "int8", "tq_k8v4", "tq_k4v4", "tq_k3v4", "tq_k3v3"};
  int prompt_len = 64;
  int steps = 512;
  uint64_t seed = 0;
};

int run_info();
int run_kv_quality(const KvQualityOptions& options);
int run_generate(const GenerateOptions& options);
int run_bench_engine(const BenchEngineOptions& options);
int run_check(const CheckOptions& options);
int run_bench(const BenchOptions& options);

/// The workload labels of an op's grid on a backend (what --workload accepts).
std::vector<std::string> bench_workload_labels(const std::string& op, bool gpu);

}  // namespace pagedattn::cli
