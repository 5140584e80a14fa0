// Warpgroup-level tensor-core primitives of sm_90a: wgmma.mma_async with shared-memory descriptors, its
// fences, and the 128-byte swizzled shared-memory layout the descriptors describe.
//
// Layout ("panel" = 64 columns of 16-bit elements = one 128-byte row per matrix row): a tile of R rows x C
// columns is stored as C / 64 panels of R x 128 bytes, each panel 1024-byte aligned; inside a panel, row r's
// 16-byte chunk c sits at chunk position c ^ (r % 8). This is the canonical "128B swizzle" atom (8 rows x
// 128 bytes) repeated down the rows, which wgmma reads without bank conflicts:
//   - as a K-major operand (rows = M or N, columns = K): stride between 8-row groups (SBO) = 1024 bytes, and
//   a
//     k16 step inside a panel advances the start address by 32 bytes;
//   - as an MN-major B operand (rows = K, columns = N), for N = 64 (one panel): SBO = 1024 bytes between
//     8-row groups of K.
// The instruction lists every accumulator register as an operand; the wrappers below spell them out once.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace pagedattn::cuda::sm90 {

constexpr int kPanelCols = 64;  // 16-bit elements per 128-byte swizzled row

/// Byte offset of element (row, col) in a tile of `rows` rows stored in 128-byte swizzled panels.
__device__ __forceinline__ uint32_t swizzled_offset(int rows, int row, int col) {
  const int panel = col / kPanelCols, chunk = (col % kPanelCols) / 8;
  return static_cast<uint32_t>(panel * rows * 128 + row * 128 + ((chunk ^ (row & 7)) << 4) + (col % 8) * 2);
}

/// Shared-memory matrix descriptor: start address, leading/stride byte offsets, 128-byte swizzle.
__device__ __forceinline__ uint64_t make_desc(uint32_t smem_byte_addr, uint32_t stride_bytes) {
  uint64_t desc = 0;
  desc |= static_cast<uint64_t>((smem_byte_addr & 0x3FFFF) >> 4);
  desc |= static_cast<uint64_t>(1) << 16;  // leading byte offset: unused by these layouts
  desc |= static_cast<uint64_t>((stride_bytes & 0x3FFFF) >> 4) << 32;
  desc |= static_cast<uint64_t>(1) << 62;  // 128-byte swizzle
  return desc;
}

/// Orders this thread's earlier generic-proxy shared-memory writes (cp.async, st.shared) before later
/// async-proxy reads (wgmma operands).
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
/// Must precede the first wgmma of a batch whose accumulator or A registers were written by other code.
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
/// Keeps the compiler from moving accesses of accumulator registers across a wgmma fence/wait.
template <int N>
__device__ __forceinline__ void pin_registers(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
template <int N>
__device__ __forceinline__ void pin_registers(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    asm volatile("" : "+r"(r[i][0]), "+r"(r[i][1]), "+r"(r[i][2]), "+r"(r[i][3])::"memory");
}

/// D(64 x N, fp32) (+)= A(64 x 16, smem, K-major) * B(16 x N, smem, K-major).
template <typename T, int N>
struct WgmmaSS;
/// D(64 x N, fp32) += A(64 x 16, registers) * B(16 x N, smem, MN-major).
template <typename T, int N>
struct WgmmaRS;

// The accumulator operand lists, written once; the two 16-bit input types differ only in the PTX type name.
#define PA_WGMMA_D32                                                                                      \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define PA_WGMMA_D64                                                                                      \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, " \
  "%22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, "  \
  "%42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, "  \
  "%62, %63}"
#define PA_WGMMA_OUT32                                                                                      \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),           \
      "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
      "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]),            \
      "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),            \
      "+f"(d[30]), "+f"(d[31])
#define PA_WGMMA_OUT64                                                                                      \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),           \
      "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), \
      "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]),            \
      "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]),            \
      "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]),            \
      "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]),            \
      "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]),            \
      "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]),            \
      "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

#define PA_DEFINE_WGMMA(TYPE, PTX)                                                                      \
  template <>                                                                                           \
  struct WgmmaSS<TYPE, 64> {                                                                            \
    __device__ __forceinline__ static void run(float (&d)[32], uint64_t desc_a, uint64_t desc_b,        \
                                               int accumulate) {                                        \
      asm volatile(                                                                                     \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                  \
          "wgmma.mma_async.sync.aligned.m64n64k16.f32." PTX "." PTX " " PA_WGMMA_D32                    \
          ", %32, %33, p, 1, 1, 0, 0;\n}\n"                                                             \
          : PA_WGMMA_OUT32                                                                              \
          : "l"(desc_a), "l"(desc_b), "r"(accumulate));                                                 \
    }                                                                                                   \
  };                                                                                                    \
  template <>                                                                                           \
  struct WgmmaSS<TYPE, 128> {                                                                           \
    __device__ __forceinline__ static void run(float (&d)[64], uint64_t desc_a, uint64_t desc_b,        \
                                               int accumulate) {                                        \
      asm volatile(                                                                                     \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                  \
          "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX "." PTX " " PA_WGMMA_D64                   \
          ", %64, %65, p, 1, 1, 0, 0;\n}\n"                                                             \
          : PA_WGMMA_OUT64                                                                              \
          : "l"(desc_a), "l"(desc_b), "r"(accumulate));                                                 \
    }                                                                                                   \
  };                                                                                                    \
  template <>                                                                                           \
  struct WgmmaRS<TYPE, 64> {                                                                            \
    __device__ __forceinline__ static void run(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b, \
                                               int accumulate) {                                        \
      asm volatile(                                                                                     \
          "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                  \
          "wgmma.mma_async.sync.aligned.m64n64k16.f32." PTX "." PTX " " PA_WGMMA_D32                    \
          ", {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"                                               \
          : PA_WGMMA_OUT32                                                                              \
          : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(accumulate));                  \
    }                                                                                                   \
  };

PA_DEFINE_WGMMA(__half, "f16")
PA_DEFINE_WGMMA(__nv_bfloat16, "bf16")

#undef PA_DEFINE_WGMMA
#undef PA_WGMMA_OUT64
#undef PA_WGMMA_OUT32
#undef PA_WGMMA_D64
#undef PA_WGMMA_D32

}  // namespace pagedattn::cuda::sm90
