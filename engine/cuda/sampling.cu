#include "engine/cuda/sampling.cuh"
#include "engine/sampler.h"
#include "pagedattn/error.h"

namespace pagedattn::engine::cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

// Logits ordered as unsigned keys: a > b as floats <=> key(a) > key(b) (no NaNs).
__device__ __forceinline__ uint32_t order_key(float f) {
  const uint32_t b = __float_as_uint(f);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Block-wide reductions in a fixed order (warp butterflies, then warps 0..31 in turn): the same bits every
// run, so a bisection never takes another branch on a replay.
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T total = scratch[0];
  for (int w = 1; w < kWarps; ++w) total = op(total, scratch[w]);
  __syncthreads();
  return total;
}

struct Best {
  float score;
  int32_t id;  // -1: none
};

__device__ __forceinline__ Best better_of(Best a, Best b) {
  if (b.id < 0) return a;
  if (a.id < 0) return b;
  return (b.score > a.score || (b.score == a.score && b.id < a.id)) ? b : a;
}

__device__ Best block_best(Best v, Best* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    const Best other{__shfl_xor_sync(0xffffffffu, v.score, o), __shfl_xor_sync(0xffffffffu, v.id, o)};
    v = better_of(v, other);
  }
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  Best total = scratch[0];
  for (int w = 1; w < kWarps; ++w) total = better_of(total, scratch[w]);
  __syncthreads();
  return total;
}

struct Scratch {
  int32_t counts[kWarps];
  double sums[kWarps];
  float floats[kWarps];
  Best best[kWarps];
};

__global__ void __launch_bounds__(kThreads)
    sample_kernel(const float* logits, int64_t vocab, const DeviceSampleRow* rows, int32_t* tokens) {
  __shared__ Scratch s;
  const DeviceSampleRow r = rows[blockIdx.x];
  const float* l = logits + static_cast<int64_t>(blockIdx.x) * vocab;
  const int32_t n = static_cast<int32_t>(vocab);
  auto add_i = [](int32_t a, int32_t b) { return a + b; };
  auto add_d = [](double a, double b) { return a + b; };
  if (r.temperature < 0.0f) {
    if (threadIdx.x == 0) tokens[blockIdx.x] = -1;
    return;
  }
  if (r.temperature == 0.0f) {  // greedy: the argmax, the lowest id among ties
    Best best{0.0f, -1};
    for (int32_t i = threadIdx.x; i < n; i += kThreads) best = better_of(best, Best{l[i], i});
    best = block_best(best, s.best);
    if (threadIdx.x == 0) tokens[blockIdx.x] = best.id;
    return;
  }
  float top = -INFINITY;
  for (int32_t i = threadIdx.x; i < n; i += kThreads) top = fmaxf(top, l[i]);
  top = block_reduce(
      top, [](float a, float b) { return fmaxf(a, b); }, s.floats);
  const float inv_t = 1.0f / r.temperature;

  // Top-k: kept_k(i) = key_i > tk or (key_i == tk and i < bk). tk is the largest key t with
  // #{key >= t} >= k; among the ties at tk, the lowest ids fill the set to exactly k.
  uint32_t tk = 0;
  int32_t bk = n;
  const int32_t k = r.top_k > 0 && r.top_k < n ? r.top_k : n;
  auto count_where = [&](auto&& pred) {
    int32_t c = 0;
    for (int32_t i = threadIdx.x; i < n; i += kThreads) c += pred(order_key(l[i]), i) ? 1 : 0;
    return block_reduce(c, add_i, s.counts);
  };
  if (k < n) {
    uint64_t lo = 0, hi = uint64_t{1} << 32;  // #{key >= lo} >= k, #{key >= hi} < k
    while (hi - lo > 1) {
      const uint64_t mid = (lo + hi) / 2;
      if (count_where([&](uint32_t key, int32_t) { return key >= mid; }) >= k) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    tk = static_cast<uint32_t>(lo);
    const int32_t need = k - count_where([&](uint32_t key, int32_t) { return key > tk; });
    if (count_where([&](uint32_t key, int32_t) { return key == tk; }) > need) {
      int32_t blo = 0, bhi = n;  // the smallest b with #{key == tk, id < b} >= need
      while (blo < bhi) {
        const int32_t mid = (blo + bhi) / 2;
        if (count_where([&](uint32_t key, int32_t i) { return key == tk && i < mid; }) >= need) {
          bhi = mid;
        } else {
          blo = mid + 1;
        }
      }
      bk = blo;
    }
  }
  auto kept_k = [&](uint32_t key, int32_t i) { return key > tk || (key == tk && i < bk); };

  // Top-p: the same cut by mass. tp is the largest key t whose kept mass at or above it reaches
  // top_p x the top-k mass; the ties at tp join in id order until it does (sample_token's sorted prefix).
  uint32_t tp = 0;
  int32_t bp = n;
  if (r.top_p < 1.0f) {
    auto mass_where = [&](auto&& pred) {
      double m = 0;
      for (int32_t i = threadIdx.x; i < n; i += kThreads) {
        const float x = l[i];
        const uint32_t key = order_key(x);
        if (kept_k(key, i) && pred(key, i)) m += expf((x - top) * inv_t);
      }
      return block_reduce(m, add_d, s.sums);
    };
    const double target = static_cast<double>(r.top_p) * mass_where([](uint32_t, int32_t) { return true; });
    uint64_t lo = 0, hi = uint64_t{1} << 32;
    while (hi - lo > 1) {
      const uint64_t mid = (lo + hi) / 2;
      if (mass_where([&](uint32_t key, int32_t) { return key >= mid; }) >= target) {
        lo = mid;
      } else {
        hi = mid;
      }
    }
    tp = static_cast<uint32_t>(lo);
    const double above = mass_where([&](uint32_t key, int32_t) { return key > tp; });
    int32_t blo = 0, bhi = n;  // the smallest b with above + mass{key == tp, id < b} >= target
    while (blo < bhi) {
      const int32_t mid = (blo + bhi) / 2;
      if (above + mass_where([&](uint32_t key, int32_t i) { return key == tp && i < mid; }) >= target) {
        bhi = mid;
      } else {
        blo = mid + 1;
      }
    }
    bp = blo;
  }

  // Gumbel-max over the kept ids.
  Best best{0.0f, -1};
  for (int32_t i = threadIdx.x; i < n; i += kThreads) {
    const float x = l[i];
    const uint32_t key = order_key(x);
    if (!kept_k(key, i) || !(key > tp || (key == tp && i < bp))) continue;
    const float u = sample_uniform(r.seed, r.counter, static_cast<uint32_t>(i));
    best = better_of(best, Best{(x - top) * inv_t - logf(-logf(u)), i});
  }
  best = block_best(best, s.best);
  if (threadIdx.x == 0) tokens[blockIdx.x] = best.id;
}

}  // namespace

void sample_rows(const float* logits, int64_t vocab, const DeviceSampleRow* rows, int32_t count,
                 int32_t* tokens, cudaStream_t stream) {
  PA_CHECK(vocab > 0 && vocab < (int64_t{1} << 31), "sample_rows: vocab ", vocab, " is out of range");
  if (count <= 0) return;
  sample_kernel<<<count, kThreads, 0, stream>>>(logits, vocab, rows, tokens);
  const cudaError_t e = cudaGetLastError();
  PA_CHECK(e == cudaSuccess, "sample_rows launch failed: ", cudaGetErrorString(e));
}

}  // namespace pagedattn::engine::cuda
