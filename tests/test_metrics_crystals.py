"""Crystals (core.metrics.crystals): analogy parallelograms with and without LDA."""

import json

import numpy as np
import pytest

from core.errors import AtlasError
from core.metrics.crystals import crystal_projection, parallelogram_quality, parallelogram_score


def planted_pairs(n_relations=4, per_relation=8, d=64, noise=0.8, seed=0):
    """b words anywhere; a = b + the relation's shared offset + noise (man:woman, king:queen, ...)."""
    rng = np.random.default_rng(seed)
    offsets = 2.0 * rng.standard_normal((n_relations, d))
    labels = np.repeat(np.arange(n_relations), per_relation)
    H_b = 3.0 * rng.standard_normal((labels.size, d))
    H_a = H_b + offsets[labels] + noise * rng.standard_normal((labels.size, d))
    return H_a, H_b, labels


def test_exact_parallelograms_score_one():
    H_a, H_b, labels = planted_pairs(noise=0.0)
    score = parallelogram_score(H_a - H_b, labels)
    assert score.within_cos == pytest.approx(1.0)
    assert score.silhouette == pytest.approx(1.0)


def test_planted_parallelograms_score_high_and_shuffled_pairs_low():
    H_a, H_b, labels = planted_pairs()
    planted = parallelogram_quality(H_a, H_b, labels)
    assert planted.raw.within_cos > 0.7
    assert planted.raw.quality > 0.7
    assert planted.raw.silhouette > 0.7
    assert planted.lda is not None and planted.lda.silhouette > 0.9
    # break the pairs: each a is paired with a random b
    shuffled_b = H_b[np.random.default_rng(1).permutation(len(H_b))]
    shuffled = parallelogram_quality(H_a, shuffled_b, labels)
    assert shuffled.raw.quality < 0.35
    assert shuffled.raw.silhouette < 0.3
    assert planted.raw.quality > shuffled.raw.quality + 0.5
    assert planted.lda.silhouette > shuffled.lda.silhouette + 0.3
    json.dumps(planted.to_dict())


def test_lda_sharpens_parallelograms_hidden_by_distractors():
    # a strong distractor direction (varies per pair) drowns the relation offsets
    H_a, H_b, labels = planted_pairs(noise=0.3, seed=2)
    rng = np.random.default_rng(3)
    distractor = rng.standard_normal(H_a.shape[1])
    H_a = H_a + 8.0 * rng.standard_normal((len(H_a), 1)) * distractor
    result = parallelogram_quality(H_a, H_b, labels)
    assert result.raw.silhouette < 0.3
    assert result.lda.silhouette > 0.8


def test_heldout_lda_does_not_invent_crystals_from_random_labels():
    H_a, H_b, labels = planted_pairs(seed=4)
    random_labels = np.random.default_rng(5).permutation(labels)
    heldout = parallelogram_quality(H_a, H_b, random_labels, lda="heldout")
    assert heldout.lda.quality < 0.15
    assert parallelogram_quality(H_a, H_b, labels, lda="none").lda is None
    assert parallelogram_quality(H_a, H_b, labels, lda="in_sample").lda.silhouette > 0.9


def test_projection_shapes_and_bad_input():
    H_a, H_b, labels = planted_pairs(per_relation=3)
    for use_lda in (False, True):
        pa, pb = crystal_projection(H_a, H_b, labels, use_lda=use_lda)
        assert pa.shape == pb.shape == (12, 2)
    with pytest.raises(AtlasError):
        parallelogram_quality(H_a, H_b[:-1], labels)
    with pytest.raises(AtlasError):
        parallelogram_quality(H_a[:3], H_b[:3], [0, 1, 2])
    with pytest.raises(AtlasError):
        parallelogram_quality(H_a, H_b, labels, lda="maybe")


def test_crystal_figure_builds():
    from core.figures.geometry import crystals_figure

    H_a, H_b, labels = planted_pairs(per_relation=3)
    pa, pb = crystal_projection(H_a, H_b, labels, use_lda=True)
    words_a = [f"a{i}" for i in range(12)]
    words_b = [f"b{i}" for i in range(12)]
    fig = crystals_figure(pa, pb, labels, words_a, words_b, use_lda=True)
    assert "LDA" in fig.layout.title.text
    assert len(fig.data) == 4 * 3     # per relation: arrows, heads (with b words), tails (with a words)
    crystals_figure(pa, pb, labels).to_json()
