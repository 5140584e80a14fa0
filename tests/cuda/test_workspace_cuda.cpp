// Scratch memory on the GPU: a workspace reservation refuses an undeclared larger step, and a workspace cap
// (AttentionParams::max_workspace_bytes) takes fewer split-KV segments, never other results.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <optional>

#include "cuda/cuda_test_util.h"
#include "pagedattn/plan.h"
#include "pagedattn/turboquant.h"
#include "pagedattn/workspace.h"
#include "problem.h"
#include "runner.h"
#include "test_util.h"

namespace pagedattn {
namespace {

using namespace test;

// The workspace reservation on the GPU: a split decode needs partials; reserved for a 2D step and locked, the
// split step is refused with both sizes named, and reserved for it, it runs.
TEST(CudaAttention, WorkspaceReservationRefusesAnUndeclaredLargerStep) {
  REQUIRE_GPU();
  testing::ProblemSpec s;
  s.head_dim = 128;
  s.num_q_heads = 8;
  s.num_kv_heads = 2;
  s.seq_lens = {3000, 20};
  s.query_lens = {1, 1};
  s.seed = 4;
  SKIP_UNLESS_COMPILED(s);
  testing::HostProblem p = testing::make_problem(s);
  AttentionParams two_d = p.params(), split = p.params();
  two_d.force_segments = 1;
  split.force_segments = 8;
  const AttentionPlan small = plan_on_gpu(p, two_d);
  const AttentionPlan big = plan_on_gpu(p, split);
  ASSERT_GT(big.workspace_bytes(), small.workspace_bytes());
  WorkspaceReservation r;
  r.declare(small);
  r.lock();
  EXPECT_ERROR_CONTAINS(r.for_plan(big, {nullptr, r.bytes()}), "bytes of workspace but");
  WorkspaceReservation ok;
  ok.declare(small);
  ok.declare(big);
  EXPECT_GE(ok.bytes(), big.workspace_bytes());
}

// A workspace cap (AttentionParams::max_workspace_bytes) takes fewer segments, never other results: a long
// decode under a third of its free choice's workspace, the bf16 path and TurboQuant, both still within the
// tolerance of the reference; a cap below the unsplit need is a clear error.
TEST(CudaAttention, WorkspaceCapTakesFewerSegments) {
  REQUIRE_GPU();
  int ran = 0;
  for (const std::optional<tq::Preset> preset :
       {std::optional<tq::Preset>{}, std::optional{tq::Preset::kK4V4}}) {
    testing::ProblemSpec s;
    s.tq = preset;
    s.head_dim = 128;
    s.num_q_heads = 8;
    s.num_kv_heads = 2;
    s.seq_lens = {20000, 77};
    s.query_lens = {1, 1};
    s.seed = test::run_seed();
    if (!compiled(s)) continue;
    ++ran;
    testing::HostProblem p = testing::make_problem(s);
    AttentionParams params = p.params();
    const AttentionPlan free = plan_on_gpu(p, params);
    params.max_workspace_bytes = s.max_workspace_bytes = free.workspace_bytes() / 3;
    const AttentionPlan plan = plan_on_gpu(p, params);
    EXPECT_LE(plan.workspace_bytes(), s.max_workspace_bytes) << plan.describe();
    EXPECT_NE(plan.describe(), free.describe());
    testing::HostProblem capped = testing::make_problem(s);
    testing::make_cuda_runner()->run_attention(capped);
    const auto cmp = testing::compare(capped, testing::dense_reference(capped), kTolerance, min_tolerance(s));
    EXPECT_TRUE(cmp.ok) << cmp.summary();
    if (s.tq) {  // its rotated queries need room whatever the split
      params.max_workspace_bytes = 1;
      EXPECT_ERROR_CONTAINS(plan_on_gpu(p, params), "max_workspace_bytes 1 is below the");
    }
  }
  SKIP_IF_NONE_RAN(ran);
}

}  // namespace
}  // namespace pagedattn
