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
  bench_cmd
      ->add_option("--kv-dtype", bench.kv_dtype,
                   "K/V cache format (queries are bf16); tq_*: TurboQuant (CPU)")
      ->check(
          CLI::IsMember({"bf16", "fp8_e4m3", "fp8_e5m2", "int8", "tq_k8v4", "tq_k4v4", "tq_k3v4", "tq_k3v3"}))
      ->capture_default_str();
  bench_cmd->add_option("--reps", bench.reps, "timed repetitions (default: 50 on a GPU, 3 on the CPU)")
      ->check(CLI::Range(1, 100000));
  bench_cmd->add_option("--warmup", bench.warmup, "untimed runs first")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();

  CLI::App* help = app.add_subcommand("help", "this help, or a command's: pagedattn help <command>");
  std::string help_topic;
  help->add_option("command", help_topic, "command to describe")
      ->check(CLI::IsMember({"info", "check", "bench", "help"}));

  if (argc == 1) {
    std::fputs("pagedattn: a command is required: info, check, bench or help (see 'pagedattn --help')\n",
               stderr);
    return kUsageError;
  }
  const std::string first = argv[1];
  const bool known = first == "info" || first == "check" || first == "bench" || first == "help";
  if (!known && !first.starts_with('-')) {
    std::fprintf(stderr, "pagedattn: unknown command '%s'; expected info, check, bench or help\n",
                 first.c_str());
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
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  return kUsageError;  // unreachable: require_subcommand(1)
}
