"""pagedattn.LLM on the CPU runner with the tiny presets: greedy generation independent of batching, sampling
seeds, errors."""

import pytest

import pagedattn

if not hasattr(pagedattn._C, "Engine"):
    pytest.skip("built without the engine", allow_module_level=True)


def test_greedy_alone_equals_batched():
    prompts = [[1, 2, 3, 4, 5], [9, 8, 7], list(range(10, 40))]
    greedy = pagedattn.SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    alone = [pagedattn.LLM("tiny-qwen3").generate([p], greedy)[0].token_ids for p in prompts]
    llm = pagedattn.LLM("tiny-qwen3", num_blocks=8, block_size=8, max_num_batched_tokens=16)
    outs = llm.generate(prompts, greedy)
    assert [o.token_ids for o in outs] == alone
    assert all(o.finish_reason == "length" and len(o.token_ids) == 6 for o in outs)
    assert llm.stats()["generated_tokens"] == 18


def test_seeded_sampling_is_reproducible():
    p = pagedattn.SamplingParams(temperature=1.0, top_p=0.9, seed=7, max_tokens=8, ignore_eos=True)
    a = pagedattn.LLM("tiny-llama").generate([[5, 6, 7]], p)[0].token_ids
    b = pagedattn.LLM("tiny-llama").generate([[5, 6, 7], [1, 1, 1, 1]], p)[0].token_ids
    assert a == b


def test_errors():
    llm = pagedattn.LLM("tiny-llama")
    with pytest.raises(pagedattn.Error, match="text prompts need"):
        llm.generate(["hello"])
    with pytest.raises(pagedattn.Error, match="outside the vocabulary"):
        llm.generate([[100000]])
    with pytest.raises(pagedattn.Error, match="unknown model preset"):
        pagedattn.LLM("no-such-model")


def test_model_folder_and_text_prompts(tmp_path):
    """A saved random checkpoint serves like its preset; with a tokenizer.json (and `tokenizers`), text prompts
    work and outputs carry text."""
    folder = str(tmp_path / "tiny")
    pagedattn.save_random_checkpoint(folder, "tiny-llama", weights_seed=0, dtype="fp32")
    greedy = pagedattn.SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True)
    assert (pagedattn.LLM(folder).generate([[3, 4, 5]], greedy)[0].token_ids ==
            pagedattn.LLM("tiny-llama").generate([[3, 4, 5]], greedy)[0].token_ids)
    tokenizers = pytest.importorskip("tokenizers")
    vocab = {f"w{i}": i for i in range(512)}
    vocab["[UNK]"] = 0
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    tok.save(folder + "/tokenizer.json")
    out = pagedattn.LLM(folder).generate(["w3 w4 w5"], greedy)[0]
    assert out.prompt_token_ids == [3, 4, 5] and out.text is not None and len(out.token_ids) == 5
