// Subcommands of the pagedattn CLI. Each returns the process exit code.
#pragma once

#include <string>
#include <vector>

namespace pagedattn::cli {

int run_info(const std::vector<std::string>& args);
int run_check(const std::vector<std::string>& args);
int run_bench(const std::vector<std::string>& args);

/// Value of "--name VALUE" in args, or fallback.
std::string flag_value(const std::vector<std::string>& args, const std::string& name,
                       const std::string& fallback);
bool has_flag(const std::vector<std::string>& args, const std::string& name);

}  // namespace pagedattn::cli
