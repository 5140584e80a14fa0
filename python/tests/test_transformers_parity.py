"""The engine's model against Hugging Face transformers on the same random-initialized checkpoints (saved with
save_pretrained, read by our loader): logits after the prompt and after each of 32 decode steps through the
paged cache, and greedy generations token for token until the first near-tie. Runs where torch and
transformers are installed (the GPU machine); the engine computes on its CPU runner in fp32, transformers in
fp32, so the tolerance is fp32 accumulation-order noise (1e-4 relative), not bf16 rounding."""

import numpy as np
import pytest

import pagedattn

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if not hasattr(pagedattn._C, "SequenceScorer"):
    pytest.skip("built without the engine", allow_module_level=True)


def make_checkpoint(tmp_path, kind):
    """A small random model of each family, saved in fp32 (exact weights on both sides)."""
    torch.manual_seed(0)
    common = dict(vocab_size=384, hidden_size=256, intermediate_size=512, num_hidden_layers=3, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=64, max_position_embeddings=1024, rms_norm_eps=1e-6)
    if kind == "llama3":
        cfg = transformers.LlamaConfig(**common, rope_theta=500000.0, tie_word_embeddings=False,
                                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 128})
        model = transformers.LlamaForCausalLM(cfg)
    else:
        cfg = transformers.Qwen3Config(**common, rope_theta=1e6, tie_word_embeddings=True)
        model = transformers.Qwen3ForCausalLM(cfg)
    with torch.no_grad():  # norms away from 1 so that a missing or misplaced norm shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.2 * torch.randn_like(p))
    model = model.float().eval()
    path = tmp_path / kind
    model.save_pretrained(path, safe_serialization=True)
    return model, str(path)


@pytest.mark.parametrize("kind", ["llama3", "qwen3"])
def test_logits_and_greedy_tokens_match_transformers(tmp_path, kind):
    model, path = make_checkpoint(tmp_path, kind)
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, 384, 37).tolist()
    scorer = pagedattn._C.SequenceScorer(path, max_tokens=256)
    ours = [np.array(scorer.feed(prompt))]
    with torch.no_grad():
        ref = model(torch.tensor([prompt])).logits[0].numpy()
    tokens = list(prompt)
    for _ in range(32):  # decode steps through the cache, each fed the reference's greedy token
        nxt = int(np.argmax(ref[-1]))
        tokens.append(nxt)
        ours.append(np.array(scorer.feed([nxt])))
        with torch.no_grad():
            ref = model(torch.tensor([tokens])).logits[0].numpy()
        want = ref[-1]
        got = ours[-1]
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4, len(tokens)
    # Greedy generation: the engine's tokens equal transformers' until the first step whose top two logits
    # are within 1e-4 (a near-tie either side may break differently).
    llm = pagedattn.LLM(path)
    out = llm.generate([prompt], pagedattn.SamplingParams(temperature=0.0, max_tokens=32, ignore_eos=True))[0]
    with torch.no_grad():
        gen = model.generate(torch.tensor([prompt]), max_new_tokens=32, do_sample=False, min_new_tokens=32)[0]
    theirs = gen[len(prompt):].tolist()
    with torch.no_grad():
        logits = model(gen[None, :-1]).logits[0, len(prompt) - 1:].numpy()
    for i, (a, b) in enumerate(zip(out.token_ids, theirs)):
        top2 = np.sort(logits[i])[-2:]
        if top2[1] - top2[0] < 1e-4:
            break
        assert a == b, f"token {i}: engine {a}, transformers {b}"
