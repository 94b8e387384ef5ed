"""The harvest at scale: per-token context activations, splice-in quality on planted SAEs, per-SAE artifacts
reused across SAE sets and written once."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from core.harvest import HarvestResult, HarvestSettings, harvest, harvest_cached, harvest_key
from core.sources.corpus import Corpus, CorpusSpec
from core.sources.saes import wrap_sae
from core.store import ArtifactStore
from tests.fixtures_models import D_MODEL, make_tiny_sae

HOOK0, HOOK1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
SETTINGS = HarvestSettings(batch_size=4, reservoir_size=20, top_k=3, cooc_chunk_tokens=16, quantile_samples=2,
                           window_left=3, window_right=2, splice_tokens=96)


@pytest.fixture(scope="module")
def corpus(tiny_model):
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(3, tiny_model.d_vocab, (14, 12), generator=generator)
    tokens[:, 0] = tiny_model.bos_token_id
    tokens[2, 5] = tiny_model.bos_token_id
    return Corpus(CorpusSpec(context_size=12), tokens, "random tokens (scale tests)")


@pytest.fixture(scope="module")
def saes():
    return [wrap_sae(make_tiny_sae("topk", hook_name=HOOK0, seed=3)),
            wrap_sae(make_tiny_sae("standard", hook_name=HOOK1, seed=4))]


def _codes(model, sae, tokens):
    """Dense codes [n_seq, ctx, d_sae] at every position (BOS read as 0: the harvest does not encode it)."""
    acts = model.run(tokens, [sae.hook_name])[sae.hook_name]
    z = sae.encode(acts.reshape(-1, acts.shape[-1])).reshape(tokens.shape + (-1,)).numpy()
    return np.where((tokens != model.bos_token_id).numpy()[..., None], np.maximum(z, 0), 0.0)


def _window(z, feature, chunk, pos, left, right):
    out = np.zeros(left + 1 + right)
    for j, p in enumerate(range(pos - left, pos + right + 1)):
        if 0 <= p < z.shape[1]:
            out[j] = z[chunk, p, feature]
    return out


def test_context_activations_equal_brute_force(tiny_model, saes, corpus):
    result = harvest(tiny_model, saes, corpus, SETTINGS)
    left, right = SETTINGS.window_left, SETTINGS.window_right
    for sae in saes:
        z = _codes(tiny_model, sae, corpus.tokens)
        r = result.saes[sae.hook_name]
        assert r.top_acts.dtype == np.float16 and r.top_acts.shape == r.top_tokens.shape
        checked = 0
        for feature in range(r.d_sae):
            for slot in np.flatnonzero(r.top_chunk[feature] >= 0):
                expected = _window(z, feature, r.top_chunk[feature, slot], r.top_pos[feature, slot], left, right)
                np.testing.assert_allclose(r.top_acts[feature, slot], expected.astype(np.float16), rtol=1e-3, atol=1e-3)
                assert r.top_acts[feature, slot, left] == np.float16(r.top_values[feature, slot])
                checked += 1
            q = r.quantile_contexts(feature)
            for band, value, chunk, pos, acts in zip(q.band, q.value, q.chunk, q.pos, q.acts):
                assert r.quantile_edges[band] <= value < r.quantile_edges[band + 1]
                np.testing.assert_allclose(acts, _window(z, feature, chunk, pos, left, right).astype(np.float16),
                                           rtol=1e-3, atol=1e-3)
                checked += 1
        assert checked > 50
        assert (r.top_acts[r.top_chunk < 0] == 0).all()  # empty slots hold no activations


def _identity_sae(zero_decoder: bool = False):
    """relu(x) - relu(-x) = x: a Standard SAE with W_enc = [I, -I], W_dec = [I; -I] reconstructs exactly;
    with W_dec = 0 it reconstructs 0 (the same as zero-ablation)."""
    sae = make_tiny_sae("standard", d_sae=2 * D_MODEL, hook_name=HOOK1, seed=0)
    eye = torch.eye(D_MODEL)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], 1))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
        sae.W_dec.copy_(torch.zeros(2 * D_MODEL, D_MODEL) if zero_decoder else torch.cat([eye, -eye], 0))
    return wrap_sae(sae)


def test_splice_quality_on_planted_saes(tiny_model, corpus):
    settings = HarvestSettings(batch_size=4, reservoir_size=0, splice_tokens=60)  # 5 sequences of 12
    identity = harvest(tiny_model, [_identity_sae()], corpus, settings).saes[HOOK1].splice
    zero = harvest(tiny_model, [_identity_sae(zero_decoder=True)], corpus, settings).saes[HOOK1].splice
    # the clean loss is the model's own next-token loss on the kept positions of the first 5 sequences
    tokens = corpus.tokens[:5]
    loss = tiny_model.model(tokens, return_type="loss", loss_per_token=True).detach().numpy()
    kept = (tokens != tiny_model.bos_token_id).numpy()[:, :-1]
    assert identity.tokens == zero.tokens == int(kept.sum())
    assert identity.ce_clean == pytest.approx(float(loss[kept].mean()), rel=1e-5)
    assert identity.loss_recovered_zero == pytest.approx(1.0, abs=1e-5)
    assert identity.loss_recovered_mean == pytest.approx(1.0, abs=1e-5)
    assert identity.kl_spliced == pytest.approx(0.0, abs=1e-5)
    assert zero.ce_spliced == zero.ce_zero_ablated and zero.loss_recovered_zero == 0.0
    assert zero.kl_spliced == zero.kl_zero_ablated > 0


def test_splice_off_and_stored(tiny_model, saes, corpus, tmp_path):
    off = harvest(tiny_model, saes, corpus, HarvestSettings(batch_size=4, splice_tokens=0))
    assert all(r.splice is None for r in off.saes.values())
    store = ArtifactStore(tmp_path)
    result, key = harvest_cached(tiny_model, saes, corpus, SETTINGS, store)
    again = HarvestResult.load(store, key)
    assert again.saes[HOOK0].splice == result.saes[HOOK0].splice and result.saes[HOOK0].splice.tokens > 0


class CountingModel:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def run(self, tokens, hook_names, return_logits=False):
        self.calls += 1
        return self.model.run(tokens, hook_names, return_logits)


def test_changing_the_sae_set_computes_only_what_is_new(tiny_model, saes, corpus, tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    model = CountingModel(tiny_model)
    both, key_both = harvest_cached(model, saes, corpus, SETTINGS, store)
    assert model.calls == 4 + 0  # 14 sequences in batches of 4; the splice block is read from those batches
    # removing an SAE: every site and SAE is in the store already; no forward pass
    one, key_one = harvest_cached(model, saes[:1], corpus, SETTINGS, store)
    assert model.calls == 4 and key_one != key_both and list(one.saes) == [HOOK0]
    np.testing.assert_array_equal(one.saes[HOOK0].top_acts, both.saes[HOOK0].top_acts)
    # adding an SAE: one pass that encodes only the new one; equal to a fresh harvest of the set
    extra = wrap_sae(make_tiny_sae("jumprelu", hook_name=HOOK0, seed=9))
    encoded = {}
    for sae in (*saes, extra):
        original = sae.encode_sparse
        monkeypatch.setattr(sae, "encode_sparse", lambda x, sae=sae, original=original: (
            encoded.__setitem__(id(sae), encoded.get(id(sae), 0) + 1), original(x))[1])
    three, _ = harvest_cached(model, [*saes, extra], corpus, SETTINGS, store)
    assert model.calls == 8 and list(three.saes) == [HOOK0, HOOK1, HOOK0 + "#2"]
    assert encoded == {id(extra): 4}  # the SAEs already harvested were not encoded again
    monkeypatch.undo()
    fresh = harvest(tiny_model, [*saes, extra], corpus, SETTINGS)
    for label in fresh.saes:
        for name in ("fire_count", "top_values", "top_acts", "cooc_ids", "l1_snapshots"):
            np.testing.assert_array_equal(getattr(three.saes[label], name), getattr(fresh.saes[label], name))
        assert three.saes[label].splice == pytest.approx(fresh.saes[label].splice) or (
            three.saes[label].splice.to_dict() == pytest.approx(fresh.saes[label].splice.to_dict()))
    for site in fresh.sites:
        np.testing.assert_allclose(three.sites[site].cov, fresh.sites[site].cov, rtol=1e-9, atol=1e-12)


def test_the_harvest_artifact_is_linked_not_copied(tiny_model, saes, corpus, tmp_path):
    store = ArtifactStore(tmp_path / "cache")
    _, key = harvest_cached(tiny_model, saes, corpus, SETTINGS, store)
    assert key == harvest_key(tiny_model, saes, corpus, SETTINGS)
    combined = store.path_for(key)
    linked = [f for f in combined.glob("*.npy") if os.stat(f).st_nlink >= 2]
    assert len(linked) == len(list(combined.glob("*.npy"))) > 0
    kinds = sorted(info.kind for info in store.list())
    assert kinds.count("harvest") == 1 and kinds.count("harvest-sae") == 2 and kinds.count("harvest-site") >= 2
    # counting each file once, the store holds the harvest's bytes once
    once = store.size_summary()["bytes"]
    assert once < sum(info.size_bytes for info in store.list())
    out = ArtifactStore(tmp_path / "out")
    assert out.link_from(store, key)
    loaded = HarvestResult.load(out, key)
    np.testing.assert_array_equal(loaded.saes[HOOK1].top_acts, HarvestResult.load(store, key).saes[HOOK1].top_acts)


def test_cli_corpus_uses_the_saes_context_size():
    from types import SimpleNamespace

    from core.cli.analyze import sae_context_size

    said = []
    one = SimpleNamespace(hook_name=HOOK0, context_size=128)
    assert sae_context_size([one], said.append) == 128 and not said
    other = SimpleNamespace(hook_name=HOOK1, context_size=1024)
    assert sae_context_size([one, other], said.append) == 128 and "different context sizes" in said[0]
    assert sae_context_size([SimpleNamespace(hook_name=HOOK0, context_size=None)]) == 64  # nothing said: 64
