// The one exception type of the library. Every message names the violated constraint.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>

namespace pagedattn {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
template <typename... Args>
[[noreturn]] void throw_error(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  throw Error(os.str());
}
}  // namespace detail

}  // namespace pagedattn

/// PA_CHECK(cond, "part", value, "part"...): throws pagedattn::Error with the concatenated message when cond
/// is false.
#define PA_CHECK(cond, ...)                                                    \
  do {                                                                         \
    if (!(cond)) ::pagedattn::detail::throw_error("pagedattn: ", __VA_ARGS__); \
  } while (0)
