"""`atlas analyze` / `python -m core analyze`: harvest a corpus through a model and its SAEs, run every
measurement, and write a session (session.json, bundle.zip, the artifacts)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable


def model_spec_from_arg(value: str, checkpoint: str | None, device: str, dtype: str, organism_dir: str | None):
    """organism | <existing HF directory> | <TransformerLens name>."""
    from core.sources.models import ModelSpec

    if value == "organism":
        return ModelSpec(source="organism", path=organism_dir, checkpoint=checkpoint, device=device, dtype=dtype)
    if Path(value).expanduser().is_dir():
        path = str(Path(value).expanduser().resolve())
        return ModelSpec(source="hf_dir", name=Path(path).name, path=path, checkpoint=checkpoint,
                         device=device, dtype=dtype)
    return ModelSpec(source="transformer_lens", name=value, checkpoint=checkpoint, device=device, dtype=dtype)


def sae_specs_from_args(values: list[str], organism_dir: str | None) -> list[Any]:
    """organism (every organism SAE) | organism:<hook> | <SAELens dir> | <release>:<sae_id>."""
    from core.errors import UnknownSAEError
    from core.sources.saes import SAESpec, organism_sae_specs

    specs = []
    for value in values:
        if value == "organism":
            specs += organism_sae_specs(organism_dir)
        elif value.startswith("organism:"):
            specs.append(SAESpec(source="organism", hook_name=value.split(":", 1)[1], path=organism_dir))
        elif Path(value).expanduser().is_dir():
            specs.append(SAESpec(source="dir", path=str(Path(value).expanduser().resolve())))
        elif ":" in value:
            release, sae_id = value.split(":", 1)
            specs.append(SAESpec(source="release", release=release, sae_id=sae_id))
        else:
            raise UnknownSAEError(
                f"--sae {value!r} is neither 'organism', an existing SAELens directory, nor <release>:<sae_id>."
            )
    return specs


def corpus_spec_from_arg(value: str, context_size: int, max_chunks: int | None, split: str,
                         organism_dir: str | None, prepend_bos: bool):
    """world | hf:<dataset>[:column] | <file>[:column]."""
    from core.errors import CorpusError
    from core.sources.corpus import CorpusSource, CorpusSpec

    def spec(source: CorpusSource, *, path: str | None = None, name: str | None = None, column: str | None = None,
             split: str = "train") -> CorpusSpec:
        return CorpusSpec(source=source, path=path, name=name, column=column, split=split, context_size=context_size,
                          max_chunks=max_chunks, prepend_bos=prepend_bos)

    if value == "world":
        return spec("world", path=organism_dir, split=split if split != "train" else "eval")
    if value.startswith("hf:"):
        name, _, column = value[3:].partition(":")
        return spec("hf_dataset", name=name, column=column or None, split=split)
    path, file_column = value, None
    if not Path(value).expanduser().is_file() and ":" in value:
        path, file_column = value.rsplit(":", 1)
    if not Path(path).expanduser().is_file():
        raise CorpusError(f"--corpus {value!r}: no such file (or use 'world', or hf:<dataset>).")
    return spec("file", path=str(Path(path).expanduser().resolve()), column=file_column)


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (argparse turns the error into `error: ...`, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: give a number from {low:,} to {high:,}")
        return value
    return parse


def _float_in(low: float, high: float) -> Callable[[str], float]:
    """An argparse type: a finite float in [low, high] (no inf or nan)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: give a finite number from {low:g} to {high:g}")
        return value
    return parse


def _device(text: str) -> str:
    from core.device import check_device_name
    from core.errors import AtlasError

    try:
        return check_device_name(text)
    except AtlasError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _tqdm_progress(enabled: bool) -> tuple[Callable[[int, int, float], None] | None, Callable[[], None]]:
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="tok", unit_scale=True, desc="harvest", file=sys.stderr)

    def progress(done: int, total: int, seconds_left: float) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return progress, bar.close


def _run_analysis(result: Any, model: Any, saes: list, store: Any, checkpoints: bool = False,
                  cluster: Any = None) -> list[str]:
    """core.analysis.run_all on the harvest; returns the artifact keys it reports."""
    from core.analysis import run_all

    return list(run_all(model, saes, result, store=store, checkpoints=checkpoints, cluster=cluster).artifact_keys)


def read_concept_args(paths: list[str] | None, kind: str | None) -> list[Any]:
    """The --concepts files as validated concept sets (ConceptError says what to fix), read before anything runs."""
    from core.concepts import ConceptError, read_concept_file

    sets = []
    for path in paths or []:
        try:
            sets.append(read_concept_file(path, kind=kind))
        except ConceptError as error:
            raise ConceptError(f"--concepts {path}: {error}") from None
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise ConceptError(f"Two --concepts files hold sets with the same name ({', '.join(names)}); rename one.")
    return sets


def concept_summary(found: Any) -> dict[str, Any]:
    """What summary.json says of the user's sets: how each was read and each view's headline number."""
    from core.analysis.results import Skipped

    out: dict[str, Any] = {"position": found.position, "key": found.key, "sets": {}}
    for reading in found.readings:
        entry = out["sets"].setdefault(reading.set_name, {"kind": reading.kind, "items": reading.n_items})
        entry[reading.view] = {"read": reading.n_read, "split": len(reading.split), "notes": list(reading.notes),
                               "dropped": [{"word": d.word, "reason": d.reason} for d in reading.dropped]}
    if not isinstance(found.circles, Skipped):
        for name, cycle in found.circles.cycles.items():
            best = cycle.best
            out["sets"][name]["best_circle"] = best.reason if isinstance(best, Skipped) else {
                "location": best.location, "site": best.site, "frequency": best.frequency, "share": best.share,
                "p_value": best.p_value, "circle": best.circle}
    if not isinstance(found.probes, Skipped):
        for label, probe in found.probes.attributes.items():
            name = label.rsplit(" (", 1)[0]
            out["sets"][name]["probe"] = probe.reason if isinstance(probe, Skipped) else {
                "best_site": probe.probes.best_layer, "best_r2": probe.probes.best_r2}
    for view in ("circles", "crystals", "concepts", "probes"):
        part = getattr(found, view)
        if isinstance(part, Skipped) and part.reason != "not asked for":
            out.setdefault("skipped", {})[view] = part.reason
    return out


def cluster_from_args(args: argparse.Namespace) -> Any:
    """The RayCluster of --ray [ADDRESS] / --ray-workers / --ray-shards, or None (harvest here)."""
    from core.errors import AtlasError
    from core.harvest.distributed import LOCAL, RayCluster

    if args.ray is None:
        if args.ray_workers is not None or args.ray_shards is not None:
            raise AtlasError("--ray-workers and --ray-shards need --ray [ADDRESS].")
        return None
    return RayCluster(address=None if args.ray == LOCAL else args.ray, workers=args.ray_workers,
                      shards=args.ray_shards)


def _cmd_analyze(args: argparse.Namespace) -> int:
    from core.harvest import HarvestSettings
    from core.harvest.distributed import harvest_cached_on
    from core.sources.corpus import load_corpus
    from core.sources.models import load_model
    from core.sources.saes import load_sae
    from core.store import ArtifactStore

    out = Path(args.out).expanduser()
    cluster = cluster_from_args(args)
    model_spec = model_spec_from_arg(args.model, args.checkpoint, args.device, args.dtype, args.organism_dir)
    sae_specs = sae_specs_from_args(args.sae or [], args.organism_dir)
    concept_sets = read_concept_args(args.concepts, args.concept_kind)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    say(f"loading model {args.model} ...")
    model = load_model(model_spec)
    saes = [load_sae(spec, model) for spec in sae_specs]
    for sae in saes:
        for warning in sae.fit_warnings:
            say(f"warning: {warning}")
    context_size = args.context_size or sae_context_size(saes, say)
    max_chunks = None if args.max_tokens is None else max(1, math.ceil(args.max_tokens / context_size))
    corpus_spec = corpus_spec_from_arg(args.corpus, context_size, max_chunks, args.split,
                                       args.organism_dir, not args.no_bos)
    corpus = load_corpus(corpus_spec, model)
    say(f"corpus: {corpus.description}")
    settings = HarvestSettings(
        batch_size=args.batch_size, max_tokens=args.max_tokens,
        sites=tuple(args.site) if args.site else None, reservoir_size=args.reservoir_size,
        top_k=args.top_k, cooc_chunk_tokens=args.cooc_chunk_tokens, cooc_threshold=args.cooc_threshold,
        cooc_sample_chunks=args.cooc_sample_chunks, splice_tokens=args.splice_tokens, seed=args.seed,
    )
    out_store = ArtifactStore(out / "store")
    cache = ArtifactStore(args.cache_dir) if not args.no_cache else out_store
    if cluster is not None:
        say(f"harvesting on {cluster.describe()}")
    progress, close = _tqdm_progress(not args.quiet)
    try:
        result, key = harvest_cached_on(cluster, model, saes, corpus, settings, cache, progress, say=say)
    finally:
        close()
    # written once: DIR/store gets the cached harvest by hard links (a copy only across file systems)
    if not out_store.link_from(cache, key):   # the cached copy failed its checks meanwhile: write it again
        result.save(out_store, key)
    if args.checkpoints and model_spec.source != "organism":
        say("--checkpoints: only the organism's training checkpoints are analysed here; skipped")
    analysed = _run_analysis(result, model, saes, out_store, checkpoints=args.checkpoints, cluster=cluster)
    artifact_keys = [key] + [k for k in analysed if k != key]
    concepts = None
    if concept_sets:
        from core.analysis import concept_geometry

        say(f"concept sets: {', '.join(s.name for s in concept_sets)} (read at the {args.concept_position} token)")
        found = concept_geometry(model, concept_sets, position=args.concept_position, store=out_store)
        artifact_keys.append(found.key)
        concepts = concept_summary(found)
    summary = {
        "harvest_key": key, "n_tokens": result.n_tokens, "seconds": round(result.seconds, 3),
        "sites": list(result.sites),
        "saes": {label: {"explained_variance": r.explained_variance, "mse": r.mse, "l0": r.l0,
                         "alive": int((r.fire_count > 0).sum()), "d_sae": r.d_sae,
                         "splice": r.splice.to_dict() if r.splice is not None else None}
                 for label, r in result.saes.items()},
    }
    if concepts is not None:
        summary["concepts"] = concepts
    from core.cli.dashboard_sources import dashboard_settings

    sidebar = dashboard_settings(model_spec, sae_specs, corpus_spec, args.max_tokens or int(corpus.tokens.numel()),
                                 say=say)
    _write_session(out, model_spec, args.checkpoint, sae_specs, corpus_spec, {**settings.to_dict(), **sidebar},
                   artifact_keys, out_store, title=args.title or f"{model.card.name} on {corpus.description}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    say(f"wrote {out}/session.json, {out}/bundle.zip and {len(artifact_keys)} artifact(s) under {out}/store")
    return 0


def sae_context_size(saes: list, say: Callable[..., None] = lambda *a: None, default: int = 64) -> int:
    """The context size the SAEs were trained on (their metadata's context_size), for the corpus's
    sequences; `default` when none says. When they differ, the smallest (every SAE saw contexts at least
    that long), with a warning naming each: the rule of core.sources.chunking, which the sidebar uses too."""
    from core.sources.chunking import chunking_for_saes
    from core.sources.corpus import CorpusSpec

    chosen = chunking_for_saes(saes, CorpusSpec(context_size=default))[0].context_size
    sizes = {s.hook_name: int(s.context_size) for s in saes if getattr(s, "context_size", None)}
    if len(set(sizes.values())) > 1:
        say("warning: the SAEs were trained on different context sizes ("
            + ", ".join(f"{hook}: {size}" for hook, size in sizes.items())
            + f"); harvesting {chosen}-token sequences (set --context-size to choose)")
    return chosen


def _flat_spec(spec: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: v for k, v in asdict(spec).items() if v is None or isinstance(v, (str, int, float, bool))}


def _write_session(out: Path, model_spec, checkpoint, sae_specs, corpus_spec, settings: dict[str, Any], keys, store,
                   title) -> None:
    """DIR/session.json (the session document) and DIR/bundle.zip (what the dashboard imports). `settings`: the
    harvest's settings and the sidebar's choice of these sources (core.cli.dashboard_sources)."""
    from core.bundles import export_bundle
    from core.sessions import Session

    session = Session(
        title=title[:200],
        sources={"model": _flat_spec(model_spec), "checkpoint": checkpoint,
                 "saes": [_flat_spec(s) for s in sae_specs], "corpus": _flat_spec(corpus_spec)},
        settings=settings,
        page="home",
        artifact_keys=keys,
    )
    out.mkdir(parents=True, exist_ok=True)
    (out / "session.json").write_text(session.to_json())
    tmp = out / "bundle.zip.tmp"
    tmp.write_bytes(export_bundle(session, store))
    os.replace(tmp, out / "bundle.zip")


def add_command(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="harvest a corpus through a model and its SAEs, run every measurement, write a session",
        description=(
            "One streaming pass over a corpus computes every statistic (covariances, reservoirs, SAE "
            "feature mass/frequency/histograms, top-k and quantile contexts, co-occurrence, reconstruction "
            "quality), cached by a key of the inputs; then every measurement runs and DIR receives "
            "store/ (the artifacts), session.json and bundle.zip (open it in the dashboard)."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True,
                   help="'organism' (the embedded model), a local Hugging Face model directory, "
                        "or a TransformerLens model name such as gpt2-small")
    p.add_argument("--checkpoint", default=None,
                   help="organism: 'final' or 'step_000123'; TransformerLens: a checkpoint index (Pythia)")
    p.add_argument("--sae", action="append", metavar="SAE",
                   help="repeatable: 'organism' (every organism SAE), 'organism:<hook>', a SAELens "
                        "directory, or <release>:<sae_id> of SAELens's registry")
    p.add_argument("--corpus", default="world",
                   help="'world' (the organism's synthetic corpus), a .txt/.jsonl/.csv file with an "
                        "optional ':column', or hf:<dataset>[:column]")
    p.add_argument("--split", default="train", help="dataset split (hf datasets; 'world' uses eval)")
    p.add_argument("--context-size", type=_int_in(2, 1_048_576), default=None,
                   help="tokens per corpus sequence (default: the SAEs' own context_size from their training "
                        "metadata, else 64)")
    p.add_argument("--no-bos", action="store_true", help="do not put BOS at the start of each sequence")
    p.add_argument("--max-tokens", type=_int_in(1, 10**12), default=None, help="harvest at most this many tokens")
    p.add_argument("--batch-size", type=_int_in(1, 65_536), default=16, help="sequences per forward pass")
    p.add_argument("--site", action="append", metavar="HOOK",
                   help="repeatable: hook sites for covariance/reservoirs (default: every resid_post "
                        "plus the SAE hooks)")
    p.add_argument("--reservoir-size", type=_int_in(0, 1_000_000), default=2048,
                   help="sampled token activations per site")
    p.add_argument("--top-k", type=_int_in(1, 4096), default=16,
                   help="top activating contexts kept per feature")
    p.add_argument("--cooc-chunk-tokens", type=_int_in(1, 10**9), default=256,
                   help="tokens per co-occurrence chunk")
    p.add_argument("--cooc-threshold", type=_float_in(0.0, 1e30), default=0.0,
                   help="a feature counts as present in a chunk where its activation exceeds this")
    p.add_argument("--cooc-sample-chunks", type=_int_in(1, 10**9), default=2048,
                   help="co-occurrence counts are exact up to this many chunks; past it, over a uniform "
                        "sample of this many chunks (phi's standard error about 1/sqrt of it)")
    p.add_argument("--splice-tokens", type=_int_in(0, 10**9), default=2048,
                   help="tokens (from the corpus start) on which each SAE's splice-in quality is measured: "
                        "CE loss clean / spliced / zero- and mean-ablated, loss recovered, KL (0: off)")
    p.add_argument("--seed", type=_int_in(0, 2**31 - 1), default=0, help="seed of the sampling keys")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (GPU when there is one), cpu, cuda, cuda:1, mps")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="model weights dtype (activations are analysed in float32)")
    p.add_argument("--organism-dir", default=None, help="another organism directory (default: assets/organism)")
    p.add_argument("--cache-dir", default=None,
                   help="artifact cache (default: $ATLAS_CACHE_DIR or ~/.cache/atlas)")
    p.add_argument("--no-cache", action="store_true", help="do not use the shared cache; only DIR/store")
    p.add_argument("--checkpoints", action="store_true",
                   help="also the spectra over the organism's training checkpoints (one moments-only harvest "
                        "each; with --ray, parallel Ray tasks)")
    p.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="harvest on Ray (pip install -r requirements-ray.txt): the running cluster at ADDRESS "
                        "('auto', host:6379 or ray://host:10001), or a new local cluster without one; the corpus "
                        "is sharded over the workers, the result equals a local run (docs/SCALING.md)")
    p.add_argument("--ray-workers", type=_int_in(1, 4096), default=None,
                   help="with --ray: workers holding the model (default: one per GPU of the cluster, else per CPU)")
    p.add_argument("--ray-shards", type=_int_in(1, 4096), default=None,
                   help="with --ray: corpus shards (default: one per worker)")
    p.add_argument("--concepts", action="append", metavar="FILE",
                   help="repeatable: your own concept set, a .csv or .json file (docs/CONCEPTS.md); analysed with "
                        "the rest (circles, crystals, concepts, probes: each view the set's kind fits) and written "
                        "into the output (summary.json, the session's artifacts)")
    p.add_argument("--concept-kind", default=None, choices=["cyclic", "ordinal", "categorical", "hierarchical",
                                                            "spatial", "temporal", "analogy"],
                   help="the kind of a plain word-list CSV given to --concepts (other files say it themselves)")
    p.add_argument("--concept-position", default="last", choices=["last", "mean"],
                   help="where a word split into several tokens is read: its last token, or the mean of its tokens")
    p.add_argument("--title", default=None, help="session title")
    p.add_argument("--quiet", action="store_true", help="no progress bar or messages (the summary still prints)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    p.set_defaults(func=_cmd_analyze)
