// `pagedattn check`: the attention grid and the write_kv grid through each backend against the dense fp64
// reference (testing/). Exits 1 on any failure.
#include <cstdio>
#include <map>
#include <random>
#include <string>

#include "commands.h"
#include "pagedattn/error.h"
#include "runner.h"

namespace pagedattn::cli {
namespace {

// Pass/fail counts per group, in the order the groups first appear; cases a backend does not run, by reason.
struct Tally {
  std::vector<std::string> order;
  std::map<std::string, std::pair<int, int>> groups;
  std::map<std::string, int> skipped;

  void record(const std::string& group, bool ok) {
    if (!groups.count(group)) order.push_back(group);
    auto& [pass, fail] = groups[group];
    ++(ok ? pass : fail);
  }
};

// Runs one case; prints a FAIL line with the case's description (seed included) when it fails.
template <typename Run>
bool run_case(const std::string& backend, const std::string& description, Run run) {
  std::string why;
  try {
    why = run();
  } catch (const Error& e) {
    why = e.what();
  }
  if (why.empty()) return true;
  std::printf("  FAIL %s %s: %s\n", backend.c_str(), description.c_str(), why.c_str());
  return false;
}

}  // namespace

int run_check(const CheckOptions& options) {
  const std::vector<std::string> backends =
      options.backend == "all" ? testing::available_backends() : std::vector<std::string>{options.backend};
  const uint64_t seed =
      options.seed.value_or((uint64_t{std::random_device{}()} << 32) ^ std::random_device{}());
  std::printf("check: %s grid, seed %llu (--seed %llu replays it)\n", options.quick ? "quick" : "full",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(seed));
  const auto grid = testing::attention_grid(options.quick, seed);
  const auto write_grid = testing::write_kv_grid(options.quick, seed);
  int passed = 0, failed = 0;
  for (const auto& name : backends) {
    auto runner = testing::make_runner(name);
    Tally tally;
    for (const auto& c : grid) {
      if (const std::string why = runner->unsupported(c.spec); !why.empty()) {
        ++tally.skipped["attention: " + why];
        continue;
      }
      tally.record(c.group, run_case(name, c.spec.describe(), [&] {
                     testing::HostProblem p = testing::make_problem(c.spec);
                     runner->run_attention(p);
                     const auto cmp =
                         testing::compare(p, testing::dense_reference(p), name == "cpu" ? 2.0 : 3.0);
                     return cmp.ok ? std::string() : cmp.summary();
                   }));
    }
    for (const auto& spec : write_grid) {
      if (const std::string why = runner->unsupported(spec); !why.empty()) {
        ++tally.skipped["write_kv: " + why];
        continue;
      }
      tally.record("write_kv", run_case(name, spec.describe(), [&] {
                     testing::HostWriteKV p = testing::make_write_kv_problem(spec);
                     runner->run_write_kv(p);
                     return testing::check_write_kv(p);
                   }));
    }
    for (const auto& [why, count] : tally.skipped) {
      std::printf("%-5s %d cases not run: %s\n", name.c_str(), count, why.c_str());
    }
    for (const auto& g : tally.order) {
      const auto [ok, bad] = tally.groups[g];
      std::printf("%-5s %-24s %3d passed %3d failed\n", name.c_str(), g.c_str(), ok, bad);
      passed += ok;
      failed += bad;
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 && passed > 0 ? 0 : 1;
}

}  // namespace pagedattn::cli
