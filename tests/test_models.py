"""core.sources.models: one face over HookedTransformer (organism, TL names) and TransformerBridge (HF dirs)."""

from __future__ import annotations

import threading

import pytest
import torch

from core.errors import AtlasError, PromptError, UnknownHookError, UnknownModelError
from core.hooks import BLOCK_SITES
from core.sources.models import (
    LoadedModel,
    ModelSpec,
    load_model,
    official_tl_name,
    parse_tl_checkpoint,
)
from tests.fixtures_models import D_MODEL, N_CTX, N_LAYERS, tiny_vocab

ALL_SITES = [f"blocks.{layer}.{site}" for layer in range(N_LAYERS) for site in BLOCK_SITES]


@pytest.fixture(scope="module")
def bridge_model(tiny_hf_dir) -> LoadedModel:
    return load_model(ModelSpec(source="hf_dir", path=str(tiny_hf_dir), device="cpu"))


@pytest.fixture(params=["hooked", "bridge"])
def any_model(request, tiny_model, bridge_model) -> LoadedModel:
    return tiny_model if request.param == "hooked" else bridge_model


def test_card_and_sites(any_model: LoadedModel):
    card = any_model.card
    assert (card.d_model, card.n_layers, card.d_vocab, card.n_ctx) == (D_MODEL, N_LAYERS, len(tiny_vocab()), N_CTX)
    assert card.device == "cpu" and card.dtype == "float32" and card.n_params > 0
    assert any_model.hook_names() == ALL_SITES
    assert any_model.layers() == [0, 1]


def test_tokenize_pads_right_with_bos_first(any_model: LoadedModel):
    vocab = tiny_vocab()
    tokens = any_model.to_tokens(["the cat sat", "a dog"])
    assert tokens.dtype == torch.long and tokens.shape == (2, 4)
    assert tokens[0].tolist() == [vocab["<bos>"], vocab["the"], vocab["cat"], vocab["sat"]]
    assert tokens[1].tolist() == [vocab["<bos>"], vocab["a"], vocab["dog"], vocab["<pad>"]]
    assert any_model.to_tokens("the cat", prepend_bos=False)[0].tolist() == [vocab["the"], vocab["cat"]]
    assert any_model.to_str_tokens(tokens[0]) == ["<bos>", "the", "cat", "sat"]
    assert any_model.to_string(tokens[0, 1:]) == "the cat sat"


def test_tokenize_prompt_reports_truncation_and_unknown_words(any_model: LoadedModel):
    prompt = any_model.tokenize_prompt("the zebra sat on the mat", max_tokens=4)
    assert prompt.tokens.shape == (1, 4)
    assert prompt.str_tokens == ["<bos>", "the", "<unk>", "sat"]
    assert prompt.n_truncated == 3 and prompt.unknown_positions == [2]
    long = any_model.tokenize_prompt(" ".join(["day"] * 40))
    assert long.tokens.shape == (1, N_CTX) and long.n_truncated == 41 - N_CTX
    for empty in ["", "   \n\t"]:
        with pytest.raises(PromptError):
            any_model.tokenize_prompt(empty)


def test_run_returns_float32_activations_and_stops_early_with_the_same_values(any_model: LoadedModel):
    tokens = any_model.to_tokens(["the cat sat on the mat", "monday is a day"])
    full = any_model.run(tokens, ALL_SITES, return_logits=True)
    assert full["logits"].shape == (2, tokens.shape[1], len(tiny_vocab()))
    for name in ALL_SITES:
        assert full[name].shape == (2, tokens.shape[1], D_MODEL) and full[name].dtype == torch.float32
    early = any_model.run(tokens, ["blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"])
    assert set(early) == {"blocks.0.hook_resid_post", "blocks.0.hook_mlp_out"}
    for name, value in early.items():
        torch.testing.assert_close(value, full[name])
    # resid_post of block L is resid_pre of block L+1
    torch.testing.assert_close(full["blocks.0.hook_resid_post"], full["blocks.1.hook_resid_pre"])
    # and resid_post = resid_mid + mlp_out = resid_pre + attn_out + mlp_out
    block = {s: full[f"blocks.1.{s}"] for s in BLOCK_SITES}
    torch.testing.assert_close(block["hook_resid_pre"] + block["hook_attn_out"] + block["hook_mlp_out"],
                               block["hook_resid_post"], atol=1e-5, rtol=1e-5)


def test_run_does_not_execute_blocks_after_the_deepest_needed(tiny_model: LoadedModel):
    calls = []
    handle = tiny_model.model.blocks[1].register_forward_hook(lambda *args: calls.append(1))
    try:
        tiny_model.run(tiny_model.to_tokens(["the cat"]), ["blocks.0.hook_resid_post"])
        assert calls == []
        tiny_model.run(tiny_model.to_tokens(["the cat"]), ["blocks.1.hook_resid_pre"])
        assert calls == [1]
    finally:
        handle.remove()


def test_unembed_of_the_last_residual_is_the_logits(any_model: LoadedModel):
    tokens = any_model.to_tokens(["paris is the capital of france"])
    out = any_model.run(tokens, [f"blocks.{N_LAYERS - 1}.hook_resid_post"], return_logits=True)
    lens = any_model.unembed(out[f"blocks.{N_LAYERS - 1}.hook_resid_post"])
    torch.testing.assert_close(lens, out["logits"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(any_model.unembed(out[f"blocks.{N_LAYERS - 1}.hook_resid_post"][0]),
                               out["logits"][0], atol=1e-4, rtol=1e-4)
    assert any_model.W_U.shape == (D_MODEL, len(tiny_vocab()))


def test_unknown_hook_and_overlong_batch_are_clear_errors(tiny_model: LoadedModel):
    with pytest.raises(UnknownHookError, match="blocks.7.hook_resid_post"):
        tiny_model.run(tiny_model.to_tokens(["the cat"]), ["blocks.7.hook_resid_post"])
    with pytest.raises(AtlasError, match="longer than"):
        tiny_model.run(torch.zeros((1, N_CTX + 1), dtype=torch.long), ["blocks.0.hook_resid_post"])


def test_runs_from_threads_are_serialised_and_agree(tiny_model: LoadedModel):
    tokens = tiny_model.to_tokens(["the king and the queen", "one two three"])
    expected = tiny_model.run(tokens, ["blocks.1.hook_resid_post"])["blocks.1.hook_resid_post"]
    results, errors = [], []

    def work():
        try:
            results.append(tiny_model.run(tokens, ["blocks.1.hook_resid_post"])["blocks.1.hook_resid_post"])
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    with tiny_model.lock:  # a held lock keeps every other run waiting
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        threads[0].join(timeout=0.3)
        assert results == []
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    for r in results:
        torch.testing.assert_close(r, expected)


def test_organism_source_loads_through_the_organism_module(fake_organism):
    model = load_model(ModelSpec(source="organism", checkpoint="step_000000", device="cpu"))
    assert model.card.revision == "step_000000" and model.card.source == "organism"
    assert model.hook_names() == ALL_SITES
    with pytest.raises(UnknownModelError, match="step_000000, final"):
        load_model(ModelSpec(source="organism", checkpoint="step_999", device="cpu"))


def test_real_organism_loads(tiny_organism_dir):
    """The organism source on the tiny organism built by the real pipeline (tests/fixtures_organism.py)."""
    model = load_model(ModelSpec(source="organism", path=str(tiny_organism_dir), device="cpu"))
    tokens = model.to_tokens(["monday"])
    acts = model.run(tokens, [model.hook_names()[-1]], return_logits=True)
    assert acts["logits"].shape[-1] == model.d_vocab
    torch.testing.assert_close(model.unembed(acts[model.hook_names()[-1]]), acts["logits"], atol=1e-4, rtol=1e-4)


def test_unknown_transformer_lens_name_suggests_close_names():
    with pytest.raises(UnknownModelError, match="gpt2"):
        load_model(ModelSpec(source="transformer_lens", name="gpt-2-smal", device="cpu"))
    assert official_tl_name("gpt2-small") == "gpt2"
    assert official_tl_name("pythia-70m-deduped") == "EleutherAI/pythia-70m-deduped"


def test_checkpoint_strings():
    assert parse_tl_checkpoint(None) == {}
    assert parse_tl_checkpoint("12") == {"checkpoint_index": 12}
    assert parse_tl_checkpoint("index:3") == {"checkpoint_index": 3}
    assert parse_tl_checkpoint("value:143000") == {"checkpoint_value": 143000}
    assert parse_tl_checkpoint("step=1000") == {"checkpoint_value": 1000}
    with pytest.raises(UnknownModelError):
        parse_tl_checkpoint("latest-ish")


def test_pythia_checkpoints_resolve_without_network():
    from core.sources.models import _checkpoint_revision

    assert _checkpoint_revision("EleutherAI/pythia-70m-deduped", {"checkpoint_index": 0}) == "step0"
    assert _checkpoint_revision("EleutherAI/pythia-70m-deduped", {"checkpoint_value": 143000}) == "step143000"
    with pytest.raises(UnknownModelError, match="out of range"):
        _checkpoint_revision("EleutherAI/pythia-70m-deduped", {"checkpoint_index": 10_000})
    with pytest.raises(UnknownModelError, match="nearest"):
        _checkpoint_revision("EleutherAI/pythia-70m-deduped", {"checkpoint_value": 1001})
    with pytest.raises(UnknownModelError, match="no training checkpoints"):
        _checkpoint_revision("gpt2", {"checkpoint_index": 1})


def test_bad_specs_are_clear_errors(tmp_path, tiny_hf_dir):
    with pytest.raises(UnknownModelError, match="source"):
        load_model(ModelSpec(source="ftp"))
    with pytest.raises(AtlasError, match="dtype"):
        load_model(ModelSpec(source="hf_dir", path=str(tiny_hf_dir), dtype="int3"))
    with pytest.raises(UnknownModelError, match="config.json"):
        load_model(ModelSpec(source="hf_dir", path=str(tmp_path), device="cpu"))
    no_tokenizer = tmp_path / "bare"
    no_tokenizer.mkdir()
    (no_tokenizer / "config.json").write_text((tiny_hf_dir / "config.json").read_text())
    with pytest.raises(AtlasError, match="tokenizer"):
        load_model(ModelSpec(source="hf_dir", path=str(no_tokenizer), device="cpu"))
