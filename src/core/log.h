// One line on stderr the first time something noteworthy happens (a fallback and its reason, a forced
// setting); repeats of the same message stay silent.
#pragma once

#include <string>

namespace pagedattn::core {

void log_once(const std::string& message);

}  // namespace pagedattn::core
