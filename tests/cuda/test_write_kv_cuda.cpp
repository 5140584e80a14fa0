// write_kv on the GPU: the write_kv grid against the reference, and the CPU writer's bytes for the same
// input.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <vector>

#include "cuda/cuda_test_util.h"
#include "pagedattn/attention.h"
#include "pagedattn/dtype.h"
#include "runner.h"
#include "test_util.h"
#include "write_kv_problem.h"

namespace pagedattn {
namespace {

// write_kv on the GPU over the write_kv grid (the cases its formats cover): every written element as the
// reference rounds it, the first and last slot of the pool and of a block always among them, nothing else
// touched.
TEST(CudaWriteKV, GridMatchesReference) {
  REQUIRE_GPU();
  auto runner = testing::make_cuda_runner();
  int ran = 0;
  for (const testing::WriteKVSpec& spec : testing::write_kv_grid(false, test::run_seed())) {
    if (!runner->unsupported(spec).empty()) continue;
    SCOPED_TRACE(spec.describe());
    testing::HostWriteKV p = testing::make_write_kv_problem(spec);
    runner->run_write_kv(p);
    EXPECT_EQ(testing::check_write_kv(p), "");
    ++ran;
  }
  EXPECT_GE(ran, 5);
}

// write_kv on the GPU writes what the CPU writes, skips -1, and refuses slots outside the pool.
TEST(CudaWriteKV, MatchesCpuAndRefusesBadSlots) {
  REQUIRE_GPU();
  std::mt19937_64 rng(test::run_seed());
  const int64_t tokens = 53, h = 3, d = 112, bs = 5, blocks = 20;
  for (bool hnd : {false, true}) {
    std::vector<uint16_t> key(tokens * h * d), value(key.size());
    for (auto& x : key) x = float_to_bf16_bits(std::uniform_real_distribution<float>(-2, 2)(rng));
    for (auto& x : value) x = float_to_bf16_bits(std::uniform_real_distribution<float>(-2, 2)(rng));
    std::vector<int64_t> slots(blocks * bs);
    std::iota(slots.begin(), slots.end(), 0);
    std::shuffle(slots.begin(), slots.end(), rng);
    slots.resize(tokens);
    slots[3] = slots[17] = -1;
    std::vector<uint16_t> k_cpu(blocks * bs * h * d, 0x7fc1), v_cpu(k_cpu);
    auto view = [&](void* ptr, Device dev) {
      return hnd ? TensorView::strided(ptr, DType::kBFloat16, {blocks, bs, h, d}, {h * bs * d, d, bs * d, 1},
                                       dev)
                 : TensorView::contiguous(ptr, DType::kBFloat16, {blocks, bs, h, d}, dev);
    };
    write_kv(TensorView::contiguous(key.data(), DType::kBFloat16, {tokens, h, d}),
             TensorView::contiguous(value.data(), DType::kBFloat16, {tokens, h, d}),
             TensorView::contiguous(slots.data(), DType::kInt64, {tokens}),
             {view(k_cpu.data(), Device::cpu()), view(v_cpu.data(), Device::cpu())});
    void *dk, *dv, *dkey, *dval, *dslots;
    const size_t pool_bytes = k_cpu.size() * 2;
    ASSERT_CUDA(cudaMalloc(&dk, pool_bytes));
    ASSERT_CUDA(cudaMalloc(&dv, pool_bytes));
    ASSERT_CUDA(cudaMemset(dk, 0xff, pool_bytes));
    ASSERT_CUDA(cudaMemset(dv, 0xff, pool_bytes));
    ASSERT_CUDA(cudaMalloc(&dkey, key.size() * 2));
    ASSERT_CUDA(cudaMalloc(&dval, value.size() * 2));
    ASSERT_CUDA(cudaMalloc(&dslots, slots.size() * 8));
    ASSERT_CUDA(cudaMemcpy(dkey, key.data(), key.size() * 2, cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemcpy(dval, value.data(), value.size() * 2, cudaMemcpyHostToDevice));
    ASSERT_CUDA(cudaMemcpy(dslots, slots.data(), slots.size() * 8, cudaMemcpyHostToDevice));
    const auto dev = Device::cuda(0);
    const PagedKVCache cache{view(dk, dev), view(dv, dev)};
    const auto kview = TensorView::contiguous(dkey, DType::kBFloat16, {tokens, h, d}, dev);
    const auto vview = TensorView::contiguous(dval, DType::kBFloat16, {tokens, h, d}, dev);
    write_kv(kview, vview, TensorView::contiguous(dslots, DType::kInt64, {tokens}, dev), cache);
    std::vector<uint16_t> k_gpu(k_cpu.size()), v_gpu(v_cpu.size());
    ASSERT_CUDA(cudaMemcpy(k_gpu.data(), dk, pool_bytes, cudaMemcpyDeviceToHost));
    ASSERT_CUDA(cudaMemcpy(v_gpu.data(), dv, pool_bytes, cudaMemcpyDeviceToHost));
    // Slots nobody wrote: CPU pattern 0x7fc1, GPU pattern 0xffff. Written ones agree bit for bit.
    for (size_t i = 0; i < k_cpu.size(); ++i) {
      if (k_cpu[i] == 0x7fc1) {
        ASSERT_EQ(k_gpu[i], 0xffff) << i;
        ASSERT_EQ(v_gpu[i], 0xffff) << i;
      } else {
        ASSERT_EQ(k_gpu[i], k_cpu[i]) << i;
        ASSERT_EQ(v_gpu[i], v_cpu[i]) << i;
      }
    }
    slots[5] = blocks * bs;
    ASSERT_CUDA(cudaMemcpy(dslots, slots.data(), slots.size() * 8, cudaMemcpyHostToDevice));
    std::ostringstream want;
    want << "slot_mapping[5] = " << blocks * bs << " is outside the pool of " << blocks * bs << " slots";
    EXPECT_ERROR_CONTAINS(
        write_kv(kview, vview, TensorView::contiguous(dslots, DType::kInt64, {tokens}, dev), cache),
        want.str());
    for (void* ptr : {dk, dv, dkey, dval, dslots}) cudaFree(ptr);
  }
}

}  // namespace
}  // namespace pagedattn
