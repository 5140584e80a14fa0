// `pagedattn bench`: attention timings over the decode / prefill / mixed grids.
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "commands.h"
#include "pagedattn/error.h"
#include "pagedattn/kv_format.h"
#include "pagedattn/turboquant.h"
#include "runner.h"

namespace pagedattn::cli {
namespace {

struct Workload {
  std::string label;
  std::vector<int32_t> seq_lens, query_lens;
};

struct Row {
  std::string op, label;
  double seconds = 0, bytes = 0, flops = 0, tokens = 0;
  double plan_us = -1, run_us = -1;  // host time of plan_attention and of one run_attention enqueue
};

// The shape the anchors use: 32 query heads, 8 kv heads, head dim 128, block 16, bf16.
testing::ProblemSpec base_spec() {
  testing::ProblemSpec s;
  s.head_dim = 128;
  s.num_q_heads = 32;
  s.num_kv_heads = 8;
  s.block_size = 16;
  s.dtype = s.cache_dtype = DType::kBFloat16;
  s.extra_blocks = 0;
  s.seed = std::random_device{}();
  return s;
}

std::vector<Workload> workloads(const std::string& op, bool gpu) {
  std::vector<Workload> w;
  if (op == "decode") {
    const std::vector<int> batches = gpu ? std::vector<int>{1, 16, 64, 256} : std::vector<int>{1, 4, 16};
    const std::vector<int> contexts = gpu ? std::vector<int>{512, 4096, 32768} : std::vector<int>{512, 4096};
    for (int b : batches) {
      for (int c : contexts) {
        w.push_back({std::to_string(b) + "x" + std::to_string(c), std::vector<int32_t>(b, c),
                     std::vector<int32_t>(b, 1)});
      }
    }
  } else if (op == "prefill") {
    const std::vector<std::pair<int, int>> shapes =
        gpu ? std::vector<std::pair<int, int>>{{16, 1024}, {4, 4096}, {1, 16384}}
            : std::vector<std::pair<int, int>>{{2, 256}, {1, 1024}};
    for (auto [b, s] : shapes) {
      w.push_back({std::to_string(b) + "x" + std::to_string(s), std::vector<int32_t>(b, s),
                   std::vector<int32_t>(b, s)});
    }
  } else if (op == "mixed") {
    // Chunks of new tokens on cached prefixes plus decodes, in one batch.
    const int chunks = gpu ? 4 : 1, chunk = gpu ? 512 : 128, cached = gpu ? 2048 : 256;
    const int decodes = gpu ? 64 : 4, context = gpu ? 4096 : 512;
    Workload m{std::to_string(chunks) + "x" + std::to_string(chunk) + "@" + std::to_string(cached) + "+" +
                   std::to_string(decodes) + "x1@" + std::to_string(context),
               {},
               {}};
    for (int i = 0; i < chunks; ++i) {
      m.seq_lens.push_back(cached + chunk);
      m.query_lens.push_back(chunk);
    }
    for (int i = 0; i < decodes; ++i) {
      m.seq_lens.push_back(context);
      m.query_lens.push_back(1);
    }
    w.push_back(m);
  } else {
    PA_CHECK(false, "unknown --op '", op, "'; expected decode, prefill or mixed");
  }
  return w;
}

}  // namespace

std::vector<std::string> bench_workload_labels(const std::string& op, bool gpu) {
  std::vector<std::string> labels;
  for (const Workload& w : workloads(op, gpu)) labels.push_back(w.label);
  return labels;
}

int run_bench(const BenchOptions& options) {
  const std::string& backend = options.backend;
  const std::string& op = options.op;
  const bool gpu = backend != "cpu";
  const int reps = options.reps.value_or(gpu ? 50 : 3);
  auto runner = testing::make_runner(backend);

  testing::ProblemSpec base = base_spec();
  if (options.kv_dtype.rfind("tq_", 0) == 0) {
    base.tq = tq::parse_preset(options.kv_dtype);
    base.cache_dtype = DType::kUInt8;
  } else {
    base.cache_dtype = parse_dtype(options.kv_dtype);
  }
  std::printf("bench %s on %s: hq=%d hkv=%d hd=%d bs=%d %s queries, %s cache, median of %d\n", op.c_str(),
              backend.c_str(), base.num_q_heads, base.num_kv_heads, base.head_dim, base.block_size,
              std::string(dtype_name(base.dtype)).c_str(), options.kv_dtype.c_str(), reps);
  std::printf("%-26s %12s %14s %10s %10s %9s %9s\n", "workload", "time_us", "tokens/s", "GB/s", "TFLOP/s",
              "plan_us", "run_us");
  std::vector<Row> rows;
  for (const Workload& w : workloads(op, gpu)) {
    if (!options.workload.empty() && w.label != options.workload) continue;
    testing::ProblemSpec s = base;
    s.seq_lens = w.seq_lens;
    s.query_lens = w.query_lens;
    s.force_segments = options.segments;
    const std::string unsupported = runner->unsupported(s);
    PA_CHECK(unsupported.empty(), "bench: the ", backend, " backend cannot run a ", options.kv_dtype,
             " cache here: ", unsupported);
    testing::HostProblem p = testing::make_problem(s);
    Row r{op, w.label};
    r.seconds = runner->time_attention(p, options.warmup, reps);
    // The host side of one step: plan_attention once, run_attention per layer (enqueue time; -1 on the CPU).
    const auto host = runner->host_cost(p, 200);
    r.plan_us = host.plan_us;
    r.run_us = host.run_us;
    const double esize = dtype_size(s.dtype);
    // Cache bytes as stored: data and metadata planes of the format.
    const double kv_token_bytes =
        s.tq ? static_cast<double>(s.num_kv_heads * tq::token_bytes(*s.tq, s.head_dim).total())
             : static_cast<double>(kv_bytes_per_token(s.cache_dtype, s.num_kv_heads, s.head_dim));
    for (size_t i = 0; i < s.seq_lens.size(); ++i) {
      const double len = s.seq_lens[i], q = s.query_lens[i];
      r.tokens += q;
      r.bytes += len * kv_token_bytes + 2.0 * q * s.num_q_heads * s.head_dim * esize;
      // QK^T and PV over the causal region: q rows, each seeing (len - q + row + 1) keys.
      const double pairs = q * (len - q) + q * (q + 1) / 2;
      r.flops += 4.0 * pairs * s.num_q_heads * s.head_dim;
    }
    std::printf("%-26s %12.1f %14.0f %10.2f %10.3f %9.2f %9.2f\n", w.label.c_str(), r.seconds * 1e6,
                r.tokens / r.seconds, r.bytes / r.seconds / 1e9, r.flops / r.seconds / 1e12, host.plan_us,
                host.run_us);
    rows.push_back(r);
  }
  if (!options.json_path.empty()) {
    std::ofstream f(options.json_path);
    PA_CHECK(f.good(), "--json ", options.json_path, ": cannot write the file");
    f << "[\n";
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      f << "  {\"backend\": \"" << backend << "\", \"op\": \"" << r.op << "\", \"kv_dtype\": \""
        << options.kv_dtype << "\", \"workload\": \"" << r.label << "\", \"time_us\": " << r.seconds * 1e6
        << ", \"tokens_per_s\": " << r.tokens / r.seconds << ", \"bytes_per_s\": " << r.bytes / r.seconds
        << ", \"flops_per_s\": " << r.flops / r.seconds << ", \"plan_us\": " << r.plan_us
        << ", \"run_us\": " << r.run_us << "}" << (i + 1 < rows.size() ? ",\n" : "\n");
    }
    f << "]\n";
  }
  return 0;
}

}  // namespace pagedattn::cli
