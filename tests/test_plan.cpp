// Plan once, run per layer: a plan runs any cache of the planned geometry exactly like the flat op, and a run
// whose shape differs from the plan is an error naming the difference.
#include <gtest/gtest.h>

#include <cstring>

#include "pagedattn/plan.h"
#include "pagedattn/workspace.h"
#include "problem.h"
#include "test_util.h"

namespace pagedattn {
namespace {

testing::ProblemSpec spec_of(DType cache_dtype, uint64_t seed) {
  testing::ProblemSpec s;
  s.head_dim = 64;
  s.num_q_heads = 6;
  s.num_kv_heads = 2;
  s.block_size = 7;  // pages end mid-sequence
  s.cache_dtype = cache_dtype;
  s.seq_lens = {1, 23, 40};
  s.query_lens = {1, 9, 40};
  s.window_left = 0;
  s.softcap = 0.0f;
  s.sinks = true;
  s.lse = true;
  s.seed = seed;
  return s;
}

// Three "layers": the same batch over three caches of one geometry. Each planned run equals the flat op on
// that layer bit for bit (the CPU is deterministic), and the plan is made once.
TEST(Plan, OnePlanRunsEveryLayerLikeTheFlatOp) {
  for (DType format : {DType::kBFloat16, DType::kFloat8E4M3, DType::kInt8}) {
    SCOPED_TRACE(dtype_name(format));
    auto layer0 = testing::make_problem(spec_of(format, 100));
    const AttentionPlan plan =
        plan_attention(layer0.query(), layer0.cache(), layer0.batch(), layer0.params());
    EXPECT_EQ(plan.workspace_bytes(), 0u);
    EXPECT_TRUE(plan.device().is_cpu());
    EXPECT_NE(plan.describe().find("cpu"), std::string::npos);
    for (uint64_t seed : {100u, 101u, 102u}) {
      auto layer = testing::make_problem(spec_of(format, seed));
      layer.poison();
      run_attention(plan, layer0.query(), layer.cache(), layer0.batch(), layer0.params(), layer.output());
      const std::vector<uint8_t> planned = layer.out;
      const std::vector<float> planned_lse = layer.lse;
      layer.poison();
      attention(layer0.query(), layer.cache(), layer0.batch(), layer0.params(), layer.output());
      EXPECT_EQ(std::memcmp(planned.data(), layer.out.data(), planned.size()), 0) << "seed " << seed;
      EXPECT_EQ(std::memcmp(planned_lse.data(), layer.lse.data(), planned_lse.size() * 4), 0);
    }
  }
}

TEST(Plan, RunOfAnotherShapeNamesTheDifference) {
  auto p = testing::make_problem(spec_of(DType::kBFloat16, 7));
  const AttentionPlan plan = plan_attention(p.query(), p.cache(), p.batch(), p.params());

  auto other_block = testing::ProblemSpec(spec_of(DType::kBFloat16, 7));
  other_block.block_size = 8;
  auto q = testing::make_problem(other_block);
  EXPECT_ERROR_CONTAINS(run_attention(plan, q.query(), q.cache(), q.batch(), q.params(), q.output()),
                        "block_size is 8 but the plan was made for 7; plan again for this batch");

  auto other_tokens = spec_of(DType::kBFloat16, 7);
  other_tokens.query_lens = {1, 9, 39};
  auto r = testing::make_problem(other_tokens);
  EXPECT_ERROR_CONTAINS(run_attention(plan, r.query(), r.cache(), r.batch(), r.params(), r.output()),
                        "num_tokens (query rows) is 49 but the plan was made for 50");

  auto params = p.params();
  params.window_left = 16;
  EXPECT_ERROR_CONTAINS(run_attention(plan, p.query(), p.cache(), p.batch(), params, p.output()),
                        "window_left is 16 but the plan was made for 0");

  auto fp8 = testing::make_problem(spec_of(DType::kFloat8E4M3, 7));
  EXPECT_ERROR_CONTAINS(run_attention(plan, p.query(), fp8.cache(), p.batch(), p.params(), p.output()),
                        "the cache format is fp8_e4m3 but the plan was made for bf16");

  auto batch = p.batch();
  batch.max_seq_len = 64;
  EXPECT_ERROR_CONTAINS(run_attention(plan, p.query(), p.cache(), batch, p.params(), p.output()),
                        "the max_seq_len hint is 64 but the plan was made for");
}

// max_workspace_bytes shapes the plan's choice only: a run with another value (a model's per-layer params
// that leave it out) runs the plan as made.
TEST(Plan, WorkspaceCapIsAPlanOption) {
  auto p = testing::make_problem(spec_of(DType::kBFloat16, 9));
  AttentionParams capped = p.params();
  capped.max_workspace_bytes = 4096;
  const AttentionPlan plan = plan_attention(p.query(), p.cache(), p.batch(), capped);
  run_attention(plan, p.query(), p.cache(), p.batch(), p.params(), p.output());
  const std::vector<uint8_t> out = p.out;
  p.poison();
  attention(p.query(), p.cache(), p.batch(), p.params(), p.output());
  EXPECT_EQ(out, p.out);
}

TEST(Plan, EmptyPlanAndBadRunInputsAreErrors) {
  auto p = testing::make_problem(spec_of(DType::kBFloat16, 9));
  AttentionPlan empty;
  EXPECT_TRUE(empty.empty());
  EXPECT_ERROR_CONTAINS(run_attention(empty, p.query(), p.cache(), p.batch(), p.params(), p.output()),
                        "this AttentionPlan is empty: make one with plan_attention()");
  const AttentionPlan plan = plan_attention(p.query(), p.cache(), p.batch(), p.params());
  auto out = p.output();
  out.shape[1] = 5;  // run checks its tensors like the flat op
  EXPECT_ERROR_CONTAINS(run_attention(plan, p.query(), p.cache(), p.batch(), p.params(), out), "out");
}

// validate_batch is the once-per-step content check that run_attention never does.
TEST(Plan, ValidateBatchChecksContents) {
  auto p = testing::make_problem(spec_of(DType::kBFloat16, 13));
  validate_batch(p.query(), p.cache(), p.batch());
  p.block_tables[0] = static_cast<int32_t>(p.num_blocks);  // sequence 0's first page: outside the pool
  EXPECT_ERROR_CONTAINS(validate_batch(p.query(), p.cache(), p.batch()), "outside the pool");
}

// One workspace for all layers and steps: sized from the declared plans, locked, then every step's plan
// either fits or is a clear error (the CPU's plans need no bytes; declared byte needs stand in for GPU
// plans).
TEST(Plan, WorkspaceReservationChecksEveryStep) {
  auto p = testing::make_problem(spec_of(DType::kBFloat16, 3));
  const AttentionPlan plan = plan_attention(p.query(), p.cache(), p.batch(), p.params());
  WorkspaceReservation r;
  r.declare(plan);
  r.declare_bytes(1000);
  EXPECT_EQ(r.bytes(), 1024u);
  r.lock();
  r.declare_bytes(512);  // within the reservation: fine after the lock
  EXPECT_ERROR_CONTAINS(r.declare_bytes(5000),
                        "locked at 1024 bytes; a declaration of 5000 bytes after the lock");
  std::vector<unsigned char> memory(r.bytes());
  const Workspace w = r.for_plan(plan, {memory.data(), memory.size()});
  EXPECT_EQ(w.data, memory.data());
  run_attention(plan, p.query(), p.cache(), p.batch(), p.params(), p.output(), w);
  EXPECT_ERROR_CONTAINS(r.for_plan(plan, {memory.data(), 100}), "the workspace allocation has 100 bytes");
  WorkspaceReservation none;
  none.lock();
  EXPECT_EQ(none.for_plan(plan, {}).bytes, 0u);  // a CPU plan needs nothing
}

TEST(Plan, ContextsDescribeTheirDevice) {
  DeviceContext cpu(Device::cpu());
  EXPECT_TRUE(cpu.device().is_cpu());
  EXPECT_EQ(cpu.describe(), "cpu");
  EXPECT_EQ(&default_context(Device::cpu()), &default_context(Device::cpu()));
  auto p = testing::make_problem(spec_of(DType::kBFloat16, 5));
  const AttentionPlan plan = plan_attention(cpu, p.query(), p.cache(), p.batch(), p.params());
  EXPECT_TRUE(plan.device().is_cpu());
}

}  // namespace
}  // namespace pagedattn
