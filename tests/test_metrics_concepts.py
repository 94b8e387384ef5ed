"""Categorical and hierarchical concepts (core.metrics.concepts) on a planted unembedding."""

import json

import numpy as np
import pytest

from core.errors import AtlasError
from core.metrics.concepts import (
    causal_inner_product_basis,
    hierarchical_orthogonality,
    simplex_projection,
    vector_representation,
)


def planted_unembedding(seed=0, d=32, vocab=600, n_children=4, per_child=12, noise=0.5):
    """W_U [d_model, d_vocab]: background words are isotropic noise; each child category's words sit
    at parent + child offset (offsets orthogonal to the parent and to each other) + noise."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, n_children + 1)))
    parent_dir, offsets = 3 * q[:, 0], 3 * q[:, 1:].T
    gamma = rng.standard_normal((vocab, d))
    children = {}
    for c in range(n_children):
        ids = np.arange(c * per_child, (c + 1) * per_child)
        gamma[ids] = parent_dir + offsets[c] + noise * rng.standard_normal((per_child, d))
        children[f"child{c}"] = ids
    parent_ids = np.arange(n_children * per_child)
    return gamma.T, parent_ids, children


def test_whitening_gives_identity_covariance():
    W_U, _, _ = planted_unembedding()
    g = causal_inner_product_basis(W_U)
    assert g.shape == (600, 32)
    np.testing.assert_allclose(g.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(g.T @ g / g.shape[0], np.eye(32), atol=1e-4)


def test_rank_deficient_unembedding_stays_finite():
    W_U = np.random.default_rng(1).standard_normal((16, 8))  # fewer words than dimensions
    g = causal_inner_product_basis(W_U)
    assert np.all(np.isfinite(g)) and np.abs(g).max() < 1e3


def test_vector_representation_follows_the_formula():
    rng = np.random.default_rng(2)
    g = rng.standard_normal((50, 6)) + [3, 0, 0, 0, 0, 0]
    vec = vector_representation(g, range(20))
    assert np.linalg.norm(vec.direction) == pytest.approx(1.0)
    mu = g[:20].mean(0)
    assert vec.magnitude == pytest.approx(mu @ vec.direction)
    np.testing.assert_allclose(vec.ell, vec.magnitude * vec.direction)
    assert vec.direction[0] > 0.9  # the shared direction dominates
    with pytest.raises(AtlasError):
        vector_representation(g, [3])


def test_planted_hierarchy_is_orthogonal_and_beats_the_baselines():
    W_U, parent_ids, children = planted_unembedding()
    g = causal_inner_product_basis(W_U)
    result = hierarchical_orthogonality(g, parent_ids, children, n_shuffles=20, seed=0)
    assert np.all(np.abs(result.cos_child_minus_parent) < 0.1)
    assert result.mean_abs_cos < 0.05
    assert result.shuffled_rows_mean > 3 * result.mean_abs_cos
    assert result.random_parent_mean > 3 * result.mean_abs_cos
    assert result.p_value_shuffled < 0.1
    assert result.sibling_cos.shape == (4, 4)
    np.testing.assert_allclose(np.diag(result.sibling_cos), 1.0)
    off_diagonal = result.sibling_diff_cos[~np.eye(4, dtype=bool)]
    assert np.all(np.abs(off_diagonal) < 0.5)  # planted child offsets are mutually orthogonal
    json.dumps(result.to_dict())


def test_child_along_its_parent_is_not_orthogonal():
    # a "child" whose words only go further along the parent direction: ell_child - ell_parent
    # is parallel to ell_parent, so the cosine is near 1 instead of 0
    rng = np.random.default_rng(3)
    d = 32
    parent_dir = 3 * np.linalg.qr(rng.standard_normal((d, 1)))[0][:, 0]
    gamma = rng.standard_normal((600, d))
    gamma[:24] = parent_dir + 0.5 * rng.standard_normal((24, d))
    gamma[24:36] = 2.5 * parent_dir + 0.5 * rng.standard_normal((12, d))
    g = causal_inner_product_basis(gamma.T)
    result = hierarchical_orthogonality(g, np.arange(24), {"further": np.arange(24, 36)}, n_shuffles=2)
    assert result.cos_child_minus_parent[0] > 0.8


def test_simplex_projection_keeps_the_vectors():
    rng = np.random.default_rng(5)
    V = rng.standard_normal((3, 10))
    members = V[[0, 0, 1, 2]] + 0.01 * rng.standard_normal((4, 10))
    proj = simplex_projection(V, members)
    assert proj.basis.shape == (3, 10)
    np.testing.assert_allclose(proj.basis @ proj.basis.T, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(proj.vector_coords @ proj.basis, V, atol=1e-10)
    assert proj.point_coords.shape == (4, 3)
    with pytest.raises(AtlasError):
        simplex_projection(np.zeros((2, 4)))


def test_concept_figures_build():
    from core.figures.geometry import hierarchy_figure, simplex_figure

    W_U, parent_ids, children = planted_unembedding()
    g = causal_inner_product_basis(W_U)
    result = hierarchical_orthogonality(g, parent_ids, children, n_shuffles=3)
    fig = hierarchy_figure(result, "animal")
    assert len(fig.data[0].x) == 4
    vectors = np.stack([vector_representation(g, ids).ell for ids in children.values()])
    members = np.concatenate(list(children.values()))
    cats = np.repeat(np.arange(4), 12)
    for k in (2, 3, 4):
        proj = simplex_projection(vectors[:k], g[members])
        fig = simplex_figure(proj, list(children)[:k], point_labels=[str(m) for m in members], point_categories=cats)
        assert fig.data[0].type == ("scatter3d" if k >= 3 else "scatter")
        fig.to_json()
