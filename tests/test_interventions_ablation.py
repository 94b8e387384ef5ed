"""Feature ablation: the change in the next-token distribution against a hand-made run, and the errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.interventions import AblationResult, InterventionError, ablate, active_hook_count, feature_means, intervene

PROMPT = "the king and the queen"


@pytest.fixture(scope="module")
def sae():
    from core.sources.saes import wrap_sae
    from tests.fixtures_models import make_tiny_sae

    return wrap_sae(make_tiny_sae("standard", hook_name="blocks.0.hook_resid_post", seed=2))


def _last_activation(model, site):
    seen = {}

    def capture(act, hook):
        seen["x"] = act[0, -1].clone()
        return act

    with intervene(model, [(site, capture)]):
        model.logits(model.to_tokens(PROMPT))
    return seen["x"]


def _reference(model, sae, features, values):
    """Next-token distributions clean and with x <- x + sum_i (value_i - z_i) W_dec[i] at every position."""
    def edit(act, hook):
        z = sae.encode(act)
        change = sum((v - z[..., f])[..., None] * sae.W_dec[f] for f, v in zip(features, values))
        return act + change

    tokens = model.to_tokens(PROMPT)
    clean = model.logits(tokens)[0, -1].double()
    with intervene(model, [(sae.hook_name, edit)]):
        ablated = model.logits(tokens)[0, -1].double()
    return clean, ablated


def test_zero_ablation_matches_a_hand_made_run(tiny_model, sae):
    z = sae.encode(_last_activation(tiny_model, sae.hook_name))
    features = [int(i) for i in torch.topk(z, 2).indices]  # the two strongest features at the last token
    result = ablate(tiny_model, sae, PROMPT, features, target="queen", top_k=5)
    clean, ablated = _reference(tiny_model, sae, features, [0.0, 0.0])
    p, q = torch.softmax(clean, -1), torch.softmax(ablated, -1)
    assert result.kl_divergence == pytest.approx(float((p * (p.log() - q.log())).sum()), rel=1e-4)
    assert result.kl_divergence > 0
    assert result.activations == pytest.approx([float(z[f]) for f in features], rel=1e-5)
    change = (q - p).numpy()
    assert [s.token_id for s in result.rose] == [int(i) for i in np.argsort(-change)[:5] if change[i] > 0]
    assert [s.token_id for s in result.fell] == [int(i) for i in np.argsort(change)[:5] if change[i] < 0]
    assert all(s.prob_change > 0 for s in result.rose) and all(s.prob_change < 0 for s in result.fell)
    queen = tiny_model.encode("queen")[0]
    assert result.target.token == "queen" and result.target.token_id == queen
    assert result.target.logit_change == pytest.approx(float(ablated[queen] - clean[queen]), abs=1e-4)
    assert result.target.prob_change == pytest.approx(float(q[queen] - p[queen]), abs=1e-6)
    assert [s.prob_before for s in result.top_clean] == pytest.approx(torch.topk(p, 5).values.tolist(), rel=1e-5)
    assert active_hook_count(tiny_model) == 0


def test_ablating_a_silent_feature_changes_nothing(tiny_model, sae):
    z = sae.encode(tiny_model.run(tiny_model.to_tokens(PROMPT), [sae.hook_name])[sae.hook_name][0])
    silent = int(torch.nonzero(z.max(0).values == 0)[0])  # never fires on this prompt
    result = ablate(tiny_model, sae, PROMPT, [silent])
    assert result.kl_divergence == pytest.approx(0.0, abs=1e-10)
    assert result.activations == [0.0]
    assert all(abs(s.prob_change) < 1e-7 for s in result.rose + result.fell)


def test_mean_ablation_uses_the_harvest_means(tiny_model, sae):
    harvest = SimpleNamespace(l1_mass=np.arange(sae.d_sae, dtype=np.float64), n_tokens=4)
    means = feature_means(harvest)
    assert means[6] == pytest.approx(1.5)
    result = ablate(tiny_model, sae, PROMPT, [6, 9], mode="mean", mean_activations=means, target=7)
    clean, ablated = _reference(tiny_model, sae, [6, 9], [1.5, 2.25])
    p, q = torch.softmax(clean, -1), torch.softmax(ablated, -1)
    assert result.values == [1.5, 2.25] and result.mode == "mean"
    assert result.kl_divergence == pytest.approx(float((p * (p.log() - q.log())).sum()), rel=1e-4, abs=1e-9)
    assert result.target.token_id == 7
    assert AblationResult.from_dict(json.loads(json.dumps(result.to_dict()))) == result


@pytest.mark.parametrize("kwargs, message", [
    ({"target": "zebra"}, "'zebra' is not in the model's vocabulary"),
    ({"target": "the king"}, r"'the king' is 2 tokens \(\['the', 'king'\]\), not one"),
    ({"target": 10_000}, "outside the vocabulary"),
    ({"mode": "mean"}, "needs the features' mean activations"),
    ({"mode": "resample"}, "Unknown ablation mode"),
    ({"features": [48]}, "Feature 48 does not exist: the SAE has features 0..47"),
    ({"from_position": 6}, "from_position must be a position 0..5"),
])
def test_bad_ablation_requests_say_what_is_wrong(tiny_model, sae, kwargs, message):
    features = kwargs.pop("features", [1])
    with pytest.raises(InterventionError, match=message):
        ablate(tiny_model, sae, PROMPT, features, **kwargs)
    assert active_hook_count(tiny_model) == 0


def test_feature_means_need_a_harvest():
    with pytest.raises(InterventionError, match="no tokens"):
        feature_means(SimpleNamespace(l1_mass=np.zeros(3), n_tokens=0))
