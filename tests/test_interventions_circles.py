"""Turning a cyclic concept: the rotation's algebra on planted circles, and the whole experiment on a planted
model whose answer is the item nearest on the circle (every rotation must succeed, the control must not)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.interventions import CircleTurn, CycleFit, InterventionError, RotationExperiment, active_hook_count
from core.interventions.circles import (
    cycle_from_means,
    fit_cycle,
    fourier_coefficients,
    item_means,
    random_plane_delta,
    rotation_delta,
    rotation_experiment,
    target_delta,
    turn_on_circle,
)
from tests.interventions_helpers import circle_vectors, planted_model

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def test_fourier_coefficients_rebuild_the_item_means_exactly():
    rng = np.random.default_rng(0)
    for k in (7, 12):
        M = rng.standard_normal((k, 10))
        fit = cycle_from_means(M, [str(i) for i in range(k)], "site", [1] * k)
        center, _, _ = fourier_coefficients(M)
        np.testing.assert_allclose(center + item_means(fit, np.arange(k)), M, atol=1e-12)


@pytest.mark.parametrize("k, frequency", [(7, 3), (12, 1), (12, 5)])
def test_rotation_in_the_best_plane_moves_a_planted_circle_by_s_items(k, frequency):
    rng = np.random.default_rng(1)
    offset = rng.standard_normal(16)
    M = offset + circle_vectors(k, frequency)
    fit = cycle_from_means(M, [str(i) for i in range(k)], "site", [1] * k)
    assert fit.best_frequency == frequency and fit.best_share == pytest.approx(1.0)
    for s in range(1, k):
        moved = M + rotation_delta(fit, M, s)
        np.testing.assert_allclose(moved, np.roll(M, -s, axis=0), atol=1e-9)  # item i -> item i + s
    half = M[0] + rotation_delta(fit, M[:1], 0.5)[0]  # a dial between two items stays on the circle
    assert np.linalg.norm(half - offset) == pytest.approx(np.linalg.norm(M[0] - offset))


def test_every_plane_maps_any_item_mean_to_the_target_item_mean():
    rng = np.random.default_rng(2)
    M = rng.standard_normal((12, 20))  # no circle at all: the full Fourier shift still permutes the items
    fit = cycle_from_means(M, [str(i) for i in range(12)], "site", [1] * 12)
    for s in (1, 5, 6, 11):
        np.testing.assert_allclose(M + rotation_delta(fit, M, s, frequencies="all"), np.roll(M, -s, axis=0), atol=1e-9)
    # the best plane alone does not, and target_delta puts the plane coordinates exactly at the target's
    assert not np.allclose(M + rotation_delta(fit, M, 3), np.roll(M, -3, axis=0), atol=1e-3)
    moved = M + target_delta(fit, M, (np.arange(12) + 3) % 12)
    again = target_delta(fit, moved, (np.arange(12) + 3) % 12)
    np.testing.assert_allclose(again, 0.0, atol=1e-9)
    with pytest.raises(InterventionError, match="not on a cycle of 12 items"):
        rotation_delta(fit, M, 1, frequencies=[7])


def test_random_plane_control_has_the_requested_norms():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 16))
    norms = np.array([0.1, 1.0, 2.0, 3.0, 0.5])
    delta = random_plane_delta(x, np.full(5, 1.0), norms, rng)
    np.testing.assert_allclose(np.linalg.norm(delta, axis=1), norms)


@pytest.fixture(scope="module")
def weekday_model(tiny_hooked):
    """Embedding of weekday i = point i of a frequency-3 circle, unembedding the same: the model answers
    the prompt "<weekday>" with that weekday (the nearest point on the circle)."""
    points = circle_vectors(7, 3, seed=4)
    embed = {w: p for w, p in zip(WEEKDAYS, points)}
    return planted_model(tiny_hooked.tokenizer, embed, embed)


def test_rotation_experiment_on_a_planted_circle(weekday_model):
    facts = [(w, w) for w in WEEKDAYS]
    fit = fit_cycle(weekday_model, facts, WEEKDAYS, site="blocks.0.hook_resid_post")
    assert fit.best_frequency == 3 and fit.n_prompts == [1] * 7
    result = rotation_experiment(weekday_model, fit, WEEKDAYS + ["the cat"], seed=0)
    assert result.n_prompts == 7 and result.n_excluded == 1  # "the cat" is not answered with a weekday
    circle = result.outcome("circle")
    assert (circle.n_trials, circle.moved_by_steps, circle.changed) == (42, 42, 42)
    assert circle.per_step_moved == [7] * 6 and circle.per_step_trials == [7] * 6
    assert result.outcome("circle to target mean").moved_by_steps == 42
    assert result.outcome("all Fourier planes").moved_by_steps == 42
    control = result.outcome("random plane")
    assert control.mean_change_norm == pytest.approx(circle.mean_change_norm)
    assert control.moved_by_steps < 21  # a random plane of the same norm: far less often exactly s
    assert RotationExperiment.from_dict(json.loads(json.dumps(result.to_dict()))) == result
    assert CycleFit.from_dict(fit.to_dict()) == fit
    assert active_hook_count(weekday_model) == 0


def test_the_dial_turns_the_answer(weekday_model):
    fit = fit_cycle(weekday_model, [(w, w) for w in WEEKDAYS], WEEKDAYS, site="blocks.0.hook_resid_post")
    turn = turn_on_circle(weekday_model, fit, "friday", 3)
    assert (turn.answer_before, turn.answer_after) == ("friday", "monday")
    assert np.argmax(turn.item_probs_before) == 4 and np.argmax(turn.item_probs_after) == 0
    assert turn.frequencies == [3]
    assert CircleTurn.from_dict(turn.to_dict()) == turn
    back = turn_on_circle(weekday_model, fit, "friday", -1, frequencies="all")
    assert back.answer_after == "thursday"
    with pytest.raises(InterventionError, match="finite number"):
        turn_on_circle(weekday_model, fit, "friday", float("inf"))


def test_a_cycle_needs_every_item_answered(weekday_model):
    with pytest.raises(InterventionError, match=r"none for \['sunday'\]"):
        fit_cycle(weekday_model, [(w, w) for w in WEEKDAYS[:-1]], WEEKDAYS, site="blocks.0.hook_resid_post")
