"""Crystals: analogy parallelograms of word-pair difference vectors (atom scale).

Li, Michaud, Baek, Engels, Sun, Tegmark (2024), "The Geometry of Concepts" (METHODS.md section 6):
the difference vectors h(a) - h(b) of word pairs in one relation (man:woman, king:queen, ...)
are near-parallel, so the pairs form parallelograms; projecting out distractor directions with
LDA (fit on the difference vectors, labels = relation) sharpens them; silhouette scores the
relation clusters.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import silhouette_score
from sklearn.model_selection import StratifiedKFold

from core.jsonable import Result
from core.metrics.geometry import GeometryInputError, as_matrix

__all__ = ["ParallelogramScore", "CrystalQuality", "parallelogram_score", "parallelogram_quality", "crystal_projection"]


@dataclass(frozen=True, eq=False)
class ParallelogramScore(Result):
    within_cos: float  # mean cosine of difference vectors of the same relation (pairs i < j)
    across_cos: float  # mean cosine of difference vectors of different relations
    quality: float  # within_cos - across_cos
    silhouette: float  # cosine silhouette of the relation clusters of difference vectors


@dataclass(frozen=True, eq=False)
class CrystalQuality(Result):
    raw: ParallelogramScore  # on the difference vectors themselves
    lda: ParallelogramScore | None  # after LDA projection (None when not asked)
    lda_mode: str  # "heldout", "in_sample" or "none"
    n_pairs: int
    n_relations: int


def _cosine_matrix(D: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(D, axis=1)
    Dn = D / np.where(norms > 0, norms, 1.0)[:, None]
    return Dn @ Dn.T


def parallelogram_score(D: np.ndarray, labels: np.ndarray) -> ParallelogramScore:
    """Within- vs across-relation alignment of difference vectors D [n_pairs, d]:

        within = mean cos(D_i, D_j) over pairs i < j of the same relation
        across = mean cos(D_i, D_j) over pairs of different relations
        quality = within - across;  silhouette = silhouette_score(D, labels, metric='cosine')
    """
    labels = np.asarray(labels)
    cos = _cosine_matrix(D)
    iu = np.triu_indices(D.shape[0], 1)
    same = labels[iu[0]] == labels[iu[1]]
    c = cos[iu]
    within = float(c[same].mean()) if np.any(same) else float("nan")
    across = float(c[~same].mean()) if np.any(~same) else float("nan")
    n_labels = np.unique(labels).size
    sil = (
        float(silhouette_score(D, labels, metric="cosine"))
        if 2 <= n_labels <= D.shape[0] - 1
        else float("nan")
    )
    return ParallelogramScore(within_cos=within, across_cos=across, quality=within - across, silhouette=sil)


def _fit_lda(D: np.ndarray, labels: np.ndarray, n_relations: int) -> LinearDiscriminantAnalysis:
    # A relation with a single pair in a training fold makes Ledoit-Wolf warn "only one sample":
    # its within-class covariance is zero, which is what the pooled estimate should get from it.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Only one sample available")
        try:
            return _lda(n_relations, D.shape[1]).fit(D, labels)
        except (np.linalg.LinAlgError, ValueError) as error:
            # A within-relation scatter of zero (identical difference vectors) leaves nothing to whiten.
            raise GeometryInputError(
                "LDA cannot be fitted: the difference vectors do not vary within their relations (identical "
                f"points?) ({type(error).__name__}). Use lda='none' to score them without LDA.") from None


def _lda(n_relations: int, d: int) -> LinearDiscriminantAnalysis:
    # Shrinkage keeps LDA defined when there are fewer pairs than dimensions (the usual case).
    return LinearDiscriminantAnalysis(
        solver="eigen", shrinkage="auto", n_components=max(1, min(n_relations - 1, d))
    )


def parallelogram_quality(
    H_a: np.ndarray,
    H_b: np.ndarray,
    relation_labels: np.ndarray,
    lda: str = "heldout",
    n_folds: int = 2,
    seed: int = 0,
) -> CrystalQuality:
    """Parallelogram quality of analogy pairs (Li et al. 2024, "The Geometry of Concepts", crystals).

        D = H_a - H_b                          # one difference vector per word pair (a, b)
        score(D): within-relation mean cos - across-relation mean cos; cosine silhouette
        LDA: LinearDiscriminantAnalysis fit on D with relation labels; D -> lda.transform(D); score again

    The paper fits LDA on all pairs (`lda="in_sample"`). With fewer pairs than dimensions that
    separates any labelling, shuffled pairs included, so the default `lda="heldout"` fits LDA on
    the other folds (stratified, `n_folds`) and scores each held-out fold in its own projection,
    averaging the fold scores. `lda="none"` skips it. LDA uses shrinkage (solver 'eigen').
    """
    A = as_matrix(H_a, "H_a")
    B = as_matrix(H_b, "H_b")
    labels = np.asarray(relation_labels).ravel()
    if A.shape != B.shape:
        raise GeometryInputError(f"H_a and H_b must have the same shape; got {A.shape} and {B.shape}.")
    if labels.shape[0] != A.shape[0]:
        raise GeometryInputError("relation_labels needs one label per word pair (row of H_a).")
    uniq, counts = np.unique(labels, return_counts=True)
    if uniq.size < 2 or counts.min() < 2:
        raise GeometryInputError("Crystals need at least 2 relations with at least 2 word pairs each.")
    if lda not in ("heldout", "in_sample", "none"):
        raise GeometryInputError("lda must be 'heldout', 'in_sample' or 'none'.")
    D = A - B
    if not np.any(D):
        raise GeometryInputError("Every difference vector is zero (each pair's two words have the same "
                                 "representation): there is no parallelogram to score.")
    raw = parallelogram_score(D, labels)
    lda_score: ParallelogramScore | None = None
    if lda == "in_sample":
        P = _fit_lda(D, labels, uniq.size).transform(D)
        lda_score = parallelogram_score(P, labels)
    elif lda == "heldout":
        folds = int(min(n_folds, counts.min()))
        if folds < 2:
            raise GeometryInputError("Held-out LDA needs at least 2 pairs per relation.")
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        scores = []
        for train, test in splitter.split(D, labels):
            P = _fit_lda(D[train], labels[train], uniq.size).transform(D[test])
            scores.append(parallelogram_score(P, labels[test]))
        lda_score = ParallelogramScore(
            within_cos=float(np.nanmean([s.within_cos for s in scores])),
            across_cos=float(np.nanmean([s.across_cos for s in scores])),
            quality=float(np.nanmean([s.quality for s in scores])),
            silhouette=float(np.nanmean([s.silhouette for s in scores])),
        )
    return CrystalQuality(raw=raw, lda=lda_score, lda_mode=lda, n_pairs=int(D.shape[0]), n_relations=int(uniq.size))


def crystal_projection(
    H_a: np.ndarray, H_b: np.ndarray, relation_labels: np.ndarray | None = None, use_lda: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """2-D coordinates of the words of each pair, for drawing arrows a -> b.

    Without LDA: PCA(2) of all words [H_a; H_b]. With LDA: the words projected on the first two
    LDA directions fit on the difference vectors (in-sample; for display only).
    Returns (points_a [n, 2], points_b [n, 2]).
    """
    A = as_matrix(H_a, "H_a")
    B = as_matrix(H_b, "H_b")
    if A.shape != B.shape:
        raise GeometryInputError(f"H_a and H_b must have the same shape; got {A.shape} and {B.shape}.")
    X = np.vstack([A, B])
    if use_lda:
        if relation_labels is None:
            raise GeometryInputError("The LDA view needs the relation labels.")
        labels = np.asarray(relation_labels).ravel()
        model = _fit_lda(A - B, labels, np.unique(labels).size)
        Y = (X - X.mean(0)) @ model.scalings_[:, : min(2, model.scalings_.shape[1])]
    else:
        Y = PCA(n_components=min(2, X.shape[1], X.shape[0])).fit_transform(X)
    if Y.shape[1] < 2:
        Y = np.hstack([Y, np.zeros((Y.shape[0], 2 - Y.shape[1]))])
    n = A.shape[0]
    return Y[:n], Y[n:]
