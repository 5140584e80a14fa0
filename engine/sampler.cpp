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

int32_t sample_token(std::span<const float> logits, const SamplingParams& p, uint64_t seed,
                     uint64_t counter) {
  const int32_t n = static_cast<int32_t>(logits.size());
  PA_CHECK(n > 0, "sample_token: empty logits");
  if (p.temperature == 0.0f) {
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const float top = *std::max_element(logits.begin(), logits.end());
  const float inv_t = 1.0f / p.temperature;
  // Gumbel-max over the kept ids: exact sampling from their renormalized softmax, with no running sums.
  auto draw = [&](auto&& ids, int32_t count) {
    int32_t best = -1;
    float best_score = 0;
    for (int32_t j = 0; j < count; ++j) {
      const int32_t i = ids(j);
      const float score = (logits[i] - top) * inv_t - std::log(-std::log(sample_uniform(seed, counter, i)));
      if (best < 0 || score > best_score || (score == best_score && i < best)) best = i, best_score = score;
    }
    return best;
  };
  const int32_t k = p.top_k > 0 ? std::min(p.top_k, n) : n;
  if (k == n && p.top_p >= 1.0f) return draw([](int32_t j) { return j; }, n);
  // The kept set needs the candidates' order (decreasing logit, ties by id). A vocabulary has 32k-256k
  // entries and the kept set usually a handful, so nothing sorts the whole vocabulary: candidates are
  // gathered by a weight threshold that falls until they decide the set (the tokens left out all weigh less
  // than every candidate, so the candidates sorted are a prefix of the full order).
  std::vector<float> w(static_cast<size_t>(n));
  double total = 0;
  for (int32_t i = 0; i < n; ++i) total += (w[i] = std::exp((logits[i] - top) * inv_t));
  auto better = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  std::vector<int32_t> ids;
  auto kept = [&](int32_t count) {
    return draw([&](int32_t j) { return ids[static_cast<size_t>(j)]; }, count);
  };
  for (float threshold = 1e-3f;; threshold = threshold > 1e-30f ? threshold * 1e-6f : 0.0f) {
    ids.clear();
    for (int32_t i = 0; i < n; ++i) {
      if (w[i] >= threshold) ids.push_back(i);
    }
    const bool all = threshold == 0.0f;  // every token is a candidate: this round decides
    if (static_cast<int32_t>(ids.size()) < k && !all && k < n) continue;  // the top-k set is not known yet
    if (static_cast<int32_t>(ids.size()) > k) {
      std::nth_element(ids.begin(), ids.begin() + k, ids.end(), better);
      ids.resize(static_cast<size_t>(k));
    }
    std::sort(ids.begin(), ids.end(), better);
    const bool complete = static_cast<int32_t>(ids.size()) == k;  // the candidates are the whole top-k set
    if (p.top_p >= 1.0f) {
      if (complete) return kept(k);
      continue;
    }
    // The nucleus: the shortest prefix whose share of the top-k mass reaches top_p.
    double mass = total;
    if (complete) {
      mass = 0;
      for (int32_t id : ids) mass += w[id];
    }
    double acc = 0;
    for (size_t i = 0; i < ids.size(); ++i) {
      acc += w[ids[i]];
      if (acc >= p.top_p * mass) return kept(static_cast<int32_t>(i + 1));
    }
    if (complete) return kept(static_cast<int32_t>(ids.size()));  // rounding: the whole top-k set
  }
}

}  // namespace pagedattn::engine
