// The CPU backend: every op for every supported configuration, fp32 accumulation. It defines the semantics.
#pragma once

#include "core/validate.h"

namespace pagedattn::cpu {

void attention(const core::AttentionProblem& p);
void write_kv(const core::WriteKVProblem& p);

}  // namespace pagedattn::cpu
