#include "core/log.h"

#include <cstdio>
#include <mutex>
#include <set>

namespace pagedattn::core {

void log_once(const std::string& message) {
  static std::mutex mutex;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mutex);
  if (!seen.insert(message).second) return;
  std::fprintf(stderr, "pagedattn: %s\n", message.c_str());
}

}  // namespace pagedattn::core
