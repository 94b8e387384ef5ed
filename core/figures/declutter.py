"""Label placement that keeps text legible: which points of a scatter get a text label so that no two
labels overlap, and where to put labels of horizontal reference lines so that none sits on another.

Plotly places text labels without collision checks, so a figure with many nearby points piles them
on each other; these functions decide in data-independent units (fractions of the plot's span) and
leave the other points' names to the hover text.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

CHAR_WIDTH = 0.015     # a 12 px character in a ~500 px wide plot, as a fraction of the x span
LINE_HEIGHT = 0.055    # one line of text in a ~350 px tall plot, as a fraction of the y span


def label_boxes(points: np.ndarray, texts: Sequence[str], *, char_width: float = CHAR_WIDTH,
                line_height: float = LINE_HEIGHT, above: Sequence[bool] | np.ndarray | None = None,
                ) -> tuple[np.ndarray, np.ndarray]:
    """Each label's centre in plot fractions (0..1 on both axes over the points' range) and its half size
    (half width from the text length, half the line height). `above` (per point) says the label is drawn
    above its point (Plotly's "top center"; False: "bottom center"); without it labels centre on the point."""
    P = np.asarray(points, dtype=np.float64).reshape(len(texts), 2)
    finite = np.isfinite(P).all(axis=1)
    low = P[finite].min(axis=0) if finite.any() else np.zeros(2)
    span = (P[finite].max(axis=0) - low) if finite.any() else np.ones(2)
    span[span <= 0] = 1.0
    centres = (P - low) / span
    if above is not None:
        centres[:, 1] += np.where(np.asarray(above, dtype=bool), 0.6, -0.6) * line_height
    half = np.stack([np.array([max(len(str(t)), 1) * char_width / 2 for t in texts]),
                     np.full(len(texts), line_height / 2)], axis=1)
    return centres, half


def boxes_overlap(centres: np.ndarray, half: np.ndarray, i: int, j: int) -> bool:
    return bool(np.all(np.abs(centres[i] - centres[j]) < half[i] + half[j]))


def label_mask(points: np.ndarray, texts: Sequence[str], *, priority: Sequence[float] | np.ndarray | None = None,
               groups: Sequence[object] | np.ndarray | None = None, char_width: float = CHAR_WIDTH,
               line_height: float = LINE_HEIGHT, above: Sequence[bool] | np.ndarray | None = None) -> np.ndarray:
    """Which points get their text drawn: greedily, highest `priority` first (ties: earlier first), a label
    is kept when its box overlaps no kept box. With `groups` (e.g. each point's relation), a first pass
    gives every group one label (its first that fits) before any group gets a second. Points with a
    non-finite coordinate get no label."""
    n = len(texts)
    if n == 0:
        return np.zeros(0, dtype=bool)
    centres, half = label_boxes(points, texts, char_width=char_width, line_height=line_height, above=above)
    rank = np.zeros(n) if priority is None else -np.asarray(priority, dtype=np.float64)
    order = np.argsort(rank, kind="stable")
    keep = np.zeros(n, dtype=bool)
    kept: list[int] = []

    def place(i: int) -> bool:
        if keep[i] or not np.isfinite(centres[i]).all():
            return False
        if any(boxes_overlap(centres, half, i, j) for j in kept):
            return False
        keep[i] = True
        kept.append(int(i))
        return True

    if groups is not None:
        labelled: set[object] = set()
        for i in order:
            group = groups[i]
            if group not in labelled and place(int(i)):
                labelled.add(group)
    for i in order:
        place(int(i))
    return keep


def spread_positions(values: Sequence[float], min_gap: float) -> np.ndarray:
    """Positions for labels of the values (same order) at least `min_gap` apart, each as near its value
    as that allows: sorted, pushed up where too close, then the whole run shifted back so that its
    mean displacement is zero (labels stay centred on the values they name)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size < 2:
        return v.copy()
    order = np.argsort(v, kind="stable")
    pos = v[order].copy()
    # Split into runs that must move together, then centre each run on its values.
    runs: list[list[int]] = [[0]]
    for i in range(1, pos.size):
        runs.append([i])
        while len(runs) > 1:
            a, b = runs[-2], runs[-1]
            start_b = _run_start(v[order], b, min_gap)
            end_a = _run_start(v[order], a, min_gap) + (len(a) - 1) * min_gap
            if start_b - end_a >= min_gap - 1e-12:
                break
            runs[-2:] = [a + b]
    for run in runs:
        start = _run_start(v[order], run, min_gap)
        for k, i in enumerate(run):
            pos[i] = start + k * min_gap
    out = np.empty_like(pos)
    out[order] = pos
    return out


def _run_start(sorted_values: np.ndarray, run: list[int], gap: float) -> float:
    # The start that centres a run of equally spaced labels on its values (least squares).
    return float(np.mean(sorted_values[run] - gap * np.arange(len(run))))
