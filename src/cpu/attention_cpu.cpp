// Reference attention over the paged cache. One task per (sequence, kv head): its K and V rows are gathered
// into fp32 once, then every query row of the sequence and every query head of the group runs a two-pass
// softmax.
#include <cmath>
#include <limits>
#include <vector>

#include "cpu/cpu_backend.h"
#include "cpu/parallel.h"
#include "pagedattn/turboquant.h"

namespace pagedattn::cpu {
namespace {

// Converts n elements of dtype t starting at element offset into fp32 (the dtype switch is outside the loop).
void load_row(const void* base, DType t, int64_t offset, int n, float* dst) {
  switch (t) {
    case DType::kFloat32: {
      const float* src = static_cast<const float*>(base) + offset;
      for (int i = 0; i < n; ++i) dst[i] = src[i];
      return;
    }
    case DType::kBFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
      for (int i = 0; i < n; ++i) dst[i] = bf16_bits_to_float(src[i]);
      return;
    }
    case DType::kFloat16: {
      const uint16_t* src = static_cast<const uint16_t*>(base) + offset;
      for (int i = 0; i < n; ++i) dst[i] = fp16_bits_to_float(src[i]);
      return;
    }
    default:
      for (int i = 0; i < n; ++i) dst[i] = load_as_float(base, t, offset + i);
  }
}

// fp32 dot product with 8 independent partial sums (head dims are multiples of 16), so the compiler
// vectorizes it.
float dot(const float* a, const float* b, int n) {
  float part[8] = {};
  for (int i = 0; i < n; i += 8) {
    for (int j = 0; j < 8; ++j) part[j] += a[i + j] * b[i + j];
  }
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

void attend_sequence_head(const core::AttentionProblem& p, int32_t seq, int32_t kv_head) {
  const auto& kv = p.kv;
  const auto& b = p.batch;
  const auto& a = p.attn;
  const int32_t q_begin = b.query_start_loc[seq];
  const int32_t query_len = b.query_start_loc[seq + 1] - q_begin;
  const int32_t seq_len = b.seq_lens[seq];
  if (query_len == 0) return;
  const int d = kv.head_dim;

  // Gather this head's keys and values in position order, dequantized: (seq_len, head_dim) each.
  std::vector<float> keys(static_cast<size_t>(seq_len) * d);
  std::vector<float> values(static_cast<size_t>(seq_len) * d);
  const int32_t* table = b.block_tables + seq * b.block_table_stride;
  const float k_head_scale = kv.k_head_scale(kv_head), v_head_scale = kv.v_head_scale(kv_head);
  const bool rotated_keys = kv.tq_key_bits > 0 && kv.tq_key_bits < 8;
  // With the step's own K/V given, the query positions read them raw instead of the cache.
  const int32_t cached_end = a.new_k != nullptr ? seq_len - query_len : seq_len;
  for (int32_t pos = cached_end; pos < seq_len; ++pos) {
    const int64_t row = q_begin + (pos - cached_end);
    float* key = &keys[static_cast<size_t>(pos) * d];
    load_row(a.new_k, a.q_dtype, row * a.new_k_stride_token + kv_head * a.new_k_stride_head, d, key);
    load_row(a.new_v, a.q_dtype, row * a.new_v_stride_token + kv_head * a.new_v_stride_head, d,
             &values[static_cast<size_t>(pos) * d]);
    if (rotated_keys) tq::rotation(d).apply(key, key);  // into the domain of the rotated cached keys
  }
  for (int32_t pos = 0; pos < cached_end; ++pos) {
    int32_t page = 0, slot = 0;
    kv.locate(pos, page, slot);
    const int64_t block = table[page];
    float* key = &keys[static_cast<size_t>(pos) * d];
    float* value = &values[static_cast<size_t>(pos) * d];
    if (kv.tq_key_bits) {  // TurboQuant (pagedattn/turboquant.h)
      const auto* k_codes = kv.k.at<uint8_t>(block, slot, kv_head);
      if (kv.tq_key_bits == 8) {
        for (int i = 0; i < d; ++i) key[i] = fp8e4m3_bits_to_float(k_codes[i]);
      } else {
        // Kept in the rotated domain, n' c[idx]: the queries are rotated once instead (<q, n' Rᵀ c> =
        // n' <R q, c>), which saves a Walsh–Hadamard transform per cached key.
        tq::rotated_key(k_codes, *kv.k_meta.at<uint16_t>(block, slot, kv_head), d, kv.tq_key_bits, key);
      }
      const uint16_t* meta = kv.v_meta.at<uint16_t>(block, slot, kv_head);
      tq::dequantize_value(kv.v.at<uint8_t>(block, slot, kv_head), meta[0], meta[1], d, kv.tq_value_bits,
                           value);
      continue;
    }
    load_row(kv.k.data, kv.dtype, kv.k.offset(block, slot, kv_head), d, key);
    load_row(kv.v.data, kv.dtype, kv.v.offset(block, slot, kv_head), d, value);
    // fp8: one scale per tensor or head; int8: the token's scales from the metadata planes.
    const float ks = kv.k_meta.data ? *kv.k_meta.at<float>(block, slot, kv_head) : k_head_scale;
    const float vs = kv.v_meta.data ? *kv.v_meta.at<float>(block, slot, kv_head) : v_head_scale;
    if (ks != 1.0f)
      for (int i = 0; i < d; ++i) key[i] *= ks;
    if (vs != 1.0f)
      for (int i = 0; i < d; ++i) value[i] *= vs;
  }

  std::vector<float> q(d), acc(d), logits(seq_len);
  for (int32_t j = 0; j < query_len; ++j) {
    const int64_t row = q_begin + j;
    const int32_t pos = seq_len - query_len + j;  // queries are the last query_len positions
    const int32_t first = a.window_left > 0 ? std::max(0, pos - a.window_left) : 0;
    for (int g = 0; g < a.group_size; ++g) {
      const int32_t head = kv_head * a.group_size + g;
      load_row(a.q, a.q_dtype, row * a.q_stride_token + head * a.q_stride_head, d, q.data());
      if (rotated_keys) tq::rotation(d).apply(q.data(), q.data());
      float max_logit = -std::numeric_limits<float>::infinity();
      for (int32_t k = first; k <= pos; ++k) {
        float s = dot(q.data(), &keys[static_cast<size_t>(k) * d], d) * a.scale;
        if (a.softcap > 0.0f) s = a.softcap * std::tanh(s / a.softcap);
        if (a.alibi_slopes) s += a.alibi_slopes[head] * static_cast<float>(k - pos);
        logits[k] = s;
        max_logit = std::max(max_logit, s);
      }
      if (a.sinks) max_logit = std::max(max_logit, a.sinks[head]);
      float denom = a.sinks ? std::exp(a.sinks[head] - max_logit) : 0.0f;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int32_t k = first; k <= pos; ++k) {
        const float w = std::exp(logits[k] - max_logit);
        denom += w;
        const float* value = &values[static_cast<size_t>(k) * d];
        for (int i = 0; i < d; ++i) acc[i] += w * value[i];
      }
      const int64_t out_offset = row * a.o_stride_token + head * a.o_stride_head;
      for (int i = 0; i < d; ++i) store_from_float(a.o, a.q_dtype, out_offset + i, acc[i] / denom);
      if (a.lse) a.lse[row * a.lse_stride_token + head * a.lse_stride_head] = max_logit + std::log(denom);
    }
  }
}

}  // namespace

void attention(const core::AttentionProblem& p) {
  const int64_t heads = p.kv.num_kv_heads;
  parallel_for(static_cast<int64_t>(p.batch.num_seqs) * heads, [&](int64_t task) {
    attend_sequence_head(p, static_cast<int32_t>(task / heads), static_cast<int32_t>(task % heads));
  });
}

}  // namespace pagedattn::cpu
