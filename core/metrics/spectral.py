"""Spectral measurements of representations: eigenspectrum, RankMe, alpha-ReQ, participation ratio,
and the segmentation of training into spectral phases.

Paper: Li et al., "Tracing the Representation Geometry of Language Models from Pretraining to
Post-training" (NeurIPS 2025); formulas as in METHODS.md section 4. RankMe itself is Garrido et al.
2023 ("RankMe: Assessing the downstream performance of pretrained self-supervised representations by
their rank"); alpha-ReQ is Agrawal et al. 2022 ("alpha-ReQ: Assessing representation quality by
measuring eigenspectrum decay").

Everything here is a pure function of numpy arrays. The harvest gives a covariance per site
(`cov`, already centred and divided by n), so most callers start from `spectral_summary(cov)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.errors import AtlasError, MetricInputError  # noqa: F401  (re-exported for the metrics modules)
from core.jsonable import FloatArray, Result

# The paper's alpha-ReQ fit range: ranks 12..100 (1-based), i.e. indices 11..99.
PAPER_FIT_FIRST_RANK = 12
PAPER_FIT_LAST_RANK = 100
RANKME_EPSILON = 1e-7
# Eigenvalues below this fraction of the largest are numerically zero: a float64 covariance of rank r < d
# (fewer samples than dimensions) has its d - r zero eigenvalues at ~d * 1e-16 of the largest, while a
# real spectrum (d <= 10^4) stays many orders above. The power-law fits ignore them (see `numerical_rank`).
ZERO_EIGENVALUE_RTOL = 1e-12

PHASE_WARMUP = "warmup"
PHASE_ENTROPY = "entropy-seeking"
PHASE_COMPRESSION = "compression-seeking"


def _finite_array(values, name: str, ndim: int | None = None, min_size: int = 1) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise MetricInputError(f"{name} must be numeric; got {type(values).__name__}.") from error
    if ndim is not None and arr.ndim != ndim:
        raise MetricInputError(f"{name} must be {ndim}-dimensional; got shape {arr.shape}.")
    if arr.size < min_size:
        raise MetricInputError(f"{name} needs at least {min_size} values; got {arr.size}.")
    if not np.all(np.isfinite(arr)):
        raise MetricInputError(f"{name} contains NaN or infinite values.")
    return arr


# --------------------------------------------------------------------------- eigenspectrum


def eigenspectrum_from_covariance(cov) -> np.ndarray:
    """Eigenvalues of a covariance matrix, sorted descending and clipped at 0.

    lam = eigvalsh((C + C.T) / 2), sorted descending, max(lam, 0).
    Tiny negative eigenvalues come from round-off in a streamed covariance; they are variance 0.
    (Li et al. 2025, METHODS.md section 4: lam = eigenvalues of Hc.T @ Hc / n.)
    """
    c = _finite_array(cov, "covariance", ndim=2)
    if c.shape[0] != c.shape[1]:
        raise MetricInputError(f"A covariance matrix must be square; got shape {c.shape}.")
    try:
        lam = np.linalg.eigvalsh((c + c.T) / 2.0)[::-1]
    except np.linalg.LinAlgError as error:  # values near the float64 range
        raise MetricInputError(f"The covariance's eigenvalues cannot be computed ({error}); rescale it.") from None
    return np.clip(lam, 0.0, None)


def eigenspectrum(X) -> np.ndarray:
    """PCA eigenvalues of representations X [n, d]: centred, divided by n (not n - 1).

    Hc = X - X.mean(0);  lam = eigenvalues of Hc.T @ Hc / n, sorted descending (length d).
    Computed from the singular values of Hc (lam = s**2 / n), padded with zeros when n < d.
    (Li et al. 2025, METHODS.md section 4.)
    """
    x = _finite_array(X, "X", ndim=2)
    n, d = x.shape
    if n < 2:
        raise MetricInputError("An eigenspectrum needs at least 2 samples.")
    hc = x - x.mean(axis=0, keepdims=True)
    s = np.linalg.svd(hc, compute_uv=False)
    lam = np.zeros(d)
    lam[: s.size] = s**2 / n
    return np.sort(lam)[::-1]


def _spectrum(lam, name: str = "eigenvalues") -> np.ndarray:
    arr = _finite_array(lam, name, ndim=1)
    if np.any(arr < 0):
        raise MetricInputError(f"{name} must be non-negative (a covariance spectrum).")
    total = arr.sum()
    if total <= 0:
        raise MetricInputError(f"All {name} are zero: the representations do not vary.")
    if not np.isfinite(total):
        raise MetricInputError(f"The {name} sum past the float64 range (~1e308): rescale the representations.")
    return np.sort(arr)[::-1]


def numerical_rank(lam, rtol: float = ZERO_EIGENVALUE_RTOL) -> int:
    """How many eigenvalues exceed rtol * max(lam): the rank of the spectrum, round-off zeros excluded."""
    arr = np.asarray(lam, dtype=np.float64)
    top = float(arr.max()) if arr.size else 0.0
    return int((arr > rtol * top).sum()) if top > 0 else 0


# --------------------------------------------------------------------------- scalar summaries


def rankme(lam) -> float:
    """RankMe: effective rank as the exponentiated entropy of the variance ratios.

    q = lam / lam.sum() + 1e-7;  rankme = exp(-(q * log(q)).sum())
    The 1e-7 is added to every entry, as the paper's code does, so each zero eigenvalue adds
    ~1.6e-6. A flat spectrum of k nonzero eigenvalues gives ~k.
    (Garrido et al. 2023; Li et al. 2025, METHODS.md section 4.)
    """
    arr = _spectrum(lam)
    q = arr / arr.sum() + RANKME_EPSILON
    return float(np.exp(-(q * np.log(q)).sum()))


def participation_ratio(lam) -> float:
    """Participation ratio PR = (sum lam)**2 / sum(lam**2).

    k equal eigenvalues give exactly k; one dominant eigenvalue gives ~1.
    (Li et al. 2025, METHODS.md section 4; Gao et al. 2017 for its use as a dimension.)
    """
    arr = _spectrum(lam)
    with np.errstate(over="ignore", invalid="ignore"):
        value = arr.sum() ** 2 / (arr**2).sum()
    if not np.isfinite(value):  # eigenvalues past ~1e154 overflow when squared; PR is scale-free
        scaled = arr / arr[0]
        value = scaled.sum() ** 2 / (scaled**2).sum()
    return float(value)


@dataclass(frozen=True, eq=False)
class AlphaReqResult(Result):
    """An alpha-ReQ fit: lam_r ~ C * r**-alpha over ranks first_rank..last_rank (1-based, inclusive)."""

    alpha: float
    log_intercept: float
    first_rank: int
    last_rank: int
    n_points: int
    adapted: bool
    message: str


def default_fit_range(d: int) -> tuple[tuple[int, int], bool, str]:
    """The alpha-ReQ fit range for dimension d, as (first_rank, last_rank) 1-based inclusive.

    d >= 100: the paper's ranks 12..100. d < 100: ranks round(d/10)..round(d/2) (METHODS.md
    section 4), widened to at least 3 ranks; the second value says the range was adapted.
    """
    if d >= PAPER_FIT_LAST_RANK:
        return (PAPER_FIT_FIRST_RANK, PAPER_FIT_LAST_RANK), False, ""
    if d < 4:
        raise MetricInputError(f"alpha-ReQ needs a spectrum of at least 4 dimensions; got {d}.")
    first = max(1, int(round(d / 10)))
    last = min(d, max(first + 2, int(round(d / 2))))
    message = (
        f"d = {d} < {PAPER_FIT_LAST_RANK}: alpha fitted over ranks {first}..{last} "
        f"(about d/10..d/2) instead of the paper's {PAPER_FIT_FIRST_RANK}..{PAPER_FIT_LAST_RANK}."
    )
    return (first, last), True, message


def alpha_req(lam, fit_range: tuple[int, int] | None = None) -> AlphaReqResult:
    """alpha-ReQ: the decay exponent of the eigenspectrum, by weighted least squares in log-log.

    Over ranks r in the fit range (paper: 12..100, 0-based t = 11..99), weights w = 1 / r:
        y = log(lam[t]);  A = c_[-log(r), ones];  W = diag(w)
        (alpha, log C) = solve(A.T W A, A.T W y)
    so lam_r ~ C * r**-alpha. When d < 100 the range shrinks to ranks ~d/10..~d/2 and the result
    says so (`adapted`, `message`).
    Rank-deficient spectra (fewer samples than dimensions): eigenvalues below ZERO_EIGENVALUE_RTOL
    times the largest are round-off, not variance, and never enter the fit. The default range is then
    chosen for the numerical rank r instead of d (ranks 12..100 when r >= 100, else ~r/10..~r/2) and
    the message says so; a spectrum of rank < 4 gives alpha = NaN with a message. In a range given
    explicitly, zero eigenvalues are left out and counted in the message; with fewer than 3 points
    left, alpha is NaN.
    (Agrawal et al. 2022; Li et al. 2025, METHODS.md section 4.)
    """
    arr = _spectrum(lam)
    d = arr.size
    rank = numerical_rank(arr)
    if fit_range is None:
        if rank < min(d, PAPER_FIT_LAST_RANK) and rank < 4:
            return AlphaReqResult(float("nan"), float("nan"), 1, d, 0, True,
                                  f"The spectrum has only {rank} nonzero eigenvalue(s) of {d}: too few to fit alpha.")
        if rank < min(d, PAPER_FIT_LAST_RANK):
            (first, last), _, _ = default_fit_range(rank)
            adapted = True
            message = (f"rank {rank} < d = {d} (fewer samples than dimensions?): alpha fitted over ranks "
                       f"{first}..{last} of the {rank} nonzero eigenvalues.")
        else:
            (first, last), adapted, message = default_fit_range(d)
    else:
        try:
            first, last = (int(v) for v in fit_range)
        except (TypeError, ValueError) as error:
            raise MetricInputError("fit_range must be a pair (first_rank, last_rank).") from error
        if not 1 <= first < last <= d:
            raise MetricInputError(
                f"fit_range must satisfy 1 <= first < last <= d = {d}; got ({first}, {last})."
            )
        adapted, message = False, ""
    ranks = np.arange(first, last + 1, dtype=np.float64)
    values = arr[first - 1 : last]
    positive = values > ZERO_EIGENVALUE_RTOL * arr[0]
    if not np.all(positive):
        dropped = int((~positive).sum())
        note = f"{dropped} zero eigenvalue(s) in ranks {first}..{last} left out of the fit."
        message = f"{message} {note}".strip()
        ranks, values = ranks[positive], values[positive]
    if ranks.size < 3:
        return AlphaReqResult(float("nan"), float("nan"), first, last, int(ranks.size), adapted,
                              (message + " Too few positive eigenvalues to fit alpha.").strip())
    y = np.log(values)
    a = np.c_[-np.log(ranks), np.ones_like(ranks)]
    w = 1.0 / ranks
    alpha, intercept = np.linalg.solve(a.T @ (a * w[:, None]), (w[:, None] * a).T @ y)
    return AlphaReqResult(float(alpha), float(intercept), first, last, int(ranks.size), adapted, message)


@dataclass(frozen=True, eq=False)
class SpectralSummary(Result):
    """Every spectral number of one representation site."""

    d: int
    total_variance: float
    rankme: float
    participation_ratio: float
    alpha: AlphaReqResult
    eigenvalues: FloatArray = field(repr=False)


def spectral_summary(cov, fit_range: tuple[int, int] | None = None) -> SpectralSummary:
    """Eigenspectrum, RankMe, participation ratio and alpha-ReQ of one covariance matrix.

    See `eigenspectrum_from_covariance`, `rankme`, `participation_ratio`, `alpha_req`
    (Li et al. 2025, METHODS.md section 4).
    """
    lam = eigenspectrum_from_covariance(cov)
    return SpectralSummary(
        d=int(lam.size),
        total_variance=float(lam.sum()),
        rankme=rankme(lam),
        participation_ratio=participation_ratio(lam),
        alpha=alpha_req(lam, fit_range),
        eigenvalues=lam,
    )


@dataclass(frozen=True, eq=False)
class SpectralTables(Result):
    """RankMe, alpha-ReQ and PR over a grid of covariances, e.g. [n_layers, n_checkpoints]."""

    rankme: FloatArray
    alpha: FloatArray
    participation_ratio: FloatArray
    fit_first_rank: int
    fit_last_rank: int
    fit_message: str


def spectral_tables(covariances, fit_range: tuple[int, int] | None = None) -> SpectralTables:
    """`spectral_summary` over a stack of covariances of shape [..., d, d] (for example
    [n_layers, n_checkpoints, d, d]); returns arrays of shape [...] (layer x checkpoint tables).
    All covariances share d, so they share one fit range. (Li et al. 2025, METHODS.md section 4.)
    """
    covs = _finite_array(covariances, "covariances")
    if covs.ndim < 3 or covs.shape[-1] != covs.shape[-2]:
        raise MetricInputError(f"covariances must have shape [..., d, d]; got {covs.shape}.")
    grid = covs.shape[:-2]
    rm, al, pr = np.empty(grid), np.empty(grid), np.empty(grid)
    first = last = 0
    message = ""
    for index in np.ndindex(*grid):
        summary = spectral_summary(covs[index], fit_range)
        rm[index], al[index], pr[index] = summary.rankme, summary.alpha.alpha, summary.participation_ratio
        first, last = summary.alpha.first_rank, summary.alpha.last_rank
        message = message or summary.alpha.message
    return SpectralTables(rm, al, pr, first, last, message)


# --------------------------------------------------------------------------- phases


def log_step_axis(steps) -> np.ndarray:
    """x = log(step + 1): the axis phases are read on. log1p keeps step 0 (at x = 0) instead of
    dropping it, and differs from log(step) by less than 1/step, which is invisible past step ~10."""
    s = _finite_array(steps, "steps", ndim=1)
    if np.any(s < 0):
        raise MetricInputError("Training steps must be non-negative.")
    return np.log1p(s)


def smooth_local_linear(x, y, bandwidth: float) -> np.ndarray:
    """Local-linear (LOESS-style) smoothing with a Gaussian kernel of width `bandwidth` in x.

    y_s(x_i) = a_i where (a_i, b_i) minimise sum_j K((x_j - x_i)/h) (y_j - a_i - b_i (x_j - x_i))**2.
    Local-linear rather than a moving average because it does not flatten the curve at the
    first and last checkpoints, where phases begin and end. bandwidth <= 0 returns y unchanged.
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    if bandwidth <= 0 or xa.size < 3:
        return ya.copy()
    dx = xa[None, :] - xa[:, None]  # [i, j] = x_j - x_i
    k = np.exp(-0.5 * (dx / bandwidth) ** 2)
    s0, s1, s2 = k.sum(1), (k * dx).sum(1), (k * dx**2).sum(1)
    t0, t1 = (k * ya[None, :]).sum(1), (k * dx * ya[None, :]).sum(1)
    det = s0 * s2 - s1**2
    with np.errstate(invalid="ignore", divide="ignore"):
        local = (s2 * t0 - s1 * t1) / det
    # Where the local design is singular (isolated point), fall back to the kernel mean.
    fallback = t0 / s0
    return np.where(np.abs(det) > 1e-12 * np.maximum(s0 * s2, 1e-300), local, fallback)


@dataclass(frozen=True, eq=False)
class PhaseSegment(Result):
    """One phase: checkpoints start_index..end_index (inclusive) of the input order."""

    label: str
    start_index: int
    end_index: int
    start_step: float
    end_step: float
    rankme_change: float  # smoothed RankMe at end minus at start
    alpha_change: float | None  # smoothed alpha at end minus at start (None without alpha)
    alpha_agrees: bool | None  # alpha moved opposite to RankMe, as the paper describes


@dataclass(frozen=True, eq=False)
class PhaseSegmentation(Result):
    """Phases over training, with the raw and smoothed curves they were read from."""

    steps: FloatArray
    log_step: FloatArray
    rankme_raw: FloatArray
    rankme_smooth: FloatArray
    alpha_raw: FloatArray | None
    alpha_smooth: FloatArray | None
    interval_labels: tuple[str, ...]  # one per interval between consecutive checkpoints
    segments: tuple[PhaseSegment, ...]
    smoothing: float

    @property
    def boundaries(self) -> list[float]:
        """Steps where one phase ends and the next begins."""
        return [seg.end_step for seg in self.segments[:-1]]


def segment_phases(steps, rankme_values, alpha_values=None, smoothing: float = 0.5,
                   flat_tolerance: float = 0.02) -> PhaseSegmentation:
    """Split training into spectral phases by the sign of d(smoothed RankMe) / d log(step).

    x = log(step + 1) (step 0 kept at x = 0, see `log_step_axis`); RankMe is smoothed with a
    local-linear Gaussian kernel of width `smoothing` in x (natural-log units; 0 = no smoothing).
    Each interval between consecutive checkpoints gets the sign of its smoothed slope:
      - the first run of falling RankMe, from the first checkpoint on: warmup (RankMe collapses);
      - rising RankMe: entropy-seeking (the paper: RankMe up, alpha down);
      - falling RankMe after that: compression-seeking (RankMe down, alpha up).
    An interval whose |slope| is below `flat_tolerance` times the curve's overall
    range / x-range is flat and takes its neighbour's label, so noise does not split phases.
    The paper (Li et al. 2025, METHODS.md section 4) describes the phases qualitatively with no
    code; this rule is Atlas's. When alpha is given, each segment reports whether alpha moved
    opposite to RankMe (`alpha_agrees`), as the paper's description expects.
    """
    x = log_step_axis(steps)
    rm = _finite_array(rankme_values, "RankMe values", ndim=1)
    if rm.size != x.size:
        raise MetricInputError("steps and RankMe values must have the same length.")
    if x.size < 2:
        raise MetricInputError("Phase segmentation needs at least 2 checkpoints.")
    order = np.argsort(x, kind="stable")
    if np.any(np.diff(x[order]) <= 0):
        raise MetricInputError("Training steps must be distinct.")
    if not np.array_equal(order, np.arange(x.size)):
        raise MetricInputError("Checkpoints must be given in increasing training step.")
    al = None
    if alpha_values is not None:
        al = np.asarray(alpha_values, dtype=np.float64)
        if al.shape != rm.shape:
            raise MetricInputError("alpha values must have the same length as RankMe values.")
    step_values = np.asarray(steps, dtype=np.float64)

    rm_s = smooth_local_linear(x, rm, smoothing)
    al_s = None
    if al is not None:
        finite = np.isfinite(al)
        al_s = np.full_like(al, np.nan)
        if finite.sum() >= 2:
            al_s[finite] = smooth_local_linear(x[finite], al[finite], smoothing)

    slopes = np.diff(rm_s) / np.diff(x)
    scale = (rm_s.max() - rm_s.min()) / max(x[-1] - x[0], 1e-12)
    signs = np.sign(slopes)
    signs[np.abs(slopes) <= flat_tolerance * scale] = 0
    # Flat intervals inherit the previous direction; leading flats inherit the first real one.
    nonzero = np.flatnonzero(signs)
    if nonzero.size == 0:
        signs[:] = 1  # a flat curve: call it one entropy-seeking (non-collapsing) phase
    else:
        signs[: nonzero[0]] = signs[nonzero[0]]
        for i in range(1, signs.size):
            if signs[i] == 0:
                signs[i] = signs[i - 1]

    labels: list[str] = []
    seen_rise = False
    for sign in signs:
        if sign > 0:
            seen_rise = True
            labels.append(PHASE_ENTROPY)
        else:
            labels.append(PHASE_COMPRESSION if seen_rise else PHASE_WARMUP)

    segments: list[PhaseSegment] = []
    start = 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            a, b = start, i  # intervals start..i-1 -> checkpoints start..i
            d_rm = float(rm_s[b] - rm_s[a])
            d_al = None
            agrees = None
            if al_s is not None and np.isfinite(al_s[a]) and np.isfinite(al_s[b]):
                d_al = float(al_s[b] - al_s[a])
                agrees = bool(np.sign(d_al) == -np.sign(d_rm) and d_al != 0)
            segments.append(PhaseSegment(labels[start], a, b, float(step_values[a]),
                                         float(step_values[b]), d_rm, d_al, agrees))
            start = i
    return PhaseSegmentation(step_values, x, rm, rm_s, al, al_s, tuple(labels), tuple(segments),
                             float(smoothing))
