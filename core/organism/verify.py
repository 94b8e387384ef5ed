"""The ground-truth card: Atlas's measurements on an organism directory, measured against expected.

    python -m core.organism verify [--dir DIR] [--quick] [--cache-dir DIR] [--strict] [--json]

Runs the harvest and `core.analysis` on the organism (default: the committed one) and prints one
table: measurement | measured | expected | status. Two kinds of rows:
- "sanity" rows check what any model must satisfy (1 <= F <= alive <= d_sae, finite RankMe within
  [1, d], a finite alpha with its fit range, 0 < ID < d, ...): a failure there is a bug;
- "structure" rows check that the planted world is recovered: a circle for months / weekdays at the
  item token or at the answer position of the cyclic-arithmetic prompts (p < 0.05, any frequency),
  some layer's city probe R^2 >= 0.6 with whole cities held out, analogies parallel within
  families (raw and held-out LDA), hierarchical orthogonality below the shuffled baseline per
  kingdom, lobes above their permutation null (p <= 0.05), phases over checkpoints: they need a
  trained organism and may fail on a seconds-long one (the tiny test configuration);
- "causal" rows (core/organism/verify_causal.py, last): turning the months / weekdays circle against a
  random-plane control, erasing the latitude probe direction against random directions, and each SAE's
  loss recovered when spliced in, each with the expectation stated before it was measured.
Rows without a pass/fail expectation are "info" (galaxy alpha, birth-year probe, per-layer circles). Exit status 0 when the card printed; with
--strict, 1 when any row failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from core.analysis.results import Skipped
from core.figures.style import site_label

if TYPE_CHECKING:
    from core.analysis.results import (
        Crystals,
        CycleCircles,
        GeometryByLayer,
        GroundTruthGeometry,
        SpectraByLayer,
        SpectraOverCheckpoints,
        SuperpositionByLayer,
    )
    from core.metrics.circles import Circularity
    from core.metrics.crystals import ParallelogramScore
    from core.metrics.superposition import InterferenceStats

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from core.organism.card_rows import FAIL, INFO, PASS, SKIPPED, CardRow, _finite, _fmt, _ok


def build_card(directory: str | Path | None = None, quick: bool = False, store: Any = None,
               progress: Callable[[str], None] | None = None, checkpoints: bool = True,
               causal: bool = True) -> list[CardRow]:
    """Harvest the organism in `directory` (its eval corpus through every SAE), run core.analysis, and
    turn the results into card rows. quick: a smaller harvest, fewer checkpoints, fewer held-out prompts
    for the causal rows (core/organism/verify_causal.py), which come last (`causal=False` leaves them out)."""
    from core import analysis as A
    from core.harvest import HarvestSettings, harvest_cached
    from core.sources.corpus import CorpusSpec, load_corpus
    from core.sources.models import ModelSpec, load_model
    from core.sources.organism import load_ground_truth, resolve_dir
    from core.sources.saes import load_sae, organism_sae_specs
    from core.store import ArtifactStore

    say = progress or (lambda _text: None)
    directory = resolve_dir(directory)
    path = str(directory)
    store = store if store is not None else ArtifactStore()
    say(f"loading the organism from {directory}")
    model = load_model(ModelSpec(source="organism", path=path, checkpoint="final", device="cpu"))
    saes = [load_sae(spec, model) for spec in organism_sae_specs(path)]
    truth = load_ground_truth(directory)
    corpus = load_corpus(CorpusSpec(source="world", path=path, split="eval"), model)
    settings = HarvestSettings(max_tokens=20_000 if quick else 100_000, batch_size=32)
    say(f"harvest: {corpus.description}")
    harvest, hkey = harvest_cached(model, saes, corpus, settings, store)
    names: list[str] | bool = False
    if checkpoints:
        options = A.checkpoint_options(model.spec)
        names = A.default_checkpoints(options, n=6) if quick else list(options)
    results = A.run_all(model, saes, harvest, truth, store=store, progress=lambda _fraction, text: say(text),
                        checkpoints=names, n_permutations=50 if quick else 100,
                        checkpoint_max_tokens=2048 if quick else 8192, harvest_key=hkey)

    rows: list[CardRow] = []
    rows += _superposition_rows(results.superposition)
    rows += _spectra_rows(results.spectra)
    rows += _geometry_rows(results.geometry)
    rows += _ground_truth_rows(results.ground_truth)
    if not isinstance(results.checkpoints, Skipped):
        rows += _phase_rows(results.checkpoints)
    if causal:
        from core.organism.verify_causal import causal_rows

        rows += causal_rows(model, harvest, truth, quick=quick, progress=say)
    return rows


# ---------------------------------------------------------------------------------------------
def _superposition_rows(sup: SuperpositionByLayer | Skipped) -> list[CardRow]:
    rows: list[CardRow] = []
    if isinstance(sup, Skipped):
        return rows
    for e in sup.per_sae:
        name = site_label(e.hook_name)
        eff = e.effective
        if isinstance(eff, Skipped):
            rows.append(CardRow(f"effective features F ({name})", "no feature ever fired", "1 <= F <= alive <= d_sae",
                                FAIL, "sanity"))
        else:
            F, alive, d_sae = eff.F, eff.alive, e.d_sae
            ok = _finite(F) and 1 - 1e-9 <= F <= alive + 1e-6 and alive <= d_sae
            rows.append(CardRow(f"effective features F ({name})",
                                f"F = {F:.1f}, psi = {eff.psi:.2f}, alive {alive}/{d_sae}, L0 {_fmt(eff.mean_l0)}",
                                "1 <= F <= alive <= d_sae", _ok(ok), "sanity"))
        conv = e.convergence
        if not isinstance(conv, Skipped):
            change = conv.final_relative_change
            rows.append(CardRow(f"F convergence ({name})",
                                f"last relative change {_fmt(change)} over {len(conv.F)} snapshots",
                                "saturating: |change| < 0.1", _ok(_finite(change) and abs(change) < 0.1), "structure"))
        rows.append(_interference_row(f"interference of decoder rows ({name})", e.interference))
    if not isinstance(sup.unembedding, Skipped):
        rows.append(_interference_row("interference of unembedding rows", sup.unembedding))
    return rows


def _interference_row(label: str, it: InterferenceStats) -> CardRow:
    msq, ref = it.msq_overlap, it.reference_msq
    ok = _finite(msq) and 0.5 * ref <= msq <= 1.0
    return CardRow(label, f"msq |cos| = {_fmt(msq)} = {_fmt(it.msq_ratio)} x 1/m (m = {it.width})",
                   "finite, at least ~1/m (random unit vectors: exactly 1/m)", _ok(ok), "sanity")


def _spectra_rows(spectra: SpectraByLayer) -> list[CardRow]:
    rows = []
    for e in spectra.per_site:
        name, d = site_label(e.site), e.spectrum.d
        rm = e.spectrum.rankme
        rows.append(CardRow(f"RankMe ({name})", f"{_fmt(rm)} (PR {_fmt(e.spectrum.participation_ratio)}, d = {d})",
                            "finite, 1 <= RankMe <= d", _ok(_finite(rm) and 1 - 1e-6 <= rm <= d + 1e-3), "sanity"))
        a = e.spectrum.alpha
        rows.append(CardRow(f"alpha-ReQ ({name})", f"{_fmt(a.alpha)} over ranks {a.first_rank}..{a.last_rank}"
                            + (" (adapted, d < 100)" if a.adapted else ""),
                            "finite, positive (fit range stated)", _ok(_finite(a.alpha) and a.alpha > 0), "sanity"))
        tw, mle = e.twonn, e.mle
        if isinstance(tw, Skipped):
            rows.append(CardRow(f"TwoNN intrinsic dimension ({name})", tw.reason or "not computed",
                                "0 < ID < d", SKIPPED, "sanity"))
        else:
            dim = tw.dimension
            mle_dim = None if isinstance(mle, Skipped) else mle.dimension
            rows.append(CardRow(f"TwoNN intrinsic dimension ({name})",
                                f"{_fmt(dim)} (MLE {_fmt(mle_dim)}, {tw.n_used} points)",
                                "0 < ID < d", _ok(_finite(dim) and 0 < dim < d), "sanity"))
    return rows


def _geometry_rows(geo: GeometryByLayer | Skipped) -> list[CardRow]:
    rows: list[CardRow] = []
    if isinstance(geo, Skipped):
        return rows
    for e in geo.per_sae:
        name = site_label(e.hook_name)
        g = e.galaxy
        if isinstance(g, Skipped):
            rows.append(CardRow(f"galaxy alpha ({name})", g.reason, "finite", SKIPPED, "sanity"))
        else:
            # No planted value for the organism: reported per layer (info); a non-finite fit is a bug.
            finite = _finite(g.alpha)
            rows.append(CardRow(f"galaxy alpha ({name})", f"{_fmt(g.alpha)}; {g.note}",
                                "reported per layer (isotropic cloud ~0; Gemma Scope 0.24-0.48)",
                                INFO if finite else FAIL, "info" if finite else "sanity"))
        lobes = e.lobes
        if isinstance(lobes, Skipped):
            rows.append(CardRow(f"lobes AMI vs null ({name})", lobes.reason, "AMI above the null (p <= 0.05)",
                                SKIPPED, "structure"))
        else:
            ag = lobes.agreement
            rows.append(CardRow(f"lobes AMI vs null ({name})",
                                f"AMI {_fmt(ag.ami)} vs null {_fmt(ag.null_mean)} +- {_fmt(ag.null_std)}, "
                                f"p = {_fmt(ag.p_value)} ({lobes.n_lobes} lobes, {len(lobes.features)} features, "
                                f"{lobes.affinity})",
                                f"AMI above the label-permutation null, p <= 0.05 ({lobes.affinity})",
                                _ok(_finite(ag.ami) and ag.p_value <= 0.05), "structure"))
    return rows


def _ground_truth_rows(gt: GroundTruthGeometry) -> list[CardRow]:
    rows: list[CardRow] = []
    if gt.skipped is not None:
        return [CardRow("ground-truth geometry", gt.skipped.reason, "", SKIPPED, "structure")]
    # Sorted: a result read back from the store has its keys sorted, a fresh one does not; the card
    # must read the same either way.
    cycles = {} if isinstance(gt.circles, Skipped) else gt.circles.cycles
    for name in sorted(cycles):
        rows += _circle_rows(name, cycles[name])
    attributes = {} if isinstance(gt.probes, Skipped) else gt.probes.attributes
    for attribute, label, threshold in (("space", "city probe R^2 (lon, lat)", 0.6), ("time", "birth-year probe R^2", None)):
        found = attributes.get(attribute)
        expected = (f"some layer's held-out R^2 >= {threshold} (whole {'cities' if attribute == 'space' else 'people'} held out)"
                    if threshold is not None else "best layer reported (whole people held out)")
        if found is None or isinstance(found, Skipped):
            rows.append(CardRow(label, "not run" if found is None else found.reason, expected, SKIPPED,
                                "structure" if threshold is not None else "info"))
            continue
        p = found.probes
        per_layer = ", ".join(f"{site_label(s)} {_fmt(r, 2)}" for s, r in zip(p.layers, p.r2))
        measured = f"best {site_label(p.best_layer)}: {_fmt(p.best_r2)} ({per_layer})"
        if threshold is None:
            rows.append(CardRow(label, measured, expected, INFO, "info"))
        else:
            rows.append(CardRow(label, measured, expected, _ok(_finite(p.best_r2) and p.best_r2 >= threshold),
                                "structure"))
    if not isinstance(gt.crystals, Skipped):
        rows.append(_crystal_row(gt.crystals))
    kingdoms = {} if isinstance(gt.concepts, Skipped) else gt.concepts.kingdoms
    for kingdom, h in sorted(kingdoms.items()):
        rows.append(CardRow(f"hierarchical orthogonality ({kingdom})",
                            f"mean |cos(child - parent, parent)| {_fmt(h.mean_abs_cos)} vs shuffled "
                            f"{_fmt(h.shuffled_rows_mean)}, random parent {_fmt(h.random_parent_mean)}",
                            "|cos| below the shuffled baseline", _ok(_finite(h.mean_abs_cos) and _finite(h.shuffled_rows_mean)
                                                                      and h.mean_abs_cos < h.shuffled_rows_mean), "structure"))
    return rows


def _circle_text(c: Circularity) -> str:
    return f"f = {c.best_frequency}, share {_fmt(c.best_share, 2)}, p = {_fmt(c.p_value, 2)}"


def _circle_rows(name: str, cycle: CycleCircles) -> list[CardRow]:
    """Per layer (info): the best frequency, its share and p at each location; then the best circle of
    the cycle over locations and layers (pass when p < 0.05 at a frequency with a 2-D plane)."""
    from core.analysis.circles import CIRCLE_LOCATIONS

    rows = []
    located = [(loc, cycle.locations[loc]) for loc in CIRCLE_LOCATIONS if loc in cycle.locations]
    sites: list[str] = []
    for _, location in located:
        sites += [s for s in location.sites if s not in sites]
    for site in sites:
        parts = [f"{loc}: {_circle_text(location.at(site).circularity)}" for loc, location in located
                 if site in location.sites]
        rows.append(CardRow(f"{name} circle ({site_label(site)})", "; ".join(parts),
                            "info per layer (token / answer position)", INFO, "info"))
    best = cycle.best
    expected = "a circle (p < 0.05) at some location and layer; any frequency f (f = 1: calendar order)"
    if isinstance(best, Skipped):
        rows.append(CardRow(f"{name} circle found", best.reason, expected, SKIPPED, "structure"))
        return rows
    k = len(cycle.words)
    order = ("calendar order" if best.frequency == 1 else
             f"neighbours {best.visit_step} apart" if best.coprime and k else "not coprime with k")
    rows.append(CardRow(f"{name} circle found",
                        f"best at the {best.location}, {site_label(best.site)}: f = {best.frequency} ({order}), "
                        f"share {_fmt(best.share, 2)}, p = {_fmt(best.p_value, 2)}",
                        expected, _ok(best.circle), "structure"))
    return rows


def _crystal_row(crystals: Crystals) -> CardRow:
    """Analogy parallelograms: the layer where within-relation cosine beats across-relation cosine by
    the most, raw and after held-out LDA (the smaller of the two margins); pass when both are positive."""
    def margin(score: ParallelogramScore | None) -> float:
        if score is None or not (_finite(score.within_cos) and _finite(score.across_cos)):
            return -math.inf
        return score.within_cos - score.across_cos

    best = None
    for entry in crystals.per_site:
        if not isinstance(entry.fit, Skipped):
            q = entry.fit.quality
            worst = min(margin(q.raw), margin(q.lda))
            if best is None or worst > best[0]:
                best = (worst, entry.site, q)
    expected = "within > across, raw and after held-out LDA, at some layer"
    if best is None:
        return CardRow("analogy parallelism (within vs across families)", "no layer could be scored", expected,
                       SKIPPED, "structure")
    worst, site, q = best
    lda_within, lda_across = (None, None) if q.lda is None else (q.lda.within_cos, q.lda.across_cos)
    return CardRow("analogy parallelism (within vs across families)",
                   f"best {site_label(site)}: within {_fmt(q.raw.within_cos)} vs across {_fmt(q.raw.across_cos)}; "
                   f"held-out LDA within {_fmt(lda_within)} vs across {_fmt(lda_across)}",
                   expected, _ok(worst > 0), "structure")


def _phase_rows(over: SpectraOverCheckpoints) -> list[CardRow]:
    from core.metrics.spectral import PHASE_COMPRESSION, PHASE_ENTROPY, PHASE_WARMUP

    rows = []
    valid = {PHASE_WARMUP, PHASE_ENTROPY, PHASE_COMPRESSION}
    for site in over.sites:
        seg = over.phases[site].segments
        labels = [s.label for s in seg]
        text = " -> ".join(f"{s.label} ({int(s.start_step)}-{int(s.end_step)})" for s in seg)
        rows.append(CardRow(f"spectral phases over {len(over.steps)} checkpoints ({site_label(site)})", text,
                            "segments cover training; labels from warmup / entropy-seeking / compression-seeking",
                            _ok(bool(seg) and set(labels) <= valid and seg[0].start_step == over.steps[0]
                                and seg[-1].end_step == over.steps[-1]), "sanity"))
    seen = sorted({s.label for site in over.sites for s in over.phases[site].segments})
    rows.append(CardRow("spectral phases seen (all layers)", ", ".join(seen),
                        "entropy-seeking and/or compression-seeking after warmup (Li et al. 2025)",
                        _ok(bool(set(seen) & {PHASE_ENTROPY, PHASE_COMPRESSION})), "structure"))
    return rows


# ---------------------------------------------------------------------------------------------
def format_card(rows: list[CardRow]) -> str:
    """A plain-text table: measurement | measured | expected | status."""
    header = ("measurement", "measured", "expected", "status")
    table = [header] + [(r.measurement, r.measured, r.expected, r.status) for r in rows]
    widths = [min(max(len(row[i]) for row in table), cap) for i, cap in enumerate((52, 110, 60, 8))]
    lines = []
    for j, row in enumerate(table):
        lines.append(" | ".join(cell.ljust(w) if len(cell) <= w else cell for cell, w in zip(row, widths)))
        if j == 0:
            lines.append("-+-".join("-" * w for w in widths))
    counts = {s: sum(r.status == s for r in rows) for s in (PASS, FAIL, INFO, SKIPPED)}
    lines.append("")
    lines.append(f"{counts[PASS]} pass, {counts[FAIL]} fail, {counts[SKIPPED]} skipped, {counts[INFO]} info")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from core.store import ArtifactStore

    parser = argparse.ArgumentParser(prog="python -m core.organism verify", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", default=None, help="organism directory (default: $ATLAS_ORGANISM_DIR, else the committed one)")
    parser.add_argument("--quick", action="store_true", help="small samples: a 20k-token harvest, <= 6 checkpoints")
    parser.add_argument("--cache-dir", default=None, help="artifact store (default: $ATLAS_CACHE_DIR or ~/.cache/atlas)")
    parser.add_argument("--no-checkpoints", action="store_true", help="skip the spectral phases over checkpoints")
    parser.add_argument("--no-causal", action="store_true",
                        help="skip the causal rows (circle turns, latitude erasure, SAE loss recovered)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any row fails")
    args = parser.parse_args(argv)
    import contextlib

    from core.errors import AtlasError

    try:
        # Model loading prints to stdout (TransformerLens); keep stdout for the card alone.
        with contextlib.redirect_stdout(sys.stderr):
            rows = build_card(args.dir, quick=args.quick, store=ArtifactStore(args.cache_dir),
                              progress=lambda text: print(f"... {text}", file=sys.stderr),
                              checkpoints=not args.no_checkpoints, causal=not args.no_causal)
    except AtlasError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps([r.to_dict() for r in rows], indent=1) if args.json else format_card(rows))
    return 1 if args.strict and any(r.status == FAIL for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
