// TurboQuant caches on the GPU (shared/TURBOQUANT.md): write_kv stores exactly the bytes the CPU writer
// stores (src/cuda/turboquant/write_kv_turboquant.cu), and attention with the step's raw K/V follows the
// prefill rule.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "pagedattn/attention.h"
#include "pagedattn/dtype.h"
#include "pagedattn/turboquant.h"
#include "problem.h"
#include "runner.h"
#include "test_util.h"

namespace pagedattn {
namespace {

using namespace test;

// One preset's four planes on the host, poisoned with 0xA5 so that a row written by neither side compares
// equal and a row written by one side only does not.
struct TqPlanes {
  tq::TokenBytes tb;
  int64_t rows;
  std::vector<uint8_t> k, v;
  std::vector<uint16_t> norms, meta;
  TqPlanes(tq::Preset p, int64_t rows_, int d) : tb(tq::token_bytes(p, d)), rows(rows_) {
    k.assign(static_cast<size_t>(rows * tb.key_codes), 0xA5);
    v.assign(static_cast<size_t>(rows * tb.value_codes), 0xA5);
    norms.assign(static_cast<size_t>(rows), 0xA5A5);
    meta.assign(static_cast<size_t>(rows * 2), 0xA5A5);
  }
};

// Key and value rows: Gaussian of a row-dependent scale (1e-3 .. 1e3), and in some rows the edges the writer
// must treat as the CPU does: NaN, +-inf, values past fp16's range, zeros of both signs, an all-zero row.
std::vector<float> draw_rows(int64_t rows, int d, std::mt19937_64& rng) {
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(rows * d));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = std::pow(10.0f, static_cast<float>(static_cast<int>(r % 7) - 3));
    float* row = x.data() + r * d;
    for (int i = 0; i < d; ++i) row[i] = g(rng) * scale;
    switch (r % 11) {
      case 1:
        row[d / 3] = std::numeric_limits<float>::quiet_NaN();
        break;
      case 2:
        row[0] = std::numeric_limits<float>::infinity();
        break;
      case 3:
        row[d - 1] = -std::numeric_limits<float>::infinity();
        break;
      case 4:
        row[5] = 1e6f;
        row[6] = -7e4f;
        break;
      case 5:
        for (int i = 0; i < d; ++i) row[i] = i % 2 ? 0.0f : -0.0f;
        break;
      case 6:
        row[1] = 0.0f;
        row[2] = -0.0f;
        break;
      default:
        break;
    }
  }
  return x;
}

// Source rows in the key dtype (bf16, fp16 or fp32), as stored bytes.
std::vector<uint8_t> encode(const std::vector<float>& x, DType t) {
  std::vector<uint8_t> out(x.size() * dtype_size(t));
  for (size_t i = 0; i < x.size(); ++i) store_from_float(out.data(), t, static_cast<int64_t>(i), x[i]);
  return out;
}

TEST(CudaTurboQuant, WriteKvStoresTheCpuBytes) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::run_seed());
  const int64_t blocks = 9, bs = 7, hkv = 3;
  const int64_t pool_rows = blocks * bs * hkv;
  int i = 0;
  for (tq::Preset preset : tq::kAllPresets) {
    for (int d : kSupportedHeadDims) {
      const DType src_types[] = {DType::kBFloat16, DType::kFloat16, DType::kFloat32};
      const DType src = src_types[i++ % 3];
      SCOPED_TRACE(::testing::Message()
                   << tq::preset_info(preset).name << " D " << d << " keys " << dtype_name(src));
      const int64_t tokens = 41;
      const std::vector<uint8_t> key = encode(draw_rows(tokens * hkv, d, rng), src);
      const std::vector<uint8_t> value = encode(draw_rows(tokens * hkv, d, rng), src);
      std::vector<int64_t> slots(blocks * bs);
      std::iota(slots.begin(), slots.end(), 0);
      std::shuffle(slots.begin(), slots.end(), rng);
      slots.resize(tokens);
      slots[7] = -1;
      const bool fp8_keys = tq::preset_info(preset).key_bits == 8;
      auto cache_on = [&](TqPlanes& p, void* k, void* n, void* v, void* m, Device dev) {
        TensorView norms;
        if (!fp8_keys) norms = TensorView::contiguous(n, DType::kFloat16, {blocks, bs, hkv}, dev);
        return PagedKVCache::turboquant(
            preset, d, TensorView::contiguous(k, DType::kUInt8, {blocks, bs, hkv, p.tb.key_codes}, dev),
            norms, TensorView::contiguous(v, DType::kUInt8, {blocks, bs, hkv, p.tb.value_codes}, dev),
            TensorView::contiguous(m, DType::kFloat16, {blocks, bs, hkv, 2}, dev));
      };
      TqPlanes cpu(preset, pool_rows, d), gpu(preset, pool_rows, d);
      write_kv(TensorView::contiguous(const_cast<uint8_t*>(key.data()), src, {tokens, hkv, d}),
               TensorView::contiguous(const_cast<uint8_t*>(value.data()), src, {tokens, hkv, d}),
               TensorView::contiguous(slots.data(), DType::kInt64, {tokens}),
               cache_on(cpu, cpu.k.data(), cpu.norms.data(), cpu.v.data(), cpu.meta.data(), Device::cpu()));

      void *dk, *dn, *dv, *dm, *dkey, *dval, *dslots;
      ASSERT_CUDA(cudaMalloc(&dk, gpu.k.size()));
      ASSERT_CUDA(cudaMalloc(&dn, gpu.norms.size() * 2));
      ASSERT_CUDA(cudaMalloc(&dv, gpu.v.size()));
      ASSERT_CUDA(cudaMalloc(&dm, gpu.meta.size() * 2));
      ASSERT_CUDA(cudaMalloc(&dkey, key.size()));
      ASSERT_CUDA(cudaMalloc(&dval, value.size()));
      ASSERT_CUDA(cudaMalloc(&dslots, slots.size() * 8));
      ASSERT_CUDA(cudaMemcpy(dk, gpu.k.data(), gpu.k.size(), cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemcpy(dn, gpu.norms.data(), gpu.norms.size() * 2, cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemcpy(dv, gpu.v.data(), gpu.v.size(), cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemcpy(dm, gpu.meta.data(), gpu.meta.size() * 2, cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemcpy(dkey, key.data(), key.size(), cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemcpy(dval, value.data(), value.size(), cudaMemcpyHostToDevice));
      ASSERT_CUDA(cudaMemcpy(dslots, slots.data(), slots.size() * 8, cudaMemcpyHostToDevice));
      const Device dev = Device::cuda(0);
      write_kv(TensorView::contiguous(dkey, src, {tokens, hkv, d}, dev),
               TensorView::contiguous(dval, src, {tokens, hkv, d}, dev),
               TensorView::contiguous(dslots, DType::kInt64, {tokens}, dev),
               cache_on(gpu, dk, dn, dv, dm, dev));
      ASSERT_CUDA(cudaDeviceSynchronize());
      ASSERT_CUDA(cudaMemcpy(gpu.k.data(), dk, gpu.k.size(), cudaMemcpyDeviceToHost));
      ASSERT_CUDA(cudaMemcpy(gpu.norms.data(), dn, gpu.norms.size() * 2, cudaMemcpyDeviceToHost));
      ASSERT_CUDA(cudaMemcpy(gpu.v.data(), dv, gpu.v.size(), cudaMemcpyDeviceToHost));
      ASSERT_CUDA(cudaMemcpy(gpu.meta.data(), dm, gpu.meta.size() * 2, cudaMemcpyDeviceToHost));
      for (void* p : {dk, dn, dv, dm, dkey, dval, dslots}) cudaFree(p);
      // Every byte, row by row, so that a failure names the first row that differs.
      int reported = 0;
      for (int64_t r = 0; r < pool_rows && reported < 3; ++r) {
        const bool k_same =
            std::equal(cpu.k.begin() + r * cpu.tb.key_codes, cpu.k.begin() + (r + 1) * cpu.tb.key_codes,
                       gpu.k.begin() + r * cpu.tb.key_codes);
        const bool v_same =
            std::equal(cpu.v.begin() + r * cpu.tb.value_codes, cpu.v.begin() + (r + 1) * cpu.tb.value_codes,
                       gpu.v.begin() + r * cpu.tb.value_codes);
        const bool meta_same = cpu.norms[r] == gpu.norms[r] && cpu.meta[2 * r] == gpu.meta[2 * r] &&
                               cpu.meta[2 * r + 1] == gpu.meta[2 * r + 1];
        if (!(k_same && v_same && meta_same)) {
          ADD_FAILURE() << "pool row " << r << " (block " << r / (bs * hkv) << ", slot " << (r / hkv) % bs
                        << ", head " << r % hkv << "): key codes " << (k_same ? "equal" : "differ")
                        << ", value codes " << (v_same ? "equal" : "differ") << ", norm " << cpu.norms[r]
                        << " / " << gpu.norms[r] << ", value scale " << cpu.meta[2 * r] << " / "
                        << gpu.meta[2 * r] << ", minimum " << cpu.meta[2 * r + 1] << " / "
                        << gpu.meta[2 * r + 1];
          ++reported;
        }
      }
    }
  }
}

// The step's raw K/V (AttentionParams::new_key) over TurboQuant caches: the spec's prefill rule (a fresh
// prompt attends to its raw K/V, a continuation chunk to its codes and its own raw tokens, a decode token to
// the codes and itself) against the dense fp64 reference that reads the same, for every preset at head dims
// 64/80/128/256 (80: 3-bit runs that start mid-byte), fresh, chunked, mixed and decode batches, GQA 1/5/6,
// pages 1/7/16, window, sinks, soft-cap and forced split counts (mixed tiles inside segments). The unified
// path (bf16/fp16/fp8/int8 caches) refuses it with a clear error.
TEST(CudaTurboQuant, NewKvMatchesTheDenseReference) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::run_seed());
  const testing::BatchKind kinds[] = {testing::BatchKind::kPrefill, testing::BatchKind::kChunked,
                                      testing::BatchKind::kMixed, testing::BatchKind::kDecode};
  const int head_dims[] = {64, 80, 128, 256}, ratios[] = {1, 5, 6}, block_sizes[] = {1, 7, 16};
  int ran = 0, n = 0;
  for (tq::Preset preset : tq::kAllPresets) {
    for (testing::BatchKind kind : kinds) {
      testing::ProblemSpec s;
      s.tq = preset;
      s.cache_dtype = DType::kUInt8;
      s.dtype = n % 2 ? DType::kFloat16 : DType::kBFloat16;
      s.head_dim = head_dims[n % 4];
      s.num_kv_heads = 2;
      s.num_q_heads = 2 * ratios[(n / 2) % 3];
      s.block_size = block_sizes[(n / 3) % 3];
      s.window_left = n % 5 == 1 ? 40 : 0;
      s.sinks = n % 4 == 2;
      s.softcap = n % 6 == 3 ? 30.0f : 0.0f;
      s.force_segments = n % 3 == 1 ? 8 : 0;
      s.lse = true;
      s.new_kv = true;
      s.seed = rng();
      testing::draw_batch(s, kind, 3 + n % 4, 300, rng);
      ++n;
      if (!compiled(s)) continue;
      ++ran;
      SCOPED_TRACE(s.describe());
      testing::HostProblem p = testing::make_problem(s);
      testing::make_cuda_runner()->run_attention(p);
      const auto cmp = testing::compare(p, testing::dense_reference(p), kTolerance, min_tolerance(s));
      EXPECT_TRUE(cmp.ok) << cmp.summary();
    }
  }
  testing::ProblemSpec bf16;
  bf16.num_q_heads = 4;
  bf16.num_kv_heads = 2;
  bf16.seq_lens = {20, 9};
  bf16.query_lens = {20, 1};
  bf16.new_kv = true;
  bf16.seed = test::run_seed();
  if (compiled(bf16)) {
    testing::HostProblem p = testing::make_problem(bf16);
    EXPECT_ERROR_CONTAINS(testing::make_cuda_runner()->run_attention(p),
                          "is implemented by the CUDA backend for TurboQuant caches only");
  }
  SKIP_IF_NONE_RAN(ran);
}

}  // namespace
}  // namespace pagedattn
