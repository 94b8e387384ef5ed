"""Feature table, automatic descriptions, search, co-occurrence views and cross-SAE nearest directions,
on cases with known answers."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given
from hypothesis import strategies as st

import core.feature_views as fv
from core.feature_map import logit_effects


@given(st.lists(st.lists(st.integers(-1, 5), min_size=6, max_size=6), min_size=1, max_size=8))
def test_row_modes_match_a_counter(rows):
    ids = np.array(rows)
    values, counts = fv.row_modes(ids, ids >= 0, 3)
    for row, got_values, got_counts in zip(ids, values, counts):
        counter = Counter(int(v) for v in row if v >= 0)
        expected = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:3]
        got = [(int(v), int(c)) for v, c in zip(got_values, got_counts) if c > 0]
        assert got == expected
        assert all(v == -1 for v, c in zip(got_values, got_counts) if c == 0)


def _stats():
    """Three features, window of 3 (centre 1): 0 fires on 'monday' after 'on'; 1 on varied tokens; 2 never."""
    top_tokens = np.full((3, 4, 3), -1)
    top_tokens[0, :, :] = [[9, 5, 1], [9, 5, 2], [9, 5, 3], [8, 6, 1]]
    top_tokens[1, :3, :] = [[1, 2, 3], [4, 3, 6], [7, 8, 9]]
    top_values = np.array([[3.0, 2.5, 2.0, 1.0], [1.0, 0.9, 0.8, 0], [0, 0, 0, 0]])
    return SimpleNamespace(l1_mass=np.array([6.0, 2.0, 0.0]), fire_count=np.array([40, 3, 0]), n_tokens=100,
                           max_act=np.array([3.0, 1.0, 0.0]), top_tokens=top_tokens, top_values=top_values)


WORDS = {i: w for i, w in enumerate(["<bos>", "a", "b", "c", "d", "monday", "tuesday", "x", "at", "on"])}


def _decode(ids):
    return [f" {WORDS[i]}" for i in ids]


def test_feature_frame_describes_features_from_their_contexts():
    frame = fv.feature_frame(_stats(), _decode, center=1)
    assert frame["feature"].tolist() == [0, 1, 2]
    assert frame["density"].tolist() == [0.4, 0.03, 0.0] and frame["L1 share"].tolist() == [0.75, 0.25, 0.0]
    assert frame["top tokens"][0] == "' monday', ' tuesday'"
    assert frame["auto"][0] == "\u201cmonday\u201d 3/4 \u00b7 after \u201con\u201d \u00b7 dense (40% of tokens)"
    assert frame["auto"][1].startswith("varied tokens, e.g.")
    assert frame["auto"][2] == "never fires"


def test_label_column_and_search():
    frame = fv.feature_frame(_stats(), _decode, center=1)
    labels = fv.label_column(frame, {1: "my label"})
    assert labels[0].startswith(fv.AUTO_PREFIX) and labels[1] == "my label"
    assert fv.search_mask(frame, "").all()
    assert fv.search_mask(frame, "MONDAY").tolist() == [True, False, False]     # top tokens, case-insensitive
    assert fv.search_mask(frame, "never").tolist() == [False, False, True]     # the automatic description
    assert fv.search_mask(frame, "#1").tolist() == [False, True, False]        # an id
    assert fv.search_mask(frame, "weekday", labelled={2}).tolist() == [False, False, True]


def _cooc(fires: np.ndarray) -> np.ndarray:
    f = fires.astype(np.int64)
    return f.T @ f


def _incidence_counts(fires: np.ndarray):
    """The harvest's own counts: per chunk, the ids of the features that fired (CSR incidence)."""
    from core.harvest.result import ChunkCooccurrence

    _, ids = np.nonzero(fires)
    offsets = np.concatenate([[0], np.cumsum(fires.sum(1))])
    return ChunkCooccurrence(np.arange(len(fires)), offsets, ids, fires.shape[1])


def test_cooccurrence_of_a_feature_that_fires_in_every_chunk_says_so():
    rng = np.random.default_rng(0)
    fires = rng.random((50, 6)) < 0.4
    fires[:, 0] = True          # always
    fires[:, 5] = False         # never
    C = _cooc(fires)
    view = fv.cooccurrence_view(C, 50, 0, chunk_tokens=256)
    assert view.status == "always" and view.rows == () and "undefined" in view.message
    assert "50 chunks of 256 tokens" in view.message
    never = fv.cooccurrence_view(C, 50, 5)
    assert never.status == "never" and never.rows == () and "never fired" in never.message
    sampled = fv.cooccurrence_view(C, 50, 1, total_chunks=5000)
    assert "uniform sample of the corpus's 5,000 chunks" in sampled.message and "0.141" in sampled.message


def test_cooccurrence_ranks_by_phi_and_leaves_out_undefined_partners():
    rng = np.random.default_rng(1)
    base = rng.random(200) < 0.5
    fires = np.stack([base, base ^ (rng.random(200) < 0.1), rng.random(200) < 0.5, np.ones(200, bool),
                      ~base], axis=1)
    C = _cooc(fires)
    for cooc in (C, sp.csr_matrix(C), _incidence_counts(fires)):       # dense, sparse, or the harvest's own
        view = fv.cooccurrence_view(cooc, 200, 0)
        assert view.status == "ok" and "1 feature(s) that fire in every chunk are left out" in view.message
        ids = [r.feature for r in view.rows]
        assert ids[0] == 1 and 3 not in ids and 4 not in ids       # never together with 0: not a partner
        n11 = (fires[:, 0] & fires[:, 1]).sum()
        top = view.rows[0]
        assert top.together == n11
        assert top.p_other_given_this == pytest.approx(n11 / fires[:, 0].sum())
        assert top.p_this_given_other == pytest.approx(n11 / fires[:, 1].sum())
        expected_phi = np.corrcoef(fires[:, 0], fires[:, 1])[0, 1]      # phi = Pearson r of two binary variables
        assert top.phi == pytest.approx(expected_phi, abs=1e-9)


def test_cooccurrence_of_a_feature_firing_alone():
    fires = np.zeros((10, 3), bool)
    fires[:3, 0] = True
    fires[5:, 1] = True
    view = fv.cooccurrence_view(_cooc(fires), 10, 0)
    assert view.status == "alone" and view.rows == () and "no other feature" in view.message


def test_nearest_directions_match_brute_force_and_exclude_self():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((300, 16)).astype(np.float32)
    unit = fv.unit_rows(W)
    direction = W[7] + 0.01 * rng.standard_normal(16)
    cos = unit @ (direction / np.linalg.norm(direction))
    got = fv.nearest_directions(direction, unit, k=5)
    assert [j for j, _ in got] == list(np.argsort(-cos)[:5]) and got[0][0] == 7
    assert got[0][1] == pytest.approx(cos[7], abs=1e-5)
    assert 7 not in [j for j, _ in fv.nearest_directions(W[7], unit, k=5, exclude=7)]


def test_comparable_saes_share_the_input_width():
    a, b, c = (SimpleNamespace(hook_name=h, d_in=d) for h, d in (("l0", 8), ("l1", 8), ("l2", 16)))
    assert fv.comparable_saes([a, b, c], "l0") == [b]


def test_logit_effects_are_the_top_k_of_a_large_vocabulary():
    rng = np.random.default_rng(3)
    W_U = rng.standard_normal((8, 262_144)).astype(np.float32)     # a Gemma-sized vocabulary
    direction = rng.standard_normal(8).astype(np.float32)
    effect = direction @ W_U
    got = logit_effects(direction, W_U, k=5)
    assert got.top_ids == list(np.argsort(-effect)[:5]) and got.bottom_ids == list(np.argsort(effect)[:5])
    np.testing.assert_allclose(got.top_values, np.sort(effect)[::-1][:5], rtol=1e-5)
    np.testing.assert_allclose(got.bottom_values, np.sort(effect)[:5], rtol=1e-5)
