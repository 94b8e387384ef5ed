"""The dashboard's intervention requests (core.interventions.requests): the Steer page's text read into typed
requests, every bad input refused before a forward pass with a message, content keys, the store as a cache
(a stored result is read back, never recomputed), the "what does this feature do" pair, and the figures."""

from __future__ import annotations

import numpy as np
import pytest

from core.interventions import InterventionError, ablate, active_hook_count, steer
from core.interventions.requests import (
    AblationRequest,
    PatchRequest,
    SteerRequest,
    ablation_request,
    context_prompt,
    feature_effect_requests,
    load_result,
    parse_feature_strengths,
    parse_features,
    parse_scales,
    patch_request,
    request_key,
    run_request,
    steering_request,
)

PROMPT = "the king and the queen"


@pytest.fixture(scope="module")
def sae():
    from core.sources.saes import wrap_sae
    from tests.fixtures_models import make_tiny_sae

    return wrap_sae(make_tiny_sae("standard", hook_name="blocks.0.hook_resid_post", seed=2))


def test_feature_and_scale_texts_are_read_as_typed_values():
    assert parse_feature_strengths("12:4, 7:-2.5", 48) == ((12, 4.0), (7, -2.5))
    assert parse_feature_strengths("#3 : 1e1; 5", 48, default_strength=2.0) == ((3, 10.0), (5, 2.0))
    assert parse_features("1 2,3", 48) == (1, 2, 3)
    assert parse_scales("-2, 0.5 , 4") == (-2.0, 0.5, 4.0)


@pytest.mark.parametrize("call, needle", [
    (lambda: parse_feature_strengths("", 48), "at least one feature"),
    (lambda: parse_feature_strengths("99:1", 48), "Feature 99 does not exist"),
    (lambda: parse_feature_strengths("x:1", 48), "'x' is not a feature id"),
    (lambda: parse_feature_strengths("3:big", 48), "not a number"),
    (lambda: parse_feature_strengths("3:nan", 48), "not a number"),
    (lambda: parse_features("3, 3", 48), "listed twice"),
    (lambda: parse_features("-1", 48), "not a feature id"),
    (lambda: parse_scales("1, 1"), "listed twice"),
    (lambda: parse_scales(" "), "at least one scale"),
])
def test_bad_texts_say_what_is_wrong(call, needle):
    with pytest.raises(InterventionError, match=needle):
        call()


def test_requests_check_prompts_and_tokens_before_running(tiny_model, sae):
    with pytest.raises(InterventionError, match="prompt is empty"):
        steering_request(tiny_model, sae, prompt="  ", features="1:2")
    with pytest.raises(InterventionError, match="From position"):
        steering_request(tiny_model, sae, prompt=PROMPT, features="1:2", from_position=99)
    with pytest.raises(InterventionError, match="is 2 tokens"):
        ablation_request(tiny_model, sae, prompt=PROMPT, features="1", target="the king")
    with pytest.raises(InterventionError, match="same length"):
        patch_request(tiny_model, clean_prompt="the king is", corrupted_prompt="the red king is", correct="paris",
                      wrong="france")
    with pytest.raises(InterventionError, match="same token"):
        patch_request(tiny_model, clean_prompt="the king is", corrupted_prompt="the queen is", correct="paris",
                      wrong="paris")
    request = steering_request(tiny_model, sae, prompt=PROMPT, features="3:2, 5:-1", scales="1, 4", mode="clamp")
    assert request == SteerRequest(prompt=PROMPT, hook_name=sae.hook_name, features=((3, 2.0), (5, -1.0)),
                                   mode="clamp", scales=(1.0, 4.0))
    assert SteerRequest.from_dict(request.to_dict()) == request


def test_keys_follow_the_request_the_model_the_sae_and_the_harvest(tiny_model, sae):
    a = ablation_request(tiny_model, sae, prompt=PROMPT, features="1, 2")
    key = request_key(tiny_model, a, sae_id="sae-a")
    assert key == request_key(tiny_model, AblationRequest.from_dict(a.to_dict()), sae_id="sae-a")
    assert key != request_key(tiny_model, a, sae_id="sae-b")
    assert key != request_key(tiny_model, ablation_request(tiny_model, sae, prompt=PROMPT, features="2, 1"),
                              sae_id="sae-a")
    assert key == request_key(tiny_model, a, sae_id="sae-a", harvest_key="h1")    # zero ablation reads no harvest
    mean = ablation_request(tiny_model, sae, prompt=PROMPT, features="1, 2", mode="mean")
    with pytest.raises(InterventionError, match="harvest"):
        request_key(tiny_model, mean, sae_id="sae-a")
    assert request_key(tiny_model, mean, sae_id="sae-a", harvest_key="h1") != request_key(
        tiny_model, mean, sae_id="sae-a", harvest_key="h2")


def test_a_stored_result_is_read_back_and_not_recomputed(tiny_model, sae, tmp_path, monkeypatch):
    from core.interventions import requests as module
    from core.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    request = steering_request(tiny_model, sae, prompt=PROMPT, features="3:6", scales="-1, 1", max_new_tokens=5)
    key = request_key(tiny_model, request, sae_id="s")
    assert load_result(store, key, module.SteeringResult) is None
    first = run_request(store, key, request, tiny_model, sae)
    direct = steer(tiny_model, sae, PROMPT, [(3, 6.0)], scales=(-1.0, 1.0), max_new_tokens=5)
    assert first.to_dict() == direct.to_dict()                  # the request runs the library call it names
    assert active_hook_count(tiny_model) == 0

    def refuse(*args, **kwargs):
        raise AssertionError("a stored result was computed again")

    monkeypatch.setattr(module, "compute", refuse)
    again = run_request(store, key, request, tiny_model, sae)
    assert again.to_dict() == first.to_dict()
    # a document that no longer fits the type is computed afresh (here: refused by the stub)
    store.save(key, {}, {"kind": "intervention:steering", "result": {"mode": "add"}})
    assert load_result(store, key, module.SteeringResult) is None


def test_ablation_and_patching_requests_run_the_library(tiny_model, sae, tmp_path):
    from core.store import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    a = ablation_request(tiny_model, sae, prompt=PROMPT, features="1, 2", target="queen")
    got = run_request(store, request_key(tiny_model, a, sae_id="s"), a, tiny_model, sae)
    assert got.to_dict() == ablate(tiny_model, sae, PROMPT, [1, 2], target="queen").to_dict()
    p = patch_request(tiny_model, clean_prompt="the king is in paris", corrupted_prompt="the queen is in france",
                      correct="king", wrong="queen")
    assert p == PatchRequest.from_dict(p.to_dict())
    patched = run_request(store, request_key(tiny_model, p), p, tiny_model)
    assert len(patched.scores) == 3 and np.asarray(patched.scores[0]).shape == (tiny_model.n_layers, 6)


def test_feature_effect_requests_and_the_context_prompt(tiny_model, sae):
    ablation, steering = feature_effect_requests(tiny_model, sae, 7, PROMPT, relative=True)
    assert ablation.features == (7,) and ablation.mode == "zero" and ablation.prompt == PROMPT
    assert steering.features == ((7, 1.0),) and steering.relative and len(steering.scales) == 3
    _, raw = feature_effect_requests(tiny_model, sae, 7, PROMPT, relative=False, strength=0.25)
    assert raw.features == ((7, 0.25),) and not raw.relative
    ids = tiny_model.encode("the king and the queen")
    window = [-1, -1, tiny_model.bos_token_id, *ids, *tiny_model.encode("is")]
    assert context_prompt(tiny_model, window, 2 + len(ids)) == "the king and the queen"   # up to the centre
    # a packed corpus joins documents with BOS: the prompt is the document the feature fired in
    packed = [*tiny_model.encode("red cat"), tiny_model.bos_token_id, *ids, *tiny_model.encode("is")]
    assert context_prompt(tiny_model, packed, 2 + len(ids)) == "the king and the queen"
    with pytest.raises(InterventionError, match="no harvested context"):
        context_prompt(tiny_model, [-1, -1, -1], 1)


def test_figures_show_completions_shifts_and_patching(tiny_model, sae):
    from core.figures.interventions import ablation_figure, completions_frame, patching_figure
    from core.interventions import patch_activations

    steered = steer(tiny_model, sae, PROMPT, [(3, 40.0)], scales=(1.0, 0.0), max_new_tokens=4)
    frame = completions_frame(steered)
    assert frame["steering"].iloc[0] == "unsteered" and len(frame) == 3
    assert frame["differs from token"].iloc[2] == "same"                       # scale 0 adds nothing
    assert frame["steering"].iloc[1].startswith("x1 (#3 +40")
    ablated = ablate(tiny_model, sae, "<b>king</b> and the queen", [1, 2, 3])
    fig = ablation_figure(ablated)
    bars = fig.data[0]
    assert len(bars.y) == len(ablated.rose) + len(ablated.fell)
    assert all((c > 0) == (colour == "#d6604d") for c, colour in zip(bars.x, bars.marker.color))
    patched = patch_activations(tiny_model, "the king is in paris", "the queen is in france", correct="king",
                                wrong="queen")
    fig = patching_figure(patched)
    assert len(fig.data) == 3 and np.allclose(fig.data[0].z, patched.grid("resid_pre"), equal_nan=True)
    assert fig.data[0].zmid == 0
    from dataclasses import replace

    from core.interventions.requests import patching_note

    assert patching_note(replace(patched, ld_clean=2.0, ld_corrupted=-1.0)) is None
    assert "almost the same logit difference" in patching_note(replace(patched, ld_clean=-1.714, ld_corrupted=-1.713))
