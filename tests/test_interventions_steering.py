"""Steering and clamping: what is added where, the sweep, greedy and seeded sampling, errors, JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.interventions import (
    InterventionError,
    SteeringFeature,
    SteeringResult,
    active_hook_count,
    clamp,
    intervene,
    steer,
    steer_vector,
)
from core.interventions.generation import additive_edit, clamp_edit
from core.jsonable import ResultFormatError

PROMPT = "the cat sat on the"


@pytest.fixture(scope="module")
def sae0():
    from core.sources.saes import wrap_sae
    from tests.fixtures_models import make_tiny_sae

    return wrap_sae(make_tiny_sae("standard", hook_name="blocks.0.hook_resid_post"))


@pytest.fixture(scope="module")
def topk_sae1():
    from core.sources.saes import wrap_sae
    from tests.fixtures_models import make_tiny_sae

    return wrap_sae(make_tiny_sae("topk", hook_name="blocks.1.hook_resid_pre", seed=3))


def _site_activation(model, tokens, site, hooks):
    seen = {}

    def capture(act, hook):
        seen["x"] = act.detach().clone()
        return act

    with intervene(model, [*hooks, (site, capture)]):
        model.logits(tokens)
    return seen["x"]


def test_additive_edit_adds_c_times_w_dec_from_the_position_on(tiny_model, sae0):
    tokens = tiny_model.to_tokens(PROMPT).repeat(2, 1)
    site = sae0.hook_name
    w = sae0.W_dec[3]
    deltas = torch.stack([torch.zeros_like(w), 2.5 * w])
    clean = _site_activation(tiny_model, tokens, site, [])
    # a capture hook added after the edit on the same site sees the edited activation
    edited = _site_activation(tiny_model, tokens, site, [(site, lambda a, hook: additive_edit(deltas, 2)(a))])
    assert torch.equal(edited[0], clean[0])  # row 0 is the unsteered row
    assert torch.equal(edited[1, :2], clean[1, :2])  # before from_position: untouched
    assert torch.allclose(edited[1, 2:] - clean[1, 2:], (2.5 * w).expand(tokens.shape[1] - 2, -1), atol=1e-6)


@pytest.mark.parametrize("architecture", ["standard", "topk"])
def test_clamp_changes_only_the_clamped_feature(tiny_model, architecture):
    """decode(z') - decode(z) = (value - z_i) W_dec[i]: the SAE error term and every other feature stay."""
    from core.sources.saes import wrap_sae
    from tests.fixtures_models import make_tiny_sae

    sae = wrap_sae(make_tiny_sae(architecture, hook_name="blocks.0.hook_resid_post", seed=5))
    tokens = tiny_model.to_tokens(PROMPT).repeat(2, 1)
    clean = _site_activation(tiny_model, tokens, sae.hook_name, [])
    z = sae.encode(clean[1])
    feature = int(z.sum(0).argmax())
    edited = clamp_edit(sae, [feature], torch.tensor([[0.0], [7.0]]), 0)(clean)
    assert torch.equal(edited[0], clean[0])
    expected = (7.0 - z[:, feature])[:, None] * sae.W_dec[feature]
    assert torch.allclose(edited[1] - clean[1], expected, atol=1e-5)


def test_steer_sweep_rows_and_scale_zero_is_unsteered(tiny_model, sae0):
    result = steer(tiny_model, sae0, PROMPT, [(3, 40.0)], scales=[0.0, 1.0, -1.0], max_new_tokens=6)
    assert result.mode == "add" and result.site == sae0.hook_name
    assert [c.scale for c in result.steered] == [0.0, 1.0, -1.0]
    assert result.steered[0].token_ids == result.unsteered.token_ids
    assert result.steered[1].token_ids != result.unsteered.token_ids  # a strong push changes the greedy text
    assert result.prompt_tokens[0] == "<bos>" and len(result.unsteered.tokens) == 6
    assert result.vector_norm == pytest.approx(40.0 * float(sae0.W_dec[3].norm()), rel=1e-5)
    # greedy unsteered completion = the model's own greedy continuation, computed here step by step
    tokens = tiny_model.to_tokens(PROMPT)
    for token in result.unsteered.token_ids:
        assert int(tiny_model.logits(tokens)[0, -1].argmax()) == token
        tokens = torch.cat([tokens, torch.tensor([[token]])], dim=1)
    assert active_hook_count(tiny_model) == 0


def test_unsteered_row_does_not_depend_on_the_sweep_and_sampling_is_seeded(tiny_model, sae0):
    one = steer(tiny_model, sae0, PROMPT, [(3, 10.0)], scales=[1.0], temperature=1.5, seed=7, max_new_tokens=8)
    three = steer(tiny_model, sae0, PROMPT, [(3, 10.0)], scales=[1.0, 4.0, -2.0], temperature=1.5, seed=7,
                  max_new_tokens=8)
    again = steer(tiny_model, sae0, PROMPT, [(3, 10.0)], scales=[1.0], temperature=1.5, seed=7, max_new_tokens=8)
    other = steer(tiny_model, sae0, PROMPT, [(3, 10.0)], scales=[1.0], temperature=1.5, seed=8, max_new_tokens=8)
    assert one == again
    assert three.unsteered == one.unsteered and three.steered[0] == one.steered[0]
    assert other.unsteered.token_ids != one.unsteered.token_ids  # 8 draws over a 50-word vocabulary at T = 1.5


def test_max_activation_scaling_and_multiple_features(tiny_model, sae0):
    peaks = np.zeros(sae0.d_sae)
    peaks[[3, 5]] = [2.0, 0.5]
    result = steer(tiny_model, sae0, PROMPT, [SteeringFeature(3, 1.5), (5, -4.0)], max_activations=peaks,
                   max_new_tokens=2)
    assert result.coefficients == [3.0, -2.0] and result.scaled_by_max_activation
    expected = (3.0 * sae0.W_dec[3] - 2.0 * sae0.W_dec[5]).double().norm()
    assert result.vector_norm == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(InterventionError, match="never fired"):
        steer(tiny_model, sae0, PROMPT, [(4, 1.0)], max_activations=peaks)


def test_steer_vector_equals_steer_with_the_decoder_row(tiny_model, sae0):
    a = steer(tiny_model, sae0, PROMPT, [(3, 20.0)], scales=[1.0, 2.0], max_new_tokens=5, from_position=3)
    b = steer_vector(tiny_model, PROMPT, 20.0 * sae0.W_dec[3].numpy(), site=sae0.hook_name, scales=[1.0, 2.0],
                     max_new_tokens=5, from_position=3)
    assert [c.token_ids for c in a.steered] == [c.token_ids for c in b.steered]
    assert b.mode == "vector" and b.features == []


def test_clamp_generation_on_both_backends(tiny_model, topk_sae1, tiny_hf_dir):
    from core.sources.models import ModelSpec, load_model

    bridge = load_model(ModelSpec(source="hf_dir", path=str(tiny_hf_dir), device="cpu"))
    for model in (tiny_model, bridge):
        result = clamp(model, topk_sae1, PROMPT, [(2, 0.0), (7, 30.0)], scales=[1.0, 0.0], max_new_tokens=4)
        assert result.mode == "clamp" and result.vector_norm is None and result.coefficients == [0.0, 30.0]
        eos = model.tokenizer.eos_token_id  # a row stops at the end-of-text token
        assert len(result.steered) == 2
        assert all(len(c.token_ids) == 4 or (len(c.token_ids) < 4 and c.token_ids[-1] == eos) for c in result.steered)
        assert active_hook_count(model) == 0
        steered = steer(model, topk_sae1, PROMPT, [(7, 300.0)], max_new_tokens=4)
        assert steered.steered[0].token_ids != steered.unsteered.token_ids


def test_result_round_trips_through_json(tiny_model, sae0):
    result = clamp(tiny_model, sae0, PROMPT, [(3, 2.0)], scales=[1.0, 3.0], max_new_tokens=3)
    back = SteeringResult.from_dict(json.loads(json.dumps(result.to_dict())))
    assert back == result
    data = result.to_dict()
    data["steered"][0]["token_ids"] = ["x"]
    with pytest.raises(ResultFormatError, match=r"Completion.token_ids\[0\]: expected int, got str"):
        SteeringResult.from_dict(data)
    data = result.to_dict()
    data.pop("seed")
    with pytest.raises(ResultFormatError, match="SteeringResult: the field 'seed' is missing"):
        SteeringResult.from_dict(data)
    data = result.to_dict()
    data["comment"] = "?"
    with pytest.raises(ResultFormatError, match=r"SteeringResult: unknown field\(s\) comment"):
        SteeringResult.from_dict(data)


@pytest.mark.parametrize("kwargs, message", [
    ({"features": [(999, 1.0)]}, "Feature 999 does not exist"),
    ({"features": [(3, 1.0), (3, 2.0)]}, "listed twice"),
    ({"features": []}, "at least one feature"),
    ({"features": [(3, float("nan"))]}, "finite number"),
    ({"features": [(3, 1.0)], "max_new_tokens": 40}, "exceeds the model's context of 32"),
    ({"features": [(3, 1.0)], "from_position": 99}, "from_position must be a position 0..6"),
    ({"features": [(3, 1.0)], "temperature": -1.0}, "temperature"),
    ({"features": [(3, 1.0)], "scales": []}, "at least one scale"),
    ({"features": [(3, 1.0)], "site": "blocks.7.hook_resid_post"}, "not one of them"),
])
def test_bad_steering_requests_say_what_is_wrong(tiny_model, sae0, kwargs, message):
    features = kwargs.pop("features")
    with pytest.raises(InterventionError, match=message):
        steer(tiny_model, sae0, PROMPT, features, **kwargs)
    assert active_hook_count(tiny_model) == 0
