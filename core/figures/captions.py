"""Captions that put a measured number next to what it should be compared with: the papers' values, with
why they differ here, and the null of the same estimator at the same size. Pages show these strings;
the numbers they quote come from the results, never from the text.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np

from core.metrics.geometry import ClusteringEntropy, GalaxySpectrum, galaxy_spectrum

# Li et al. 2024 ("The Geometry of Concepts"), Gemma Scope residual SAEs on Gemma-2-2B.
GEMMA_SCOPE_ALPHA = (0.24, 0.48)
GEMMA_SCOPE_D_MODEL = 2304
GEMMA_SCOPE_WIDTH = 65_536


@lru_cache(maxsize=64)   # a page rerun asks again for the same shape
def isotropic_galaxy_alpha(n_features: int, d: int, *, seed: int = 0) -> float:
    """alpha of `n_features` random Gaussian directions in `d` dimensions, fitted over the same ranks as a
    decoder of that shape (`galaxy_spectrum`'s default range): the null a measured alpha is compared with.
    It is not 0: with finitely many points the sample eigenvalues spread (Marchenko-Pastur), more the
    larger d / n_features and the deeper the fit reaches into the spectrum.

    Large shapes (a 65k x 2304 SAE) never materialise the sample: the scatter matrix of n Gaussian rows is
    Wishart(n - 1, I_d), drawn by Bartlett's decomposition A (d x d lower-triangular, A_ii^2 ~ chi2(n - 1 - i),
    A_ij ~ N(0, 1) below); the rows [A^T; -A^T] have covariance proportional to A A^T, so the same fit reads it.
    """
    n, d = int(n_features), int(d)
    rng = np.random.default_rng(seed)
    if n * d <= 4_000_000 or n - 1 < d:
        return float(galaxy_spectrum(rng.standard_normal((n, d))).alpha)
    A = np.tril(rng.standard_normal((d, d)), k=-1)
    A[np.diag_indices(d)] = np.sqrt(rng.chisquare(n - 1 - np.arange(d)))
    return float(galaxy_spectrum(np.vstack([A.T, -A.T])).alpha)


def galaxy_alpha_caption(spectra: Sequence[GalaxySpectrum], *, n_features: int, d: int, null_alpha: float) -> str:
    """Why this model's decoder-cloud alphas differ from Gemma Scope's, and the null at this shape."""
    alphas = [float(s.alpha) for s in spectra]
    first = spectra[0]
    low, high = GEMMA_SCOPE_ALPHA
    measured = (f"{alphas[0]:.2f}" if len(alphas) == 1
                else f"{alphas[0]:.2f} (first layer) to {alphas[-1]:.2f} (last), "
                     f"range {min(alphas):.2f}-{max(alphas):.2f}")
    return (f"alpha is minus the log-log slope of the decoder cloud's variance against rank: larger = variance "
            f"concentrated in fewer directions. Here: {measured}, for {n_features:,} features in d = {d} dimensions, "
            f"fitted over ranks {first.fit_start + 1}-{first.fit_stop}"
            + (" (the paper's 11-150 shrunk for a small d)" if first.adapted else "")
            + f". Gemma Scope (Li et al. 2024) finds {low}-{high} (rising to mid-depth, then falling) for "
            f"{GEMMA_SCOPE_WIDTH:,}-wide SAEs on d = {GEMMA_SCOPE_D_MODEL}, fitted over ranks 11-150 of "
            f"{GEMMA_SCOPE_D_MODEL}. The sizes are not comparable: a different model width, SAE width and part of the "
            f"spectrum; and the null differs too: {n_features:,} random directions in {d} dimensions give "
            f"alpha = {null_alpha:.2f} over the same ranks (dotted line), where Gemma Scope's shape gives ~0.03. "
            f"Read the distance from that null ({min(alphas) - null_alpha:+.2f} to {max(alphas) - null_alpha:+.2f}) "
            "and the shape across layers, not the raw values.")


def clustering_entropy_caption(result: ClusteringEntropy) -> str:
    """What the clustering entropy is, what it should be, and the measured value against its null."""
    per_dim = result.gap_calibrated / max(result.n_dims, 1)
    verdict = ("more clustered than its Gaussian null" if result.gap_calibrated > 0
               else "no more clustered than its Gaussian null")
    return (f"Clustering entropy (Li et al. 2024): H_gauss - H_kNN, the entropy of a Gaussian with the cloud's "
            f"covariance minus the cloud's own (kNN estimate, k = {result.k}), in nats over the {result.n_dims} "
            f"top PCs of {result.n_points:,} z-scored decoder rows. A Gaussian has the largest entropy for its "
            "covariance, so the true value is >= 0 (0 for an unclustered cloud, larger when features bunch into "
            "clusters; the paper finds it highest mid-depth). The raw estimate here is "
            f"{result.gap:.2f} nats: in {result.n_dims} dimensions with {result.n_points:,} points the kNN "
            "estimator is biased, so the raw number is not the answer. Its null: the same kNN estimator gives "
            f"{result.h_knn_gaussian_surrogate:.2f} nats on a Gaussian sample of the same size and covariance and "
            f"{result.h_knn:.2f} on the cloud, a calibrated gap of {result.gap_calibrated:.2f} nats "
            f"({per_dim:.3f} per dimension), {verdict}.")
