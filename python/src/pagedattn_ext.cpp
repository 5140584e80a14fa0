// The Python extension: the C++ API over DLPack tensors (numpy, torch, cupy, ...) with zero copies.
// Tensors cross as nb::ndarray<>; the stream is a raw cudaStream_t handle chosen by the Python layer.
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <cstring>

#include "pagedattn/pagedattn.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace pagedattn::python {
#ifdef PAGEDATTN_WITH_ENGINE
void bind_engine(nb::module_& m);  // engine_ext.cpp
#endif
namespace {

using Array = nb::ndarray<nb::ro>;  // an input: any framework, device and strides; read-only arrays accepted
using OutArray = nb::ndarray<>;     // an output: must be writable

DType to_dtype(nb::dlpack::dtype t) {
  using C = nb::dlpack::dtype_code;
  const auto code = static_cast<C>(t.code);
  PA_CHECK(t.lanes == 1, "vector dtypes (lanes = ", static_cast<int>(t.lanes), ") are not supported");
  if (code == C::Float && t.bits == 32) return DType::kFloat32;
  if (code == C::Float && t.bits == 16) return DType::kFloat16;
  if (code == C::Bfloat && t.bits == 16) return DType::kBFloat16;
  if (code == C::Float8_E4M3FN && t.bits == 8) return DType::kFloat8E4M3;
  if (code == C::Float8_E5M2 && t.bits == 8) return DType::kFloat8E5M2;
  if (code == C::Int && t.bits == 8) return DType::kInt8;
  if (code == C::UInt && t.bits == 8) return DType::kUInt8;
  if (code == C::Int && t.bits == 32) return DType::kInt32;
  if (code == C::Int && t.bits == 64) return DType::kInt64;
  PA_CHECK(
      false, "unsupported tensor dtype (DLPack code ", static_cast<int>(t.code), ", ",
      static_cast<int>(t.bits),
      " bits); expected float32, float16, bfloat16, float8_e4m3fn, float8_e5m2, int8, uint8, int32 or int64");
}

template <typename A>
TensorView view(const A& a, const char* name) {
  PA_CHECK(a.ndim() <= TensorView::kMaxRank, name, " has rank ", a.ndim(), "; at most 4 is supported");
  TensorView t;
  t.data = const_cast<void*>(a.data());
  t.dtype = to_dtype(a.dtype());
  t.rank = static_cast<int>(a.ndim());
  for (int d = 0; d < t.rank; ++d) {
    t.shape[d] = static_cast<int64_t>(a.shape(d));
    t.strides[d] = a.stride(d);
  }
  if (a.device_type() == nb::device::cpu::value) {
    t.device = Device::cpu();
  } else {
    PA_CHECK(a.device_type() == nb::device::cuda::value, name,
             " lives on an unsupported device type (DLPack ", a.device_type(), "); expected CPU or CUDA");
    t.device = Device::cuda(a.device_id());
  }
  return t;
}

template <typename A>
TensorView optional_view(const std::optional<A>& a, const char* name) {
  return a ? view(*a, name) : TensorView{};
}

// The cache: pools plus the format's optional scales (fp8) or metadata planes (int8, TurboQuant). kv_format
// names a TurboQuant preset ("tq_k4v4", ...; "" = the pools' dtype names the format); its head dim is the
// query's or key's (the planes hold codes).
template <typename Pool, typename Meta, typename Vec>
PagedKVCache cache_view(const Pool& k_cache, const Pool& v_cache, const std::optional<Array>& k_scale,
                        const std::optional<Array>& v_scale, const std::optional<Meta>& k_meta,
                        const std::optional<Meta>& v_meta, const std::string& kv_format, const Vec& vectors) {
  PagedKVCache c(view(k_cache, "k_cache"), view(v_cache, "v_cache"));
  c.k_scale = optional_view(k_scale, "k_scale");
  c.v_scale = optional_view(v_scale, "v_scale");
  c.k_meta = optional_view(k_meta, "k_meta");
  c.v_meta = optional_view(v_meta, "v_meta");
  if (!kv_format.empty()) {
    c.tq = tq::parse_preset(kv_format);
    PA_CHECK(vectors.ndim() == 3, "a ", kv_format,
             " cache takes its head dim from the query / key, which must be ",
             "[num_tokens, num_heads, head_dim]");
    c.tq_head_dim = static_cast<int64_t>(vectors.shape(2));
  }
  return c;
}

Stream to_stream(uintptr_t s) {
  return reinterpret_cast<Stream>(s);
}

BatchDesc batch_view(const Array& block_tables, const Array& seq_lens, const Array& query_start_loc,
                     int max_query_len, int max_seq_len) {
  BatchDesc b;
  b.block_tables = view(block_tables, "block_tables");
  b.seq_lens = view(seq_lens, "seq_lens");
  b.query_start_loc = view(query_start_loc, "query_start_loc");
  b.max_query_len = max_query_len;
  b.max_seq_len = max_seq_len;
  return b;
}

AttentionParams params_view(float scale, int window_left, float softcap,
                            const std::optional<Array>& alibi_slopes, const std::optional<Array>& sinks,
                            const std::optional<OutArray>& lse, bool validate, int force_segments,
                            const std::optional<Array>& new_key, const std::optional<Array>& new_value) {
  AttentionParams p;
  p.scale = scale;
  p.window_left = window_left;
  p.softcap = softcap;
  p.alibi_slopes = optional_view(alibi_slopes, "alibi_slopes");
  p.sinks = optional_view(sinks, "sinks");
  p.lse = optional_view(lse, "lse");
  p.new_key = optional_view(new_key, "new_key");
  p.new_value = optional_view(new_value, "new_value");
  p.validate_batch = validate;
  p.force_segments = force_segments;
  return p;
}

// A host array handed to numpy; the capsule frees it.
template <typename T>
nb::ndarray<nb::numpy, T> to_numpy(const std::vector<T>& v, std::initializer_list<size_t> shape) {
  T* data = new T[v.size() ? v.size() : 1];
  std::memcpy(data, v.data(), v.size() * sizeof(T));
  nb::capsule owner(data, [](void* p) noexcept { delete[] static_cast<T*>(p); });
  return nb::ndarray<nb::numpy, T>(data, shape.size(), shape.begin(), owner);
}

}  // namespace
}  // namespace pagedattn::python

NB_MODULE(_pagedattn, m) {
  using namespace pagedattn;
  using namespace pagedattn::python;
  m.doc() = "pagedattn: attention over a paged KV cache (C++/CUDA core)";
  nb::exception<Error>(m, "Error", PyExc_ValueError);
#ifdef PAGEDATTN_WITH_ENGINE
  bind_engine(m);
#endif

  m.def(
      "write_kv",
      [](const Array& key, const Array& value, const Array& slot_mapping, const OutArray& k_cache,
         const OutArray& v_cache, uintptr_t stream, bool validate, std::optional<Array> k_scale,
         std::optional<Array> v_scale, std::optional<OutArray> k_meta, std::optional<OutArray> v_meta,
         const std::string& kv_format) {
        const PagedKVCache cache =
            cache_view(k_cache, v_cache, k_scale, v_scale, k_meta, v_meta, kv_format, key);
        nb::gil_scoped_release release;
        write_kv(view(key, "key"), view(value, "value"), view(slot_mapping, "slot_mapping"), cache,
                 to_stream(stream), validate);
      },
      "key"_a, "value"_a, "slot_mapping"_a, "k_cache"_a, "v_cache"_a, "stream"_a = 0, "validate"_a = true,
      "k_scale"_a = nb::none(), "v_scale"_a = nb::none(), "k_meta"_a = nb::none(), "v_meta"_a = nb::none(),
      "kv_format"_a = "");

  m.def(
      "attention_workspace_size",
      [](const Array& query, const Array& k_cache, const Array& v_cache, const Array& block_tables,
         const Array& seq_lens, const Array& query_start_loc, int max_query_len, int max_seq_len,
         int force_segments, std::optional<Array> k_scale, std::optional<Array> v_scale,
         std::optional<Array> k_meta, std::optional<Array> v_meta, const std::string& kv_format,
         std::optional<Array> new_key, std::optional<Array> new_value) {
        AttentionParams p;
        p.force_segments = force_segments;
        p.new_key = optional_view(new_key, "new_key");
        p.new_value = optional_view(new_value, "new_value");
        return attention_workspace_size(
            view(query, "query"),
            cache_view(k_cache, v_cache, k_scale, v_scale, k_meta, v_meta, kv_format, query),
            batch_view(block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len), p);
      },
      "query"_a, "k_cache"_a, "v_cache"_a, "block_tables"_a, "seq_lens"_a, "query_start_loc"_a,
      "max_query_len"_a = -1, "max_seq_len"_a = -1, "force_segments"_a = 0, "k_scale"_a = nb::none(),
      "v_scale"_a = nb::none(), "k_meta"_a = nb::none(), "v_meta"_a = nb::none(), "kv_format"_a = "",
      "new_key"_a = nb::none(), "new_value"_a = nb::none());

  m.def(
      "attention",
      [](const Array& query, const Array& k_cache, const Array& v_cache, const Array& block_tables,
         const Array& seq_lens, const Array& query_start_loc, const OutArray& out, float scale,
         int window_left, float softcap, std::optional<Array> alibi_slopes, std::optional<Array> sinks,
         std::optional<OutArray> lse, std::optional<OutArray> workspace, int max_query_len, int max_seq_len,
         bool validate, int force_segments, uintptr_t stream, std::optional<Array> k_scale,
         std::optional<Array> v_scale, std::optional<Array> k_meta, std::optional<Array> v_meta,
         const std::string& kv_format, std::optional<Array> new_key, std::optional<Array> new_value) {
        // The workspace is raw bytes of any dtype; only its size and address matter.
        Workspace ws;
        if (workspace) {
          ws.data = workspace->data();
          ws.bytes = workspace->nbytes();
        }
        nb::gil_scoped_release release;
        attention(view(query, "query"),
                  cache_view(k_cache, v_cache, k_scale, v_scale, k_meta, v_meta, kv_format, query),
                  batch_view(block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len),
                  params_view(scale, window_left, softcap, alibi_slopes, sinks, lse, validate, force_segments,
                              new_key, new_value),
                  view(out, "out"), ws, to_stream(stream));
      },
      "query"_a, "k_cache"_a, "v_cache"_a, "block_tables"_a, "seq_lens"_a, "query_start_loc"_a, "out"_a,
      "scale"_a = 0.0f, "window_left"_a = 0, "softcap"_a = 0.0f, "alibi_slopes"_a = nb::none(),
      "sinks"_a = nb::none(), "lse"_a = nb::none(), "workspace"_a = nb::none(), "max_query_len"_a = -1,
      "max_seq_len"_a = -1, "validate"_a = true, "force_segments"_a = 0, "stream"_a = 0,
      "k_scale"_a = nb::none(), "v_scale"_a = nb::none(), "k_meta"_a = nb::none(), "v_meta"_a = nb::none(),
      "kv_format"_a = "", "new_key"_a = nb::none(), "new_value"_a = nb::none());

  // Plan once per batch shape, run per layer (pagedattn/plan.h). The Python layer's Plan owns one of these
  // together with the batch tensors and the workspace.
  nb::class_<AttentionPlan>(m, "AttentionPlan")
      .def_prop_ro("workspace_bytes", &AttentionPlan::workspace_bytes)
      .def_prop_ro("device", [](const AttentionPlan& p) { return device_name(p.device()); })
      .def("describe", &AttentionPlan::describe);

  m.def(
      "plan_attention",
      [](const Array& query, const Array& k_cache, const Array& v_cache, const Array& block_tables,
         const Array& seq_lens, const Array& query_start_loc, int max_query_len, int max_seq_len,
         int window_left, int force_segments, std::optional<Array> k_scale, std::optional<Array> v_scale,
         std::optional<Array> k_meta, std::optional<Array> v_meta, const std::string& kv_format,
         std::optional<Array> new_key, std::optional<Array> new_value, size_t max_workspace_bytes) {
        AttentionParams p;
        p.window_left = window_left;
        p.force_segments = force_segments;
        p.max_workspace_bytes = max_workspace_bytes;
        p.new_key = optional_view(new_key, "new_key");  // the plan reads their shapes, never their data
        p.new_value = optional_view(new_value, "new_value");
        return plan_attention(
            view(query, "query"),
            cache_view(k_cache, v_cache, k_scale, v_scale, k_meta, v_meta, kv_format, query),
            batch_view(block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len), p);
      },
      "query"_a, "k_cache"_a, "v_cache"_a, "block_tables"_a, "seq_lens"_a, "query_start_loc"_a,
      "max_query_len"_a = -1, "max_seq_len"_a = -1, "window_left"_a = 0, "force_segments"_a = 0,
      "k_scale"_a = nb::none(), "v_scale"_a = nb::none(), "k_meta"_a = nb::none(), "v_meta"_a = nb::none(),
      "kv_format"_a = "", "new_key"_a = nb::none(), "new_value"_a = nb::none(), "max_workspace_bytes"_a = 0);

  m.def(
      "run_attention",
      [](const AttentionPlan& plan, const Array& query, const Array& k_cache, const Array& v_cache,
         const Array& block_tables, const Array& seq_lens, const Array& query_start_loc, const OutArray& out,
         float scale, int window_left, float softcap, std::optional<Array> alibi_slopes,
         std::optional<Array> sinks, std::optional<OutArray> lse, std::optional<OutArray> workspace,
         int max_query_len, int max_seq_len, int force_segments, uintptr_t stream,
         std::optional<Array> k_scale, std::optional<Array> v_scale, std::optional<Array> k_meta,
         std::optional<Array> v_meta, const std::string& kv_format, std::optional<Array> new_key,
         std::optional<Array> new_value) {
        Workspace ws;
        if (workspace) {
          ws.data = workspace->data();
          ws.bytes = workspace->nbytes();
        }
        nb::gil_scoped_release release;
        run_attention(plan, view(query, "query"),
                      cache_view(k_cache, v_cache, k_scale, v_scale, k_meta, v_meta, kv_format, query),
                      batch_view(block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len),
                      params_view(scale, window_left, softcap, alibi_slopes, sinks, lse, false,
                                  force_segments, new_key, new_value),
                      view(out, "out"), ws, to_stream(stream));
      },
      "plan"_a, "query"_a, "k_cache"_a, "v_cache"_a, "block_tables"_a, "seq_lens"_a, "query_start_loc"_a,
      "out"_a, "scale"_a = 0.0f, "window_left"_a = 0, "softcap"_a = 0.0f, "alibi_slopes"_a = nb::none(),
      "sinks"_a = nb::none(), "lse"_a = nb::none(), "workspace"_a = nb::none(), "max_query_len"_a = -1,
      "max_seq_len"_a = -1, "force_segments"_a = 0, "stream"_a = 0, "k_scale"_a = nb::none(),
      "v_scale"_a = nb::none(), "k_meta"_a = nb::none(), "v_meta"_a = nb::none(), "kv_format"_a = "",
      "new_key"_a = nb::none(), "new_value"_a = nb::none());

  m.def(
      "validate_batch",
      [](const Array& query, const Array& k_cache, const Array& v_cache, const Array& block_tables,
         const Array& seq_lens, const Array& query_start_loc, int max_query_len, int max_seq_len,
         uintptr_t stream, std::optional<Array> k_scale, std::optional<Array> v_scale,
         std::optional<Array> k_meta, std::optional<Array> v_meta, const std::string& kv_format) {
        const PagedKVCache cache =
            cache_view(k_cache, v_cache, k_scale, v_scale, k_meta, v_meta, kv_format, query);
        const BatchDesc batch =
            batch_view(block_tables, seq_lens, query_start_loc, max_query_len, max_seq_len);
        const TensorView q = view(query, "query");
        nb::gil_scoped_release release;
        validate_batch(q, cache, batch, to_stream(stream));
      },
      "query"_a, "k_cache"_a, "v_cache"_a, "block_tables"_a, "seq_lens"_a, "query_start_loc"_a,
      "max_query_len"_a = -1, "max_seq_len"_a = -1, "stream"_a = 0, "k_scale"_a = nb::none(),
      "v_scale"_a = nb::none(), "k_meta"_a = nb::none(), "v_meta"_a = nb::none(), "kv_format"_a = "");

  // TurboQuant's host data, for inspection (pagedattn/turboquant.h): the codebook of a head dim and bit
  // width, the rotation's signs (from tq::kSignSeed), and each preset's bytes per token and KV head.
  m.def(
      "turboquant_codebook",
      [](int head_dim, int bits) {
        const tq::Codebook& cb = tq::codebook(head_dim, bits);
        nb::dict d;
        d["centroids"] = cb.centroids;
        d["midpoints"] = cb.midpoints;
        d["distortion"] = cb.distortion;
        return d;
      },
      "head_dim"_a, "bits"_a);
  m.def(
      "turboquant_rotation",
      [](int head_dim) {
        const tq::Rotation& r = tq::rotation(head_dim);
        nb::dict d;
        d["block"] = r.block;
        d["signs"] = std::vector<int>(r.signs.begin(), r.signs.end());
        d["seed"] = tq::kSignSeed;
        return d;
      },
      "head_dim"_a);
  m.def(
      "turboquant_bytes",
      [](const std::string& preset, int head_dim) {
        const tq::TokenBytes b = tq::token_bytes(tq::parse_preset(preset), head_dim);
        nb::dict d;
        d["key_codes"] = b.key_codes;
        d["key_norm"] = b.key_norm;
        d["value_codes"] = b.value_codes;
        d["value_meta"] = b.value_meta;
        d["total"] = b.total();
        return d;
      },
      "preset"_a, "head_dim"_a);

  // Element conversions, exposed for the dtype tests (python/tests/test_dtype_tables.py checks them against
  // numpy's and ml_dtypes' tables): float32 values -> bit patterns of a float dtype, and back.
  m.def(
      "_encode",
      [](const nb::ndarray<const float, nb::ndim<1>, nb::c_contig, nb::device::cpu>& values,
         const std::string& name) {
        const DType t = parse_dtype(name);
        PA_CHECK(is_float_dtype(t) && dtype_size(t) <= 2, "_encode: ", name,
                 " is not an 8- or 16-bit float dtype");
        std::vector<uint8_t> bytes(values.shape(0) * dtype_size(t));
        for (size_t i = 0; i < values.shape(0); ++i)
          store_from_float(bytes.data(), t, static_cast<int64_t>(i), values(i));
        if (dtype_size(t) == 1) return nb::object(nb::cast(to_numpy(bytes, {bytes.size()})));
        std::vector<uint16_t> halves(values.shape(0));
        std::memcpy(halves.data(), bytes.data(), bytes.size());
        return nb::object(nb::cast(to_numpy(halves, {halves.size()})));
      },
      "values"_a, "dtype"_a);
  m.def(
      "_decode",
      [](const nb::ndarray<nb::ro, nb::ndim<1>, nb::c_contig, nb::device::cpu>& bits,
         const std::string& name) {
        const DType t = parse_dtype(name);
        PA_CHECK(is_float_dtype(t) && dtype_size(t) <= 2, "_decode: ", name,
                 " is not an 8- or 16-bit float dtype");
        PA_CHECK(bits.itemsize() == static_cast<size_t>(dtype_size(t)), "_decode: ", name, " needs ",
                 dtype_size(t), "-byte elements, got ", bits.itemsize());
        std::vector<float> out(bits.shape(0));
        for (size_t i = 0; i < out.size(); ++i)
          out[i] = load_as_float(bits.data(), t, static_cast<int64_t>(i));
        return to_numpy(out, {out.size()});
      },
      "bits"_a, "dtype"_a);

  m.def("build_info", [] {
    const BuildInfo b = build_info();
    std::vector<std::string> dtypes;
    for (DType t : b.cuda_dtypes) dtypes.emplace_back(dtype_name(t));
    nb::dict d;
    d["version"] = b.version;
    // The head dims every backend supports (the one list, pagedattn/attention.h); the CUDA build's subset
    // is cuda_head_dims.
    d["supported_head_dims"] = std::vector<int>(std::begin(kSupportedHeadDims), std::end(kSupportedHeadDims));
    const std::string unavailable = cuda_unavailable_reason();
    d["cuda_built"] = b.cuda;
    d["cuda_available"] = unavailable.empty();
    d["cuda_unavailable_reason"] = unavailable;
    d["cuda_archs"] = b.cuda_archs;
    d["cuda_tma"] = b.cuda_tma;
    d["cuda_head_dims"] = b.cuda_head_dims;
    d["cuda_dtypes"] = dtypes;
    std::vector<std::string> formats;
    for (DType t : b.cuda_kv_formats) formats.emplace_back(dtype_name(t));
    d["cuda_kv_formats"] = formats;
    nb::list instances;  // (query dtype, cache format, head dim): the compiled instantiation axis
    for (const CudaInstance& i : b.cuda_instances)
      instances.append(
          nb::make_tuple(std::string(dtype_name(i.query)), std::string(dtype_name(i.cache)), i.head_dim));
    d["cuda_instances"] = instances;
    nb::list tq_instances;  // (query dtype, TurboQuant preset, head dim)
    for (const BuildInfo::TurboQuantInstance& i : b.cuda_tq_instances)
      tq_instances.append(nb::make_tuple(std::string(dtype_name(i.query)),
                                         std::string(tq::preset_info(i.preset).name), i.head_dim));
    d["cuda_tq_instances"] = tq_instances;
    nb::list devices;
    for (const auto& dev : cuda_devices()) {
      nb::dict e;
      e["index"] = dev.index;
      e["name"] = dev.name;
      e["sm_count"] = dev.sm_count;
      e["compute_capability"] = std::to_string(dev.major) + "." + std::to_string(dev.minor);
      e["prefill_kernel"] = dev.prefill_kernel;
      e["decode_kernel"] = dev.decode_kernel;
      e["total_memory"] = dev.total_memory;
      devices.append(e);
    }
    d["devices"] = devices;
    return d;
  });

  nb::class_<BlockManager>(m, "BlockManager")
      .def(nb::init<int32_t, int32_t, bool>(), "num_blocks"_a, "block_size"_a,
           "enable_prefix_caching"_a = true)
      .def_prop_ro("num_blocks", &BlockManager::num_blocks)
      .def_prop_ro("block_size", &BlockManager::block_size)
      .def_prop_ro("num_free_blocks", &BlockManager::num_free_blocks)
      .def_prop_ro("num_cached_free_blocks", &BlockManager::num_cached_free_blocks)
      .def_prop_ro("usage", &BlockManager::usage)
      .def("can_allocate", &BlockManager::can_allocate, "num_tokens"_a)
      .def("can_append", &BlockManager::can_append, "seq"_a, "num_tokens"_a)
      .def(
          "allocate",
          [](BlockManager& b, SeqId seq, const std::vector<TokenId>& prompt) {
            return b.allocate(seq, prompt);
          },
          "seq"_a, "prompt"_a)
      .def(
          "append",
          [](BlockManager& b, SeqId seq, const std::vector<TokenId>& tokens) {
            std::vector<std::pair<int32_t, int32_t>> copies;
            for (const BlockCopy& c : b.append(seq, tokens)) copies.emplace_back(c.src, c.dst);
            return copies;
          },
          "seq"_a, "tokens"_a)
      .def("fork", &BlockManager::fork, "parent"_a, "child"_a)
      .def("mark_computed", &BlockManager::mark_computed, "seq"_a, "num_computed"_a)
      .def("free", &BlockManager::free, "seq"_a)
      .def("preempt", &BlockManager::preempt, "seq"_a)
      .def("contains", &BlockManager::contains, "seq"_a)
      .def("sequences", &BlockManager::sequences)
      .def(
          "block_table",
          [](const BlockManager& b, SeqId seq) {
            const auto t = b.block_table(seq);
            return std::vector<int32_t>(t.begin(), t.end());
          },
          "seq"_a)
      .def("num_tokens", &BlockManager::num_tokens, "seq"_a)
      .def("num_computed_tokens", &BlockManager::num_computed_tokens, "seq"_a)
      .def("ref_count", &BlockManager::ref_count, "block"_a)
      .def(
          "build_batch",
          [](const BlockManager& b, const std::vector<std::pair<SeqId, int64_t>>& items,
             int32_t max_blocks_per_seq) {
            std::vector<BatchItem> batch_items;
            for (const auto& [seq, n] : items) batch_items.push_back({seq, n});
            HostBatch h = build_batch(b, batch_items, max_blocks_per_seq);
            const BatchDesc desc = h.desc();
            nb::dict d;
            d["block_tables"] = to_numpy(
                h.block_tables, {static_cast<size_t>(h.num_seqs), static_cast<size_t>(h.max_blocks_per_seq)});
            d["seq_lens"] = to_numpy(h.seq_lens, {h.seq_lens.size()});
            d["query_start_loc"] = to_numpy(h.query_start_loc, {h.query_start_loc.size()});
            d["slot_mapping"] = to_numpy(h.slot_mapping, {h.slot_mapping.size()});
            d["positions"] = to_numpy(h.positions, {h.positions.size()});
            d["max_query_len"] = desc.max_query_len;
            d["max_seq_len"] = desc.max_seq_len;
            return d;
          },
          "items"_a, "max_blocks_per_seq"_a = 0,
          "Kernel inputs for one step: items are (seq, num_new_tokens) pairs; returns numpy arrays and "
          "hints.");
}
