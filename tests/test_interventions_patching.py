"""Activation patching against TransformerLens's own patching functions, and a known answer on both backends."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.interventions import InterventionError, PatchingResult, active_hook_count, patch_activations
from core.interventions.patching import patch_tokens

CLEAN = "the king and the queen"
CORRUPTED = "the man and the woman"


def _tl_grid(model, correct_id, wrong_id):
    """TransformerLens's get_act_patch_block_every (resid_pre, attn_out, mlp_out) with the normalised
    logit-difference metric, on the underlying HookedTransformer."""
    from transformer_lens import patching

    net = model.model
    clean = model.to_tokens(CLEAN)
    corrupted = model.to_tokens(CORRUPTED)
    clean_logits, clean_cache = net.run_with_cache(clean)
    corrupted_logits = net(corrupted)

    def ld(logits):
        last = logits[:, -1].double()
        return last[:, correct_id] - last[:, wrong_id]

    ld_clean, ld_corrupted = ld(clean_logits)[0], ld(corrupted_logits)[0]

    def metric(logits):
        return ((ld(logits)[0] - ld_corrupted) / (ld_clean - ld_corrupted)).float()

    return patching.get_act_patch_block_every(net, corrupted, clean_cache, metric), float(ld_clean), float(ld_corrupted)


def test_matches_transformer_lens_patching(tiny_model):
    ids = tiny_model.encode("mat")[0], tiny_model.encode("dog")[0]
    with torch.inference_mode():
        reference, ld_clean, ld_corrupted = _tl_grid(tiny_model, *ids)
    for batch_size in (1, 4):
        result = patch_activations(tiny_model, CLEAN, CORRUPTED, correct="mat", wrong="dog", batch_size=batch_size)
        assert result.components == ["resid_pre", "attn_out", "mlp_out"]
        assert result.ld_clean == ld_clean and result.ld_corrupted == ld_corrupted
        ours = np.stack([result.grid(c) for c in result.components])
        assert ours.shape == tuple(reference.shape) == (3, 2, 6)
        if batch_size == 1:  # the same forward passes as TransformerLens: the same floats (stored as float32)
            assert np.array_equal(ours.astype(np.float32), reference.numpy())
        else:
            np.testing.assert_allclose(ours, reference.numpy(), atol=1e-5)
    assert active_hook_count(tiny_model) == 0
    # layer-0 resid_pre at positions where the prompts agree recovers nothing
    same = [p for p, (a, b) in enumerate(zip(result.clean_tokens, result.corrupted_tokens)) if a == b]
    assert np.all(np.abs(result.grid("resid_pre")[0, same]) < 1e-5)  # batched passes: float noise only


@pytest.fixture(scope="module")
def bridge_model(tiny_hf_dir):
    from core.sources.models import ModelSpec, load_model

    return load_model(ModelSpec(source="hf_dir", path=str(tiny_hf_dir), device="cpu"))


@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_one_differing_token_is_fully_recovered_at_the_embedding(request, tiny_model, backend):
    """Prompts that differ in one token: patching layer 0's resid_pre there makes the corrupted run the
    clean run (score exactly 1); at any other position it changes nothing (exactly 0)."""
    model = tiny_model if backend == "hooked" else request.getfixturevalue("bridge_model")
    result = patch_activations(model, "the cat sat on the", "the dog sat on the", correct="mat", wrong="red",
                               components=["resid_pre"])
    grid = result.grid("resid_pre")
    assert grid[0, 2] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.abs(grid[0, [0, 1, 3, 4, 5]]) < 1e-5)
    assert result.clean_tokens[2] == "cat" and result.corrupted_tokens[2] == "dog"
    assert PatchingResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert active_hook_count(model) == 0


def test_progress_reports_every_pass(tiny_model):
    calls = []
    tokens = tiny_model.to_tokens(CLEAN)
    patch_tokens(tiny_model, tokens, tiny_model.to_tokens(CORRUPTED), 3, 4, components=["attn_out", "mlp_out"],
                 batch_size=4, progress=lambda done, total, left: calls.append((done, total)))
    assert calls[-1] == (8, 8) and len(calls) == 8  # 2 components x 2 layers x ceil(6 / 4) chunks


@pytest.mark.parametrize("clean, corrupted, kwargs, message", [
    (CLEAN, "the man and the woman sat", {}, "clean prompt is 6 tokens and the corrupted prompt 7"),
    (CLEAN, CORRUPTED, {"correct": "mat", "wrong": "mat"}, "the same token"),
    (CLEAN, CORRUPTED, {"correct": "the cat"}, "is 2 tokens"),
    (CLEAN, CLEAN, {}, "same logit difference"),
    (CLEAN, CORRUPTED, {"components": ["resid_post"]}, "Unknown patching component"),
])
def test_bad_patching_requests_say_what_is_wrong(tiny_model, clean, corrupted, kwargs, message):
    kwargs = {"correct": "mat", "wrong": "dog", **kwargs}
    with pytest.raises(InterventionError, match=message):
        patch_activations(tiny_model, clean, corrupted, **kwargs)
    assert active_hook_count(tiny_model) == 0
