"""The harvest: every statistic against brute force on small data, and shard merges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.harvest import (
    ActivationMoments,
    HarvestResult,
    HarvestSettings,
    Reservoir,
    finalize,
    harvest,
    harvest_cached,
    harvest_shard,
)
from core.sources.corpus import Corpus, CorpusSpec
from core.sources.saes import wrap_sae
from core.store import ArtifactStore
from tests.fixtures_models import make_tiny_sae

HOOK0, HOOK1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"
SETTINGS = HarvestSettings(batch_size=5, reservoir_size=40, top_k=4, cooc_chunk_tokens=40, quantile_samples=3,
                           hist_bins_per_decade=4)


@pytest.fixture(scope="module")
def saes():
    return [wrap_sae(make_tiny_sae("topk", hook_name=HOOK0, seed=1)),
            wrap_sae(make_tiny_sae("standard", hook_name=HOOK1, seed=2))]


@pytest.fixture(scope="module")
def corpus(tiny_model):
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, tiny_model.d_vocab, (23, 16), generator=generator)
    tokens[:, 0] = tiny_model.bos_token_id
    tokens[4, 7] = tiny_model.bos_token_id  # a BOS inside a sequence (packed documents)
    return Corpus(CorpusSpec(context_size=16), tokens, "random tokens")


@pytest.fixture(scope="module")
def result(tiny_model, saes, corpus):
    return harvest(tiny_model, saes, corpus, SETTINGS)


@pytest.fixture(scope="module")
def brute(tiny_model, saes, corpus):
    """Activations and codes of every kept token, computed directly."""
    acts = tiny_model.run(corpus.tokens, [HOOK0, HOOK1])
    flat_tokens = corpus.tokens.reshape(-1)
    keep = flat_tokens != tiny_model.bos_token_id
    ctx = corpus.tokens.shape[1]
    chunk = torch.arange(corpus.tokens.shape[0]).repeat_interleave(ctx)[keep]
    pos = torch.arange(ctx).repeat(corpus.tokens.shape[0])[keep]
    out = {"chunk": chunk.numpy(), "pos": pos.numpy()}
    for sae in saes:
        x = acts[sae.hook_name].reshape(-1, acts[sae.hook_name].shape[-1])[keep]
        out[sae.hook_name] = (x.numpy().astype(np.float64), sae.encode(x).numpy())
    return out


def test_bos_excluded_and_counts(result, corpus, tiny_model):
    n_bos = int((corpus.tokens == tiny_model.bos_token_id).sum())
    assert result.n_tokens == corpus.tokens.numel() - n_bos
    assert result.n_positions == corpus.tokens.numel()
    assert all(site.n == result.n_tokens for site in result.sites.values())


def test_feature_sums_match_brute_force(result, brute):
    for hook in (HOOK0, HOOK1):
        _, z = brute[hook]
        r = result.saes[hook]
        np.testing.assert_array_equal(r.fire_count, (z > 0).sum(0))
        np.testing.assert_allclose(r.l1_mass, np.where(z > 0, z, 0).sum(0, dtype=np.float64), rtol=1e-6)
        np.testing.assert_array_equal(r.max_act, np.maximum(z, 0).max(0))
        np.testing.assert_array_equal(r.hist.sum(1), r.fire_count)  # histogram counts sum to firing counts
        assert r.l0 == pytest.approx((z > 0).sum(1).mean())


def test_histogram_bins_match_brute_force(result, brute):
    _, z = brute[HOOK1]
    r = result.saes[HOOK1]
    for feature in range(0, z.shape[1], 7):
        values = z[:, feature][z[:, feature] > 0]
        expected = np.bincount(np.searchsorted(r.hist_edges, values, side="right"), minlength=r.hist.shape[1])
        np.testing.assert_array_equal(r.hist[feature], expected)


def test_top_k_equals_brute_force(result, brute, corpus):
    chunk, pos = brute["chunk"], brute["pos"]
    for hook in (HOOK0, HOOK1):
        _, z = brute[hook]
        r = result.saes[hook]
        k = r.top_values.shape[1]
        for feature in range(z.shape[1]):
            fired = np.nonzero(z[:, feature] > 0)[0]
            # larger value first, then earlier corpus place: the documented tie-break
            order = sorted(fired, key=lambda i: (-z[i, feature], chunk[i], pos[i]))[:k]
            n = len(order)
            np.testing.assert_array_equal(r.top_values[feature, :n], z[order, feature])
            np.testing.assert_array_equal(r.top_chunk[feature, :n], chunk[order])
            np.testing.assert_array_equal(r.top_pos[feature, :n], pos[order])
            assert (r.top_chunk[feature, n:] == -1).all() and (r.top_values[feature, n:] == 0).all()
    # windows: the centre column is the token itself, -1 outside the sequence
    r = result.saes[HOOK0]
    left = SETTINGS.window_left
    filled = r.top_chunk >= 0
    tokens = corpus.tokens.numpy()
    np.testing.assert_array_equal(r.top_tokens[..., left][filled], tokens[r.top_chunk[filled], r.top_pos[filled]])
    assert (r.top_tokens[~filled] == -1).all()
    assert r.top_tokens.dtype == np.int32 and r.top_tokens.shape[-1] == left + 1 + SETTINGS.window_right


def test_quantile_contexts_lie_in_their_bands(result, brute):
    _, z = brute[HOOK1]
    index = {(c, p): i for i, (c, p) in enumerate(zip(brute["chunk"], brute["pos"]))}
    r = result.saes[HOOK1]
    edges = r.quantile_edges
    filled = r.quantile_chunk >= 0
    assert filled.any()
    for feature, band, slot in zip(*np.nonzero(filled)):
        value = r.quantile_values[feature, band, slot]
        assert edges[band] <= value < edges[band + 1]
        row = index[(r.quantile_chunk[feature, band, slot], r.quantile_pos[feature, band, slot])]
        assert z[row, feature] == value
    # a band holds min(samples, number of tokens in that band)
    band_of = np.searchsorted(edges, z, side="right") - 1
    for feature in range(0, z.shape[1], 5):
        for band in range(len(edges) - 1):
            in_band = ((band_of[:, feature] == band) & (z[:, feature] > 0)).sum()
            assert filled[feature, band].sum() == min(in_band, SETTINGS.quantile_samples)


def test_cooccurrence_equals_brute_force(result, brute):
    # context 16 < 40 tokens per chunk: chunks of 40 // 16 = 2 consecutive sequences
    _, z = brute[HOOK0]
    group = brute["chunk"] // 2
    groups = np.unique(group)
    f = np.stack([(z[group == g] > SETTINGS.cooc_threshold).any(0) for g in groups]).astype(np.int64)
    r = result.saes[HOOK0]
    assert r.cooc_n_chunks == len(groups)
    np.testing.assert_array_equal(r.cooc_counts().dense(), f.T @ f)
    np.testing.assert_array_equal(r.cooc_fired(), f.sum(0))
    assert not r.cooc_sampled and r.cooc_total_chunks == len(groups)
    ids = np.array([5, 0, 17, 3])
    np.testing.assert_array_equal(r.cooc_submatrix(ids), (f.T @ f)[np.ix_(ids, ids)])
    np.testing.assert_array_equal(r.cooc_counts()[17], (f.T @ f)[17])


def test_sampled_cooccurrence_path(tiny_model, saes, corpus, brute):
    """Past cooc_sample_chunks chunks, the counts cover the chunks with the smallest hash keys, exactly."""
    from core.harvest.sampling import hash_keys

    settings = HarvestSettings(batch_size=6, cooc_sample_chunks=10, cooc_chunk_tokens=8, reservoir_size=0,
                               splice_tokens=0)
    r = harvest(tiny_model, saes[:1], corpus, settings).saes[HOOK0]
    _, z = brute[HOOK0]
    group = brute["chunk"] * 2 + brute["pos"] // 8  # 16 positions -> two chunks per sequence
    groups = np.unique(group)
    assert r.cooc_total_chunks == len(groups) and r.cooc_n_chunks == 10 and r.cooc_sampled
    keys = hash_keys(settings.seed + 2, torch.as_tensor(groups)).numpy()
    chosen = np.sort(groups[np.lexsort((groups, keys))[:10]])
    np.testing.assert_array_equal(r.cooc_chunks, chosen)
    f = np.stack([(z[group == g] > 0).any(0) for g in chosen]).astype(np.int64)
    np.testing.assert_array_equal(r.cooc_counts().dense(), f.T @ f)


def test_moments_and_reconstruction_match_numpy(result, brute, saes):
    for sae in saes:
        x, z = brute[sae.hook_name]
        site = result.sites[sae.hook_name]
        np.testing.assert_allclose(site.mean, x.mean(0), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(site.cov, np.cov(x.T, bias=True), rtol=1e-7, atol=1e-9)
        x_hat = sae.decode(torch.from_numpy(z)).numpy().astype(np.float64)
        sse = ((x - x_hat) ** 2).sum()
        sst = ((x - x.mean(0)) ** 2).sum()
        r = result.saes[sae.hook_name]
        assert r.explained_variance == pytest.approx(1 - sse / sst, rel=1e-5)
        assert r.mse == pytest.approx(sse / x.size, rel=1e-5)


def test_l1_snapshots_are_prefix_sums(result, brute):
    _, z = brute[HOOK1]
    r = result.saes[HOOK1]
    assert list(r.l1_snapshot_tokens) == [10, 20, 50, 100, 200]
    for count, snapshot in zip(r.l1_snapshot_tokens, r.l1_snapshots):
        np.testing.assert_allclose(snapshot, np.maximum(z[:count], 0).sum(0, dtype=np.float64), rtol=1e-6)


def test_two_halves_merged_equal_one_pass(tiny_model, saes, corpus, result):
    # split at an odd place: a co-occurrence chunk (2 sequences) straddles the two shards
    first = harvest_shard(tiny_model, saes, corpus, SETTINGS, 0, 11)
    second = harvest_shard(tiny_model, saes, corpus, SETTINGS, 11, 23)
    merged = finalize(first.merge(second), corpus.tokens)
    assert merged.n_tokens == result.n_tokens
    exact = ("fire_count", "max_act", "hist", "top_values", "top_chunk", "top_pos", "top_tokens", "top_acts",
             "quantile_values", "quantile_chunk", "quantile_pos", "quantile_tokens", "quantile_acts",
             "cooc_chunks", "cooc_offsets", "cooc_ids")
    for hook, one in result.saes.items():
        two = merged.saes[hook]
        for name in exact:
            np.testing.assert_array_equal(getattr(two, name), getattr(one, name), err_msg=name)
        assert two.cooc_n_chunks == one.cooc_n_chunks and two.cooc_total_chunks == one.cooc_total_chunks
        assert two.splice == one.splice and one.splice is not None  # the first shard evaluates the whole block
        np.testing.assert_allclose(two.l1_mass, one.l1_mass, rtol=1e-12)
        np.testing.assert_array_equal(two.l1_snapshot_tokens, one.l1_snapshot_tokens)  # corpus-wide counts
        np.testing.assert_allclose(two.l1_snapshots, one.l1_snapshots, rtol=1e-12)
        assert two.explained_variance == pytest.approx(one.explained_variance, rel=1e-9)
        assert two.l0 == one.l0
    for hook, one in result.sites.items():
        two = merged.sites[hook]
        np.testing.assert_allclose(two.mean, one.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(two.cov, one.cov, rtol=1e-9, atol=1e-12)
        for name in ("reservoir", "reservoir_chunk", "reservoir_pos", "reservoir_token"):
            np.testing.assert_array_equal(getattr(two, name), getattr(one, name))


def test_moments_merge_is_stable_far_from_zero():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 5)) * [1, 2, 3, 4, 5] + 1e6  # large mean: raw moments would cancel
    parts = [ActivationMoments(5), ActivationMoments(5)]
    for chunk in np.array_split(x[:1000], 7):
        parts[0].update(torch.from_numpy(chunk.astype(np.float32)).double())
    for chunk in np.array_split(x[1000:], 3):
        parts[1].update(torch.from_numpy(chunk))
    r = parts[0].merge(parts[1]).result()
    x32 = np.concatenate([x[:1000].astype(np.float32).astype(np.float64), x[1000:]])
    assert r["n"] == 3000
    np.testing.assert_allclose(r["cov"], np.cov(x32.T, bias=True), rtol=1e-8, atol=1e-6)


def test_reservoir_is_uniform_and_merge_exact():
    n, size = 20000, 2000
    chunk = torch.arange(n) // 100
    pos = torch.arange(n) % 100
    data = torch.arange(n, dtype=torch.float32)[:, None]
    one = Reservoir(1, size, seed=3)
    for lo in range(0, n, 1500):
        sl = slice(lo, lo + 1500)
        one.update(data[sl], chunk[sl], pos[sl], pos[sl])
    sample = one.result()["reservoir"][:, 0]
    assert len(np.unique(sample)) == size
    counts = np.bincount((sample // (n / 10)).astype(int), minlength=10)
    expected = size / 10
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 27.88  # chi-square, 9 degrees of freedom, p = 0.001
    # merged halves hold exactly the same sample
    a, b = Reservoir(1, size, seed=3), Reservoir(1, size, seed=3)
    a.update(data[:7000], chunk[:7000], pos[:7000], pos[:7000])
    b.update(data[7000:], chunk[7000:], pos[7000:], pos[7000:])
    np.testing.assert_array_equal(a.merge(b).result()["reservoir"], one.result()["reservoir"])


def test_result_round_trips_through_the_store(result, tmp_path):
    store = ArtifactStore(tmp_path)
    result.save(store, "a" * 64)
    loaded = HarvestResult.load(store, "a" * 64)
    assert list(loaded.sites) == list(result.sites) and list(loaded.saes) == list(result.saes)
    from dataclasses import fields

    for hook in result.saes:
        for name in (f.name for f in fields(result.saes[hook])):
            value, got = getattr(result.saes[hook], name), getattr(loaded.saes[hook], name)
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(got, value)
            else:
                assert got == value or (value != value and got != got)
    np.testing.assert_array_equal(loaded.sites[HOOK0].cov, result.sites[HOOK0].cov)
    assert loaded.settings == result.settings and loaded.n_tokens == result.n_tokens


class CountingModel:
    """A LoadedModel that counts its forward passes."""

    def __init__(self, model):
        self.model, self.calls = model, 0

    def __getattr__(self, name):
        return getattr(self.model, name)

    def run(self, tokens, hook_names, return_logits=False):
        self.calls += 1
        return self.model.run(tokens, hook_names, return_logits)


def test_cache_hit_computes_nothing(tiny_model, saes, corpus, tmp_path):
    store = ArtifactStore(tmp_path)
    model = CountingModel(tiny_model)
    seen = []
    first, key = harvest_cached(model, saes, corpus, SETTINGS, store, progress=lambda d, t, s: seen.append((d, t)))
    assert model.calls == 5 and store.has(key)  # 23 sequences in batches of 5
    assert seen[-1][0] == seen[-1][1] == corpus.tokens.numel()
    again, key_again = harvest_cached(model, saes, corpus, SETTINGS, store)
    assert key_again == key and model.calls == 5
    np.testing.assert_array_equal(again.saes[HOOK0].top_chunk, first.saes[HOOK0].top_chunk)
    other = HarvestSettings(**{**SETTINGS.to_dict(), "sites": None, "top_k": 3})
    _, other_key = harvest_cached(model, saes, corpus, other, store)
    assert other_key != key and model.calls == 10


def test_max_tokens_reads_whole_sequences(tiny_model, saes, corpus):
    r = harvest(tiny_model, saes, corpus, HarvestSettings(max_tokens=40, reservoir_size=5))
    assert r.n_sequences == 3 and r.n_positions == 48


def test_bench_naive_baseline_computes_the_same_statistics(tiny_model, saes, corpus, result):
    """bench/bench_harvest.py's peer-style baseline measures what the harvest measures (equal work)."""
    from bench.bench_harvest import naive_baseline

    naive = naive_baseline(tiny_model, saes, corpus, SETTINGS.batch_size, SETTINGS)
    for sae in saes:
        stats, cooc, snapshots, explained, mse, l0 = naive["saes"][sae.hook_name]
        r = result.saes[sae.hook_name]
        np.testing.assert_array_equal([s[0] for s in stats], r.fire_count)
        np.testing.assert_allclose([s[1] for s in stats], r.l1_mass, rtol=1e-5)
        np.testing.assert_array_equal(np.array([s[2] for s in stats], dtype=np.float32), r.max_act)
        np.testing.assert_allclose(np.stack([s[3].numpy() for s in stats]), r.top_values)
        np.testing.assert_array_equal(np.stack([s[5] for s in stats]), r.hist[:, 1:-1])
        # the per-token activations around each top context, as the harvest keeps them; run_with_cache's full
        # pass and the harvest's stopped pass can differ in the last float bit, which may flip a TopK choice
        # between two near-equal pre-activations at a neighbouring token: allow a few such flips
        filled = r.top_values > 0
        differ = np.abs(np.array([s[7] for s in stats])[filled].astype(np.float16) - r.top_acts[filled]) > 1e-2
        assert differ.mean() < 0.005
        np.testing.assert_array_equal(cooc, r.cooc_counts().dense())
        assert (explained, mse, l0) == pytest.approx((r.explained_variance, r.mse, r.l0), rel=1e-5)
        np.testing.assert_allclose(np.stack([s.numpy() for s in snapshots]), r.l1_snapshots, rtol=1e-5)
        mean, cov, _ = naive["sites"][sae.hook_name]
        np.testing.assert_allclose(cov, result.sites[sae.hook_name].cov, atol=1e-9)
