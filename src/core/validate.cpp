#include "core/validate.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "pagedattn/error.h"
#include "pagedattn/kv_format.h"
#include "pagedattn/turboquant.h"

namespace pagedattn::core {
namespace {

void check_rank(const TensorView& t, const char* name, int rank, const char* dims) {
  PA_CHECK(t.data != nullptr || t.numel() == 0, name, " has no data pointer");
  PA_CHECK(t.rank == rank, name, " must have rank ", rank, " ", dims, ", got rank ", t.rank, " ",
           t.shape_string());
  for (int d = 0; d < rank; ++d) {
    PA_CHECK(t.shape[d] >= 0, name, " has a negative size in dim ", d, ": ", t.shape_string());
  }
}

void check_dtype(const TensorView& t, const char* name, DType want) {
  PA_CHECK(t.dtype == want, name, " must be ", dtype_name(want), ", got ", dtype_name(t.dtype));
}

void check_device(const TensorView& t, const char* name, const Device& want) {
  PA_CHECK(t.device == want, name, " is on ", device_name(t.device), " but the op runs on ",
           device_name(want), "; every tensor of one call must be on the same device");
}

void check_inner_contiguous(const TensorView& t, const char* name) {
  // Strides of an empty tensor carry no meaning (numpy reports 0 for them).
  PA_CHECK(t.rank == 0 || t.numel() == 0 || t.shape[t.rank - 1] <= 1 || t.strides[t.rank - 1] == 1, name,
           " must be contiguous in its last dim (stride 1), got stride ", t.strides[t.rank - 1]);
}

bool head_dim_supported(int64_t d) {
  return std::find(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims), d) !=
         std::end(kSupportedHeadDims);
}

kernels::KVPlane plane_of(const TensorView& t) {
  kernels::KVPlane plane;
  plane.data = t.data;
  plane.stride_block = t.strides[0];
  plane.stride_token = t.strides[1];
  plane.stride_head = t.strides[2];
  return plane;
}

// fp8's optional per-tensor or per-KV-head scale.
void check_head_scale(const TensorView& t, const char* name, int64_t num_kv_heads, const Device& device) {
  if (t.data == nullptr) return;
  check_rank(t, name, 1, "[1] or [num_kv_heads]");
  PA_CHECK(t.shape[0] == 1 || t.shape[0] == num_kv_heads, name, " must have shape [1] or [num_kv_heads] = [",
           num_kv_heads, "], got ", t.shape_string());
  check_dtype(t, name, DType::kFloat32);
  check_device(t, name, device);
  check_inner_contiguous(t, name);
}

// int8's metadata plane: one fp32 scale per (block, slot, kv head).
void check_meta_plane(const TensorView& t, const char* name, const TensorView& data, const Device& device) {
  PA_CHECK(t.data != nullptr, "an ", dtype_name(data.dtype), " cache needs ", name,
           ": fp32 [num_blocks, block_size, num_kv_heads], the per-token scales");
  check_rank(t, name, 3, "[num_blocks, block_size, num_kv_heads]");
  PA_CHECK(t.shape[0] == data.shape[0] && t.shape[1] == data.shape[1] && t.shape[2] == data.shape[2], name,
           " must have shape [num_blocks, block_size, num_kv_heads] = [", data.shape[0], ", ", data.shape[1],
           ", ", data.shape[2], "], got ", t.shape_string());
  check_dtype(t, name, DType::kFloat32);
  check_device(t, name, device);
}

// A TurboQuant cache's four planes (paged_kv.h), against its preset and head dim.
kernels::PagedKVArgs check_turboquant_cache(const PagedKVCache& cache, const Device& device) {
  const tq::PresetInfo info = tq::preset_info(*cache.tq);
  const int64_t d = cache.tq_head_dim;
  PA_CHECK(head_dim_supported(d), "head_dim ", d,
           " is not supported; supported: ", supported_head_dims_text());
  const tq::TokenBytes bytes = tq::token_bytes(*cache.tq, static_cast<int>(d));
  check_rank(cache.k, "cache.k", 4, "[num_blocks, block_size, num_kv_heads, key code bytes]");
  check_rank(cache.v, "cache.v", 4, "[num_blocks, block_size, num_kv_heads, value code bytes]");
  PA_CHECK(cache.k.shape[3] == bytes.key_codes, "a ", info.name, " cache at head_dim ", d,
           " holds cache.k rows of ", bytes.key_codes, " code bytes, got ", cache.k.shape_string());
  PA_CHECK(cache.v.shape[3] == bytes.value_codes, "a ", info.name, " cache at head_dim ", d,
           " holds cache.v rows of ", bytes.value_codes, " code bytes, got ", cache.v.shape_string());
  for (int i = 0; i < 3; ++i) {
    PA_CHECK(cache.k.shape[i] == cache.v.shape[i], "cache.k ", cache.k.shape_string(), " and cache.v ",
             cache.v.shape_string(), " must agree in [num_blocks, block_size, num_kv_heads]");
  }
  const bool fp8_keys = info.key_bits == 8;
  PA_CHECK(cache.k.dtype == DType::kUInt8 || (fp8_keys && cache.k.dtype == DType::kFloat8E4M3), "a ",
           info.name, " cache's cache.k holds ",
           fp8_keys ? "fp8 e4m3 keys (uint8 or fp8_e4m3)" : "packed codes (uint8)", ", got ",
           dtype_name(cache.k.dtype));
  check_dtype(cache.v, "cache.v", DType::kUInt8);
  for (const auto& [t, name] : {std::pair{&cache.k, "cache.k"}, std::pair{&cache.v, "cache.v"}}) {
    check_device(*t, name, device);
    check_inner_contiguous(*t, name);
  }
  PA_CHECK(cache.k_scale.data == nullptr && cache.v_scale.data == nullptr,
           "cache.k_scale / cache.v_scale belong to fp8 caches; a ", info.name, " cache takes none");
  const int64_t nb = cache.k.shape[0], bs = cache.k.shape[1], hkv = cache.k.shape[2];
  if (fp8_keys) {
    PA_CHECK(cache.k_meta.data == nullptr, "a ", info.name,
             " cache keeps fp8 keys and no key norms: cache.k_meta ", "must be empty");
  } else {
    PA_CHECK(cache.k_meta.data != nullptr, "a ", info.name,
             " cache needs cache.k_meta: fp16 [num_blocks, block_size, num_kv_heads], the key norms");
    check_rank(cache.k_meta, "cache.k_meta", 3, "[num_blocks, block_size, num_kv_heads]");
    PA_CHECK(cache.k_meta.shape[0] == nb && cache.k_meta.shape[1] == bs && cache.k_meta.shape[2] == hkv,
             "cache.k_meta must have shape [", nb, ", ", bs, ", ", hkv, "], got ",
             cache.k_meta.shape_string());
    check_dtype(cache.k_meta, "cache.k_meta", DType::kFloat16);
    check_device(cache.k_meta, "cache.k_meta", device);
  }
  PA_CHECK(cache.v_meta.data != nullptr, "a ", info.name,
           " cache needs cache.v_meta: fp16 [num_blocks, block_size, num_kv_heads, 2], the value scale and "
           "minimum");
  check_rank(cache.v_meta, "cache.v_meta", 4, "[num_blocks, block_size, num_kv_heads, 2]");
  PA_CHECK(cache.v_meta.shape[0] == nb && cache.v_meta.shape[1] == bs && cache.v_meta.shape[2] == hkv &&
               cache.v_meta.shape[3] == 2,
           "cache.v_meta must have shape [", nb, ", ", bs, ", ", hkv, ", 2], got ",
           cache.v_meta.shape_string());
  check_dtype(cache.v_meta, "cache.v_meta", DType::kFloat16);
  check_device(cache.v_meta, "cache.v_meta", device);
  check_inner_contiguous(cache.v_meta, "cache.v_meta");
  PA_CHECK(bs >= 1 && bs <= kMaxBlockSize, "block_size ", bs, " is outside 1..", kMaxBlockSize);
  PA_CHECK(hkv >= 1, "num_kv_heads must be >= 1, got ", hkv);
  PA_CHECK(nb <= INT32_MAX, "num_blocks ", nb, " exceeds int32 block ids");

  kernels::PagedKVArgs kv;
  kv.k = plane_of(cache.k);
  kv.v = plane_of(cache.v);
  if (!fp8_keys) kv.k_meta = plane_of(cache.k_meta);
  kv.v_meta = plane_of(cache.v_meta);
  kv.num_blocks = static_cast<int32_t>(nb);
  kv.block_size = static_cast<int32_t>(bs);
  kv.page = kernels::FastDivmod(kv.block_size);
  kv.num_kv_heads = static_cast<int32_t>(hkv);
  kv.head_dim = static_cast<int32_t>(d);
  kv.dtype = DType::kUInt8;
  kv.tq_key_bits = info.key_bits;
  kv.tq_value_bits = info.value_bits;
  return kv;
}

kernels::PagedKVArgs check_cache(const PagedKVCache& cache, const Device& device) {
  if (cache.tq) return check_turboquant_cache(cache, device);
  check_rank(cache.k, "cache.k", 4, "[num_blocks, block_size, num_kv_heads, head_dim]");
  check_rank(cache.v, "cache.v", 4, "[num_blocks, block_size, num_kv_heads, head_dim]");
  PA_CHECK(cache.k.shape == cache.v.shape, "cache.k ", cache.k.shape_string(), " and cache.v ",
           cache.v.shape_string(), " must have the same shape");
  PA_CHECK(cache.k.dtype == cache.v.dtype, "cache.k (", dtype_name(cache.k.dtype), ") and cache.v (",
           dtype_name(cache.v.dtype), ") must have the same dtype");
  PA_CHECK(is_kv_format(cache.k.dtype),
           "cache dtype must be a K/V format (fp32, fp16, bf16, fp8_e4m3, fp8_e5m2 or int8), got ",
           dtype_name(cache.k.dtype));
  check_device(cache.k, "cache.k", device);
  check_device(cache.v, "cache.v", device);
  check_inner_contiguous(cache.k, "cache.k");
  check_inner_contiguous(cache.v, "cache.v");
  const int64_t bs = cache.block_size();
  PA_CHECK(bs >= 1 && bs <= kMaxBlockSize, "block_size ", bs, " is outside 1..", kMaxBlockSize);
  PA_CHECK(head_dim_supported(cache.head_dim()), "head_dim ", cache.head_dim(),
           " is not supported; supported: ", supported_head_dims_text());
  PA_CHECK(cache.num_kv_heads() >= 1, "num_kv_heads must be >= 1, got ", cache.num_kv_heads());
  PA_CHECK(cache.num_blocks() <= INT32_MAX, "num_blocks ", cache.num_blocks(), " exceeds int32 block ids");

  kernels::PagedKVArgs kv;
  kv.k = plane_of(cache.k);
  kv.v = plane_of(cache.v);
  kv.num_blocks = static_cast<int32_t>(cache.num_blocks());
  kv.block_size = static_cast<int32_t>(bs);
  kv.page = kernels::FastDivmod(kv.block_size);
  kv.num_kv_heads = static_cast<int32_t>(cache.num_kv_heads());
  kv.head_dim = static_cast<int32_t>(cache.head_dim());
  kv.dtype = cache.k.dtype;

  const KVFormat format = kv_format(kv.dtype);
  const bool has_scale = cache.k_scale.data != nullptr || cache.v_scale.data != nullptr;
  const bool has_meta = cache.k_meta.data != nullptr || cache.v_meta.data != nullptr;
  PA_CHECK(format.scales == KVScales::kTensorHead || !has_scale,
           "cache.k_scale / cache.v_scale belong to fp8 ", "caches; a ", dtype_name(kv.dtype),
           " cache takes none");
  PA_CHECK(format.scales == KVScales::kToken || !has_meta, "cache.k_meta / cache.v_meta belong to int8 ",
           "caches; a ", dtype_name(kv.dtype), " cache takes none");
  if (format.scales == KVScales::kTensorHead) {
    check_head_scale(cache.k_scale, "cache.k_scale", kv.num_kv_heads, device);
    check_head_scale(cache.v_scale, "cache.v_scale", kv.num_kv_heads, device);
    PA_CHECK(cache.k_scale.data == nullptr || cache.v_scale.data == nullptr ||
                 cache.k_scale.shape[0] == cache.v_scale.shape[0],
             "cache.k_scale ", cache.k_scale.shape_string(), " and cache.v_scale ",
             cache.v_scale.shape_string(), " must both be per tensor or both per kv head");
    kv.k_scale = static_cast<const float*>(cache.k_scale.data);
    kv.v_scale = static_cast<const float*>(cache.v_scale.data);
    const TensorView& any = cache.k_scale.data != nullptr ? cache.k_scale : cache.v_scale;
    kv.scale_per_head = any.data != nullptr && any.shape[0] == kv.num_kv_heads && kv.num_kv_heads > 1;
  }
  if (format.scales == KVScales::kToken) {
    check_meta_plane(cache.k_meta, "cache.k_meta", cache.k, device);
    check_meta_plane(cache.v_meta, "cache.v_meta", cache.v, device);
    kv.k_meta = plane_of(cache.k_meta);
    kv.v_meta = plane_of(cache.v_meta);
  }
  return kv;
}

void check_optional_per_head(const TensorView& t, const char* name, int64_t num_q_heads,
                             const Device& device) {
  if (t.data == nullptr) return;
  check_rank(t, name, 1, "[num_q_heads]");
  PA_CHECK(t.shape[0] == num_q_heads, name, " must have shape [num_q_heads] = [", num_q_heads, "], got ",
           t.shape_string());
  check_dtype(t, name, DType::kFloat32);
  check_device(t, name, device);
  check_inner_contiguous(t, name);
}

}  // namespace

const char* supported_head_dims_text() {
  static const std::string text = [] {
    std::string t;
    for (int d : kSupportedHeadDims) t += (t.empty() ? "" : ", ") + std::to_string(d);
    return t;
  }();
  return text.c_str();
}

AttentionProblem check_attention(const TensorView& query, const PagedKVCache& cache, const BatchDesc& batch,
                                 const AttentionParams& params, const TensorView& out) {
  AttentionProblem p;
  p.device = query.device;
  check_rank(query, "query", 3, "[num_tokens, num_q_heads, head_dim]");
  check_rank(out, "out", 3, "[num_tokens, num_q_heads, head_dim]");
  check_device(out, "out", p.device);
  p.kv = check_cache(cache, p.device);

  PA_CHECK(
      query.dtype == DType::kFloat32 || query.dtype == DType::kFloat16 || query.dtype == DType::kBFloat16,
      "query dtype must be fp32, fp16 or bf16, got ", dtype_name(query.dtype));
  PA_CHECK(out.dtype == query.dtype, "out dtype ", dtype_name(out.dtype), " must equal query dtype ",
           dtype_name(query.dtype));
  PA_CHECK(p.kv.dtype == query.dtype || kv_format(p.kv.dtype).quantized() || p.kv.tq_key_bits > 0,
           "cache dtype ", dtype_name(p.kv.dtype), " must equal query dtype ", dtype_name(query.dtype),
           " or be a quantized format (fp8_e4m3, fp8_e5m2, int8, TurboQuant)");
  PA_CHECK(query.shape[2] == cache.head_dim(), "query head_dim ", query.shape[2],
           " must equal cache head_dim ", cache.head_dim());
  PA_CHECK(query.shape == out.shape, "out shape ", out.shape_string(), " must equal query shape ",
           query.shape_string());
  const int64_t hq = query.shape[1];
  const int64_t hkv = cache.num_kv_heads();
  PA_CHECK(hq >= 1 && hq % hkv == 0, "num_q_heads (", hq, ") must be a multiple of num_kv_heads (", hkv, ")");
  check_inner_contiguous(query, "query");
  check_inner_contiguous(out, "out");

  check_rank(batch.block_tables, "block_tables", 2, "[num_seqs, max_blocks_per_seq]");
  check_rank(batch.seq_lens, "seq_lens", 1, "[num_seqs]");
  check_rank(batch.query_start_loc, "query_start_loc", 1, "[num_seqs + 1]");
  check_dtype(batch.block_tables, "block_tables", DType::kInt32);
  check_dtype(batch.seq_lens, "seq_lens", DType::kInt32);
  check_dtype(batch.query_start_loc, "query_start_loc", DType::kInt32);
  check_device(batch.block_tables, "block_tables", p.device);
  check_device(batch.seq_lens, "seq_lens", p.device);
  check_device(batch.query_start_loc, "query_start_loc", p.device);
  check_inner_contiguous(batch.block_tables, "block_tables");
  check_inner_contiguous(batch.seq_lens, "seq_lens");
  check_inner_contiguous(batch.query_start_loc, "query_start_loc");
  const int64_t num_seqs = batch.seq_lens.shape[0];
  PA_CHECK(batch.query_start_loc.shape[0] == num_seqs + 1,
           "query_start_loc must have shape [num_seqs + 1] = [", num_seqs + 1, "], got ",
           batch.query_start_loc.shape_string());
  PA_CHECK(batch.block_tables.shape[0] == num_seqs, "block_tables must have num_seqs = ", num_seqs,
           " rows, got ", batch.block_tables.shape_string());

  PA_CHECK(std::isfinite(params.scale) && params.scale >= 0.0f,
           "scale must be finite and >= 0 (0 = 1/sqrt(head_dim))");
  PA_CHECK(params.window_left >= 0, "window_left must be >= 0 (0 = no window), got ", params.window_left);
  PA_CHECK(std::isfinite(params.softcap) && params.softcap >= 0.0f,
           "softcap must be finite and >= 0 (0 = off)");
  check_optional_per_head(params.alibi_slopes, "alibi_slopes", hq, p.device);
  check_optional_per_head(params.sinks, "sinks", hq, p.device);
  if (params.lse.data != nullptr) {
    check_rank(params.lse, "lse", 2, "[num_tokens, num_q_heads]");
    PA_CHECK(params.lse.shape[0] == query.shape[0] && params.lse.shape[1] == hq,
             "lse must have shape [num_tokens, num_q_heads] = [", query.shape[0], ", ", hq, "], got ",
             params.lse.shape_string());
    check_dtype(params.lse, "lse", DType::kFloat32);
    check_device(params.lse, "lse", p.device);
  }
  PA_CHECK((params.new_key.data == nullptr) == (params.new_value.data == nullptr),
           "new_key and new_value go together: give both (the step's raw K/V) or neither");
  for (const auto& [view, name] :
       {std::pair{&params.new_key, "new_key"}, std::pair{&params.new_value, "new_value"}}) {
    if (view->data == nullptr) continue;
    check_rank(*view, name, 3, "[num_tokens, num_kv_heads, head_dim]");
    PA_CHECK(view->shape[0] == query.shape[0] && view->shape[1] == hkv && view->shape[2] == query.shape[2],
             name, " must have shape [num_tokens, num_kv_heads, head_dim] = [", query.shape[0], ", ", hkv,
             ", ", query.shape[2], "], got ", view->shape_string());
    PA_CHECK(view->dtype == query.dtype, name, " dtype ", dtype_name(view->dtype), " must equal query dtype ",
             dtype_name(query.dtype));
    check_device(*view, name, p.device);
    check_inner_contiguous(*view, name);
  }

  p.batch.block_tables = static_cast<const int32_t*>(batch.block_tables.data);
  p.batch.block_table_stride = batch.block_tables.strides[0];
  p.batch.max_blocks_per_seq = static_cast<int32_t>(batch.block_tables.shape[1]);
  p.batch.seq_lens = static_cast<const int32_t*>(batch.seq_lens.data);
  p.batch.query_start_loc = static_cast<const int32_t*>(batch.query_start_loc.data);
  p.batch.num_seqs = static_cast<int32_t>(num_seqs);
  p.batch.num_tokens = query.shape[0];
  p.max_query_len = batch.max_query_len;
  p.max_seq_len = batch.max_seq_len;
  p.validate_batch = params.validate_batch;
  PA_CHECK(params.force_segments >= 0 && params.force_segments <= 1024,
           "force_segments must lie in 0..1024, got ", params.force_segments);
  p.force_segments = params.force_segments;
  p.max_workspace_bytes = params.max_workspace_bytes;

  auto& a = p.attn;
  a.q = query.data;
  a.q_stride_token = query.strides[0];
  a.q_stride_head = query.strides[1];
  a.o = out.data;
  a.o_stride_token = out.strides[0];
  a.o_stride_head = out.strides[1];
  a.lse = static_cast<float*>(params.lse.data);
  a.lse_stride_token = params.lse.strides[0];
  a.lse_stride_head = params.lse.strides[1];
  a.alibi_slopes = static_cast<const float*>(params.alibi_slopes.data);
  a.sinks = static_cast<const float*>(params.sinks.data);
  a.new_k = params.new_key.data;
  a.new_v = params.new_value.data;
  if (a.new_k != nullptr) {
    a.new_k_stride_token = params.new_key.strides[0];
    a.new_k_stride_head = params.new_key.strides[1];
    a.new_v_stride_token = params.new_value.strides[0];
    a.new_v_stride_head = params.new_value.strides[1];
  }
  a.num_q_heads = static_cast<int32_t>(hq);
  a.group_size = static_cast<int32_t>(hq / hkv);
  a.scale = params.scale > 0.0f ? params.scale : 1.0f / std::sqrt(static_cast<float>(cache.head_dim()));
  a.softcap = params.softcap;
  a.window_left = params.window_left;
  a.q_dtype = query.dtype;
  return p;
}

void check_batch_contents(const kernels::BatchArgs& b, const kernels::PagedKVArgs& kv) {
  PA_CHECK(b.query_start_loc[0] == 0, "query_start_loc[0] must be 0, got ", b.query_start_loc[0]);
  for (int32_t s = 0; s < b.num_seqs; ++s) {
    const int32_t q0 = b.query_start_loc[s];
    const int32_t q1 = b.query_start_loc[s + 1];
    PA_CHECK(q1 >= q0, "query_start_loc must be non-decreasing: query_start_loc[", s + 1, "] = ", q1,
             " < query_start_loc[", s, "] = ", q0);
    const int32_t seq_len = b.seq_lens[s];
    PA_CHECK(seq_len >= 0, "seq_lens[", s, "] = ", seq_len, " is negative");
    PA_CHECK(q1 - q0 <= seq_len, "sequence ", s, " has query_len ", q1 - q0, " > seq_len ", seq_len,
             " (queries are the last query_len positions of the sequence)");
    const int64_t blocks_needed = (static_cast<int64_t>(seq_len) + kv.block_size - 1) / kv.block_size;
    PA_CHECK(blocks_needed <= b.max_blocks_per_seq, "seq_lens[", s, "] = ", seq_len, " needs ", blocks_needed,
             " blocks of ", kv.block_size, " but block_tables has ", b.max_blocks_per_seq, " columns");
    const int32_t* row = b.block_tables + s * b.block_table_stride;
    for (int64_t j = 0; j < blocks_needed; ++j) {
      PA_CHECK(row[j] >= 0 && row[j] < kv.num_blocks, "block_tables[", s, "][", j, "] = ", row[j],
               " is outside the pool of ", kv.num_blocks, " blocks");
    }
  }
  PA_CHECK(b.query_start_loc[b.num_seqs] == b.num_tokens,
           "query_start_loc[num_seqs] = ", b.query_start_loc[b.num_seqs],
           " must equal the number of query rows ", b.num_tokens);
}

void check_slots(const int64_t* slot_mapping, int64_t num_tokens, const kernels::PagedKVArgs& kv) {
  const int64_t num_slots = static_cast<int64_t>(kv.num_blocks) * kv.block_size;
  for (int64_t t = 0; t < num_tokens; ++t) {
    const int64_t s = slot_mapping[t];
    PA_CHECK(s == -1 || (s >= 0 && s < num_slots), "slot_mapping[", t, "] = ", s, " is outside the pool of ",
             num_slots, " slots (", kv.num_blocks, " blocks x ", kv.block_size, "); use -1 to skip a token");
  }
}

WriteKVProblem check_write_kv(const TensorView& key, const TensorView& value, const TensorView& slot_mapping,
                              const PagedKVCache& cache) {
  WriteKVProblem p;
  p.device = key.device;
  check_rank(key, "key", 3, "[num_tokens, num_kv_heads, head_dim]");
  check_rank(value, "value", 3, "[num_tokens, num_kv_heads, head_dim]");
  check_rank(slot_mapping, "slot_mapping", 1, "[num_tokens]");
  check_device(value, "value", p.device);
  check_device(slot_mapping, "slot_mapping", p.device);
  p.kv = check_cache(cache, p.device);
  PA_CHECK(key.shape == value.shape, "value shape ", value.shape_string(), " must equal key shape ",
           key.shape_string());
  PA_CHECK(key.dtype == value.dtype, "value dtype ", dtype_name(value.dtype), " must equal key dtype ",
           dtype_name(key.dtype));
  PA_CHECK(key.dtype == DType::kFloat32 || key.dtype == DType::kFloat16 || key.dtype == DType::kBFloat16,
           "key dtype must be fp32, fp16 or bf16, got ", dtype_name(key.dtype));
  PA_CHECK(p.kv.dtype == key.dtype || kv_format(p.kv.dtype).quantized() || p.kv.tq_key_bits > 0,
           "cache dtype ", dtype_name(p.kv.dtype), " must equal key dtype ", dtype_name(key.dtype),
           " or be a quantized format (fp8_e4m3, fp8_e5m2, int8, TurboQuant)");
  PA_CHECK(key.shape[1] == cache.num_kv_heads() && key.shape[2] == cache.head_dim(),
           "key must have shape [num_tokens, num_kv_heads, head_dim] = [", key.shape[0], ", ",
           cache.num_kv_heads(), ", ", cache.head_dim(), "], got ", key.shape_string());
  PA_CHECK(slot_mapping.shape[0] == key.shape[0], "slot_mapping must have shape [num_tokens] = [",
           key.shape[0], "], got ", slot_mapping.shape_string());
  check_dtype(slot_mapping, "slot_mapping", DType::kInt64);
  check_inner_contiguous(key, "key");
  check_inner_contiguous(value, "value");
  check_inner_contiguous(slot_mapping, "slot_mapping");

  p.src.key = key.data;
  p.src.value = value.data;
  p.src.key_stride_token = key.strides[0];
  p.src.key_stride_head = key.strides[1];
  p.src.value_stride_token = value.strides[0];
  p.src.value_stride_head = value.strides[1];
  p.src.slot_mapping = static_cast<const int64_t*>(slot_mapping.data);
  p.src.num_tokens = key.shape[0];
  p.src.src_dtype = key.dtype;
  return p;
}

}  // namespace pagedattn::core
