"""pagedattn.LLM: the engine from Python, shaped like vLLM's offline API.

    llm = pagedattn.LLM("path/to/hf-model-folder")        # or a preset with random weights: "qwen3-0.6b", ...
    outs = llm.generate(["Hello"], pagedattn.SamplingParams(temperature=0.0, max_tokens=32))
    outs[0].token_ids, outs[0].text, outs[0].finish_reason

Prompts are token-id lists, or strings when the model folder has a tokenizer.json and the `tokenizers` package is
installed (then outputs carry text too). device="cpu" runs the fp32 CPU runner, "cuda" the CUDA runner (CUDA
builds: bf16 weights, bf16/fp8/int8 KV caches, sampling on the GPU, CUDA graphs for decode steps unless
enforce_eager).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from . import _pagedattn as _C
from ._util import Error


@dataclass
class SamplingParams:
    """vLLM's names: temperature 0 is greedy; top_k 0 and top_p 1 are off; seed -1 draws one from the engine."""
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = -1
    max_tokens: int = 16
    ignore_eos: bool = False
    stop_token_ids: list = field(default_factory=list)


@dataclass
class RequestOutput:
    prompt_token_ids: list
    token_ids: list
    finish_reason: str  # "stop", "length" or "aborted"
    text: str | None = None
    detail: str = ""


class LLM:
    def __init__(self, model: str, *, block_size: int = 16, num_blocks: int = 1024, max_num_seqs: int = 256,
                 max_num_batched_tokens: int = 8192, max_model_len: int = 0, enable_prefix_caching: bool = True,
                 seed: int = 0, weights_seed: int = 0, device: str = "cpu", kv_layout: str = "paged",
                 kv_cache_dtype: str = "auto", enforce_eager: bool = False, gpu_memory_utilization: float = 0.9):
        if not hasattr(_C, "Engine"):
            raise Error("this build of pagedattn has no engine (configured with PAGEDATTN_BUILD_ENGINE=OFF)")
        self._engine = _C.Engine(model, block_size=block_size, num_blocks=num_blocks, max_num_seqs=max_num_seqs,
                                 max_num_batched_tokens=max_num_batched_tokens, max_model_len=max_model_len,
                                 enable_prefix_caching=enable_prefix_caching, seed=seed, weights_seed=weights_seed,
                                 device=device, kv_layout=kv_layout, kv_cache_dtype=kv_cache_dtype,
                                 enforce_eager=enforce_eager, gpu_memory_utilization=gpu_memory_utilization)
        self.tokenizer = None
        tok = os.path.join(model, "tokenizer.json")
        if os.path.isdir(model) and os.path.exists(tok):
            try:
                from tokenizers import Tokenizer
                self.tokenizer = Tokenizer.from_file(tok)
            except ImportError:  # token ids still work; text prompts say what is missing
                pass

    def _ids(self, prompt):
        if isinstance(prompt, str):
            if self.tokenizer is None:
                raise Error("text prompts need the model folder's tokenizer.json and the `tokenizers` package; "
                            "pass token ids instead")
            return self.tokenizer.encode(prompt).ids
        ids = [int(t) for t in prompt]
        if not ids:
            raise Error("a prompt must have at least one token")
        return ids

    def generate(self, prompts, sampling_params: SamplingParams | None = None, *, use_tqdm: bool = False):
        """Runs every prompt to completion; outputs in prompt order."""
        p = sampling_params or SamplingParams()
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        ids = [self._ids(x) for x in prompts]
        order = [self._engine.add_request(i, temperature=p.temperature, top_k=p.top_k, top_p=p.top_p, seed=p.seed,
                                          max_tokens=p.max_tokens, ignore_eos=p.ignore_eos,
                                          stop_token_ids=list(p.stop_token_ids)) for i in ids]
        done = {}
        while self._engine.has_unfinished():
            for rid, tokens, reason, detail in self._engine.step():
                if reason != "none":
                    done[rid] = (tokens, reason, detail)
            if use_tqdm:
                print(f"\r{len(done)}/{len(order)} requests", end="", flush=True)
        if use_tqdm:
            print()
        out = []
        for prompt_ids, rid in zip(ids, order):
            tokens, reason, detail = done[rid]
            text = self.tokenizer.decode(tokens) if self.tokenizer is not None else None
            out.append(RequestOutput(prompt_ids, list(tokens), reason, text, detail))
        return out

    def stats(self) -> dict:
        """Steps, preemptions, prefix-cache hit tokens, prompt/generated tokens, model and host seconds."""
        return self._engine.stats()
