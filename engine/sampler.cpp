#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "pagedattn/error.h"

namespace pagedattn::engine {

void SamplingParams::validate() const {
  PA_CHECK(temperature >= 0.0f && std::isfinite(temperature), "temperature must be >= 0, got ", temperature);
  PA_CHECK(top_k >= 0, "top_k must be >= 0 (0 = off), got ", top_k);
  PA_CHECK(top_p > 0.0f && top_p <= 1.0f, "top_p must be in (0, 1], got ", top_p);
  PA_CHECK(max_tokens >= 1, "max_tokens must be >= 1, got ", max_tokens);
}

int32_t sample_token(std::span<const float> logits, const SamplingParams& p, std::mt19937_64& rng) {
  const int32_t n = static_cast<int32_t>(logits.size());
  PA_CHECK(n > 0, "sample_token: empty logits");
  if (p.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates by decreasing logit (ties by id), cut to top-k.
  std::vector<int32_t> ids(n);
  std::iota(ids.begin(), ids.end(), 0);
  const int32_t k = p.top_k > 0 ? std::min(p.top_k, n) : n;
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::partial_sort(ids.begin(), ids.begin() + k, ids.end(), better);
  ids.resize(k);
  // Softmax over the candidates (in double), then the top-p nucleus.
  std::vector<double> prob(k);
  const double top = logits[ids[0]];
  double sum = 0;
  for (int32_t i = 0; i < k; ++i) sum += (prob[i] = std::exp((logits[ids[i]] - top) / p.temperature));
  int32_t keep = k;
  if (p.top_p < 1.0f) {
    double acc = 0;
    for (int32_t i = 0; i < k; ++i) {
      acc += prob[i] / sum;
      if (acc >= p.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double kept = 0;
  for (int32_t i = 0; i < keep; ++i) kept += prob[i];
  const double u = std::uniform_real_distribution<double>(0.0, kept)(rng);
  double acc = 0;
  for (int32_t i = 0; i < keep; ++i) {
    acc += prob[i];
    if (u < acc) return ids[i];
  }
  return ids[keep - 1];
}

}  // namespace pagedattn::engine
