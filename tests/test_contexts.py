"""Per-token activations on context windows, recomputed: they equal the model run directly, the centre token
gives back the harvested top value, and the harvest's stored per-token activations agree; token co-firing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.contexts import token_cofiring, window_activations
from core.harvest import HarvestSettings, harvest
from core.sources.corpus import Corpus, CorpusSpec
from core.sources.saes import wrap_sae
from tests.fixtures_models import make_tiny_sae

HOOK = "blocks.1.hook_resid_post"
SETTINGS = HarvestSettings(batch_size=4, reservoir_size=0, top_k=5, window_left=4, window_right=2,
                           quantile_samples=2, cooc_chunk_tokens=16)


@pytest.fixture(scope="module")
def setup(tiny_model):
    sae = wrap_sae(make_tiny_sae("topk", hook_name=HOOK, seed=4))
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, tiny_model.d_vocab, (12, 16), generator=generator)
    tokens[:, 0] = tiny_model.bos_token_id
    corpus = Corpus(CorpusSpec(context_size=16), tokens, "random tokens")
    result = harvest(tiny_model, [sae], corpus, SETTINGS)
    return tiny_model, sae, corpus, result.saes[HOOK]


def _direct(model, sae, tokens, chunk, pos, feature, left, right):
    """The feature's activation on each window token, from one full-sequence run (the reference)."""
    z = sae.encode(model.run(tokens[int(chunk)][None], [HOOK])[HOOK][0])[:, feature].numpy()
    out = np.zeros(left + 1 + right, dtype=np.float32)
    for i, p in enumerate(range(pos - left, pos + right + 1)):
        if 0 <= p < len(z):
            out[i] = z[p]
    return out


def test_recomputed_windows_equal_a_direct_run_and_the_harvest_s_stored_activations(setup):
    model, sae, corpus, stats = setup
    feature = int(np.argmax(stats.fire_count))
    filled = stats.top_chunk[feature] >= 0
    acts = window_activations(model, sae, corpus.tokens, stats.top_chunk[feature], stats.top_pos[feature], feature,
                              left=4, right=2).acts
    assert acts.shape == (5, 7) and not acts[~filled].any()
    for slot in np.flatnonzero(filled):
        chunk, pos = stats.top_chunk[feature, slot], stats.top_pos[feature, slot]
        np.testing.assert_allclose(acts[slot], _direct(model, sae, corpus.tokens, chunk, pos, feature, 4, 2),
                                   rtol=1e-4, atol=1e-5)
        assert acts[slot, 4] == pytest.approx(stats.top_values[feature, slot], rel=1e-4)   # the centre
    # the harvest's stored per-token activations (float16; BOS, not encoded, reads 0) say the same
    tokens = stats.top_tokens[feature][filled]
    expected = np.where(tokens == model.bos_token_id, 0.0, acts[filled])
    np.testing.assert_allclose(stats.top_acts[feature][filled].astype(np.float32), expected, rtol=2e-3, atol=2e-3)
    # more than one token of a window carries activation: the whole window is shaded, not its peak only
    assert (acts[filled] > 0).sum() > filled.sum()


def test_centre_codes_and_token_cofiring(setup):
    model, sae, corpus, stats = setup
    feature = int(np.argmax(stats.fire_count))
    codes = window_activations(model, sae, corpus.tokens, stats.top_chunk[feature], stats.top_pos[feature], feature,
                               left=4, right=2, centre_codes=True).centre_codes
    values = stats.top_values[feature]
    np.testing.assert_allclose(codes[values > 0, feature], values[values > 0], rtol=1e-4)
    shared = token_cofiring(codes, values, feature, k=50)
    fired = codes[values > 0] > 0
    expected = {j: int(fired[:, j].sum()) for j in range(codes.shape[1]) if j != feature and fired[:, j].any()}
    assert {j: n for j, n, _ in shared} == expected
    assert [n for _, n, _ in shared] == sorted(expected.values(), reverse=True)


def test_token_cofiring_on_a_planted_case():
    codes = np.zeros((4, 5), dtype=np.float32)
    codes[:, 0] = [3, 2, 1, 0]          # the feature itself; slot 3 is empty (value 0)
    codes[:3, 2] = [1.0, 2.0, 3.0]      # fires with it on all three tokens
    codes[0, 4] = 5.0                   # on one
    codes[3, 1] = 9.0                   # only on the empty slot: ignored
    assert token_cofiring(codes, np.array([3, 2, 1, 0]), 0) == [(2, 3, 2.0), (4, 1, 5.0)]
