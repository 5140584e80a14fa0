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
};

int run_info();
int run_check(const CheckOptions& options);
int run_bench(const BenchOptions& options);

/// The workload labels of an op's grid on a backend (what --workload accepts).
std::vector<std::string> bench_workload_labels(const std::string& op, bool gpu);

}  // namespace pagedattn::cli
