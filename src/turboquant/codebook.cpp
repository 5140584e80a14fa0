// Lloyd–Max codebooks (shared/TURBOQUANT.md, "Codebook"): the optimal scalar quantizer of one coordinate of a
// uniformly random unit vector, whose density is symmetric, so the solver works on the positive half.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "pagedattn/error.h"
#include "pagedattn/turboquant.h"

namespace pagedattn::tq {
namespace {

// Cumulative integrals of a density on [0, a] over a fine grid (trapezoid), evaluated anywhere in [0, a] by
// linear interpolation: P(x) = ∫_0^x f, M(x) = ∫_0^x t f(t) dt, S(x) = ∫_0^x t² f(t) dt.
class HalfDensity {
 public:
  template <typename F>
  HalfDensity(F density, double a, int intervals) : a_(a), h_(a / intervals) {
    p_.assign(intervals + 1, 0.0);
    m_.assign(intervals + 1, 0.0);
    s_.assign(intervals + 1, 0.0);
    double f0 = density(0.0);
    for (int i = 1; i <= intervals; ++i) {
      const double x0 = (i - 1) * h_, x1 = i * h_;
      const double f1 = density(x1);
      p_[i] = p_[i - 1] + 0.5 * h_ * (f0 + f1);
      m_[i] = m_[i - 1] + 0.5 * h_ * (x0 * f0 + x1 * f1);
      s_[i] = s_[i - 1] + 0.5 * h_ * (x0 * x0 * f0 + x1 * x1 * f1);
      f0 = f1;
    }
    // Normalize the half to probability 1/2.
    const double z = 0.5 / p_.back();
    for (size_t i = 0; i < p_.size(); ++i) {
      p_[i] *= z;
      m_[i] *= z;
      s_[i] *= z;
    }
  }
  double a() const { return a_; }
  double p(double x) const { return at(p_, x); }
  double m(double x) const { return at(m_, x); }
  double s(double x) const { return at(s_, x); }

 private:
  double at(const std::vector<double>& v, double x) const {
    if (x <= 0) return 0.0;
    if (x >= a_) return v.back();
    const double u = x / h_;
    const size_t i = static_cast<size_t>(u);
    const double t = u - static_cast<double>(i);
    return i + 1 < v.size() ? v[i] + t * (v[i + 1] - v[i]) : v.back();
  }
  double a_, h_;
  std::vector<double> p_, m_, s_;
};

// Lloyd's iteration on the positive half: K = 2^(bits-1) cells [0, m_1), ..., [m_{K-1}, a]; the negative half
// mirrors it and the middle midpoint is 0. Starts from the cells of equal probability.
Codebook solve(const HalfDensity& d, int bits, int head_dim) {
  const int levels = 1 << bits, half = levels / 2;
  std::vector<double> edge(half + 1);  // edge[0] = 0, edge[half] = a
  edge[0] = 0.0;
  edge[half] = d.a();
  for (int k = 1; k < half; ++k) {  // equal-probability start by bisection on P
    const double target = 0.5 * k / half;
    double lo = 0.0, hi = d.a();
    for (int it = 0; it < 200; ++it) {
      const double mid = 0.5 * (lo + hi);
      (d.p(mid) < target ? lo : hi) = mid;
    }
    edge[k] = 0.5 * (lo + hi);
  }
  std::vector<double> c(half);
  for (int it = 0; it < 200000; ++it) {
    double change = 0.0;
    for (int k = 0; k < half; ++k) {
      const double mass = d.p(edge[k + 1]) - d.p(edge[k]);
      const double next = mass > 0 ? (d.m(edge[k + 1]) - d.m(edge[k])) / mass : 0.5 * (edge[k] + edge[k + 1]);
      change = std::max(change, std::fabs(next - c[k]));
      c[k] = next;
    }
    for (int k = 1; k < half; ++k) edge[k] = 0.5 * (c[k - 1] + c[k]);
    if (change < 1e-15) break;
  }
  Codebook cb;
  cb.head_dim = head_dim;
  cb.bits = bits;
  cb.centroids.resize(levels);
  for (int k = 0; k < half; ++k) {
    cb.centroids[half + k] = static_cast<float>(c[k]);
    cb.centroids[half - 1 - k] = -static_cast<float>(c[k]);  // exact mirror
  }
  cb.midpoints.resize(levels - 1);
  for (int i = 0; i + 1 < levels; ++i) {
    cb.midpoints[i] = i + 1 == half ? 0.0f : 0.5f * (cb.centroids[i] + cb.centroids[i + 1]);
  }
  // E (x - c(x))² over both halves, for the centroids as stored (fp32).
  double mse = 0.0;
  for (int k = 0; k < half; ++k) {
    const double lo = k == 0 ? 0.0 : static_cast<double>(cb.midpoints[half + k - 1]);
    const double hi = k + 1 == half ? d.a() : static_cast<double>(cb.midpoints[half + k]);
    const double ck = cb.centroids[half + k];
    mse += (d.s(hi) - d.s(lo)) - 2 * ck * (d.m(hi) - d.m(lo)) + ck * ck * (d.p(hi) - d.p(lo));
  }
  cb.distortion = 2.0 * mse * (head_dim > 0 ? head_dim : 1);
  return cb;
}

constexpr int kIntervals = 1 << 20;

}  // namespace

const Codebook& codebook(int head_dim, int bits) {
  PA_CHECK(bits >= 1 && bits <= 4, "TurboQuant key codebooks have 1..4 bits, got ", bits);
  PA_CHECK(head_dim >= 4, "TurboQuant codebooks need head_dim >= 4, got ", head_dim);
  static std::mutex mutex;
  static std::map<std::pair<int, int>, Codebook> made;
  std::lock_guard<std::mutex> lock(mutex);
  const auto key = std::make_pair(head_dim, bits);
  auto it = made.find(key);
  if (it == made.end()) {
    // One coordinate of a uniform unit vector in R^D: density ∝ (1 - x²)^((D - 3) / 2) on [-1, 1].
    const double alpha = 0.5 * (head_dim - 3);
    const HalfDensity d([alpha](double x) { return std::pow(std::max(0.0, 1.0 - x * x), alpha); }, 1.0,
                        kIntervals);
    it = made.emplace(key, solve(d, bits, head_dim)).first;
  }
  return it->second;
}

Codebook gaussian_codebook(int bits) {
  PA_CHECK(bits >= 1 && bits <= 4, "codebooks have 1..4 bits, got ", bits);
  const HalfDensity d([](double x) { return std::exp(-0.5 * x * x); }, 12.0, kIntervals);
  Codebook cb = solve(d, bits, 1);
  return cb;
}

int bucket(const Codebook& cb, float y) {
  if (std::isnan(y)) return 0;
  // Midpoints are sorted: the count of those <= y.
  return static_cast<int>(std::upper_bound(cb.midpoints.begin(), cb.midpoints.end(), y) -
                          cb.midpoints.begin());
}

}  // namespace pagedattn::tq
