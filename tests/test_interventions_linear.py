"""Erasing and moving along a probe direction, on a planted model whose answer is the sign of one direction."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.interventions import (
    ErasureExperiment,
    InterventionError,
    active_hook_count,
    erasure_experiment,
    fit_probe_direction,
)
from core.interventions.linear import ShiftExperiment, erasure_edit, shift_experiment
from tests.fixtures_models import TINY_WORDS
from tests.interventions_helpers import planted_model

SITE = "blocks.0.hook_resid_post"
ANSWERS = ("red", "blue", "green")
UNRELATED = ["king", "queen", "man", "woman"]
SIGNED = [w for w in TINY_WORDS if w not in ANSWERS and w not in UNRELATED][:20]


@pytest.fixture(scope="module")
def signed_world(tiny_hooked):
    """Word i has "value" y_i = +-(1 + i / 10) along e0 (plus small noise in dims 2..15); the model answers
    red when x . e0 > 0, blue when < 0. The unrelated words sit along e1 and are answered green."""
    rng = np.random.default_rng(0)
    d = 16
    e0, e1 = np.eye(d)[0], np.eye(d)[1]
    values = np.array([(1 + i / 10) * (1 if i % 2 == 0 else -1) for i in range(len(SIGNED))])
    noise = np.zeros((len(SIGNED) + len(UNRELATED), d))
    noise[:, 2:] = 0.3 * rng.standard_normal((noise.shape[0], d - 2))
    embed = {w: y * e0 + noise[i] for i, (w, y) in enumerate(zip(SIGNED, values))}
    embed.update({w: 3 * e1 + noise[len(SIGNED) + i] for i, w in enumerate(UNRELATED)})
    model = planted_model(tiny_hooked.tokenizer, embed, {"red": e0, "blue": -e0, "green": e1})
    X = model.run(model.to_tokens(SIGNED), [SITE])[SITE][:, 1].double().numpy()
    return model, X, values


def test_the_probe_direction_is_the_planted_one(signed_world):
    _, X, values = signed_world
    probe = fit_probe_direction(X, values, site=SITE, attribute="value", groups=np.arange(len(values)))
    assert abs(probe.direction[0]) > 0.99 and probe.r2_held_out > 0.9
    assert np.linalg.norm(probe.direction) == pytest.approx(1.0)
    # the probe reads y = |w| (u . x) + const: moving x by 1 / |w| along u raises the reading by 1
    u = np.asarray(probe.direction)
    assert np.corrcoef(X @ u * probe.weight_norm, values)[0, 1] > 0.99


def test_erasure_edit_removes_the_component_relative_to_the_center():
    rng = np.random.default_rng(1)
    u = rng.standard_normal(8)
    u /= np.linalg.norm(u)
    center = rng.standard_normal(8)
    act = torch.tensor(rng.standard_normal((2, 5, 8)), dtype=torch.float32)
    directions = torch.tensor(np.stack([np.zeros(8), u]), dtype=torch.float32)
    centers = torch.tensor(np.stack([center, center]), dtype=torch.float32)
    out = erasure_edit(directions, centers, start=1)(act, None)
    assert torch.equal(out[0], act[0]) and torch.equal(out[1, 0], act[1, 0])  # zero direction; BOS kept
    proj = (out[1, 1:].double().numpy() - center) @ u
    np.testing.assert_allclose(proj, 0.0, atol=1e-5)
    rest = out[1, 1:].double().numpy() - act[1, 1:].double().numpy()
    np.testing.assert_allclose(rest - np.outer(rest @ u, u), 0.0, atol=1e-5)  # nothing off u moves


def test_erasing_the_direction_changes_its_answers_only(signed_world):
    model, X, values = signed_world
    probe = fit_probe_direction(X, values, site=SITE, attribute="value", groups=np.arange(len(values)))
    families = {"signed": [(w, "red" if y > 0 else "blue") for w, y in zip(SIGNED, values)],
                "unrelated": [(w, "green") for w in UNRELATED]}
    result = erasure_experiment(model, probe, families, n_random=4, seed=0)
    signed, unrelated = result.family("signed"), result.family("unrelated")
    assert signed.correct_before == 20 and unrelated.correct_before == 4
    assert signed.changed == 10 and signed.correct_after == 10  # every word now reads the mean: one colour
    assert signed.control_changed < 2 and unrelated.changed == 0 and unrelated.control_changed == 0
    assert ErasureExperiment.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert active_hook_count(model) == 0


def test_moving_along_the_direction_moves_the_answers(signed_world):
    model, X, values = signed_world
    probe = fit_probe_direction(X, values, site=SITE, attribute="value", groups=np.arange(len(values)))
    result = shift_experiment(model, probe, SIGNED, [1] * len(SIGNED), shifts=(-10.0, 10.0), answers=("red", "blue"),
                              n_random=3)
    assert result.clean_counts == [10, 10]
    assert result.outcomes[0].counts == [0, 20] and result.outcomes[1].counts == [20, 0]
    assert ShiftExperiment.from_dict(result.to_dict()) == result
    with pytest.raises(InterventionError, match="one position per prompt"):
        shift_experiment(model, probe, SIGNED, [1], shifts=(1.0,), answers=("red",))


def test_organism_city_samples_and_positions(tiny_organism_dir):
    from core.interventions.organism import _last_city_position, city_latitude_samples
    from core.sources.models import ModelSpec, load_model
    from core.sources.organism import load_ground_truth

    model = load_model(ModelSpec(source="organism", path=str(tiny_organism_dir), device="cpu"))
    truth = load_ground_truth(tiny_organism_dir)
    X, latitude, groups = city_latitude_samples(model, truth, [SITE])
    facts = truth["eval_facts"]["train"]["city_direction"]
    assert X[SITE].shape == (2 * len(facts), model.d_model)  # two cities per prompt
    names = sorted(truth["cities"])
    assert np.array_equal(latitude, [truth["cities"][names[g]][1] for g in groups])
    prompt, _ = facts[0]
    words = prompt.split()
    assert _last_city_position(model, prompt, truth) == 1 + max(i for i, w in enumerate(words) if w in truth["cities"])
