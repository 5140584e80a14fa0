// The GPU sampler: sample_token's rule (engine/sampler.h) over a step's logits on the device, so a step
// copies back one token per sequence instead of [sequences, vocab] floats.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pagedattn::engine::cuda {

/// One row's draw. temperature < 0: the row does not sample (its token is -1); 0: greedy.
struct DeviceSampleRow {
  float temperature = -1.0f;
  float top_p = 1.0f;
  int32_t top_k = 0;  ///< 0 = all
  uint32_t unused = 0;
  uint64_t seed = 0;
  uint64_t counter = 0;
};

/// tokens[r] = the draw of row r over logits[r, :vocab] (fp32, rows vocab apart), for r < count: one CTA per
/// row. Greedy is an argmax; sampling restricts to the top-k set (by logit, ties by id) and the top-p nucleus
/// found by bisection over the logits' order keys (counts and fp64 sums, reduced in a fixed order: the same
/// draw every run), then takes the Gumbel-max over the kept ids with sample_uniform's numbers.
void sample_rows(const float* logits, int64_t vocab, const DeviceSampleRow* rows, int32_t count,
                 int32_t* tokens, cudaStream_t stream);

}  // namespace pagedattn::engine::cuda
