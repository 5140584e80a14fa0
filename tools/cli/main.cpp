// The pagedattn command: parses and validates every flag with CLI11 before any work, then runs one
// subcommand. A bad invocation prints one line naming the flag and its constraint and exits 2; a failed run
// exits 1.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cstdio>
#include <exception>
#include <fstream>
#include <string>

#include "commands.h"
#include "pagedattn/error.h"
#include "pagedattn/info.h"

namespace pagedattn::cli {
namespace {

constexpr int kUsageError = 2;

/// The backend exists in this build and on this machine (the error says which of the two is missing).
void require_backend(const std::string& backend) {
  if (backend == "cuda") {
    const std::string why = cuda_unavailable_reason();
    PA_CHECK(why.empty(), "--backend cuda: ", why);
  }
}

/// Everything a bench run could fail on before its first timing: the backend, the workload label, the JSON
/// file (opened for appending, so an existing file is left as it is until the rows are written).
void validate_bench(BenchOptions& bench) {
  if (bench.backend.empty()) bench.backend = cuda_unavailable_reason().empty() ? "cuda" : "cpu";
  require_backend(bench.backend);
  if (!bench.workload.empty()) {
    const auto labels = bench_workload_labels(bench.op, bench.backend != "cpu");
    std::string list;
    for (const auto& l : labels) list += (list.empty() ? "" : ", ") + l;
    PA_CHECK(std::find(labels.begin(), labels.end(), bench.workload) != labels.end(), "--workload ",
             bench.workload, " is not in the ", bench.op, " grid on ", bench.backend, "; expected one of ",
             list);
  }
  if (!bench.json_path.empty()) {
    std::ofstream f(bench.json_path, std::ios::app);
    PA_CHECK(f.good(), "--json ", bench.json_path, ": cannot open the file for writing");
  }
}

}  // namespace
}  // namespace pagedattn::cli

int main(int argc, char** argv) {
  using namespace pagedattn::cli;
  CLI::App app{"pagedattn: attention over a paged KV cache (C++/CUDA). Run 'pagedattn <command> --help'.",
               "pagedattn"};
  app.set_version_flag("--version", std::string("pagedattn ") + pagedattn::build_info().version);
  app.require_subcommand(1);

  CLI::App* info =
      app.add_subcommand("info", "version, build configuration (CUDA, archs, head dims, dtypes), devices");

  CheckOptions check;
  CLI::App* check_cmd = app.add_subcommand(
      "check", "random problems (attention and write_kv) on each backend against the dense fp64 reference");
  check_cmd->add_option("--backend", check.backend, "backend to check")
      ->check(CLI::IsMember({"cpu", "cuda", "all"}))
      ->capture_default_str();
  check_cmd->add_flag("--quick", check.quick, "the quick subset of the grid");
  check_cmd->add_option("--seed", check.seed, "seed of the random grid (printed; replays a run)");

  BenchOptions bench;
  CLI::App* bench_cmd =
      app.add_subcommand("bench", "attention timings: time, tokens/s, GB/s, TFLOP/s (median of --reps)");
  bench_cmd
      ->add_option("--backend", bench.backend, "backend to time (default: cuda when available, else cpu)")
      ->check(CLI::IsMember({"cpu", "cuda"}));
  bench_cmd->add_option("--op", bench.op, "workload grid")
      ->check(CLI::IsMember({"decode", "prefill", "mixed"}))
      ->capture_default_str();
  bench_cmd->add_option("--workload", bench.workload,
                        "one workload of the grid, by its label (e.g. 16x4096)");
  bench_cmd->add_option("--json", bench.json_path, "also write the rows as JSON to this file");
  bench_cmd->add_option("--kv-dtype", bench.kv_dtype, "K/V cache format (queries are bf16); tq_*: TurboQuant")
      ->check(
          CLI::IsMember({"bf16", "fp8_e4m3", "fp8_e5m2", "int8", "tq_k8v4", "tq_k4v4", "tq_k3v4", "tq_k3v3"}))
      ->capture_default_str();
  bench_cmd->add_option("--reps", bench.reps, "timed repetitions (default: 50 on a GPU, 3 on the CPU)")
      ->check(CLI::Range(1, 100000));
  bench_cmd->add_option("--warmup", bench.warmup, "untimed runs first")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  bench_cmd
      ->add_option("--segments", bench.segments,
                   "force this many split-KV segments instead of the launch model's choice (0 = choose)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();

  // The engine's commands (flags of the benchmark as in `vllm bench throughput`).
  auto engine_flags = [](CLI::App* cmd, EngineOptions& e) {
    cmd->add_option("--model", e.model,
                    "a Hugging Face model folder, or a preset with random weights (qwen3-0.6b, "
                    "llama-3.1-8b, llama-2-7b, llama-2-13b, tiny-llama, tiny-qwen3)")
        ->capture_default_str();
    cmd->add_option("--block-size", e.block_size, "KV block size in tokens")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    cmd->add_option("--num-blocks", e.num_blocks, "KV pool blocks (0: enough for the run)")
        ->check(CLI::Range(0, 1 << 30));
    cmd->add_option("--max-num-seqs", e.max_num_seqs, "most requests per step")
        ->check(CLI::Range(1, 1 << 20))
        ->capture_default_str();
    cmd->add_option("--max-num-batched-tokens", e.max_num_batched_tokens,
                    "token budget of a step (chunked prefill)")
        ->check(CLI::Range(int64_t{1}, int64_t{1} << 30))
        ->capture_default_str();
    cmd->add_option("--max-model-len", e.max_model_len, "longest sequence (0: the model's)")
        ->check(CLI::Range(int64_t{0}, int64_t{1} << 30));
    cmd->add_flag("--no-enable-prefix-caching", e.no_prefix_caching, "turn prefix caching off");
    cmd->add_option("--kv-layout", e.kv_layout,
                    "paged, or contiguous: max_model_len reserved per request at admission")
        ->check(CLI::IsMember({"paged", "contiguous"}))
        ->capture_default_str();
    cmd->add_option("--device", e.device,
                    "cpu (the fp32 CPU runner) or cuda / cuda:N (the CUDA runner: bf16 weights, GPU "
                    "sampling, CUDA graphs)")
        ->capture_default_str();
    cmd->add_option(
           "--kv-cache-dtype", e.kv_cache_dtype,
           "auto (the runner's own: fp32 on the CPU, bf16 on CUDA); bf16 (CUDA), fp8_e4m3, fp8_e5m2, "
           "int8 and the TurboQuant presets (both runners)")
        ->check(CLI::IsMember(
            {"auto", "bf16", "fp8_e4m3", "fp8_e5m2", "int8", "tq_k8v4", "tq_k4v4", "tq_k3v4", "tq_k3v3"}))
        ->capture_default_str();
    cmd->add_option(
           "--gpu-memory-utilization", e.gpu_memory_utilization,
           "CUDA with --num-blocks 0: the KV pool takes this fraction of the card less what the weights and "
           "step buffers hold (vLLM's rule)")
        ->check(CLI::Range(0.01, 1.0));
    cmd->add_option("--seed", e.seed, "seed of the workload and of requests without one")
        ->capture_default_str();
  };
  auto sampling_flags = [](CLI::App* cmd, SamplingOptions& s) {
    cmd->add_option("--temperature", s.temperature, "0 = greedy")
        ->check(CLI::Range(0.0f, 100.0f))
        ->capture_default_str();
    cmd->add_option("--top-k", s.top_k, "0 = off")->check(CLI::Range(0, 1 << 30));
    cmd->add_option("--top-p", s.top_p, "1 = off")->check(CLI::Range(1e-6f, 1.0f));
  };
  GenerateOptions generate;
  CLI::App* generate_cmd =
      app.add_subcommand("generate", "generate tokens for prompts given as token ids (CPU runner)");
  engine_flags(generate_cmd, generate.engine);
  sampling_flags(generate_cmd, generate.sampling);
  generate_cmd
      ->add_option("--prompt-ids", generate.prompt_ids, "a prompt as comma-separated token ids (repeatable)")
      ->required();
  generate_cmd->add_option("--max-tokens", generate.sampling.max_tokens, "tokens to generate at most")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  generate_cmd->add_option("--sampling-seed", generate.sampling.seed, "the requests' sampling seed");
  generate_cmd->add_flag("--ignore-eos", generate.sampling.ignore_eos, "generate past EOS");
  BenchEngineOptions bench_engine;
  CLI::App* bench_engine_cmd = app.add_subcommand(
      "bench-engine",
      "offline throughput of the engine: random prompts, ignore_eos (flags as vllm bench throughput)");
  engine_flags(bench_engine_cmd, bench_engine.engine);
  sampling_flags(bench_engine_cmd, bench_engine.sampling);
  bench_engine_cmd->add_option("--input-len", bench_engine.input_len, "prompt tokens")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  bench_engine_cmd->add_option("--output-len", bench_engine.output_len, "output tokens")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  bench_engine_cmd->add_option("--num-prompts", bench_engine.num_prompts, "requests")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  bench_engine_cmd
      ->add_option("--random-range-ratio", bench_engine.random_range_ratio,
                   "lengths uniform in [len (1 - r), len (1 + r)]")
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  bench_engine_cmd->add_flag("--enforce-eager", bench_engine.enforce_eager,
                             "no CUDA graphs (the CPU runner is always eager)");
  bench_engine_cmd->add_option(
      "--requests-file", bench_engine.requests_file,
      "the requests, one per line: output length, then the prompt's token ids (instead of "
      "--num-prompts / --input-len / --output-len)");
  bench_engine_cmd
      ->add_option("--kv-cache-gib", bench_engine.kv_cache_gib,
                   "with --num-blocks 0: the pool holds every request at once but at most this many GiB")
      ->check(CLI::Range(0.0, 1e6));
  bench_engine_cmd->add_flag("!--no-warmup", bench_engine.warmup, "skip the untimed warm-up generate");
  bench_engine_cmd->add_option("--output-json", bench_engine.output_json,
                               "write the results as JSON to this file");

  KvQualityOptions kv_quality;
  CLI::App* kv_quality_cmd = app.add_subcommand(
      "kv-quality", "logit KL and greedy agreement of KV cache formats against a reference (CPU runner)");
  kv_quality_cmd
      ->add_option("--model", kv_quality.model, "a Hugging Face folder or a preset (random weights)")
      ->capture_default_str();
  kv_quality_cmd
      ->add_option("--reference", kv_quality.reference,
                   "the reference KV format (fp32: the unquantized cache)")
      ->capture_default_str();
  kv_quality_cmd->add_option("--formats", kv_quality.formats, "the formats to measure")
      ->delimiter(',')
      ->capture_default_str();
  kv_quality_cmd->add_option("--prompt-len", kv_quality.prompt_len, "random prompt tokens")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  kv_quality_cmd->add_option("--steps", kv_quality.steps, "greedy decode steps")
      ->check(CLI::Range(1, 1 << 16))
      ->capture_default_str();
  kv_quality_cmd->add_option("--seed", kv_quality.seed, "seed of the prompt")->capture_default_str();

  // The command names, once: for `help <command>` and the messages below.
  std::vector<std::string> commands;
  for (const CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; }))
    commands.push_back(sub->get_name());
  commands.push_back("help");
  std::string command_list;
  for (size_t i = 0; i < commands.size(); ++i)
    command_list += (i == 0 ? "" : i + 1 == commands.size() ? " or " : ", ") + commands[i];
  CLI::App* help = app.add_subcommand("help", "this help, or a command's: pagedattn help <command>");
  std::string help_topic;
  help->add_option("command", help_topic, "command to describe")->check(CLI::IsMember(commands));

  if (argc == 1) {
    std::fprintf(stderr, "pagedattn: a command is required: %s (see 'pagedattn --help')\n",
                 command_list.c_str());
    return kUsageError;
  }
  const std::string first = argv[1];
  const bool known = std::find(commands.begin(), commands.end(), first) != commands.end();
  if (!known && !first.starts_with('-')) {
    std::fprintf(stderr, "pagedattn: unknown command '%s'; expected %s\n", first.c_str(),
                 command_list.c_str());
    return kUsageError;
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line: which command, what was wrong, where to look.
    std::string where = "pagedattn";
    for (const CLI::App* sub : app.get_subcommands()) where += " " + sub->get_name();
    std::fprintf(stderr, "%s: %s (see '%s --help')\n", where.c_str(), e.what(), where.c_str());
    return kUsageError;
  }

  // Checks that need the machine (is there a GPU?) or the grid: still before any work, still usage errors.
  try {
    if (check_cmd->parsed()) require_backend(check.backend);
    if (bench_cmd->parsed()) validate_bench(bench);
  } catch (const pagedattn::Error& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return kUsageError;
  }

  try {
    if (help->parsed()) {
      CLI::App* topic = help_topic.empty() ? &app : app.get_subcommand(help_topic);
      std::fputs(topic->help().c_str(), stdout);
      return 0;
    }
    if (info->parsed()) return run_info();
    if (check_cmd->parsed()) return run_check(check);
    if (bench_cmd->parsed()) return run_bench(bench);
    if (generate_cmd->parsed()) {
      if (generate.engine.num_blocks == 0) generate.engine.num_blocks = 1024;
      return run_generate(generate);
    }
    if (bench_engine_cmd->parsed()) return run_bench_engine(bench_engine);
    if (kv_quality_cmd->parsed()) return run_kv_quality(kv_quality);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return kUsageError;  // unreachable: require_subcommand(1)
}
