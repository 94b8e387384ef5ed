"""Multi-dimensional (circular) features.

Engels, Michaud, Liao, Gurnee, Tegmark (2024), "Not All Language Model Features Are Linear"
(METHODS.md section 7): cluster SAE decoder directions, look at the PCA of each cluster's
reconstructions, and score cyclic items (weekdays, months) for circles at any Fourier frequency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.decomposition import PCA

from core.jsonable import FloatArray, IntArray, Result
from core.metrics.geometry import GeometryInputError, as_matrix, geometric_clusters

__all__ = [
    "ClusterPCA",
    "Circularity",
    "decoder_clusters",
    "cluster_reconstruction_pca",
    "fourier_shares",
    "angular_visit_order",
    "circularity",
]


def decoder_clusters(W_dec: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Clusters of SAE features by decoder direction (Engels et al. 2024):

        A = 1 - arccos(clamp(W_dec @ W_dec.T / norms, -1, 1)) / pi
        clusters = SpectralClustering(n_clusters, affinity='precomputed').fit_predict(A)

    Returns one label per feature (row of W_dec).
    """
    return geometric_clusters(W_dec, n_clusters, seed=seed)


@dataclass(frozen=True, eq=False)
class ClusterPCA(Result):
    feature_ids: IntArray  # the cluster's features
    token_indices: IntArray  # rows of Z where at least one cluster feature fires
    projections: FloatArray  # [n_kept_tokens, n_components] PCA coordinates of the reconstructions
    components: FloatArray  # [n_components, d] principal axes
    explained_variance_ratio: FloatArray


def cluster_reconstruction_pca(
    Z: np.ndarray, W_dec: np.ndarray, feature_ids: np.ndarray, n_components: int = 5, seed: int = 0
) -> ClusterPCA:
    """PCA of one feature cluster's reconstructions (Engels et al. 2024):

        r_t = sum over features i in the cluster with z_{t,i} > 0 of z_{t,i} * W_dec[i]
        keep tokens t where any cluster feature fires;  P = PCA(min(5, |cluster|)).fit_transform(R)

    Circles show up in consecutive PC pairs (days and months in PCs 2-3 of GPT-2 layer 7).
    """
    Zm = np.asarray(Z, dtype=np.float64)
    W = as_matrix(W_dec, "W_dec")
    if not np.all(np.isfinite(Zm)):
        raise GeometryInputError("The feature codes Z contain NaN or infinite values.")
    if Zm.ndim != 2 or Zm.shape[1] != W.shape[0]:
        raise GeometryInputError(
            f"Z must be [n_tokens, d_sae] with d_sae = {W.shape[0]} (rows of W_dec); got shape {Zm.shape}."
        )
    ids = np.unique(np.asarray(feature_ids, dtype=np.int64).ravel())
    if ids.size == 0 or ids.min() < 0 or ids.max() >= W.shape[0]:
        raise GeometryInputError("feature_ids must be a non-empty list of valid feature indices.")
    Zc = np.where(Zm[:, ids] > 0, Zm[:, ids], 0.0)
    keep = np.flatnonzero((Zc > 0).any(1))
    if keep.size < 2:
        raise GeometryInputError("The cluster's features fire on fewer than 2 tokens; there is nothing to project.")
    R = Zc[keep] @ W[ids]
    k = int(min(n_components, ids.size, keep.size, W.shape[1]))
    pca = PCA(n_components=k, random_state=seed).fit(R)
    return ClusterPCA(
        feature_ids=ids,
        token_indices=keep,
        projections=pca.transform(R),
        components=pca.components_,
        explained_variance_ratio=pca.explained_variance_ratio_,
    )


def _fourier_basis(k: int, f: int) -> np.ndarray:
    """Orthonormal basis (columns, in item space R^k) of frequency f: cos and sin(2 pi f i / k)."""
    i = np.arange(k)
    cols = [np.cos(2 * np.pi * f * i / k)]
    if 2 * f != k:  # at the Nyquist frequency sin vanishes: a 1-D component
        cols.append(np.sin(2 * np.pi * f * i / k))
    B = np.stack(cols, axis=1)
    return B / np.linalg.norm(B, axis=0)


def fourier_shares(M: np.ndarray) -> np.ndarray:
    """Share of the centred variance of item representations M [k, d] at each frequency f = 1..k//2.

        Mc = M - M.mean(0);  share_f = ||B_f^T Mc||_F^2 / ||Mc||_F^2,
        B_f = orthonormalised [cos(2 pi f i / k), sin(2 pi f i / k)]

    The shares sum to 1 (the Fourier basis spans every centred signal on the cycle).
    Index 0 of the result is f = 1.
    """
    M = as_matrix(M, "M", min_rows=3)
    k = M.shape[0]
    Mc = M - M.mean(0)
    total = float(np.sum(Mc**2))
    if total <= 0:
        raise GeometryInputError("All item representations are identical; there is no variance to score.")
    return np.array([np.sum((_fourier_basis(k, f).T @ Mc) ** 2) / total for f in range(1, k // 2 + 1)])


def angular_visit_order(points_2d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Items in angular order around the origin of a plane, and the cyclic index steps between them.

        angle_i = atan2(y_i, x_i);  order = argsort((angle - angle_0) mod 2 pi)   # starts at item 0
        steps_j = (order[j+1] - order[j]) mod k, cyclically (the last step returns to order[0])

    On a frequency-f circle with k items every step is f^-1 mod k (or k minus it, going round the
    other way).
    """
    pts = np.asarray(points_2d, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise GeometryInputError(f"points_2d must be [k, 2]; got shape {pts.shape}.")
    k = pts.shape[0]
    angles = np.arctan2(pts[:, 1], pts[:, 0])
    order = np.argsort(np.mod(angles - angles[0], 2 * np.pi), kind="stable")
    return order, np.mod(np.diff(np.append(order, order[0])), k)


@dataclass(frozen=True, eq=False)
class Circularity(Result):
    k: int
    frequencies: IntArray  # 1..k//2
    shares: FloatArray  # share of variance per frequency
    best_frequency: int
    best_share: float
    p_value: float  # shuffled-label p-value of best_share (max over f, so the choice of f is paid for)
    null_best_shares: FloatArray  # max-over-f share of each permutation
    null_share_mean: FloatArray  # per frequency, mean share under shuffled labels
    null_share_q95: FloatArray  # per frequency, 95th percentile under shuffled labels
    circle_balance: float  # smaller / larger singular value of the cos/sin coefficients (1 = round circle)
    visit_order: IntArray  # items in angular order around the best-f circle, starting at item 0
    steps: IntArray  # (visit_order[j+1] - visit_order[j]) mod k, cyclically
    visit_step: int  # expected step between angular neighbours: f^-1 mod k (0 when f, k not coprime)
    regular_visit: bool  # every angular neighbour is exactly visit_step apart in the cycle
    coprime: bool  # gcd(f, k) == 1: the circle visits every item once
    points_2d: FloatArray  # [k, 2] items projected on the best-f plane (for plots)


def circularity(M: np.ndarray, n_permutations: int = 200, seed: int = 0) -> Circularity:
    """Circle detection at any Fourier frequency (after Engels et al. 2024; METHODS.md section 7).

    For items with cyclic index i = 0..k-1 and representations M [k, d]:

        Mc = M - mean;  share_f = variance of Mc captured by cos/sin(2 pi f i / k), f = 1..k//2
        best f = argmax share_f
        null: rows of M permuted n_permutations times; statistic max_f share_f
        p = (1 + #{null >= observed}) / (1 + n_permutations)

    f = 1 is calendar order; networks trained on modular arithmetic often circle at another f
    coprime with k (months at f = 5: visited 0, 5, 10, 3, ... or, read the other way, 0, 7, 2, 9).
    The visiting order is read from the angles of the items on the best-f plane (the plane spanned
    by the cos and sin coefficient vectors). Item i sits at angle 2 pi f i / k, so consecutive
    items of the cycle are f slots apart on the circle and angular neighbours are
    f^-1 (mod k) items apart in the cycle (for k = 12, f = 5 both are 5; for k = 7, f = 2 the
    neighbours are 4 apart). The order is oriented so that its first step is +f^-1 mod k;
    `regular_visit` says whether every step is exactly that.
    `circle_balance` separates a round circle (1) from a line that alternates at that frequency (0).
    """
    M = as_matrix(M, "M", min_rows=3)
    k = M.shape[0]
    if n_permutations < 1:
        raise GeometryInputError("n_permutations must be at least 1.")
    shares = fourier_shares(M)
    freqs = np.arange(1, k // 2 + 1)
    best_idx = int(np.argmax(shares))
    f = int(freqs[best_idx])

    rng = np.random.default_rng(seed)
    null = np.stack([fourier_shares(M[rng.permutation(k)]) for _ in range(n_permutations)])
    null_best = null.max(1)
    p = float((1 + np.sum(null_best >= shares[best_idx] - 1e-12)) / (1 + n_permutations))

    Mc = M - M.mean(0)
    i = np.arange(k)
    c = np.cos(2 * np.pi * f * i / k)
    s = np.sin(2 * np.pi * f * i / k)
    coef = np.stack([c @ Mc, s @ Mc], axis=1)  # [d, 2]: the circle's two axes in representation space
    sv = np.linalg.svd(coef, compute_uv=False)
    balance = float(sv[1] / sv[0]) if sv[0] > 0 and sv.size > 1 else 0.0
    Q, _ = np.linalg.qr(coef)
    pts = Mc @ Q  # [k, 2]
    order, steps = angular_visit_order(pts)
    coprime = math.gcd(f, k) == 1
    visit_step = pow(f, -1, k) if coprime else 0
    if coprime and steps[0] == (k - visit_step) % k and visit_step != k - visit_step:
        order = np.concatenate([[order[0]], order[1:][::-1]])
        steps = np.mod(np.diff(np.append(order, order[0])), k)
    return Circularity(
        k=k,
        frequencies=freqs,
        shares=shares,
        best_frequency=f,
        best_share=float(shares[best_idx]),
        p_value=p,
        null_best_shares=null_best,
        null_share_mean=null.mean(0),
        null_share_q95=np.quantile(null, 0.95, axis=0),
        circle_balance=balance,
        visit_order=order,
        steps=steps,
        visit_step=int(visit_step),
        regular_visit=bool(coprime and np.all(steps == visit_step)),
        coprime=coprime,
        points_2d=pts,
    )
