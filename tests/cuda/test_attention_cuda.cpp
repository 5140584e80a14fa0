// The CUDA backend against the dense fp64 reference over the CPU grid, plus what only the GPU path has:
// segment-count invariance, graph replay, large-pool addressing, device-side bad input (write_kv:
// test_write_kv_cuda.cpp; workspaces: test_workspace_cuda.cpp; TurboQuant: test_turboquant_cuda.cpp).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>
#include <numeric>
#include <optional>
#include <set>
#include <sstream>
#include <utility>

#include "cuda/cuda_test_util.h"
#include "pagedattn/info.h"
#include "pagedattn/kv_format.h"
#include "pagedattn/plan.h"
#include "pagedattn/workspace.h"
#include "problem.h"
#include "runner.h"
#include "test_util.h"

namespace pagedattn {
namespace {

using namespace test;

const std::vector<testing::GridCase>& gpu_grid() {
  static const std::vector<testing::GridCase> cases = [] {
    // The cases the CUDA backend runs as built (a quick build compiles one dtype and head dim); the runner
    // says which. Without a GPU (CI) the list is still built, from the build's own lists, so test names
    // agree.
    std::vector<testing::GridCase> all = testing::attention_grid(false, test::run_seed()), gpu;
    for (auto& c : all) {
      const bool readable = c.spec.cache_dtype == c.spec.dtype || kv_format(c.spec.cache_dtype).quantized() ||
                            c.spec.tq.has_value();
      if (c.spec.dtype == DType::kFloat32 || !readable) continue;
      if (testing::cuda_not_compiled(c.spec).empty()) gpu.push_back(c);
    }
    return gpu;
  }();
  return cases;
}

class CudaGrid : public ::testing::TestWithParam<size_t> {};

TEST_P(CudaGrid, MatchesDenseReference) {
  REQUIRE_GPU();
  const auto& c = gpu_grid()[GetParam()];
  SCOPED_TRACE(c.group + ": " + c.spec.describe());
  testing::HostProblem p = testing::make_problem(c.spec);
  testing::make_cuda_runner()->run_attention(p);
  const auto cmp = testing::compare(p, testing::dense_reference(p), kTolerance, min_tolerance(c.spec));
  EXPECT_TRUE(cmp.ok) << cmp.summary();
}

INSTANTIATE_TEST_SUITE_P(Grid, CudaGrid, ::testing::Range<size_t>(0, gpu_grid().size()));

// Results do not depend on the number of split-KV segments beyond rounding; every count matches the
// reference.
struct SegmentCase {
  int head_dim, q_heads, kv_heads, block_size;
  testing::BatchKind kind;
  int seqs, max_len;
  DType cache_dtype = DType::kBFloat16;
  std::optional<tq::Preset> tq = std::nullopt;  // a TurboQuant cache (cache_dtype unused)
};

class CudaSegments : public ::testing::TestWithParam<SegmentCase> {};

TEST_P(CudaSegments, SegmentCountInvariance) {
  REQUIRE_GPU();
  const SegmentCase sc = GetParam();
  std::mt19937_64 rng(test::run_seed());
  testing::ProblemSpec s;
  s.head_dim = sc.head_dim;
  s.num_q_heads = sc.q_heads;
  s.num_kv_heads = sc.kv_heads;
  s.block_size = sc.block_size;
  s.dtype = DType::kBFloat16;
  s.cache_dtype = sc.tq ? DType::kUInt8 : sc.cache_dtype;
  s.tq = sc.tq;
  s.head_scales = !sc.tq;
  s.sinks = s.lse = true;
  s.seed = rng();
  SKIP_UNLESS_COMPILED(s);
  testing::draw_batch(s, sc.kind, sc.seqs, sc.max_len, rng);
  SCOPED_TRACE(s.describe());
  auto runner = testing::make_cuda_runner();
  std::vector<uint8_t> first;
  for (int segments : {1, 2, 7, 32, 64}) {
    s.force_segments = segments;
    testing::HostProblem p = testing::make_problem(s);
    runner->run_attention(p);
    const auto cmp = testing::compare(p, testing::dense_reference(p), kTolerance, min_tolerance(s));
    EXPECT_TRUE(cmp.ok) << segments << " segments: " << cmp.summary();
    if (first.empty()) {
      first = p.out;
      continue;
    }
    // Against the 2D result: the normalized difference stays within the rounding-derived tolerance (each
    // segment rounds its probabilities relative to its own running max, so results differ only by rounding).
    double diff2 = 0, ref2 = 0;
    for (int64_t i = 0; i < static_cast<int64_t>(p.out.size() / 2); ++i) {
      const double a = load_as_float(first.data(), s.dtype, i), b = load_as_float(p.out.data(), s.dtype, i);
      if (std::isnan(a) && std::isnan(b)) continue;  // gaps of a strided output
      diff2 += (a - b) * (a - b);
      ref2 += a * a;
    }
    EXPECT_LE(std::sqrt(diff2 / ref2), cmp.tolerance) << segments << " segments differ from the 2D launch";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Cases, CudaSegments,
    ::testing::Values(
        SegmentCase{128, 32, 8, 16, testing::BatchKind::kDecode, 3, 5000},
        SegmentCase{80, 10, 2, 1, testing::BatchKind::kDecode, 2, 1500},
        SegmentCase{256, 8, 1, 256, testing::BatchKind::kMixed, 5, 700},
        SegmentCase{112, 6, 1, 3, testing::BatchKind::kChunked, 3, 700},
        SegmentCase{64, 16, 16, 32, testing::BatchKind::kPrefill, 2, 400},
        SegmentCase{128, 32, 8, 16, testing::BatchKind::kDecode, 3, 5000, DType::kFloat8E4M3},
        SegmentCase{80, 10, 2, 1, testing::BatchKind::kDecode, 2, 1500, DType::kInt8},
        SegmentCase{256, 8, 1, 256, testing::BatchKind::kMixed, 5, 700, DType::kFloat8E5M2},
        SegmentCase{112, 6, 1, 7, testing::BatchKind::kChunked, 3, 700, DType::kInt8},
        SegmentCase{128, 40, 8, 128, testing::BatchKind::kPrefill, 2, 600, DType::kFloat8E4M3},
        SegmentCase{128, 32, 8, 16, testing::BatchKind::kDecode, 3, 5000, {}, tq::Preset::kK4V4},
        SegmentCase{64, 10, 2, 1, testing::BatchKind::kDecode, 2, 1500, {}, tq::Preset::kK3V3},
        SegmentCase{256, 8, 1, 7, testing::BatchKind::kMixed, 5, 700, {}, tq::Preset::kK8V4},
        SegmentCase{128, 12, 2, 32, testing::BatchKind::kChunked, 3, 700, {}, tq::Preset::kK3V4}),
    [](const ::testing::TestParamInfo<SegmentCase>& param_info) {
      const SegmentCase& c = param_info.param;
      return std::string(c.tq ? tq::preset_info(*c.tq).name : dtype_name(c.cache_dtype)) + "_" +
             testing::batch_kind_name(c.kind) + "_hd" + std::to_string(c.head_dim) + "_hq" +
             std::to_string(c.q_heads) + "_hkv" + std::to_string(c.kv_heads) + "_bs" +
             std::to_string(c.block_size);
    });

// The tests run the kernel the device should run: on a compute capability 9.0 device long queries take the
// wgmma tile unless PAGEDATTN_WGMMA=0 (ctest runs the grid both ways).
TEST(CudaAttention, PrefillKernelFollowsDeviceAndSwitch) {
  REQUIRE_GPU();
  const DeviceInfo d = cuda_devices().at(0);
  const char* env = std::getenv("PAGEDATTN_WGMMA");
  const bool off = env != nullptr && std::strcmp(env, "0") == 0;
  const bool hopper = d.major == 9 && d.minor == 0;
  EXPECT_EQ(d.prefill_kernel, hopper && !off ? "wgmma" : "mma.sync")
      << d.name << ", PAGEDATTN_WGMMA=" << (env ? env : "unset");
}

// Short-query tiles load K/V with TMA on compute capability 9.x unless PAGEDATTN_USE_TMA=0 (ctest runs the
// grid both ways).
TEST(CudaAttention, DecodeKernelFollowsDeviceAndSwitch) {
  REQUIRE_GPU();
  const DeviceInfo d = cuda_devices().at(0);
  const char* env = std::getenv("PAGEDATTN_USE_TMA");
  const bool off = env != nullptr && std::strcmp(env, "0") == 0;
  EXPECT_EQ(d.decode_kernel, d.major == 9 && build_info().cuda_tma && !off ? "tma" : "cp.async")
      << d.name << ", PAGEDATTN_USE_TMA=" << (env ? env : "unset");
}

// The TMA decode path reads whole boxes (a page, or 64 tokens of a larger one) starting at multiples of 64
// keys, so it brings in pool rows no query may see: a page's slots past seq_len, and a sliding window's keys
// before its first. Every pool element a query may not see is NaN here (int8: codes -1 and NaN scales); none
// may reach the output. Page sizes 8..256 (one box per page, or several boxes per page), head dims of 1-4
// panels, bf16/fp16, fp8 e4m3 / e5m2 (per-tensor and per-head scales) and int8 pages, NHD and HND, GQA 5,
// windows, lengths ending mid-page and single tokens, 2D and split launches. On a device without TMA (or with
// PAGEDATTN_USE_TMA=0) the cp.async path must pass the same test.
TEST(CudaAttention, DecodeNeverReadsInvisibleKeys) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::run_seed());
  const int head_dims[] = {64, 128, 192, 256};
  const int block_sizes[] = {8, 16, 64, 128, 256, 32};
  const int windows[] = {0, 37, 100};
  int i = 0, ran = 0;
  for (int hd : head_dims) {
    for (int bs : block_sizes) {
      testing::ProblemSpec s;
      s.head_dim = hd;
      s.num_kv_heads = 2;
      s.num_q_heads = 10;  // GQA 5
      s.block_size = bs;
      s.dtype = s.cache_dtype = i % 2 ? DType::kBFloat16 : DType::kFloat16;
      // 1-byte codes stream through the same boxes (128 codes per panel row) and are converted per warp.
      const DType codes[] = {DType::kFloat8E4M3, DType::kFloat8E5M2, DType::kInt8};
      if ((i / 4) % 4 > 0) s.cache_dtype = codes[(i / 4) % 4 - 1];
      s.head_scales = i % 5 == 0;
      s.hnd_layout = (i / 2) % 2;
      s.window_left = windows[i % 3];
      s.lse = true;
      // The automatic split, 3 segments, and 20 (280 CTAs: more than one per SM, later segments empty).
      const int segment_choices[] = {0, 3, 20};
      s.force_segments = segment_choices[(i / 3) % 3];
      s.seed = rng();
      testing::draw_batch(s, testing::BatchKind::kDecode, 7, 700, rng);
      s.seq_lens[0] = 1;  // a single token
      s.query_lens[0] = 1;
      ++i;
      if (!compiled(s)) continue;
      ++ran;
      SCOPED_TRACE(s.describe());
      testing::HostProblem p = testing::make_problem(s);
      // Poison every pool row outside each sequence's visible keys [max(0, len - 1 - window), len).
      const int64_t hkv = s.num_kv_heads, d = hd, bsz = bs;
      std::vector<uint8_t> visible(static_cast<size_t>(p.num_blocks * bsz), 0);
      for (size_t q = 0; q < p.seq_lens.size(); ++q) {
        const int len = p.seq_lens[q];
        const int lo = s.window_left > 0 ? std::max(0, len - 1 - s.window_left) : 0;
        for (int pos = lo; pos < len; ++pos) {
          const int32_t block = p.block_tables[q * p.max_blocks_per_seq + pos / bs];
          visible[static_cast<size_t>(block * bsz + pos % bs)] = 1;
        }
      }
      for (int64_t block = 0; block < p.num_blocks; ++block) {
        for (int64_t slot = 0; slot < bsz; ++slot) {
          if (visible[static_cast<size_t>(block * bsz + slot)]) continue;
          for (int64_t h = 0; h < hkv; ++h) {
            const int64_t row =
                s.hnd_layout ? (block * hkv + h) * bsz + slot : (block * bsz + slot) * hkv + h;
            // All-ones bytes are NaN in bf16, fp16, fp8 e4m3 and e5m2.
            const int64_t row_bytes = d * dtype_size(s.cache_dtype);
            std::memset(p.k_pool.data() + row * row_bytes, 0xff, static_cast<size_t>(row_bytes));
            std::memset(p.v_pool.data() + row * row_bytes, 0xff, static_cast<size_t>(row_bytes));
            if (!p.k_meta.empty()) {  // int8: the row's scales (same row order as the pools)
              p.k_meta[static_cast<size_t>(row)] = std::numeric_limits<float>::quiet_NaN();
              p.v_meta[static_cast<size_t>(row)] = std::numeric_limits<float>::quiet_NaN();
            }
          }
        }
      }
      testing::make_cuda_runner()->run_attention(p);
      const auto cmp = testing::compare(p, testing::dense_reference(p), kTolerance);
      EXPECT_TRUE(cmp.ok) << cmp.summary();
    }
  }
  SKIP_IF_NONE_RAN(ran);
}

// More decode work items than resident CTAs: on Hopper the TMA decode kernel runs persistent CTAs that take
// items from a counter and stream the next item's tiles while finishing the current one. Ragged lengths,
// empty queries and empty sequences, windows, sinks and LSE, NHD and HND, 2D and split launches; a graph
// replay (whose memset node resets the counter) gives the eager call's bytes.
TEST(CudaAttention, DecodeWithMoreItemsThanResidentCtas) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::run_seed());
  struct Case {
    int head_dim, q_heads, kv_heads, block_size, seqs, window, segments;
    bool hnd;
  };
  const Case cases[] = {{128, 32, 8, 16, 331, 0, 0, false},
                        {64, 8, 1, 32, 1031, 100, 0, true},
                        {256, 16, 2, 64, 293, 0, 3, false},
                        {128, 24, 4, 8, 467, 37, 5, false}};
  int ran = 0;
  for (const Case& c : cases) {
    testing::ProblemSpec s;
    s.head_dim = c.head_dim;
    s.num_q_heads = c.q_heads;
    s.num_kv_heads = c.kv_heads;
    s.block_size = c.block_size;
    s.window_left = c.window;
    s.force_segments = c.segments;
    s.hnd_layout = c.hnd;
    s.sinks = s.lse = true;
    s.seed = rng();
    if (!compiled(s)) continue;
    ++ran;
    testing::draw_batch(s, testing::BatchKind::kDecode, c.seqs, 900, rng);
    for (int i = 5; i < c.seqs; i += 17) s.query_lens[i] = 0;  // a cached sequence with no new token
    for (int i = 11; i < c.seqs; i += 29) s.seq_lens[i] = s.query_lens[i] = 0;  // an empty sequence
    SCOPED_TRACE(s.describe());
    testing::HostProblem p = testing::make_problem(s);
    auto runner = testing::make_cuda_runner();
    runner->run_attention(p);
    const auto cmp = testing::compare(p, testing::dense_reference(p), kTolerance);
    EXPECT_TRUE(cmp.ok) << cmp.summary();
    if (&c == &cases[0]) {
      testing::HostProblem replay = testing::make_problem(s);
      runner->time_attention(replay, 1, 3);  // eager once, then graph replays; out holds the last replay
      EXPECT_EQ(p.out, replay.out);
    }
  }
  SKIP_IF_NONE_RAN(ran);
}

// The persistent decode at a size compute-sanitizer's racecheck finishes in seconds (scripts/gpu-check.sh
// SANITIZE=1): ~700 items of at most four KV tiles, a few per CTA, so every CTA reuses its Q buffer, plan
// mailbox and stages across items (the handovers racecheck is there to check).
TEST(CudaAttention, PersistentDecodeOfShortItems) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::run_seed());
  testing::ProblemSpec s;
  s.head_dim = 128;
  s.num_q_heads = 16;
  s.num_kv_heads = 4;
  s.block_size = 16;
  s.lse = true;
  s.seed = rng();
  SKIP_UNLESS_COMPILED(s);
  testing::draw_batch(s, testing::BatchKind::kDecode, 173, 200, rng);
  SCOPED_TRACE(s.describe());
  testing::HostProblem p = testing::make_problem(s);
  testing::make_cuda_runner()->run_attention(p);
  const auto cmp = testing::compare(p, testing::dense_reference(p), kTolerance);
  EXPECT_TRUE(cmp.ok) << cmp.summary();
}

// Batches of hundreds of sequences: every CTA finds its sequence by searching the tile starts
// (query_tile.cuh); mixed batches include empty queries and empty sequences, whose tiles the search must
// skip, and GQA 6 with block size 7 keeps tile starts and pages off powers of two.
TEST(CudaAttention, ManySequences) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::run_seed());
  for (auto [kind, seqs] :
       {std::pair{testing::BatchKind::kDecode, 1031}, std::pair{testing::BatchKind::kMixed, 601},
        std::pair{testing::BatchKind::kChunked, 263}}) {
    testing::ProblemSpec s;
    s.num_q_heads = 12;
    s.num_kv_heads = 2;  // GQA 6
    s.block_size = 7;
    s.seed = rng();
    SKIP_UNLESS_COMPILED(s);
    testing::draw_batch(s, kind, seqs, 200, rng);
    SCOPED_TRACE(s.describe());
    testing::HostProblem p = testing::make_problem(s);
    testing::make_cuda_runner()->run_attention(p);
    const auto cmp = testing::compare(p, testing::dense_reference(p), kTolerance);
    EXPECT_TRUE(cmp.ok) << cmp.summary();
  }
}

// Long contexts: 128k keys in one sequence (decode) through the automatic launch choice.
TEST(CudaAttention, LongContextDecode) {
  REQUIRE_GPU();
  testing::ProblemSpec s;
  s.head_dim = 128;
  s.num_q_heads = 8;
  s.num_kv_heads = 1;
  s.block_size = 16;
  s.seq_lens = {131072 + 77, 4099};
  s.query_lens = {1, 1};
  s.window_left = 0;
  s.seed = test::run_seed();
  s.lse = true;
  SKIP_UNLESS_COMPILED(s);
  testing::HostProblem p = testing::make_problem(s);
  testing::make_cuda_runner()->run_attention(p);
  const auto cmp = testing::compare(p, testing::dense_reference(p), kTolerance);
  EXPECT_TRUE(cmp.ok) << cmp.summary();
}

// Pools over 2^31 elements: the blocks a batch reads sit past element 2^31 of K and V.
TEST(CudaAttention, PoolLargerThan2Pow31Elements) {
  REQUIRE_GPU();
  int ran = 0;
  for (DType cache : {DType::kBFloat16, DType::kFloat8E4M3, DType::kInt8}) {
    size_t free_bytes = 0, total = 0;
    ASSERT_CUDA(cudaMemGetInfo(&free_bytes, &total));
    const int64_t bs = 16, h = 8, d = 128, block_elems = bs * h * d, es = dtype_size(cache);
    const int64_t big_blocks = (int64_t{1} << 31) / block_elems + 4096;  // > 2^31 elements (and bytes)
    const int64_t meta_elems = cache == DType::kInt8 ? big_blocks * bs * h : 0;
    if (static_cast<size_t>(2 * big_blocks * block_elems * es + 8 * meta_elems) > free_bytes * 9 / 10)
      continue;
    testing::ProblemSpec s;
    s.head_dim = d;
    s.num_q_heads = 32;
    s.num_kv_heads = h;
    s.block_size = bs;
    s.cache_dtype = cache;
    s.head_scales = true;
    s.seq_lens = {1000, 3000, 17};
    s.query_lens = {1, 40, 17};
    s.seed = test::run_seed();
    if (!compiled(s)) continue;
    ++ran;
    SCOPED_TRACE(s.describe());
    testing::HostProblem p = testing::make_problem(s);
    const int64_t offset = big_blocks - p.num_blocks;  // host block b lives at device block b + offset
    void *k = nullptr, *v = nullptr, *km = nullptr, *vm = nullptr, *ks = nullptr, *vs = nullptr;
    ASSERT_CUDA(cudaMalloc(&k, big_blocks * block_elems * es));
    ASSERT_CUDA(cudaMalloc(&v, big_blocks * block_elems * es));
    ASSERT_CUDA(cudaMemcpy(static_cast<char*>(k) + offset * block_elems * es, p.k_pool.data(),
                           p.k_pool.size(), cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemcpy(static_cast<char*>(v) + offset * block_elems * es, p.v_pool.data(),
                           p.v_pool.size(), cudaMemcpyHostToDevice));
    const auto dev = Device::cuda(0);
    PagedKVCache cache_view{TensorView::contiguous(k, cache, {big_blocks, bs, h, d}, dev),
                            TensorView::contiguous(v, cache, {big_blocks, bs, h, d}, dev)};
    if (meta_elems) {  // the metadata planes are as large, shifted by the same blocks
      ASSERT_CUDA(cudaMalloc(&km, meta_elems * 4));
      ASSERT_CUDA(cudaMalloc(&vm, meta_elems * 4));
      ASSERT_CUDA(cudaMemcpy(static_cast<float*>(km) + offset * bs * h, p.k_meta.data(), p.k_meta.size() * 4,
                             cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemcpy(static_cast<float*>(vm) + offset * bs * h, p.v_meta.data(), p.v_meta.size() * 4,
                             cudaMemcpyHostToDevice));
      cache_view.k_meta = TensorView::contiguous(km, DType::kFloat32, {big_blocks, bs, h}, dev);
      cache_view.v_meta = TensorView::contiguous(vm, DType::kFloat32, {big_blocks, bs, h}, dev);
    }
    if (!p.k_scale.empty()) {
      ASSERT_CUDA(cudaMalloc(&ks, p.k_scale.size() * 4));
      ASSERT_CUDA(cudaMalloc(&vs, p.v_scale.size() * 4));
      ASSERT_CUDA(cudaMemcpy(ks, p.k_scale.data(), p.k_scale.size() * 4, cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemcpy(vs, p.v_scale.data(), p.v_scale.size() * 4, cudaMemcpyHostToDevice));
      const int64_t n = static_cast<int64_t>(p.k_scale.size());
      cache_view.k_scale = TensorView::contiguous(ks, DType::kFloat32, {n}, dev);
      cache_view.v_scale = TensorView::contiguous(vs, DType::kFloat32, {n}, dev);
    }
    std::vector<int32_t> tables = p.block_tables;
    for (auto& t : tables) t = t >= 0 ? static_cast<int32_t>(t + offset) : t;
    void *q, *o, *bt, *sl, *qs, *ws;
    ASSERT_CUDA(cudaMalloc(&q, p.q.size()));
    ASSERT_CUDA(cudaMalloc(&o, p.out.size()));
    ASSERT_CUDA(cudaMalloc(&bt, tables.size() * 4));
    ASSERT_CUDA(cudaMalloc(&sl, p.seq_lens.size() * 4));
    ASSERT_CUDA(cudaMalloc(&qs, p.query_start_loc.size() * 4));
    ASSERT_CUDA(cudaMemcpy(q, p.q.data(), p.q.size(), cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemcpy(o, p.out.data(), p.out.size(), cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemcpy(bt, tables.data(), tables.size() * 4, cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemcpy(sl, p.seq_lens.data(), p.seq_lens.size() * 4, cudaMemcpyHostToDevice));
    ASSERT_CUDA(
        cudaMemcpy(qs, p.query_start_loc.data(), p.query_start_loc.size() * 4, cudaMemcpyHostToDevice));
    BatchDesc batch = p.batch();
    batch.block_tables.data = bt;
    batch.seq_lens.data = sl;
    batch.query_start_loc.data = qs;
    batch.block_tables.device = batch.seq_lens.device = batch.query_start_loc.device = dev;
    TensorView query = p.query(), out = p.output();
    query.data = q;
    out.data = o;
    query.device = out.device = dev;
    AttentionParams params = p.params();
    for (int segments : {1, 9}) {
      params.force_segments = segments;
      const size_t ws_bytes = attention_workspace_size(query, cache_view, batch, params);
      ASSERT_CUDA(cudaMalloc(&ws, std::max<size_t>(ws_bytes, 16)));
      attention(query, cache_view, batch, params, out, {ws, ws_bytes});
      ASSERT_CUDA(cudaDeviceSynchronize());
      ASSERT_CUDA(cudaMemcpy(p.out.data(), o, p.out.size(), cudaMemcpyDeviceToHost));
      const auto cmp = testing::compare(p, testing::dense_reference(p), kTolerance);
      EXPECT_TRUE(cmp.ok) << segments << " segments: " << cmp.summary();
      cudaFree(ws);
    }
    for (void* ptr : {k, v, km, vm, ks, vs, q, o, bt, sl, qs}) cudaFree(ptr);
  }
  SKIP_IF_NONE_RAN(ran);
}

// The bad-input errors of the CPU path, with the same messages, from device-resident batches.
TEST(CudaAttention, BadInputSameMessagesAsCpu) {
  REQUIRE_GPU();
  testing::ProblemSpec s;
  s.head_dim = 128;
  s.num_q_heads = 4;
  s.num_kv_heads = 2;
  s.seq_lens = {20, 33, 5};
  s.query_lens = {1, 10, 5};
  s.seed = 3;
  auto runner = testing::make_cuda_runner();
  auto expect_both = [&](const std::function<void(testing::HostProblem&)>& corrupt,
                         const std::string& fragment) {
    testing::HostProblem cpu = testing::make_problem(s), gpu = testing::make_problem(s);
    corrupt(cpu);
    corrupt(gpu);
    EXPECT_ERROR_CONTAINS(testing::make_cpu_runner()->run_attention(cpu), fragment);
    EXPECT_ERROR_CONTAINS(runner->run_attention(gpu), fragment);
  };
  expect_both([](auto& p) { p.block_tables[1 * p.max_blocks_per_seq + 2] = 999; },
              "block_tables[1][2] = 999 is outside the pool");
  expect_both([](auto& p) { p.seq_lens[0] = 16 * static_cast<int32_t>(p.max_blocks_per_seq) + 1; },
              "but block_tables has");
  expect_both([](auto& p) { p.seq_lens[1] = 9; }, "sequence 1 has query_len 10 > seq_len 9");
  expect_both([](auto& p) { p.query_start_loc = {0, 11, 1, 16}; }, "query_start_loc must be non-decreasing");
}

// A captured graph replays to the same bytes as the eager call: decode (split-KV partials and merge) and
// chunked prefill (on Hopper the persistent kernel, whose work counter a memset node resets every replay).
TEST(CudaAttention, GraphReplayEqualsEager) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::run_seed());
  int ran = 0;
  // Every format; TurboQuant presets at head dim 128.
  const std::pair<DType, std::optional<tq::Preset>> formats[] = {{DType::kBFloat16, {}},
                                                                 {DType::kFloat8E4M3, {}},
                                                                 {DType::kFloat8E5M2, {}},
                                                                 {DType::kInt8, {}},
                                                                 {DType::kUInt8, tq::Preset::kK4V4},
                                                                 {DType::kUInt8, tq::Preset::kK3V3},
                                                                 {DType::kUInt8, tq::Preset::kK8V4}};
  for (const auto& [cache, preset] : formats)
    for (auto kind : {testing::BatchKind::kDecode, testing::BatchKind::kChunked}) {
      testing::ProblemSpec s;
      s.head_dim = preset ? 128 : 96;
      s.num_q_heads = 12;
      s.num_kv_heads = 2;
      s.block_size = 16;
      s.cache_dtype = cache;
      s.tq = preset;
      s.seed = rng();
      if (!compiled(s)) continue;
      ++ran;
      testing::draw_batch(s, kind, 7, 3000, rng);
      SCOPED_TRACE(s.describe());
      testing::HostProblem eager = testing::make_problem(s), replay = testing::make_problem(s);
      auto runner = testing::make_cuda_runner();
      runner->run_attention(eager);
      runner->time_attention(replay, 1, 3);  // eager once, then graph replays; out holds the last replay
      EXPECT_EQ(eager.out, replay.out);
      EXPECT_TRUE(
          testing::compare(replay, testing::dense_reference(replay), kTolerance, min_tolerance(s)).ok);
    }
  SKIP_IF_NONE_RAN(ran);
}

// Plan once, run per layer: one plan over three layers' caches (distinct pools, so the TMA decode tile
// encodes each layer's tensor maps) gives each layer the bytes of the flat op on that layer. Decode (the TMA
// tile where compiled), a split decode and a chunked prefill (the persistent wgmma tile), bf16 and int8.
TEST(CudaAttention, OnePlanRunsEveryLayerLikeTheFlatOp) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::run_seed());
  auto runner = testing::make_cuda_runner();
  int ran = 0;
  for (DType cache : {DType::kBFloat16, DType::kFloat8E4M3, DType::kInt8})
    for (auto kind : {testing::BatchKind::kDecode, testing::BatchKind::kChunked}) {
      testing::ProblemSpec s;
      s.head_dim = 128;
      s.num_q_heads = 16;
      s.num_kv_heads = 4;
      s.block_size = 16;
      s.cache_dtype = cache;
      s.lse = true;
      if (!compiled(s)) continue;
      ++ran;
      // Decode long enough to split; chunks short enough that the fp64 reference stays quick.
      const bool decode = kind == testing::BatchKind::kDecode;
      testing::draw_batch(s, kind, decode ? 3 : 4, decode ? 5000 : 700, rng);
      SCOPED_TRACE(s.describe());
      std::vector<testing::HostProblem> layers, flat;
      for (int layer = 0; layer < 3; ++layer) {
        s.seed = rng();
        layers.push_back(testing::make_problem(s));
        // The flat op on the same inputs: layer 0's query and batch, this layer's cache.
        testing::HostProblem& p = layers.back();
        p.q = layers[0].q;
        p.block_tables = layers[0].block_tables;
        p.seq_lens = layers[0].seq_lens;
        p.query_start_loc = layers[0].query_start_loc;
        flat.push_back(p);
        runner->run_attention(flat.back());
      }
      std::vector<testing::HostProblem*> ptrs;
      for (auto& p : layers) ptrs.push_back(&p);
      testing::run_planned_layers(ptrs);
      for (int layer = 0; layer < 3; ++layer) {
        EXPECT_EQ(layers[layer].out, flat[layer].out) << "layer " << layer;
        EXPECT_EQ(layers[layer].lse, flat[layer].lse) << "layer " << layer;
      }
      // The flat op is itself checked by the grids; one layer against the reference is enough here.
      EXPECT_TRUE(testing::compare(layers[2], testing::dense_reference(layers[2]), kTolerance).ok);
    }
  SKIP_IF_NONE_RAN(ran);
}

// run_attention checks the tensors it is given, not only the planned ones: an `out` the plan never saw that
// breaks the kernels' vector-access rules is an error at run time, before any launch.
TEST(CudaAttention, RunChecksItsOwnOutput) {
  REQUIRE_GPU();
  testing::ProblemSpec s;
  s.head_dim = 128;
  s.num_q_heads = 4;
  s.num_kv_heads = 2;
  s.seq_lens = {40};
  s.query_lens = {1};
  s.seed = 6;
  SKIP_UNLESS_COMPILED(s);
  testing::HostProblem p = testing::make_problem(s);
  auto upload = [](const std::vector<uint8_t>& h) {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, h.size() + 64), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, h.data(), h.size(), cudaMemcpyHostToDevice), cudaSuccess);
    return d;
  };
  auto upload32 = [&](const std::vector<int32_t>& h) {
    return upload(std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(h.data()),
                                       reinterpret_cast<const uint8_t*>(h.data() + h.size())));
  };
  void *k = upload(p.k_pool), *v = upload(p.v_pool), *q = upload(p.q), *o = upload(p.out);
  void *bt = upload32(p.block_tables), *sl = upload32(p.seq_lens), *qs = upload32(p.query_start_loc);
  auto on = [](TensorView t, void* data) {
    t.data = data;
    t.device = Device::cuda(0);
    return t;
  };
  PagedKVCache cache = p.cache();
  cache.k = on(cache.k, k);
  cache.v = on(cache.v, v);
  BatchDesc batch = p.batch();
  batch.block_tables = on(batch.block_tables, bt);
  batch.seq_lens = on(batch.seq_lens, sl);
  batch.query_start_loc = on(batch.query_start_loc, qs);
  const TensorView query = on(p.query(), q);
  const AttentionPlan plan = plan_attention(query, cache, batch, p.params());
  TensorView out = on(p.output(), static_cast<unsigned char*>(o) + 2);  // 2 bytes off: not 8-byte aligned
  EXPECT_ERROR_CONTAINS(run_attention(plan, query, cache, batch, p.params(), out),
                        "out must be 8-byte aligned");
  for (void* ptr : {k, v, q, o, bt, sl, qs}) cudaFree(ptr);
}

}  // namespace
}  // namespace pagedattn
