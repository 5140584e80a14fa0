// Random attention problems over a paged cache, owned in host memory, for tests and `pagedattn check`.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "pagedattn/attention.h"
#include "pagedattn/turboquant.h"

namespace pagedattn::testing {

/// What kind of batch to draw.
enum class BatchKind { kDecode, kPrefill, kChunked, kMixed };
const char* batch_kind_name(BatchKind k);

struct ProblemSpec {
  int head_dim = 128;
  int num_q_heads = 8;
  int num_kv_heads = 2;
  int block_size = 16;
  DType dtype = DType::kBFloat16;        // query, out
  DType cache_dtype = DType::kBFloat16;  // dtype, or a quantized format (fp8_e4m3, fp8_e5m2, int8)
  bool head_scales = false;              // fp8: k_scale/v_scale per kv head (else one per tensor)
  std::optional<tq::Preset> tq;          // a TurboQuant cache (cache_dtype is then ignored)
  std::vector<int32_t> seq_lens;
  std::vector<int32_t> query_lens;
  bool hnd_layout = false;  // pools stored [num_blocks, num_kv_heads, block_size, head_dim]
  bool strided = false;     // query/out with gaps between heads and tokens
  int window_left = 0;
  float softcap = 0.0f;
  float scale = 0.0f;
  bool alibi = false;
  bool sinks = false;
  bool lse = false;
  int extra_blocks = 3;            // pool blocks nobody uses: catches reads through wrong block ids
  int force_segments = 0;          // GPU: forwarded to AttentionParams::force_segments
  size_t max_workspace_bytes = 0;  // GPU: forwarded to AttentionParams::max_workspace_bytes
  bool new_kv = false;             // pass the query rows' own raw K/V (AttentionParams::new_key/new_value)
  uint64_t seed = 0;

  std::string describe() const;
};

/// Draws sequence and query lengths for a batch of num_seqs of the given kind, up to max_len tokens.
void draw_batch(ProblemSpec& spec, BatchKind kind, int num_seqs, int max_len, std::mt19937_64& rng);

/// A problem with all of its host memory. Query/K/V are random; out and lse are poisoned (NaN) before each
/// run.
struct HostProblem {
  ProblemSpec spec;
  int64_t num_blocks = 0;
  int64_t max_blocks_per_seq = 0;
  int64_t num_tokens = 0;
  std::vector<uint8_t> k_pool, v_pool, q, out;
  std::vector<uint8_t> new_k, new_v;  // spec.new_kv: [num_tokens, num_kv_heads, head_dim] of spec.dtype
  std::vector<float> alibi, sinks, lse;
  std::vector<float> k_scale, v_scale;  // fp8: [1] or [num_kv_heads]
  std::vector<float> k_meta,
      v_meta;  // int8: [num_blocks, block_size, num_kv_heads] (HND: heads before slots)
  // TurboQuant: key norms n' [num_blocks, block_size, num_kv_heads] and value (scale, minimum) pairs, fp16
  // bits, laid out like the pools (HND: heads before slots); the pools hold the code rows.
  std::vector<uint16_t> k_norms, v_scale_min;
  std::vector<int32_t> block_tables, seq_lens, query_start_loc;
  int64_t q_stride_token = 0, q_stride_head = 0, o_stride_token = 0, o_stride_head = 0;

  /// Views of the host buffers (device = CPU).
  PagedKVCache cache();
  BatchDesc batch();
  TensorView query();
  TensorView output();
  AttentionParams params();
  /// Sets out and lse to NaN so that unwritten elements are caught.
  void poison();
};

HostProblem make_problem(const ProblemSpec& spec);

/// Attention of the problem in double precision, computed densely (full score rows, explicit masks).
struct DenseResult {
  std::vector<double> out;  // [num_tokens, num_q_heads, head_dim]
  std::vector<double> lse;  // [num_tokens, num_q_heads]
};
DenseResult dense_reference(const HostProblem& p);

struct Comparison {
  double rel_error = 0;      // ||out - ref|| / ||ref||
  double tolerance = 0;      // tolerance_factor * (error of rounding ref to the out dtype) + floor
  double lse_max_error = 0;  // max |lse - ref_lse|
  int64_t unwritten = 0;     // NaN outputs where the reference is finite
  int64_t clobbered = 0;     // bytes in the gaps of a strided output that changed
  bool ok = false;
  std::string summary() const;
};

/// Compares the problem's out (and lse) buffers, as the op left them, with the dense reference. The tolerance
/// is tolerance_factor times the error the reference itself has once rounded to the out dtype, plus a small
/// floor for fp32 accumulation (FlashAttention's rule: at most a few times a same-precision naive
/// implementation's error).
/// tolerance = max(tolerance_factor x the output's rounding error + 1e-5, min_tolerance) (relative).
Comparison compare(const HostProblem& p, const DenseResult& ref, double tolerance_factor = 2.0,
                   double min_tolerance = 0.0);

/// The grid of problems `pagedattn check` and the tests run. quick = a smoke subset.
struct GridCase {
  std::string group;
  ProblemSpec spec;
};
std::vector<GridCase> attention_grid(bool quick, uint64_t seed);

}  // namespace pagedattn::testing
