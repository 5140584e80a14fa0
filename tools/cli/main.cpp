#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "commands.h"

namespace pagedattn::cli {

std::string flag_value(const std::vector<std::string>& args, const std::string& name,
                       const std::string& fallback) {
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == name) return args[i + 1];
  }
  return fallback;
}

bool has_flag(const std::vector<std::string>& args, const std::string& name) {
  for (const auto& a : args) {
    if (a == name) return true;
  }
  return false;
}

}  // namespace pagedattn::cli

namespace {

void usage() {
  std::puts(
      "usage: pagedattn <command> [options]\n"
      "  info                                   version, build configuration, devices\n"
      "  check [--backend cpu|cuda|all] [--quick] [--seed N]\n"
      "                                         random problems on each backend against the dense reference\n"
      "  bench [--backend cpu|cuda] [--op decode|prefill|mixed] [--workload LABEL] [--json FILE] [--reps N]\n"
      "                                         attention timings: time, tokens/s, bytes/s");
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    usage();
    return args.empty() ? 2 : 0;
  }
  const std::string cmd = args[0];
  args.erase(args.begin());
  try {
    if (cmd == "info") return pagedattn::cli::run_info(args);
    if (cmd == "check") return pagedattn::cli::run_check(args);
    if (cmd == "bench") return pagedattn::cli::run_bench(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  std::fprintf(stderr, "unknown command '%s'\n", cmd.c_str());
  usage();
  return 2;
}
