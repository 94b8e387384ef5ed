"""Concept geometry of the SAE feature cloud: galaxy scale and lobes.

Li, Michaud, Baek, Engels, Sun, Tegmark (2024), "The Geometry of Concepts: Sparse Autoencoder
Feature Structure" (METHODS.md section 6). `W_dec` is `[d_sae, d]`, one feature direction per row.

- Galaxy scale: the eigenvalue power law of cov(W_dec) and the clustering entropy of the cloud.
- Brain scale ("lobes"): features that fire in the same 256-token chunks, clustered by their
  phi coefficient, compared with clusters of decoder directions by adjusted mutual information.

This module also holds the small helpers (input checks, JSON conversion) that the sibling
modules `circles`, `crystals`, `concepts` and `probes` share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats
from sklearn.cluster import SpectralClustering
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_mutual_info_score
from sklearn.neighbors import NearestNeighbors

from core.errors import MetricInputError
from core.jsonable import FloatArray, Result

__all__ = [
    "GeometryInputError",
    "GalaxySpectrum",
    "ClusteringEntropy",
    "LobeAgreement",
    "galaxy_spectrum",
    "galaxy_fit_range",
    "clustering_entropy",
    "knn_entropy",
    "gaussian_entropy",
    "cooccurrence_counts",
    "contingency_from_cooccurrence",
    "phi_coefficient",
    "phi_from_contingency",
    "jaccard_affinity",
    "dice_affinity",
    "overlap_affinity",
    "simple_matching_affinity",
    "cooccurrence_affinity",
    "angular_similarity",
    "spectral_labels",
    "lobes",
    "geometric_clusters",
    "lobe_agreement",
]


class GeometryInputError(MetricInputError):
    """Arrays given to a geometry measurement that it cannot use (shape, size, NaN).

    A subclass of core.errors.MetricInputError, so every metric family raises one error family
    (`except MetricInputError` catches geometry, circles, crystals, concepts and probes too)."""


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------


def as_matrix(x: Any, name: str, min_rows: int = 1, min_cols: int = 1) -> np.ndarray:
    """Return `x` as a finite float64 matrix, or raise GeometryInputError with a readable message."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise GeometryInputError(f"{name} must be a 2-D array (rows x columns); got shape {arr.shape}.")
    if arr.shape[0] < min_rows or arr.shape[1] < min_cols:
        raise GeometryInputError(
            f"{name} needs at least {min_rows} rows and {min_cols} columns; got shape {arr.shape}."
        )
    if not np.all(np.isfinite(arr)):
        raise GeometryInputError(f"{name} contains NaN or infinite values.")
    return arr


# ----------------------------------------------------------------------------------------------
# galaxy scale
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class GalaxySpectrum(Result):
    eigenvalues: FloatArray  # cov(W_dec) eigenvalues, descending
    alpha: float  # -slope of log10(lam) on log10(rank) over the fit range
    intercept: float  # of the fitted line in log10 space
    r_value: float
    fit_start: int  # 0-based slice start into the sorted spectrum (rank = index + 1)
    fit_stop: int  # 0-based slice stop (exclusive)
    adapted: bool  # True when the paper's [10:150] did not fit this d and was shrunk
    note: str


def galaxy_fit_range(d: int) -> tuple[int, int, bool]:
    """Fit slice for the galaxy power law: the paper's `[10:150]`, shrunk for small d.

    The paper (d = 2304) fits 0-based indices 10..149. When the spectrum has fewer than 150
    usable eigenvalues we use indices d//10 .. d//2 (as METHODS.md section 4 does for alpha-ReQ),
    keeping at least 3 points. Returns (start, stop, adapted).
    """
    if d >= 150:
        return 10, 150, False
    if d < 4:
        raise GeometryInputError(f"A power-law fit needs at least 4 eigenvalues; the cloud has {d} dimensions.")
    start = max(1, d // 10)
    stop = max(start + 3, d // 2)
    return start, min(stop, d), True


def galaxy_spectrum(W_dec: np.ndarray, fit_range: tuple[int, int] | None = None) -> GalaxySpectrum:
    """Eigenvalue power law of the SAE decoder point cloud (Li et al. 2024, "The Geometry of Concepts").

        lam = eigenvalues of cov(W_dec), descending;  rank = 1..d
        alpha = -slope of linregress(log10(rank[10:150]), log10(lam[10:150]))

    `fit_range=(start, stop)` is a 0-based slice; by default the paper's (10, 150), shrunk to
    (d//10, d//2) when d < 150 (see `galaxy_fit_range`; `adapted` says so).
    Rank-deficient clouds (fewer features than dimensions): eigenvalues below
    core.metrics.spectral.ZERO_EIGENVALUE_RTOL times the largest are round-off and never enter the
    fit; the default range is then chosen for the numerical rank r instead of d (the note says so).
    A cloud without variance, or too few nonzero eigenvalues in the range, is a GeometryInputError.
    Reference: Gemma Scope 2b (65k wide) alpha rises from 0.24 to ~0.48 mid-depth; an isotropic
    Gaussian cloud gives ~0.03.
    """
    from core.metrics.spectral import ZERO_EIGENVALUE_RTOL, numerical_rank

    W = as_matrix(W_dec, "W_dec", min_rows=3, min_cols=4)
    with np.errstate(over="ignore", invalid="ignore"):
        cov = np.cov(W, rowvar=False)
    if not np.all(np.isfinite(cov)):
        raise GeometryInputError("The decoder rows are too large for a float64 covariance (~1e154): rescale them.")
    lam = np.sort(np.linalg.eigvalsh(cov))[::-1]
    d = lam.shape[0]
    rank = numerical_rank(lam)
    if rank == 0:
        raise GeometryInputError("The decoder rows do not vary (every row is the same): there is no spectrum to fit.")
    if fit_range is None:
        start, stop, adapted = galaxy_fit_range(min(d, rank) if rank < min(d, 150) else d)
        adapted = adapted or rank < min(d, 150)
    else:
        start, stop = int(fit_range[0]), int(fit_range[1])
        adapted = False
        if not (0 <= start < stop <= d) or stop - start < 3:
            raise GeometryInputError(
                f"The fit range {fit_range} must be a slice of at least 3 ranks inside 0..{d}."
            )
    rank_axis = np.arange(1, d + 1, dtype=np.float64)
    sel = np.arange(start, stop)
    sel = sel[lam[sel] > ZERO_EIGENVALUE_RTOL * lam[0]]
    if sel.size < 3:
        raise GeometryInputError(
            f"Too few nonzero eigenvalues in the fit range to fit a power law (the cloud has rank {rank} of {d}).")
    fit = stats.linregress(np.log10(rank_axis[sel]), np.log10(lam[sel]))
    note = (
        f"fit over ranks {start + 1}..{stop} (0-based [{start}:{stop}])"
        + (f", shrunk from the paper's [10:150] because d = {d}" if adapted and rank >= min(d, 150) else "")
        + (f", shrunk to the cloud's rank {rank} < d = {d} (fewer features than dimensions)"
           if rank < min(d, 150) else "")
    )
    return GalaxySpectrum(
        eigenvalues=lam,
        alpha=float(-fit.slope),
        intercept=float(fit.intercept),
        r_value=float(fit.rvalue),
        fit_start=start,
        fit_stop=stop,
        adapted=adapted,
        note=note,
    )


def gaussian_entropy(X: np.ndarray) -> float:
    """Differential entropy (nats) of a Gaussian with the covariance of X:
    H = 0.5 * log((2 pi e)^d det Cov)."""
    X = as_matrix(X, "X", min_rows=2)
    d = X.shape[1]
    sign, logdet = np.linalg.slogdet(np.atleast_2d(np.cov(X, rowvar=False)))
    if sign <= 0:
        raise GeometryInputError("The covariance is singular; reduce the dimension before estimating entropy.")
    return float(0.5 * (d * math.log(2 * math.pi * math.e) + logdet))


def knn_entropy(X: np.ndarray, k: int = 5) -> float:
    """Kozachenko-Leonenko k-nearest-neighbour differential entropy estimate (nats):

        H = psi(n) - psi(k) + log(V_d) + (d / n) * sum_i log(eps_i)

    eps_i: Euclidean distance from point i to its k-th neighbour; V_d = pi^(d/2) / Gamma(d/2 + 1).
    Duplicate points (eps = 0) are given the smallest positive distance seen.
    """
    X = as_matrix(X, "X", min_rows=k + 2)
    n, d = X.shape
    nn = NearestNeighbors(n_neighbors=k + 1).fit(X)
    dist, _ = nn.kneighbors(X)
    eps = dist[:, k]
    positive = eps[eps > 0]
    if positive.size == 0:
        raise GeometryInputError("All points coincide; their entropy is undefined.")
    eps = np.where(eps > 0, eps, positive.min())
    log_vd = 0.5 * d * math.log(math.pi) - special.gammaln(0.5 * d + 1)
    return float(special.digamma(n) - special.digamma(k) + log_vd + d * np.mean(np.log(eps)))


@dataclass(frozen=True, eq=False)
class ClusteringEntropy(Result):
    h_gauss: float  # closed-form entropy of the Gaussian with the same covariance
    h_knn: float  # kNN estimate on the data
    gap: float  # h_gauss - h_knn (paper's quantity); >= 0 up to estimator bias
    h_knn_gaussian_surrogate: float  # kNN estimate on a Gaussian sample of the same size/covariance
    gap_calibrated: float  # h_knn_gaussian_surrogate - h_knn: the gap with the kNN bias removed
    n_points: int
    n_dims: int
    k: int


def clustering_entropy(
    W_dec: np.ndarray, n_samples: int = 5000, n_dims: int = 100, k: int = 5, seed: int = 0
) -> ClusteringEntropy:
    """Clustering entropy of the decoder cloud (Li et al. 2024, "The Geometry of Concepts", sec. 3.3).

        X = subsample(W_dec, n_samples); X = zscore(X); X = PCA(min(n_dims, d)).fit_transform(X)
        gap = H_gauss(X) - H_kNN(X)      # H_gauss = 0.5 log((2 pi e)^d det Cov(X))

    A Gaussian has the largest entropy for its covariance, so the gap measures how clustered the
    cloud is (0 for a Gaussian cloud; the paper finds it peaks in middle layers). The paper leaves
    the kNN estimator open: we use Kozachenko-Leonenko with k neighbours. Because that estimator is
    biased in many dimensions, we also report `gap_calibrated`, the same estimator run on a Gaussian
    sample with the same size and covariance minus H_kNN(X), which cancels most of the bias.
    """
    W = as_matrix(W_dec, "W_dec", min_rows=k + 3, min_cols=1)
    rng = np.random.default_rng(seed)
    if W.shape[0] > n_samples:
        W = W[rng.choice(W.shape[0], size=n_samples, replace=False)]
    std = W.std(0)
    keep = std > 0
    if not np.any(keep):
        raise GeometryInputError("Every column of W_dec is constant; the cloud has no spread.")
    X = (W[:, keep] - W[:, keep].mean(0)) / std[keep]
    dims = min(n_dims, X.shape[1], X.shape[0] - 1)
    X = PCA(n_components=dims, random_state=seed).fit_transform(X)
    # Drop numerically empty directions (rank-deficient clouds) so det Cov stays positive.
    var = X.var(0)
    X = X[:, var > var.max() * 1e-10]
    h_gauss = gaussian_entropy(X)
    h_knn = knn_entropy(X, k=k)
    surrogate = rng.multivariate_normal(np.zeros(X.shape[1]), np.cov(X, rowvar=False), size=X.shape[0])
    h_sur = knn_entropy(surrogate, k=k)
    return ClusteringEntropy(
        h_gauss=h_gauss,
        h_knn=h_knn,
        gap=h_gauss - h_knn,
        h_knn_gaussian_surrogate=h_sur,
        gap_calibrated=h_sur - h_knn,
        n_points=int(X.shape[0]),
        n_dims=int(X.shape[1]),
        k=k,
    )


# ----------------------------------------------------------------------------------------------
# lobes: co-occurrence affinities
# ----------------------------------------------------------------------------------------------


def cooccurrence_counts(active: np.ndarray, chunk_size: int = 256) -> tuple[np.ndarray, int]:
    """Chunk co-occurrence counts (Li et al. 2024, brain scale); reference implementation.

        per chunk of `chunk_size` consecutive tokens: f = A[chunk].any(0); C += outer(f, f); n += 1

    `active` is boolean `[n_tokens, d_sae]` (Z > threshold, BOS tokens already dropped), or the codes
    Z themselves (active where Z > 0; NaN, infinite or negative codes are a GeometryInputError). A last,
    shorter chunk is counted as a chunk. diag(C) holds each feature's number of chunks.
    Returns (C as int64 [d_sae, d_sae], n_chunks).
    """
    A = np.asarray(active)
    if A.ndim != 2:
        raise GeometryInputError(f"active must be [n_tokens, d_sae]; got shape {A.shape}.")
    if chunk_size < 1:
        raise GeometryInputError("chunk_size must be at least 1 token.")
    if A.dtype != bool:
        # Codes instead of a mask: a feature is active where its code is > 0. NaN is no code at all, and
        # SAE codes are never negative (a negative value means pre-activations or another array).
        A = np.asarray(A, dtype=np.float64)
        if not np.all(np.isfinite(A)):
            raise GeometryInputError("The feature codes contain NaN or infinite values.")
        if np.any(A < 0):
            raise GeometryInputError("Feature codes must be >= 0 (SAE activations); pass a boolean mask "
                                     "(Z > threshold) for anything else.")
        A = A > 0
    n_tokens, d_sae = A.shape
    C = np.zeros((d_sae, d_sae), dtype=np.int64)
    n_chunks = 0
    for start in range(0, n_tokens, chunk_size):
        f = A[start : start + chunk_size].any(0).astype(np.int64)
        C += np.outer(f, f)
        n_chunks += 1
    return C, n_chunks


def _check_cooc(cooc: np.ndarray, n_chunks: int) -> np.ndarray:
    C = np.asarray(cooc, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1]:
        raise GeometryInputError(f"Co-occurrence counts must be a square matrix; got shape {C.shape}.")
    if n_chunks < 1:
        raise GeometryInputError("n_chunks must be at least 1.")
    if not np.all(np.isfinite(C)):
        raise GeometryInputError("Co-occurrence counts contain NaN or infinite values.")
    if np.any(C < 0) or np.any(np.diag(C) > n_chunks):
        raise GeometryInputError("Co-occurrence counts must be >= 0 and no feature can fire in more chunks than exist.")
    return C


def contingency_from_cooccurrence(cooc: np.ndarray, n_chunks: int) -> tuple[np.ndarray, ...]:
    """The 2x2 table of every feature pair from C (METHODS.md section 6):
    n11 = C, ni = diag(C), n10 = ni[:, None] - C, n01 = n10.T, n00 = n - ni[:, None] - ni[None] + C."""
    C = _check_cooc(cooc, n_chunks)
    ni = np.diag(C)
    n11 = C
    n10 = ni[:, None] - C
    n01 = n10.T
    n00 = n_chunks - ni[:, None] - ni[None, :] + C
    # Every cell must be a count: a pair cannot share more chunks than one of its features fires in,
    # nor leave fewer than 0 chunks to neither (phi would take the root of a negative and read 0).
    if n10.size and (n10.min() < 0 or n00.min() < 0):
        raise GeometryInputError("These co-occurrence counts are inconsistent: a pair shares more chunks than one "
                                 "of its features fires in, or the pairs need more chunks than exist.")
    return n11, n10, n01, n00


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def phi_from_contingency(n11: np.ndarray, n10: np.ndarray, n01: np.ndarray, n00: np.ndarray) -> np.ndarray:
    """Phi coefficient from 2x2 counts of any shape (a full table or one feature's row):

        phi = (n11*n00 - n10*n01) / sqrt((n11+n10)*(n01+n00)*(n11+n01)*(n10+n00));  nan -> 0
    """
    den = np.sqrt((n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00))
    return _safe_ratio(n11 * n00 - n10 * n01, den)


def phi_coefficient(cooc: np.ndarray, n_chunks: int) -> np.ndarray:
    """Phi coefficient of chunk co-occurrence (Li et al. 2024, "The Geometry of Concepts"):

        phi = (n11*n00 - n10*n01) / sqrt((n11+n10)*(n01+n00)*(n11+n01)*(n10+n00));  nan -> 0

    with the 2x2 counts of `contingency_from_cooccurrence`. Features that never (or always) fire
    get phi 0 with everything.
    """
    return phi_from_contingency(*contingency_from_cooccurrence(cooc, n_chunks))


def jaccard_affinity(cooc: np.ndarray, n_chunks: int) -> np.ndarray:
    """Jaccard similarity of the chunk sets: n11 / (n11 + n10 + n01); 0 where undefined."""
    n11, n10, n01, _ = contingency_from_cooccurrence(cooc, n_chunks)
    return _safe_ratio(n11, n11 + n10 + n01)


def dice_affinity(cooc: np.ndarray, n_chunks: int) -> np.ndarray:
    """Dice (Sorensen) coefficient: 2 n11 / (2 n11 + n10 + n01); 0 where undefined."""
    n11, n10, n01, _ = contingency_from_cooccurrence(cooc, n_chunks)
    return _safe_ratio(2 * n11, 2 * n11 + n10 + n01)


def overlap_affinity(cooc: np.ndarray, n_chunks: int) -> np.ndarray:
    """Overlap (Szymkiewicz-Simpson) coefficient: n11 / min(n_i, n_j); 0 where undefined."""
    n11, _, _, _ = contingency_from_cooccurrence(cooc, n_chunks)
    ni = np.diag(n11)
    return _safe_ratio(n11, np.minimum(ni[:, None], ni[None, :]))


def simple_matching_affinity(cooc: np.ndarray, n_chunks: int) -> np.ndarray:
    """Simple matching coefficient: (n11 + n00) / n."""
    n11, _, _, n00 = contingency_from_cooccurrence(cooc, n_chunks)
    return (n11 + n00) / float(n_chunks)


_AFFINITIES = {
    "phi": phi_coefficient,
    "jaccard": jaccard_affinity,
    "dice": dice_affinity,
    "overlap": overlap_affinity,
    "simple_matching": simple_matching_affinity,
}


def cooccurrence_affinity(cooc: np.ndarray, n_chunks: int, kind: str = "phi") -> np.ndarray:
    """One of the co-occurrence affinities the paper compares: phi, jaccard, dice, overlap, simple_matching."""
    if kind not in _AFFINITIES:
        raise GeometryInputError(f"Unknown affinity '{kind}'; choose one of {sorted(_AFFINITIES)}.")
    return _AFFINITIES[kind](cooc, n_chunks)


# ----------------------------------------------------------------------------------------------
# lobes: clustering and agreement
# ----------------------------------------------------------------------------------------------


def angular_similarity(W_dec: np.ndarray) -> np.ndarray:
    """Angular similarity of decoder rows (Engels et al. 2024; Li et al. 2024):

        A = 1 - arccos(clip(cos(W_i, W_j), -1, 1)) / pi        # in [0, 1]

    Rows of zero norm (dead features) get cos 0, i.e. similarity 1/2, with everything else.
    """
    W = as_matrix(W_dec, "W_dec", min_rows=1)
    _check_dense(W.shape[0], "an angular-similarity matrix")
    norms = np.linalg.norm(W, axis=1)
    Wn = W / np.where(norms > 0, norms, 1.0)[:, None]
    cos = np.clip(Wn @ Wn.T, -1.0, 1.0)
    return 1.0 - np.arccos(cos) / np.pi


def spectral_labels(affinity: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """SpectralClustering(n_clusters, affinity='precomputed').fit_predict(affinity), seeded.

    The affinity must be symmetric and non-negative.
    """
    A = as_matrix(affinity, "affinity")
    if A.shape[0] != A.shape[1]:
        raise GeometryInputError(f"An affinity matrix must be square; got shape {A.shape}.")
    _check_dense(A.shape[0], "spectral clustering on a dense affinity")
    if not 2 <= n_clusters <= A.shape[0]:
        raise GeometryInputError(f"The number of clusters must be between 2 and {A.shape[0]}; got {n_clusters}.")
    if np.any(A < 0):
        raise GeometryInputError("Spectral clustering needs a non-negative affinity (add 1 to phi first).")
    A = 0.5 * (A + A.T)
    model = SpectralClustering(
        n_clusters=n_clusters, affinity="precomputed", random_state=seed, assign_labels="kmeans"
    )
    return model.fit_predict(A).astype(np.int64)


def lobes(affinity: np.ndarray, n_lobes: int, offset: float = 1.0, seed: int = 0) -> np.ndarray:
    """Functional lobes (Li et al. 2024): SpectralClustering(K, affinity='precomputed').fit_predict(phi + 1).

    `offset` is added to the affinity first: 1 for phi (in [-1, 1], the paper's choice); pass 0
    for the non-negative affinities (Jaccard, Dice, overlap, simple matching).
    """
    return spectral_labels(np.asarray(affinity, dtype=np.float64) + offset, n_lobes, seed=seed)


def _check_dense(n: int, what: str) -> None:
    """Refuse an n x n matrix above core.metrics.knn.EXACT_MAX_ROWS rows (4.8 GB at 24,576), before allocating."""
    from core.metrics.knn import EXACT_MAX_ROWS, dense_bytes

    if n > EXACT_MAX_ROWS:
        raise GeometryInputError(
            f"{what} of {n:,} rows would need {dense_bytes(n) / 1e9:.1f} GB per n x n copy; above "
            f"{EXACT_MAX_ROWS:,} rows use geometric_clusters (sampled) or a subset of the features.")


def geometric_clusters(W_dec: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Clusters of decoder directions (Li et al. 2024; Engels et al. 2024):
    SpectralClustering(K, affinity='precomputed').fit_predict(1 - arccos(clip(cos(W_dec))) / pi).

    Up to core.metrics.knn.EXACT_MAX_ROWS (4,096) rows exactly so; above, the same clustering of a uniform
    sample of that many rows, extended to the rest by their nearest sampled rows (`clusters_by_sample`)."""
    from core.metrics.knn import clusters_by_sample

    W = as_matrix(W_dec, "W_dec", min_rows=1)
    return clusters_by_sample(W, lambda S: spectral_labels(angular_similarity(S), n_clusters, seed=seed), seed=seed)


@dataclass(frozen=True, eq=False)
class LobeAgreement(Result):
    ami: float  # adjusted_mutual_info_score(geometric, lobes)
    null_mean: float  # mean AMI over label permutations
    null_std: float
    p_value: float  # (1 + #{null >= ami}) / (1 + n_permutations)
    z_score: float  # (ami - null_mean) / null_std (nan if the null has no spread)
    null: FloatArray  # the permutation AMIs, for the histogram


def lobe_agreement(
    geometric: np.ndarray, lobe_labels: np.ndarray, n_permutations: int = 100, seed: int = 0
) -> LobeAgreement:
    """Agreement of geometric clusters and co-occurrence lobes (Li et al. 2024):

        ami = adjusted_mutual_info_score(geometric, lobes)
        null: the same with `lobes` randomly permuted, n_permutations times
        p = (1 + #{null >= ami}) / (1 + n_permutations)
    """
    g = np.asarray(geometric).ravel()
    l_ = np.asarray(lobe_labels).ravel()
    if g.shape != l_.shape or g.size < 2:
        raise GeometryInputError("Both labelings must have the same length (one label per feature, at least 2).")
    if n_permutations < 1:
        raise GeometryInputError("n_permutations must be at least 1.")
    ami = float(adjusted_mutual_info_score(g, l_))
    rng = np.random.default_rng(seed)
    null = np.array([adjusted_mutual_info_score(g, rng.permutation(l_)) for _ in range(n_permutations)])
    std = float(null.std())
    return LobeAgreement(
        ami=ami,
        null_mean=float(null.mean()),
        null_std=std,
        p_value=float((1 + np.sum(null >= ami)) / (1 + n_permutations)),
        z_score=float((ami - null.mean()) / std) if std > 0 else float("nan"),
        null=null,
    )
