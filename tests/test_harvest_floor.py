"""The harvest's fast paths equal the plain computations they replace: log-spaced bins = bucketize, numpy hashes =
torch hashes, the packed sort = a stable sort, deferred window lookups = a dense lookup, and a harvest flushed
every batch, with a tiny scratch block, equals the default one array by array."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import core.harvest.state as state_module
import core.harvest.windows as windows_module
from core.harvest import HarvestSettings, harvest
from core.harvest.bins import LogBins
from core.harvest.sampling import _cell_order, hash_keys, hash_keys_np
from core.harvest.windows import RetainedCodes
from core.sources.corpus import Corpus, CorpusSpec
from core.sources.saes import wrap_sae
from tests.fixtures_models import make_tiny_sae


def _values_around(edges: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Every edge, its float32 neighbours, log-uniform values over and beyond the range, extremes."""
    e = edges.to(torch.float32)
    near = torch.cat([e, torch.nextafter(e, torch.full_like(e, np.inf)), torch.nextafter(e, torch.zeros_like(e))])
    spread = 10 ** (torch.rand(20000, generator=generator) * 14 - 7)
    extremes = torch.tensor([1e-45, 1.4e-45, 1e-38, 3e38, float("inf")], dtype=torch.float32)
    return torch.cat([near, spread.to(torch.float32), extremes])


@pytest.mark.parametrize("settings", [HarvestSettings(), HarvestSettings(hist_min=1e-2, hist_max=50.0,
                                                                        hist_bins_per_decade=3,
                                                                        quantile_bands_per_decade=1)])
def test_log_bins_equal_bucketize(settings):
    edges = torch.tensor(settings.hist_edges, dtype=torch.float32)
    bins = LogBins(edges)
    values = _values_around(edges, torch.Generator().manual_seed(0))
    expected = torch.bucketize(values, edges, right=True)
    assert torch.equal(bins.index(values), expected)
    bands = torch.tensor(settings.quantile_edges[:-1], dtype=torch.float32)
    table = bins.coarser(bands)
    if table is not None:  # band edges that are histogram edges: the band follows from the bin
        assert torch.equal(table[expected], torch.bucketize(values, bands, right=True))
    # edges that are not log-spaced still give bucketize's answer (the correction or the fallback)
    odd = torch.tensor([0.001, 0.002, 0.5, 0.6, 7.0, 900.0])
    assert torch.equal(LogBins(odd).index(values), torch.bucketize(values, odd, right=True))
    assert LogBins(edges).coarser(torch.tensor([0.0015, 1.0])) is None


def test_default_band_edges_are_histogram_edges():
    """The default settings take the band from the histogram bin (no second search); a test of the fast path."""
    s = HarvestSettings()
    edges = torch.tensor(s.hist_edges, dtype=torch.float32)
    assert LogBins(edges).coarser(torch.tensor(s.quantile_edges[:-1], dtype=torch.float32)) is not None


def test_numpy_hash_equals_torch_hash():
    generator = np.random.default_rng(0)
    ids = np.concatenate([generator.integers(0, 2**40, 3000), np.arange(50), [0, 2**32 - 1, 2**32]]).astype(np.int64)
    for seed in (0, 2, 977):
        assert np.array_equal(hash_keys_np(seed, ids), hash_keys(seed, torch.as_tensor(ids)).numpy())
        assert np.array_equal(hash_keys_np(seed, ids, ids[::-1]),
                              hash_keys(seed, torch.as_tensor(ids), torch.as_tensor(ids[::-1].copy())).numpy())


@pytest.mark.parametrize("cell_max, key_max", [(50, 2**32 - 1), (2**40, 2**32 - 1)])
def test_packed_sort_is_a_stable_sort(cell_max, key_max):
    """With many equal (cell, key) pairs, the order is the stable one: equal keys keep entry order."""
    generator = torch.Generator().manual_seed(1)
    cells = torch.randint(0, 8, (5000,), generator=generator) * (cell_max // 8)
    keys = torch.randint(0, 40, (5000,), generator=generator) * (key_max // 40)
    order, sorted_cells = _cell_order(cells, keys)
    expected = torch.sort((cells << 32) | keys, stable=True).indices
    assert torch.equal(order, expected)
    assert torch.equal(sorted_cells, cells[expected])


def _dense_windows(z: torch.Tensor, keep_idx: torch.Tensor, context: int, rows, feats, left: int, right: int):
    """The window of each (kept row, feature) read position by position from a dense code."""
    flat_of_row = keep_idx.tolist()
    row_of_flat = {f: r for r, f in enumerate(flat_of_row)}
    out = torch.zeros(len(rows), left + 1 + right)
    for i, (row, feat) in enumerate(zip(rows.tolist(), feats.tolist())):
        flat = flat_of_row[row]
        seq, pos = divmod(flat, context)
        for j, offset in enumerate(range(-left, right + 1)):
            p = pos + offset
            if 0 <= p < context and seq * context + p in row_of_flat:
                out[i, j] = z[row_of_flat[seq * context + p], feat]
    return out


@pytest.mark.parametrize("scratch_floats", [1 << 23, 300])
def test_retained_windows_equal_a_dense_lookup(monkeypatch, scratch_floats):
    """Three retained batches (BOS rows not kept), windows at sequence edges; blocks of one sequence when the
    scratch is small."""
    monkeypatch.setattr(windows_module, "SCRATCH_FLOATS", scratch_floats)
    generator = torch.Generator().manual_seed(2)
    d_sae, context, left, right = 12, 9, 3, 2
    codes = RetainedCodes(d_sae, context, left, right)
    dense, firsts = [], []
    for n_seq in (4, 3, 5):
        positions = n_seq * context
        keep_idx = torch.tensor([p for p in range(positions) if p % context != 0])  # position 0 of each: BOS
        z = torch.rand(keep_idx.numel(), d_sae, generator=generator) * (torch.rand(keep_idx.numel(), d_sae,
                                                                                     generator=generator) < 0.3)
        rows, feats = (z > 0).nonzero(as_tuple=True)
        chunk = keep_idx // context
        firsts.append(codes.add(keep_idx, positions, rows, feats, z[rows, feats], chunk, keep_idx % context))
        dense.append((z, keep_idx))
    q_rows = torch.randint(0, codes.n_rows, (200,), generator=generator)
    q_feats = torch.randint(0, d_sae, (200,), generator=generator)
    windows, chunk, pos = codes.lookup(q_rows, q_feats)
    for batch, (z, keep_idx) in enumerate(dense):
        lo = firsts[batch]
        hi = firsts[batch + 1] if batch + 1 < len(firsts) else codes.n_rows
        sel = ((q_rows >= lo) & (q_rows < hi)).nonzero(as_tuple=True)[0]
        expected = _dense_windows(z, keep_idx, context, q_rows[sel] - lo, q_feats[sel], left, right)
        assert torch.equal(windows[sel], expected)
        assert torch.equal(pos[sel], keep_idx[q_rows[sel] - lo] % context)
        assert torch.equal(chunk[sel], keep_idx[q_rows[sel] - lo] // context)


def test_flush_every_batch_with_small_blocks_equals_the_default(tiny_model, monkeypatch):
    """When windows are read (every batch, with one-sequence blocks, or once at the end) changes no number."""
    hooks = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    saes = [wrap_sae(make_tiny_sae("topk", hook_name=hooks[0], seed=1)),
            wrap_sae(make_tiny_sae("standard", hook_name=hooks[1], seed=2))]
    generator = torch.Generator().manual_seed(3)
    tokens = torch.randint(3, tiny_model.d_vocab, (31, 16), generator=generator)
    tokens[:, 0] = tiny_model.bos_token_id
    corpus = Corpus(CorpusSpec(context_size=16), tokens, "random tokens")
    settings = HarvestSettings(batch_size=3, reservoir_size=30, top_k=3, quantile_samples=2, cooc_chunk_tokens=32,
                               splice_tokens=0)
    monkeypatch.setattr(state_module, "FLUSH_BATCHES", 10**6)
    once = harvest(tiny_model, saes, corpus, settings)
    monkeypatch.setattr(state_module, "FLUSH_BATCHES", 1)
    monkeypatch.setattr(windows_module, "SCRATCH_FLOATS", 1)
    often = harvest(tiny_model, saes, corpus, settings)
    a, _ = once.to_arrays()
    b, _ = often.to_arrays()
    assert a.keys() == b.keys()
    for name in a:
        assert np.array_equal(a[name], b[name]), name
    for label in hooks:
        assert (once.saes[label].top_chunk >= 0).sum() > 0 and once.saes[label].q_acts.any()
