"""`atlas concepts list` / `atlas concepts reproduce engels|park|gurnee --model NAME`: the concept library
and the papers' concept-geometry experiments (core/concepts, docs/CONCEPTS.md)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from typing import Any

from core.jsonable import Result

PAPERS = ("engels", "park", "gurnee")


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("concepts", help="the concept library; reproduce Engels / Park / Gurnee on a model",
                              description="Concept sets (docs/CONCEPTS.md) and the papers' experiments on any model.")
    sub = p.add_subparsers(dest="concepts_command", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="every library set with its size, kind and source")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_cmd_list)
    rp = sub.add_parser("reproduce", help="run a paper's experiment on a model; measured next to published",
                        description="engels: circles of weekdays/months (best layer); park: hierarchical "
                                    "orthogonality and the reptile/mammal cosine; gurnee: ridge-probe R^2 per "
                                    "layer for city coordinates and people's years.")
    rp.add_argument("paper", choices=PAPERS)
    rp.add_argument("--model", required=True,
                    help="organism | a local Hugging Face directory | a TransformerLens name (gpt2, pythia-70m, ...)")
    rp.add_argument("--checkpoint", default=None, help="organism or TransformerLens checkpoint")
    rp.add_argument("--organism-dir", default=None, help="another organism directory")
    rp.add_argument("--concepts", choices=("auto", "library", "organism"), default="auto",
                    help="whose concept sets: auto = the organism's own on the organism, the library elsewhere")
    rp.add_argument("--position", choices=("last", "mean"), default="last",
                    help="a word split into several tokens is read at its last token, or as the mean of its tokens")
    rp.add_argument("--max-items", type=int, default=None, help="gurnee: read a seeded sample of this many entities")
    rp.add_argument("--seed", type=int, default=0)
    rp.add_argument("--device", default="auto")
    rp.add_argument("--dtype", default="float32")
    rp.add_argument("--json", action="store_true", help="print the typed result as JSON")
    rp.add_argument("--quiet", action="store_true", help="no progress bar")
    rp.set_defaults(func=_cmd_reproduce)


def _cmd_list(args: argparse.Namespace) -> int:
    from core.concepts.library import load_library

    sets = load_library()
    if args.json:
        print(json.dumps([{"name": s.name, "kind": s.kind, "size": len(s), "source": s.source, "licence": s.licence}
                          for s in sets.values()], indent=1))
        return 0
    width = max(len(n) for n in sets)
    print(f"{'set':<{width}}  {'kind':<12}  {'size':>5}  source")
    for s in sets.values():
        print(f"{s.name:<{width}}  {s.kind:<12}  {len(s):>5}  {s.source}")
    return 0


def sets_for(paper: str, which: str) -> list[Any]:
    from core.concepts.library import load_library_set
    from core.concepts.organism import organism_concept_sets

    names = {"engels": (("weekdays", "months"), ("weekdays", "months")),
             "park": (("noun_taxonomy",), ("taxonomy",)),
             "gurnee": (("world_cities", "historical_figures"), ("cities", "people"))}[paper]
    if which == "library":
        return [load_library_set(n) for n in names[0]]
    own = organism_concept_sets(which.split(":", 1)[1] or None)
    return [own[n] for n in names[1] if n in own]


def _progress(quiet: bool):
    if quiet:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="prompt", desc="reading", file=sys.stderr)

    def progress(done: int, total: int) -> None:
        if bar.total != total or done < bar.n:
            bar.reset(total=total)
        bar.update(done - bar.n)

    return progress, bar.close


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from core.cli.analyze import model_spec_from_arg
    from core.concepts import experiments
    from core.sources.models import load_model

    spec = model_spec_from_arg(args.model, args.checkpoint, args.device, args.dtype, args.organism_dir)
    which = args.concepts
    if which == "auto":
        which = "organism" if spec.source == "organism" else "library"
    if which == "organism":
        if spec.source != "organism":
            from core.errors import AtlasError

            raise AtlasError("--concepts organism reads the organism's ground truth; use it with --model organism.")
        which = f"organism:{args.organism_dir or ''}"
    sets = sets_for(args.paper, which)
    with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints "Loaded pretrained model ..." to stdout
        model = load_model(spec)
    progress, close = _progress(args.quiet)
    result: Result
    try:
        if args.paper == "engels":
            result = experiments.engels_circles(model, sets, position=args.position, seed=args.seed, progress=progress)
        elif args.paper == "park":
            result = experiments.park_hierarchy(model, sets[0], seed=args.seed)
        else:
            result = experiments.gurnee_probes(model, sets, position=args.position, seed=args.seed,
                                               max_items=args.max_items, progress=progress)
    finally:
        close()
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
    else:
        print(format_result(args.paper, model.card.name, result))
    return 0


def format_result(paper: str, model_name: str, result: Any) -> str:
    lines = [f"{paper} on {model_name}"]
    if paper == "engels":
        for s in result.sets:
            best = s.best
            measured = ("no location could be scored" if best is None else
                        f"{'circle' if best.circle else 'no circle'}: f = {best.frequency} share {best.share:.2f} "
                        f"(p = {best.p_value:.3f}) at {best.location} {best.site}"
                        + (f", neighbours {best.visit_step} apart" if best.regular_visit else ""))
            lines.append(f"  {s.set_name} (k = {s.k}): {measured}")
            lines += [f"    skipped {reason}" for reason in s.skipped]
            lines += [f"    dropped {d.word!r}: {d.reason}" for d in s.dropped[:5]]
    elif paper == "park":
        lines.append(f"  {result.set_name}: {result.n_words} words with single-token forms "
                     f"({len(result.dropped)} without)")
        for p in result.parents:
            lines.append(f"  {p.parent} > {', '.join(p.children)}: mean |cos(child - parent, parent)| "
                         f"{p.mean_abs_cos:.3f} vs shuffled rows {p.shuffled_rows_mean:.3f} (p = {p.p_value_shuffled:.3f})")
        if result.sibling_pair:
            a, b = result.sibling_pair
            lines.append(f"  cos(ell_{a}, ell_{b}) = {result.sibling_cos:.3f} vs {result.sibling_cos_shuffled:.3f} "
                         "shuffled   [published: 0.198 vs 0.031, Gemma-2B]")
    else:
        for c in result.curves:
            curve = " ".join(f"{r:.2f}" for r in c.r2)
            lines.append(f"  {c.set_name} -> {', '.join(c.target)} ({c.n_items} entities): held-out R^2 per layer "
                         f"{curve}; best {c.best_r2:.3f} at {c.best_site}")
    lines.append(f"  published: {result.published}")
    return "\n".join(lines)
