// The engine in the Python extension (pagedattn.LLM sits on it): an Engine object with add_request / step.
#include <nanobind/nanobind.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include "engine/engine.h"
#include "engine/scorer.h"

namespace nb = nanobind;
using namespace nb::literals;

namespace pagedattn::python {

void bind_engine(nb::module_& m) {
  // A Hugging Face model folder with random weights of a preset (config.json + model.safetensors), as
  // vLLM's dummy weights but on disk: for tests and for trying the loader.
  m.def(
      "save_random_checkpoint",
      [](const std::string& folder, const std::string& preset, uint64_t weights_seed,
         const std::string& dtype) {
        engine::ModelConfig c = engine::ModelConfig::preset(preset);
        const engine::ModelWeightsF32 w = engine::ModelWeightsF32::random(c, weights_seed);
        c.dtype = parse_dtype(dtype);
        engine::save_checkpoint(folder, c, w);
      },
      "folder"_a, "preset"_a, "weights_seed"_a = 0, "dtype"_a = "bf16");

  // One sequence through the CPU model with the paged cache: logits after each feed (parity tests).
  nb::class_<engine::SequenceScorer>(m, "SequenceScorer")
      .def(
          "__init__",
          [](engine::SequenceScorer* self, const std::string& model, int max_tokens, uint64_t weights_seed,
             const std::string& kv_format) {
            new (self)
                engine::SequenceScorer(engine::make_scorer(model, max_tokens, weights_seed, kv_format));
          },
          "model"_a, "max_tokens"_a = 4096, "weights_seed"_a = 0, "kv_format"_a = "fp32")
      .def(
          "feed", [](engine::SequenceScorer& s, std::vector<int32_t> tokens) { return s.feed(tokens); },
          "tokens"_a)
      .def_prop_ro("length", &engine::SequenceScorer::length);

  using engine::Engine;
  nb::class_<Engine>(m, "Engine")
      .def(
          "__init__",
          [](Engine* self, const std::string& model, int block_size, int num_blocks, int max_num_seqs,
             int64_t max_num_batched_tokens, int64_t max_model_len, bool enable_prefix_caching, uint64_t seed,
             uint64_t weights_seed, const std::string& device, const std::string& kv_layout,
             const std::string& kv_cache_dtype, bool enforce_eager, double gpu_memory_utilization) {
            engine::EngineConfig c;
            c.model = model;
            c.block_size = block_size;
            c.num_blocks = num_blocks;
            c.max_num_seqs = max_num_seqs;
            c.max_num_batched_tokens = max_num_batched_tokens;
            c.max_model_len = max_model_len;
            c.enable_prefix_caching = enable_prefix_caching;
            c.seed = seed;
            c.weights_seed = weights_seed;
            c.device = device;
            c.kv_layout = kv_layout;
            c.kv_cache_dtype = kv_cache_dtype;
            c.enforce_eager = enforce_eager;
            c.gpu_memory_utilization = gpu_memory_utilization;
            new (self) Engine(c);
          },
          "model"_a, "block_size"_a = 16, "num_blocks"_a = 1024, "max_num_seqs"_a = 256,
          "max_num_batched_tokens"_a = 8192, "max_model_len"_a = 0, "enable_prefix_caching"_a = true,
          "seed"_a = 0, "weights_seed"_a = 0, "device"_a = "cpu", "kv_layout"_a = "paged",
          "kv_cache_dtype"_a = "auto", "enforce_eager"_a = false, "gpu_memory_utilization"_a = 0.9)
      .def(
          "add_request",
          [](Engine& e, std::vector<int32_t> prompt, float temperature, int top_k, float top_p, int64_t seed,
             int max_tokens, bool ignore_eos, std::vector<int32_t> stop_token_ids) {
            engine::SamplingParams p;
            p.temperature = temperature;
            p.top_k = top_k;
            p.top_p = top_p;
            p.seed = seed;
            p.max_tokens = max_tokens;
            p.ignore_eos = ignore_eos;
            p.stop_token_ids = std::move(stop_token_ids);
            return e.add_request(std::move(prompt), std::move(p));
          },
          "prompt"_a, "temperature"_a = 1.0f, "top_k"_a = 0, "top_p"_a = 1.0f, "seed"_a = -1,
          "max_tokens"_a = 16, "ignore_eos"_a = false, "stop_token_ids"_a = std::vector<int32_t>{})
      .def("step",
           [](Engine& e) {
             std::vector<std::tuple<int64_t, std::vector<int32_t>, std::string, std::string>> out;
             {
               nb::gil_scoped_release release;
               for (auto& o : e.step()) {
                 out.emplace_back(o.id, std::move(o.tokens), engine::finish_reason_name(o.finish),
                                  o.finish_detail);
               }
             }
             return out;
           })
      .def("has_unfinished", &Engine::has_unfinished)
      .def_prop_ro("vocab_size", [](const Engine& e) { return e.model_config().vocab_size; })
      .def_prop_ro("eos_token_ids", [](const Engine& e) { return e.model_config().eos_token_ids; })
      .def("stats", [](const Engine& e) {
        const engine::EngineStats s = e.stats();
        nb::dict d;
        d["steps"] = s.scheduler.steps;
        d["preemptions"] = s.scheduler.preemptions;
        d["prefix_hit_tokens"] = s.scheduler.prefix_hit_tokens;
        d["prompt_tokens"] = s.prompt_tokens;
        d["generated_tokens"] = s.generated_tokens;
        d["model_seconds"] = s.model_seconds;
        d["host_seconds"] = s.host_seconds;
        d["max_running"] = s.scheduler.max_running;
        d["num_blocks"] = s.num_blocks;
        d["free_blocks"] = s.free_blocks;
        d["block_bytes"] = s.block_bytes;
        return d;
      });
}

}  // namespace pagedattn::python
