"""Superposition counts and interference.

Effective features: Bereska et al., "Superposition as Lossy Compression" (TMLR 2025), METHODS.md
section 1. Interference of feature directions: Liu, Liu & Gore, "Superposition Yields Robust
Neural Scaling" (2025), METHODS.md section 2. Weight baseline psi_frob: Elhage et al. 2022, "Toy
Models of Superposition".

The harvest accumulates per SAE `l1_mass = abs(Z).sum(0)` and `fire_count = (Z > 0).sum(0)` over
all tokens; everything here works from those sums, so no per-token array is ever needed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from core.jsonable import FloatArray, Result
from core.metrics.spectral import MetricInputError, _finite_array


@dataclass(frozen=True, eq=False)
class EffectiveFeatures(Result):
    """F = exp(H(p)) on the L1 mass share, with the numbers reported beside it."""

    F: float  # effective features ("virtual neurons")
    entropy_nats: float  # H(p) = log F
    psi: float | None  # F / N, features per neuron of the site; None without N
    width: int | None  # N: d_model (or d_mlp for MLP neurons)
    n_features: int  # dictionary size d_sae
    alive: int  # features ever active
    mean_l0: float | None  # mean number of active features per token; None without fire counts


def _mass(l1_mass, name: str = "l1_mass") -> np.ndarray:
    mass = _finite_array(l1_mass, name, ndim=1)
    if np.any(mass < 0):
        raise MetricInputError(f"{name} must be non-negative: it is a sum of |activations|.")
    if mass.sum() <= 0:
        raise MetricInputError("No feature was ever active: the L1 mass is all zero.")
    return mass


def effective_features_from_mass(l1_mass) -> float:
    """F = exp(-(p * log p).sum()) with p = l1_mass / l1_mass.sum(), over p > 0 only.

    (Bereska et al. 2025, METHODS.md section 1; the authors add 1e-10 and renormalise, which
    agrees to ~1e-6.) Uniform mass over k features gives exactly k; one-hot mass gives 1.
    """
    mass = _mass(l1_mass)
    p = mass / mass.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def effective_features(l1_mass, width: int | None = None, fire_count=None,
                       n_tokens: int | None = None) -> EffectiveFeatures:
    """Effective number of features of one SAE site (Bereska et al. 2025, METHODS.md section 1).

        p = l1_mass / l1_mass.sum();  p = p[p > 0];  F = exp(-(p * log p).sum());  psi = F / N
    l1_mass = abs(Z).sum(0) pooled over every token of the corpus (not per token, not firing
    frequency). N = `width`, the site's width (d_model, or d_mlp for MLP neurons).
    alive = features with fire_count > 0 when fire counts are given, else with l1_mass > 0.
    mean L0 = fire_count.sum() / n_tokens (needs both).
    """
    mass = _mass(l1_mass)
    p = mass / mass.sum()
    p = p[p > 0]
    entropy = float(-(p * np.log(p)).sum())
    F = float(np.exp(entropy))
    if width is not None and int(width) <= 0:
        raise MetricInputError("The site width N must be a positive integer.")
    psi = None if width is None else F / int(width)
    alive = int((mass > 0).sum())
    mean_l0 = None
    if fire_count is not None:
        counts = _finite_array(fire_count, "fire_count", ndim=1)
        if counts.shape != mass.shape:
            raise MetricInputError("fire_count and l1_mass must have one entry per feature.")
        if np.any(counts < 0):
            raise MetricInputError("fire_count must be non-negative.")
        alive = int((counts > 0).sum())
        if n_tokens is not None:
            if int(n_tokens) <= 0:
                raise MetricInputError("n_tokens must be positive.")
            mean_l0 = float(counts.sum() / int(n_tokens))
    return EffectiveFeatures(F, entropy, psi, None if width is None else int(width), int(mass.size),
                             alive, mean_l0)


# --------------------------------------------------------------------------- convergence


def snapshot_token_counts(total_tokens: int, n_points: int = 20, first: int = 100) -> np.ndarray:
    """Log-spaced token counts first..total_tokens (distinct ints, ending at total_tokens) at which
    a harvest snapshots the cumulative L1 mass for the convergence curve of F."""
    total = int(total_tokens)
    if total < 1 or n_points < 1:
        raise MetricInputError("total_tokens and n_points must be positive.")
    start = max(1, min(int(first), total))
    counts = np.unique(np.round(np.geomspace(start, total, n_points)).astype(np.int64))
    counts[-1] = total
    return counts


def cumulative_mass_snapshots(abs_z_batches: Iterable, token_counts) -> np.ndarray:
    """Cumulative L1 mass abs(Z).sum(0) at each requested token count, from a stream of batches.

    abs_z_batches yields arrays [batch_tokens, d_sae] (absolute values are taken here); batches are
    split where a snapshot falls inside one. Returns [len(token_counts), d_sae]. Counts past the end
    of the stream raise. Memory: one [d_sae] accumulator.
    """
    counts = np.asarray(token_counts, dtype=np.int64)
    if counts.ndim != 1 or counts.size == 0 or np.any(np.diff(counts) <= 0) or counts[0] <= 0:
        raise MetricInputError("token_counts must be positive and strictly increasing.")
    snapshots: list[np.ndarray] = []
    total = None
    seen = 0
    target = 0
    for batch in abs_z_batches:
        z = np.abs(np.asarray(batch, dtype=np.float64))
        if z.ndim != 2:
            raise MetricInputError("Each batch of feature activations must be [tokens, d_sae].")
        if total is None:
            total = np.zeros(z.shape[1])
        row = 0
        while target < counts.size and seen + (z.shape[0] - row) >= counts[target]:
            take = int(counts[target] - seen)
            total += z[row : row + take].sum(0)
            row += take
            seen += take
            snapshots.append(total.copy())
            target += 1
        total += z[row:].sum(0)
        seen += z.shape[0] - row
        if target == counts.size:
            break
    if target < counts.size:
        raise MetricInputError(
            f"The stream ended after {seen} tokens, before the snapshot at {int(counts[target])}."
        )
    return np.stack(snapshots)


@dataclass(frozen=True, eq=False)
class ConvergenceCurve(Result):
    """F against the number of tokens it was measured on."""

    token_counts: FloatArray
    F: FloatArray
    final_relative_change: float  # (F[-1] - F[-2]) / F[-1]: small when F has saturated


def effective_features_curve(mass_snapshots, token_counts) -> ConvergenceCurve:
    """Convergence of F with sample count: F(cumulative L1 mass after t tokens) for each t.

    mass_snapshots [k, d_sae] are cumulative abs(Z).sum(0) after token_counts[k] tokens (the
    harvest stores them at log-spaced counts; see `snapshot_token_counts`). Bereska et al. 2025
    (METHODS.md section 1) report F saturating after ~2e4 samples on Pythia-70M.
    """
    snaps = _finite_array(mass_snapshots, "mass_snapshots", ndim=2)
    counts = _finite_array(token_counts, "token_counts", ndim=1)
    if snaps.shape[0] != counts.size:
        raise MetricInputError("One token count per mass snapshot is needed.")
    if np.any(np.diff(counts) <= 0):
        raise MetricInputError("token_counts must be strictly increasing.")
    values = np.array([effective_features_from_mass(s) for s in snaps])
    change = float((values[-1] - values[-2]) / values[-1]) if values.size >= 2 else float("nan")
    return ConvergenceCurve(counts, values, change)


# --------------------------------------------------------------------------- weights


def psi_frob(W, width: int | None = None) -> float:
    """Weight baseline of superposition: psi_frob = ||W||_F**2 / N.

    W is the toy model's [m, n] weight (m neurons, n features; columns are feature directions),
    N = m by default. Valid on toy weights whose represented columns have norm ~1, not on SAE
    weights (whose decoder norms are arbitrary). (Elhage et al. 2022; METHODS.md section 1.)
    """
    w = _finite_array(W, "W", ndim=2)
    n = w.shape[0] if width is None else int(width)
    if n <= 0:
        raise MetricInputError("The width N must be positive.")
    return float((w**2).sum() / n)


@dataclass(frozen=True, eq=False)
class InterferenceStats(Result):
    """Overlaps |cos| between feature directions, against the random-vector reference 1/m."""

    n_rows: int
    width: int  # m: the space the rows live in
    n_pairs: int  # pairs the overlaps were computed on
    sampled: bool  # True when pairs were sampled (too many rows for all pairs)
    mean_overlap: float
    msq_overlap: float
    reference_msq: float  # 1/m: random unit vectors in m dims (strong superposition sits near it)
    msq_ratio: float  # msq_overlap * m
    row_norm_mean: float
    row_norm_std: float
    row_norm_min: float
    row_norm_max: float
    n_zero_rows: int  # rows of norm 0, left out of the overlaps


_BLOCK = 8192  # rows or pairs per float64 block in `interference`


def interference(W, max_pairs: int = 200_000, seed: int = 0) -> InterferenceStats:
    """Interference between feature directions (Liu, Liu & Gore 2025; METHODS.md section 2).

        Wn = W / norm(W, axis=1);  c = |Wn @ Wn.T| over pairs i < j
        mean_overlap = c.mean();  msq_overlap = (c**2).mean()   (random unit vectors: 1/m)
    W [n_rows, m] holds one direction per row: SAE decoder rows W_dec, or unembedding rows
    (W_U.T). When n_rows * (n_rows - 1) / 2 > max_pairs, `max_pairs` pairs i != j are drawn
    uniformly at random (with replacement, generator seeded by `seed`), which estimates the same
    means without the n_rows**2 Gram matrix. Zero rows have no direction and are left out.
    Also the mean/std/min/max of the row norms (all rows).
    """
    w = W.detach().cpu().numpy() if hasattr(W, "detach") else np.asarray(W)
    if w.ndim != 2 or w.size < 1 or not np.issubdtype(w.dtype, np.number):
        raise MetricInputError(f"W must be a 2-dimensional numeric array; got shape {w.shape}.")
    if int(max_pairs) < 1:
        raise MetricInputError("max_pairs must be positive.")
    # Rows are read in float64 blocks: a 256k x 2304 unembedding is never copied whole (4.7 GB in float64).
    norms = np.empty(w.shape[0])
    for start in range(0, w.shape[0], _BLOCK):
        block = np.asarray(w[start:start + _BLOCK], dtype=np.float64)
        if not np.all(np.isfinite(block)):
            raise MetricInputError("W contains NaN or infinite values.")
        norms[start:start + _BLOCK] = np.linalg.norm(block, axis=1)
    nonzero = norms > 0
    ids = np.flatnonzero(nonzero)
    k, m = ids.size, w.shape[1]
    if k < 2:
        raise MetricInputError("Interference needs at least 2 nonzero rows.")

    def unit(rows: np.ndarray) -> np.ndarray:  # rows: positions in ids
        return np.asarray(w[ids[rows]], dtype=np.float64) / norms[ids[rows], None]

    total_pairs = k * (k - 1) // 2
    sampled = total_pairs > int(max_pairs)
    if sampled:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, k, size=int(max_pairs))
        j = rng.integers(0, k - 1, size=int(max_pairs))
        j = j + (j >= i)  # uniform over j != i
        c = np.concatenate([np.abs(np.einsum("pd,pd->p", unit(i[s:s + _BLOCK]), unit(j[s:s + _BLOCK])))
                            for s in range(0, i.size, _BLOCK)])
    else:
        rows = unit(np.arange(k))
        gram = rows @ rows.T
        c = np.abs(gram[np.triu_indices(k, 1)])
    return InterferenceStats(
        n_rows=int(w.shape[0]), width=int(m), n_pairs=int(c.size), sampled=bool(sampled),
        mean_overlap=float(c.mean()), msq_overlap=float((c**2).mean()), reference_msq=1.0 / m,
        msq_ratio=float((c**2).mean() * m), row_norm_mean=float(norms.mean()),
        row_norm_std=float(norms.std()), row_norm_min=float(norms.min()),
        row_norm_max=float(norms.max()), n_zero_rows=int((~nonzero).sum()),
    )
