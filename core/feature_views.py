"""What the Features and Probe pages show about features, computed from a harvest: the feature table
with automatic descriptions, search, co-occurrence that says when it means nothing, and a feature's
nearest decoder directions in another SAE.

Costs at 24k+ features: everything here is linear in d_sae (one row of co-occurrence, one decoder
row against a matrix, vectorised modes over the top contexts); nothing builds a d_sae x d_sae array.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

AUTO_PREFIX = "[auto] "


# ------------------------------------------------------------------ top tokens and descriptions

def row_modes(ids: np.ndarray, valid: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The `n` most frequent values of each row of `ids` [d, k] among `valid` entries, vectorised.

    Returns (values [d, n], counts [d, n]): most frequent first, ties by the smaller value; -1 / 0
    where a row has fewer distinct values.
    """
    ids = np.asarray(ids, dtype=np.int64)
    d, k = ids.shape
    n = max(1, min(n, k)) if k else 1
    if k == 0 or d == 0:
        return np.full((d, n), -1, dtype=np.int64), np.zeros((d, n), dtype=np.int64)
    big = np.iinfo(np.int64).max
    s = np.sort(np.where(valid, ids, big), axis=1)
    start = np.ones_like(s, dtype=bool)
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    run = np.cumsum(start, axis=1) - 1                                       # run index within the row
    flat = run + (np.arange(d) * k)[:, None]
    counts = np.bincount(flat.ravel(), minlength=d * k).reshape(d, k)
    values = np.full((d, k), big, dtype=np.int64)
    rows, cols = np.nonzero(start)
    values[rows, run[rows, cols]] = s[rows, cols]
    counts[values == big] = 0
    order = np.argsort(-counts, axis=1, kind="stable")[:, :n]
    top_values = np.take_along_axis(values, order, axis=1)
    top_counts = np.take_along_axis(counts, order, axis=1)
    top_values[top_counts == 0] = -1
    return top_values, top_counts


@dataclass(frozen=True)
class TopTokens:
    """Per feature, the tokens at the centre of its top contexts and the tokens just before them.

    ids / counts [d_sae, n] (-1 / 0 padding); before_ids / before_counts [d_sae] (the most frequent
    preceding token); n_contexts [d_sae] (filled top-context slots).
    """

    ids: np.ndarray
    counts: np.ndarray
    before_ids: np.ndarray
    before_counts: np.ndarray
    n_contexts: np.ndarray


def top_tokens(top_tokens_windows: np.ndarray, top_values: np.ndarray, center: int, n: int = 3) -> TopTokens:
    """TopTokens from the harvest's top_tokens [d_sae, k, W] (-1 empty) and top_values [d_sae, k] (0 empty)."""
    windows = np.asarray(top_tokens_windows)
    filled = np.asarray(top_values) > 0
    centre = windows[:, :, center]
    valid = filled & (centre >= 0)
    ids, counts = row_modes(centre, valid, n)
    if center > 0:
        before = windows[:, :, center - 1]
        b_ids, b_counts = row_modes(before, valid & (before >= 0), 1)
    else:
        b_ids, b_counts = np.full((len(windows), 1), -1), np.zeros((len(windows), 1), dtype=np.int64)
    return TopTokens(ids, counts, b_ids[:, 0], b_counts[:, 0], valid.sum(1))


def _quoted(word: str) -> str:
    shown = word.replace("\n", "\\n").strip() or repr(word)
    return f"\u201c{shown}\u201d"


def auto_descriptions(tokens: TopTokens, decode: Callable[[list[int]], list[str]], density: np.ndarray,
                      fire_count: np.ndarray) -> list[str]:
    """A short description of each feature from its top contexts, e.g. '“monday” 9/16, “tuesday” 4/16 · after “on”'.

    The tokens it fires on most (with how many of its top contexts), the token before them when one
    precedes at least half of them, and how dense it is when it fires on over 10% of tokens. Not a
    label a person wrote: the pages mark it as automatic. `decode(ids) -> strings` (one per id).
    """
    wanted = np.unique(np.concatenate([tokens.ids[tokens.ids >= 0], tokens.before_ids[tokens.before_ids >= 0]]))
    words = dict(zip(wanted.tolist(), decode(wanted.tolist()))) if len(wanted) else {}
    out = []
    for f in range(len(tokens.ids)):
        total = int(tokens.n_contexts[f])
        if fire_count[f] == 0:
            out.append("never fires")
            continue
        if total == 0:
            out.append("fires, no context kept")
            continue
        ids, counts = tokens.ids[f], tokens.counts[f]
        if counts[0] == 1 and total > 2:
            text = "varied tokens, e.g. " + ", ".join(_quoted(words[int(i)]) for i in ids if i >= 0)
        else:
            text = ", ".join(f"{_quoted(words[int(i)])} {int(c)}/{total}" for i, c in zip(ids, counts) if i >= 0 and c > 1)
        if tokens.before_ids[f] >= 0 and tokens.before_counts[f] * 2 >= total > 1:
            text += f" \u00b7 after {_quoted(words[int(tokens.before_ids[f])])}"
        if density[f] > 0.1:
            text += f" \u00b7 dense ({density[f]:.0%} of tokens)"
        out.append(text)
    return out


def token_lists(tokens: TopTokens, decode: Callable[[list[int]], list[str]]) -> list[str]:
    """Each feature's top tokens as text: 'monday', 'tuesday', ... (repr keeps whitespace visible)."""
    wanted = np.unique(tokens.ids[tokens.ids >= 0])
    words = dict(zip(wanted.tolist(), decode(wanted.tolist()))) if len(wanted) else {}
    return [", ".join(repr(words[int(i)]) for i in row if i >= 0) for row in tokens.ids]


def feature_frame(stats: Any, decode: Callable[[list[int]], list[str]], center: int) -> pd.DataFrame:
    """The feature table of one SAE's harvest (core.harvest.SAEResult): one row per feature.

    Columns: feature, density (fire_count / n_tokens), max, L1 share, top tokens, auto (the
    automatic description). Built once per harvest and layer; labels are joined at display time.
    """
    l1 = np.asarray(stats.l1_mass, dtype=np.float64)
    fire = np.asarray(stats.fire_count)
    density = fire / max(int(stats.n_tokens), 1)
    tokens = top_tokens(stats.top_tokens, stats.top_values, center)
    total = l1.sum()
    return pd.DataFrame({
        "feature": np.arange(len(l1)),
        "density": density,
        "max": np.asarray(stats.max_act, dtype=np.float64),
        "L1 share": l1 / total if total > 0 else np.zeros_like(l1),
        "top tokens": token_lists(tokens, decode),
        "auto": auto_descriptions(tokens, decode, density, fire),
    })


def label_column(frame: pd.DataFrame, user_labels: dict[int, str]) -> pd.Series:
    """Per feature: the user's label where there is one, else the automatic description marked '[auto] '."""
    column = AUTO_PREFIX + frame["auto"]
    if user_labels:
        ids = np.fromiter(user_labels, dtype=np.int64)
        ids = ids[ids < len(frame)]
        column = column.copy()
        column.iloc[ids] = [user_labels[int(i)] for i in ids]
    return column


def search_mask(frame: pd.DataFrame, query: str, labelled: AbstractSet[int] = frozenset()) -> np.ndarray:
    """Rows matching `query`: the id ('17' or '#17'), a substring of the top tokens or of the automatic
    description (case-insensitive), or a feature in `labelled` (those whose user label or note matched)."""
    query = query.strip().lower()
    if not query:
        return np.ones(len(frame), dtype=bool)
    mask = (frame["top tokens"].str.lower().str.contains(query, regex=False).to_numpy()
            | frame["auto"].str.lower().str.contains(query, regex=False).to_numpy())
    digits = query.removeprefix("#")
    if digits.isdigit():
        mask |= frame["feature"].to_numpy() == int(digits)
    if labelled:
        ids = np.fromiter(labelled, dtype=np.int64)
        mask[ids[ids < len(frame)]] = True
    return mask


# ------------------------------------------------------------------ co-occurrence

@dataclass(frozen=True)
class CoFiring:
    """Another feature against this one, over chunks: `together` chunks where both fire; phi; P(other | this)
    and P(this | other)."""

    feature: int
    together: int
    phi: float
    p_other_given_this: float
    p_this_given_other: float


@dataclass(frozen=True)
class CooccurrenceView:
    """status: "ok" (rows ranked by phi), "always" (fires in every chunk: phi undefined for every pair),
    "never" (never fires), "alone" (fires, but no other feature fires in the same chunks). `message`
    says it in words."""

    status: str
    n_chunks: int
    n_fired: int
    rows: tuple[CoFiring, ...]
    message: str


def _row(cooc: Any, i: int) -> np.ndarray:
    row = cooc[i]
    return np.asarray(row.toarray() if hasattr(row, "toarray") else row, dtype=np.float64).reshape(-1)


def cooccurrence_view(cooc: Any, n_chunks: int, feature: int, *, k: int = 10, chunk_tokens: int | None = None,
                      total_chunks: int | None = None) -> CooccurrenceView:
    """How `feature` co-fires with others over the harvest's chunks, or why that cannot be said.

    cooc: chunk co-occurrence counts over `n_chunks` chunks with `diagonal()` and row access `cooc[i]`
    (core.harvest.ChunkCooccurrence, a dense array or a scipy sparse matrix); `total_chunks` when the
    counts cover a uniform sample of the corpus's chunks. phi = (n11 n00 - n10 n01) / sqrt(n1. n0. n.1 n.0)
    (Li et al. 2024), ranked over partners that fire together with it at least once and whose phi is defined.
    """
    from core.metrics.geometry import phi_from_contingency

    size = f" of {chunk_tokens} tokens" if chunk_tokens else ""
    sample = (f" (a uniform sample of the corpus's {total_chunks:,} chunks: phi's standard error is about "
              f"{1 / np.sqrt(max(n_chunks, 1)):.3f})" if total_chunks and total_chunks > n_chunks else "")
    diag = np.asarray(cooc.diagonal() if hasattr(cooc, "diagonal") else np.diag(cooc), dtype=np.float64)
    n_i = float(diag[feature])
    if n_i <= 0:
        return CooccurrenceView("never", n_chunks, 0, (), (
            f"Feature {feature} never fired in the {n_chunks:,} chunks{size} counted{sample}: nothing co-occurs with it."))
    if n_i >= n_chunks:
        return CooccurrenceView("always", n_chunks, int(n_i), (), (
            f"Feature {feature} fires in every one of the {n_chunks:,} chunks{size} counted{sample}, so whether another "
            "feature fires in a chunk says nothing about this one: phi is 0/0, undefined, for every pair."))
    n11 = _row(cooc, feature)
    n10, n01 = n_i - n11, diag - n11
    n00 = n_chunks - n_i - diag + n11
    phi = phi_from_contingency(n11, n10, n01, n00)
    partner = (n11 > 0) & (diag < n_chunks)
    partner[feature] = False
    dense = int(((diag >= n_chunks) & (np.arange(len(diag)) != feature)).sum())
    note = (f" {dense} feature(s) that fire in every chunk are left out (their phi is undefined)." if dense else "")
    candidates = np.flatnonzero(partner)
    if len(candidates) == 0:
        return CooccurrenceView("alone", n_chunks, int(n_i), (), (
            f"Feature {feature} fires in {int(n_i):,} of {n_chunks:,} chunks{sample}, and no other feature fires "
            f"in any of them.{note}"))
    order = candidates[np.lexsort((-n11[candidates], -phi[candidates]))][:k]
    rows = tuple(CoFiring(int(j), int(n11[j]), float(phi[j]), float(n11[j] / n_i), float(n11[j] / diag[j]))
                 for j in order)
    return CooccurrenceView("ok", n_chunks, int(n_i), rows, (
        f"Feature {feature} fires in {int(n_i):,} of {n_chunks:,} chunks{size}{sample}; ranked by phi.{note}"))


# ------------------------------------------------------------------ decoder directions

def unit_rows(W: np.ndarray) -> np.ndarray:
    W = np.asarray(W, dtype=np.float32)
    return W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-8)


def nearest_directions(direction: np.ndarray, W_unit: np.ndarray, k: int = 10,
                       exclude: int | None = None) -> list[tuple[int, float]]:
    """The `k` rows of `W_unit` (unit rows [n, d]) with the highest cosine to `direction` [d]:
    (row, cosine), best first; `exclude` leaves one row out (the feature itself). O(n d)."""
    direction = np.asarray(direction, dtype=np.float32)
    cos = W_unit @ (direction / max(float(np.linalg.norm(direction)), 1e-8))
    if exclude is not None:
        cos[exclude] = -np.inf
    k = min(k, len(cos) - (exclude is not None))
    if k <= 0:
        return []
    best = np.argpartition(-cos, k - 1)[:k]
    best = best[np.argsort(-cos[best], kind="stable")]
    return [(int(j), float(cos[j])) for j in best]


def comparable_saes(saes: Sequence[Any], hook_name: str) -> list[Any]:
    """The loaded SAEs other than `hook_name`'s whose decoder directions live in the same space (same d_in)."""
    mine = next(s for s in saes if s.hook_name == hook_name)
    return [s for s in saes if s is not mine and int(s.d_in) == int(mine.d_in)]
