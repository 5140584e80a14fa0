// What the GPU test files share: whether a device is present, a checked CUDA call, the tolerances against the
// dense reference, whether a configuration is compiled, and a GPU plan for a host problem.
#pragma once

#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include "pagedattn/plan.h"
#include "problem.h"
#include "runner.h"

namespace pagedattn::test {

inline bool have_gpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// bf16/fp16 GPU kernels round P to the input dtype before the PV product and round O once more at the end:
// about twice the error of rounding the exact result once. 3x leaves margin without hiding wrong masks or
// indexing.
inline constexpr double kTolerance = 3.0;
// TurboQuant caches: the kernel's tensor-core operands are fp16 (the rotated query, the centroids, p x s),
// whatever the output dtype; the bound against the fp64 reference over the same codes.
inline constexpr double kTurboQuantTolerance = 2e-3;
inline double min_tolerance(const testing::ProblemSpec& s) {
  return s.tq ? kTurboQuantTolerance : 0.0;
}

// A quick build compiles one dtype and head dim: a test of another configuration skips, saying why, instead
// of failing on the backend's "not compiled" error. Loops over configurations skip the cases this build lacks
// (compiled) and the test skips when none was left.
inline bool compiled(const testing::ProblemSpec& s) {
  return testing::cuda_not_compiled(s).empty();
}
#define SKIP_UNLESS_COMPILED(spec) \
  if (!::pagedattn::test::compiled(spec)) GTEST_SKIP() << testing::cuda_not_compiled(spec)
#define SKIP_IF_NONE_RAN(ran) \
  if ((ran) == 0) GTEST_SKIP() << "no configuration of this test is compiled in this build"

// A GPU plan for a host problem. Plans read metadata only, so the host views do once they name a CUDA device.
inline AttentionPlan plan_on_gpu(testing::HostProblem& p, const AttentionParams& params) {
  auto on_gpu = [](TensorView t) {
    t.device = Device::cuda(0);
    return t;
  };
  PagedKVCache cache = p.cache();
  for (TensorView* t : {&cache.k, &cache.v, &cache.k_meta, &cache.v_meta, &cache.k_scale, &cache.v_scale}) {
    if (t->data != nullptr) *t = on_gpu(*t);
  }
  BatchDesc batch = p.batch();
  batch.block_tables = on_gpu(batch.block_tables);
  batch.seq_lens = on_gpu(batch.seq_lens);
  batch.query_start_loc = on_gpu(batch.query_start_loc);
  return plan_attention(on_gpu(p.query()), cache, batch, params);
}

}  // namespace pagedattn::test

#define ASSERT_CUDA(call) ASSERT_EQ((call), cudaSuccess) << #call
#define REQUIRE_GPU() \
  if (!::pagedattn::test::have_gpu()) GTEST_SKIP() << "no CUDA device"
