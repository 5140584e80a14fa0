// `pagedattn check`: the attention grid through each backend against the dense double-precision reference.
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>

#include "commands.h"
#include "pagedattn/error.h"
#include "runner.h"

namespace pagedattn::cli {

int run_check(const std::vector<std::string>& args) {
  const std::string backend = flag_value(args, "--backend", "all");
  const bool quick = has_flag(args, "--quick");
  const uint64_t seed = std::stoull(flag_value(args, "--seed", std::to_string(std::random_device{}())));
  std::vector<std::string> backends;
  if (backend == "all") {
    backends = testing::available_backends();
  } else {
    backends = {backend};
  }
  std::printf("check: %s grid, seed %llu\n", quick ? "quick" : "full", static_cast<unsigned long long>(seed));
  const auto grid = testing::attention_grid(quick, seed);
  int passed = 0, failed = 0;
  for (const auto& name : backends) {
    auto runner = testing::make_runner(name);
    // Group results in grid order: one line per group.
    std::vector<std::string> order;
    std::map<std::string, std::pair<int, int>> groups;
    int unsupported = 0;
    for (const auto& c : grid) {
      // The CUDA backend reads fp16/bf16 caches of the query dtype; fp32 and fp8 caches are CPU-only for now.
      if (name != "cpu" && (c.spec.dtype == DType::kFloat32 || c.spec.cache_dtype != c.spec.dtype)) {
        ++unsupported;
        continue;
      }
      if (!groups.count(c.group)) order.push_back(c.group);
      auto& [ok, bad] = groups[c.group];
      testing::HostProblem p = testing::make_problem(c.spec);
      std::string why;
      try {
        runner->run_attention(p);
        const auto cmp = testing::compare(p, testing::dense_reference(p), name == "cpu" ? 2.0 : 3.0);
        if (cmp.ok) {
          ++ok;
          continue;
        }
        why = cmp.summary();
      } catch (const Error& e) {
        why = e.what();
      }
      ++bad;
      std::printf("  FAIL %s %s: %s\n", name.c_str(), c.spec.describe().c_str(), why.c_str());
    }
    if (unsupported) {
      std::printf("%-5s %d cases not run: fp32 and fp8_e4m3 caches are CPU-only in this version\n",
                  name.c_str(), unsupported);
    }
    for (const auto& g : order) {
      const auto [ok, bad] = groups[g];
      std::printf("%-5s %-24s %3d passed %3d failed\n", name.c_str(), g.c_str(), ok, bad);
      passed += ok;
      failed += bad;
    }
  }
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace pagedattn::cli
