#include "cuda/attention/kv_tensor_map.h"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "cuda/cuda_check.h"

namespace pagedattn::cuda {
namespace {

// Tokens per box: a whole page, or a 64-token run of a larger one (the kernel's 64-key tile).
int box_rows(int block_size) {
  return std::min(block_size, 64);
}

// The driver's encoder, found through the runtime (no link against libcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
  static std::once_flag once;
  std::call_once(once, [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
    PA_CUDA_CHECK(
        cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &status));
    if (status == cudaDriverEntryPointSuccess) fn = reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  });
  return fn;
}

std::string encode_one(const void* pool, DType dtype, int head_dim, int num_kv_heads, int block_size,
                       int64_t num_blocks, int64_t stride_head, int64_t stride_token, int64_t stride_block,
                       bool token_dim_first, CUtensorMap& map) {
  auto* encode = tensor_map_encoder();
  if (encode == nullptr) return "the driver has no cuTensorMapEncodeTiled";
  const int64_t elem = dtype_size(dtype);  // fp16 / bf16: 2; fp8 codes: 1
  const cuuint64_t heads = static_cast<cuuint64_t>(num_kv_heads),
                   tokens = static_cast<cuuint64_t>(block_size);
  // A dimension of extent 1 is never stepped: give it its neighbour's stride so the map stays well-formed
  // whatever stride the caller's view carries for it (token_dim_first is false then).
  if (num_kv_heads == 1) stride_head = stride_token;
  const cuuint64_t dims[4] = {static_cast<cuuint64_t>(head_dim), token_dim_first ? tokens : heads,
                              token_dim_first ? heads : tokens, static_cast<cuuint64_t>(num_blocks)};
  const cuuint64_t strides[3] = {
      static_cast<cuuint64_t>((token_dim_first ? stride_token : stride_head) * elem),
      static_cast<cuuint64_t>((token_dim_first ? stride_head : stride_token) * elem),
      static_cast<cuuint64_t>(stride_block * elem)};
  const cuuint32_t rows = static_cast<cuuint32_t>(box_rows(block_size));
  // One box row is one 128-byte swizzled panel row: 64 bf16/fp16 columns or 128 fp8 codes.
  const cuuint32_t panel_cols = static_cast<cuuint32_t>(128 / elem);
  const cuuint32_t box[4] = {panel_cols, token_dim_first ? rows : 1u, token_dim_first ? 1u : rows, 1};
  const cuuint32_t element_strides[4] = {1, 1, 1, 1};
  // fp8 and int8 codes travel as bytes: the copy engine moves them, the compute warps convert them.
  const CUtensorMapDataType type = dtype == DType::kBFloat16  ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                   : dtype == DType::kFloat16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16
                                                              : CU_TENSOR_MAP_DATA_TYPE_UINT8;
  // 128-byte L2 promotion: as fast as none and 4% faster than 256-byte promotion on the H200
  // (bench/NOTES.md, version 16).
  const CUresult r = encode(&map, type, 4, const_cast<void*>(pool), dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    return "cuTensorMapEncodeTiled refused the pool (error " + std::to_string(static_cast<int>(r)) +
           "; strides " + std::to_string(stride_block) + "/" + std::to_string(stride_token) + "/" +
           std::to_string(stride_head) + " elements)";
  }
  return {};
}

// Both maps, their dimension order and box height.
std::string encode_pools(const kernels::PagedKVArgs& kv, KVTensorMaps& maps) {
  // Order the two middle dimensions by stride (HND: tokens first), as the encoder expects.
  const bool token_dim_first = kv.k.stride_token < kv.k.stride_head && kv.num_kv_heads > 1;
  const bool v_token_first = kv.v.stride_token < kv.v.stride_head && kv.num_kv_heads > 1;
  if (v_token_first != token_dim_first) return "K and V pools order heads and tokens differently";
  maps.token_dim_first = token_dim_first ? 1 : 0;
  maps.box_rows = box_rows(kv.block_size);
  std::string why =
      encode_one(kv.k.data, kv.dtype, kv.head_dim, kv.num_kv_heads, kv.block_size, kv.num_blocks,
                 kv.k.stride_head, kv.k.stride_token, kv.k.stride_block, token_dim_first, maps.k);
  if (why.empty()) {
    why = encode_one(kv.v.data, kv.dtype, kv.head_dim, kv.num_kv_heads, kv.block_size, kv.num_blocks,
                     kv.v.stride_head, kv.v.stride_token, kv.v.stride_block, token_dim_first, maps.v);
  }
  return why;
}

}  // namespace

std::string tma_decode_shape_limit(int head_dim, int block_size, DType format) {
  if (format != DType::kBFloat16 && format != DType::kFloat16 && format != DType::kFloat8E4M3 &&
      format != DType::kFloat8E5M2 && format != DType::kInt8) {
    return std::string("the TMA decode kernel reads bf16, fp16, fp8 and int8 pages, not ") +
           std::string(dtype_name(format));
  }
  const int panel_cols = 128 / dtype_size(format);
  if (head_dim % panel_cols != 0) {
    return "head dim " + std::to_string(head_dim) + " is not a multiple of " + std::to_string(panel_cols) +
           " (TMA boxes are 128-byte panels: " + std::to_string(panel_cols) + " " +
           std::string(dtype_name(format)) + " columns)";
  }
  if (block_size < 8 || (block_size & (block_size - 1)) != 0) {
    return "page size " + std::to_string(block_size) +
           " is not a power of two >= 8 (each TMA box must fill whole 8-row swizzle atoms of a 64-key tile)";
  }
  return {};
}

std::string KVTensorMapCache::encode(const kernels::PagedKVArgs& kv, KVTensorMaps& maps) {
  const Key key{
      kv.k.data,         kv.v.data,         kv.k.stride_block,         kv.k.stride_token, kv.k.stride_head,
      kv.v.stride_block, kv.v.stride_token, kv.v.stride_head,          kv.num_blocks,     kv.block_size,
      kv.num_kv_heads,   kv.head_dim,       static_cast<int>(kv.dtype)};
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = encoded_.find(key);
  if (it == encoded_.end()) {
    if (encoded_.size() >= 4096) encoded_.clear();  // caches come and go (tests, reallocation): stay bounded
    Encoded e;
    e.why = encode_pools(kv, e.maps);
    it = encoded_.emplace(key, std::move(e)).first;
  }
  maps = it->second.maps;
  return it->second.why;
}

}  // namespace pagedattn::cuda
