"""Every page in a real browser, on a store of GPT-2-small scale: seconds until the page shows its content.

    python -m bench pages --shape gpt2-small [--saes 6:topk,8:jumprelu] [--tokens 4096] [--keep DIR] [--json PATH]
                          [--shots DIR]
    python -m bench pages --shape tiny                  # the test's shape (tests/test_bench_pages.py), ~30 s

What a user with their own checkpoint does, step by step:
1. Sources on disk: a random model of the shape saved as a local Hugging Face directory (transformers'
   GPT2LMHeadModel, seed 0, a word-level tokenizer of the model's full vocabulary: the corpus's words first,
   filler words after), random SAELens SAEs of the shape's width saved with `SAE.save_model` (TopK k = 32 or
   JumpReLU with thresholds set so ~64 features fire per token; bench/bench_scale.py builds them), and a corpus
   file (this repository's own documentation: English) saved as an upload, as the sidebar does.
2. The store, as the dashboard would build it: the directories are remembered as the sidebar remembers typed
   paths (core.known_dirs), the sources are the specs app/sources.py builds from those sidebar values, and the
   harvest (HarvestSettings with --tokens, the sidebar's "Harvest tokens") and core.analysis.run_all write into
   ATLAS_CACHE_DIR: the same keys the pages look up.
3. The real server on that store (`streamlit run app/main.py`); the sources are chosen by a link carrying them
   (`?model=hf_dir&hf=<id>&sae=dir:<id>...`, what the URL of a chosen source set reads). A first visit loads the
   model and SAEs into the server (timed apart: "server warm-up"); then each page opens in a new browser tab (a new
   Streamlit session), timed from navigation until its real content is visible and until its script finished,
   with the server's CPU seconds beside. Features is opened twice: the default feature, and one feature's page by
   its link (`feature=`, `layer=`). A reload must keep the sources (checked on the Features page).
Printed as a table and written as JSON; artifacts the visits wrote into the store are listed (a page that computes
on first visit shows up there). With --keep DIR the sources and store are built once and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.bench_scale import SHAPES, build_saes
from bench.browser import (
    PAGE_CONTENT,
    ROOT,
    UNEXPECTED_TEXT,
    browser_cpu_seconds,
    browser_missing,
    cpu_seconds,
    cpu_since,
    launch,
    serve,
    wait_idle,
)

DEFAULT_SAES = {"gpt2-small": "6:topk,8:jumprelu", "tiny": "0:topk,1:jumprelu"}
PAGES = ["home", "probe", "features", "feature", "geometry", "superposition", "spectra", "steer", "sessions"]
BOS = "<|endoftext|>"
TIMEOUT_MS = 300_000


def parse_saes(text: str) -> list[tuple[int, str]]:
    out = []
    for part in text.split(","):
        layer, _, kind = part.strip().partition(":")
        if kind not in ("topk", "jumprelu") or not layer.isdigit():
            raise SystemExit(f"--saes {text!r}: give LAYER:topk or LAYER:jumprelu, comma-separated")
        out.append((int(layer), kind))
    return out


# ---- 1. sources on disk ------------------------------------------------------------------------------
def corpus_text(max_words: int = 400_000) -> str:
    """This repository's documentation as plain English text (README first)."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    text = "\n\n".join(f.read_text(errors="replace") for f in files if f.is_file())
    return " ".join(text.split()[:max_words])


def build_model_dir(directory: Path, shape_name: str, text: str) -> Path:
    """A random GPT-2 of the shape with a word-level tokenizer of exactly its vocabulary, as an HF directory."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    cfg = SHAPES[shape_name].cfg
    n_vocab = int(cfg["d_vocab"])
    pre = pre_tokenizers.Whitespace()
    words = list(dict.fromkeys(w for w, _ in pre.pre_tokenize_str(text)))
    vocab = [BOS, "<unk>"] + words[: n_vocab - 2]
    vocab += [f"w{i}" for i in range(n_vocab - len(vocab))]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    core.pre_tokenizer = pre
    core.decoder = decoders.WordPiece(prefix="##")   # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, bos_token=BOS, eos_token=BOS, unk_token="<unk>",
                                        pad_token=BOS)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    n_layers = SHAPES[shape_name].full_layers
    config = GPT2Config(n_embd=cfg["d_model"], n_layer=n_layers, n_head=cfg["n_heads"], n_inner=cfg["d_mlp"],
                        n_positions=cfg["n_ctx"], n_ctx=cfg["n_ctx"], vocab_size=n_vocab, bos_token_id=0,
                        eos_token_id=0, activation_function="gelu_new")
    GPT2LMHeadModel(config).eval().save_pretrained(str(directory))
    return directory


def build_sae_dirs(root: Path, model: Any, corpus: Any, layers: list[tuple[int, str]], width: int) -> list[Path]:
    """Random SAELens SAEs on those layers' resid_post, saved as SAELens directories (cfg.json + weights)."""
    calibration = corpus.tokens[: max(2, 2048 // corpus.tokens.shape[1])]
    out = []
    for layer, kind in layers:   # one at a time: a 24,576-wide SAE is 150 MB
        (sae,) = build_saes(model, [layer], width, (kind,), calibration)
        directory = root / f"sae-{kind}-layer{layer}"
        sae.sae.save_model(str(directory))
        out.append(directory)
    return out


def sidebar_values(model_dir: Path, sae_dirs: list[Path], corpus_name: str, tokens: int) -> dict[str, Any]:
    """What a user's sidebar holds after typing the directories and uploading the corpus (the directories are
    remembered as the sidebar remembers them, so a link may name them by id)."""
    from core.known_dirs import KnownDirectories

    known = KnownDirectories()
    known.remember("model", str(model_dir))
    refs = sorted(f"dir:{known.remember('sae', str(d))}" for d in sae_dirs)
    return {"model_source": "hf_dir", "hf_dir": str(model_dir), "sae_set": refs, "corpus_source": "file",
            "corpus_file": corpus_name, "corpus_column": "text", "harvest_tokens": tokens, "device": "auto"}


def link_query(values: dict[str, Any]) -> str:
    """The URL query of these sources, as app/state.py writes it for a chosen source set."""
    from urllib.parse import urlencode

    from core.known_dirs import KnownDirectories

    pairs = [("model", "hf_dir"), ("hf", KnownDirectories.id_for("model", values["hf_dir"]))]
    pairs += [("sae", ref) for ref in values["sae_set"]]
    pairs += [("corpus", "file"), ("file", values["corpus_file"]), ("tokens", str(values["harvest_tokens"]))]
    return urlencode(pairs)


# ---- 2. the store --------------------------------------------------------------------------------------
def build_store(values: dict[str, Any], say=print, model: Any = None) -> dict[str, Any]:
    """Harvest and every analysis into ATLAS_CACHE_DIR, with the specs and settings the dashboard uses (`model`:
    the sources' model when the caller loaded it from the same spec)."""
    from app.sources import request
    from core.analysis import run_all
    from core.harvest import HarvestSettings
    from core.harvest.run import harvest_cached
    from core.hooks import site_order
    from core.sources.chunking import chunking_for_saes
    from core.sources.corpus import load_corpus
    from core.sources.models import load_model
    from core.sources.saes import load_sae
    from core.store import ArtifactStore

    seconds = {}
    start = time.perf_counter()
    sources = request(values)
    model = model if model is not None else load_model(sources.model)
    saes = sorted((load_sae(spec, model) for spec in sources.saes),
                  key=lambda s: (site_order(s.hook_name), s.spec.source, str(s.spec)))   # app.resources.get_saes
    corpus_spec, _ = chunking_for_saes(saes, sources.corpus)
    corpus = load_corpus(corpus_spec, model)
    seconds["load model, SAEs, corpus"] = time.perf_counter() - start
    store = ArtifactStore()
    settings = HarvestSettings(max_tokens=int(values["harvest_tokens"]))   # app.resources.harvest_settings
    start = time.perf_counter()
    harvest, key = harvest_cached(model, saes, corpus, settings, store=store,
                                  progress=lambda done, total, left: None)
    seconds["harvest"] = time.perf_counter() - start
    say(f"  harvest {harvest.n_tokens:,} tokens: {seconds['harvest']:.1f} s")
    start = time.perf_counter()
    run_all(model, saes, harvest, store=store, harvest_key=key,
            progress=lambda fraction, text: say(f"  run_all {fraction:4.0%} {text}"))
    seconds["run_all"] = time.perf_counter() - start
    say(f"  every analysis: {seconds['run_all']:.1f} s")
    first = harvest.saes[saes[0].hook_name]
    counts = [int(c) for c in first.fire_count]
    ranked = sorted(range(len(counts)), key=lambda i: -counts[i])
    return {"seconds": seconds, "hook": saes[0].hook_name, "feature": ranked[min(1, len(ranked) - 1)]}


def prepare(root: Path, shape_name: str, saes: list[tuple[int, str]], tokens: int, say=print) -> dict[str, Any]:
    """Sources and store under `root` (home/, cache/, sources/), built once: a second call reads prepared.json."""
    done = root / "prepared.json"
    os.environ["ATLAS_HOME"], os.environ["ATLAS_CACHE_DIR"] = str(root / "home"), str(root / "cache")
    if done.is_file():
        prepared = json.loads(done.read_text())
        wanted = {"shape": shape_name, "saes": [list(s) for s in saes], "tokens": tokens}
        if {k: prepared[k] for k in wanted} == wanted:
            # every stored view is read back; what this code stores and the store lacks is computed now
            say(f"reusing the sources and store in {root}; checking the store")
            prepared["seconds"] = {f"{k} (reuse)": v for k, v in build_store(prepared["values"], say)["seconds"].items()}
            return prepared
        raise SystemExit(f"{root} holds another configuration ({prepared['shape']}, {prepared['saes']}, "
                         f"{prepared['tokens']} tokens): choose another --keep directory")
    from app.sources import model_spec
    from core.sources.corpus import CorpusSpec, load_corpus
    from core.sources.models import load_model
    from core.uploads import save_upload

    seconds = {}
    text = corpus_text()
    start = time.perf_counter()
    model_dir = build_model_dir(root / "sources" / f"{shape_name}-random", shape_name, text)
    seconds["write the model directory"] = time.perf_counter() - start
    corpus_name = save_upload(text.encode(), "corpus.txt")
    say(f"model directory {model_dir}; corpus upload {corpus_name} ({len(text.split()):,} words)")
    start = time.perf_counter()
    model = load_model(model_spec({"model_source": "hf_dir", "hf_dir": str(model_dir), "device": "auto"}))
    from core.uploads import upload_path

    calibration = load_corpus(CorpusSpec(source="file", path=str(upload_path(corpus_name)), context_size=128,
                                         max_chunks=16), model)
    width = SHAPES[shape_name].sae_width
    sae_dirs = build_sae_dirs(root / "sources", model, calibration, saes, width)
    seconds["write the SAE directories"] = time.perf_counter() - start
    values = sidebar_values(model_dir, sae_dirs, corpus_name, tokens)
    stored = build_store(values, say, model)
    del model
    seconds.update(stored["seconds"])
    prepared = {"shape": shape_name, "saes": [list(s) for s in saes], "tokens": tokens, "sae_width": width,
                "values": values, "query": link_query(values), "seconds": seconds, "hook": stored["hook"],
                "feature": stored["feature"]}
    done.write_text(json.dumps(prepared, indent=2))
    return prepared


# ---- 3. the browser -------------------------------------------------------------------------------------
def content_of(name: str, page: Any, feature: int | None = None) -> Any:
    if name == "feature":
        return page.get_by_role("heading", name=re.compile(rf"^Feature {feature} on"))
    if name == "spectra":   # a model without training checkpoints: the eigenspectrum is the last figure
        return page.get_by_text("Dashed line: the alpha-ReQ power law", exact=False)
    return PAGE_CONTENT[name](page)


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM of /proc/<pid>/status), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024)
    return 0.0


def store_entries(cache: Path) -> set[str]:
    return {str(p.parent.relative_to(cache)) for p in cache.rglob("COMPLETE")}


def entry_kind(directory: Path) -> str:
    try:
        meta = json.loads((directory / "meta.json").read_text()).get("meta", {})
    except (OSError, ValueError):
        return "?"
    return str(meta.get("kind") or meta.get("purpose") or "?")


def seed_like_the_server() -> None:
    """The organism's prebuilt views, which the server copies into the store at start (app.resources.get_store):
    copied here first, so that what the visits write is what the pages computed."""
    from core.snapshot import seed_store
    from core.store import ArtifactStore

    seed_store(ArtifactStore())


def measure(root: Path, prepared: dict[str, Any], say=print, shots: Path | None = None,
            pages: list[str] = PAGES) -> dict[str, Any]:
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=TIMEOUT_MS)
    query = prepared["query"]
    cache = root / "cache"
    seed_like_the_server()
    before = store_entries(cache)
    figures: dict[str, Any] = {"pages": {}}
    began = time.perf_counter()
    with serve(root / "home", cache, root / "server.log", start_timeout=120) as (base, process), \
            sync_playwright() as p:
        figures["server_start_s"] = round(time.perf_counter() - began, 2)
        browser = launch(p)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 2400})
            # warm-up: the first visit loads the model and SAEs into the server and reads the harvest
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            start, cpu = time.perf_counter(), cpu_seconds(process.pid)
            page.goto(f"{base}/features?{query}")
            expect(content_of("features", page)).to_be_visible()
            wait_idle(page, TIMEOUT_MS)
            figures["warm_up"] = {"script_done_s": round(time.perf_counter() - start, 2),
                                  "server_cpu_s": round(cpu_seconds(process.pid) - cpu, 2)}
            hook, feature = prepared["hook"], int(prepared["feature"])
            # a reload keeps the sources: the same SAE site, and the link still names the model directory
            page.reload()
            expect(page.get_by_role("heading", name=re.compile(rf"^Feature \d+ on {re.escape(hook)}"))).to_be_visible()
            wait_idle(page, TIMEOUT_MS)
            assert "model=hf_dir" in page.url, f"a reload lost the sources: {page.url}"
            figures["reload_keeps_sources"] = True
            page.close()
            for name in pages:
                url = {"home": f"{base}/?{query}", "feature": f"{base}/features?{query}&layer={hook}&feature={feature}"
                       }.get(name, f"{base}/{name}?{query}")
                page = context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                load = os.getloadavg()[0]
                start, cpu, browser_cpu = time.perf_counter(), cpu_seconds(process.pid), browser_cpu_seconds(process.pid)
                page.goto(url)
                expect(content_of(name, page, feature)).to_be_visible()
                visible, cpu_visible = time.perf_counter() - start, cpu_seconds(process.pid) - cpu
                wait_idle(page, TIMEOUT_MS)
                done, cpu_done = time.perf_counter() - start, cpu_seconds(process.pid) - cpu
                browser_cpu = cpu_since(browser_cpu, browser_cpu_seconds(process.pid))
                problem = page.get_by_text(UNEXPECTED_TEXT, exact=False).count()
                figures["pages"][name] = {"content_visible_s": round(visible, 2), "script_done_s": round(done, 2),
                                          "server_cpu_to_content_s": round(cpu_visible, 2),
                                          "server_cpu_to_done_s": round(cpu_done, 2),
                                          "browser_cpu_to_done_s": round(browser_cpu, 2), "load_average": round(load, 2),
                                          "errors_shown": problem}
                if shots is not None:
                    shots.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(shots / f"pages-{name}.png"), full_page=True)
                say(f"  {name:14s} content {visible:6.2f} s   done {done:6.2f} s   server CPU {cpu_done:6.2f} s"
                    f"   browser CPU {browser_cpu:6.2f} s   load {load:.1f}")
                page.close()
            figures["server_peak_rss_mb"] = peak_rss_mb(process.pid)
        finally:
            browser.close()
    figures["written_by_the_visits"] = sorted(f"{entry_kind(cache / e)} ({e[3:15]})"
                                              for e in store_entries(cache) - before)
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return figures


def print_table(result: dict[str, Any]) -> None:
    print(f"\n== pages in Chromium: {result['shape']}, SAEs {result['saes']}, {result['tokens']:,} tokens ==")
    print(f"server start {result['server_start_s']} s; warm-up (model + SAEs loaded, harvest read): "
          f"{result['warm_up']['script_done_s']} s ({result['warm_up']['server_cpu_s']} s server CPU)")
    print(f"peak RSS: server {result['server_peak_rss_mb']} MB, this process (sources and store) "
          f"{result['bench_peak_rss_mb']} MB")
    print(f"{'page':14s} {'content (s)':>12s} {'done (s)':>10s} {'server CPU (s)':>15s} {'browser CPU (s)':>16s}"
          f" {'load':>6s}")
    for name, row in result["pages"].items():
        print(f"{name:14s} {row['content_visible_s']:12.2f} {row['script_done_s']:10.2f} "
              f"{row['server_cpu_to_done_s']:15.2f} {row['browser_cpu_to_done_s']:16.2f} {row['load_average']:6.1f}"
              + ("   ERROR SHOWN" if row["errors_shown"] else ""))
    written = result["written_by_the_visits"]
    print(f"artifacts the visits wrote into the store: {len(written)}" + (f" ({', '.join(written[:8])})" if written else ""))


def run(shape_name: str, saes: list[tuple[int, str]], tokens: int, keep: Path | None, say=print,
        shots: Path | None = None, pages: list[str] = PAGES) -> dict[str, Any]:
    missing = browser_missing()
    if missing:
        raise SystemExit(f"bench pages needs a browser: {missing}")
    root = keep or Path(tempfile.mkdtemp(prefix="atlas-bench-pages-"))
    root.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in ("ATLAS_HOME", "ATLAS_CACHE_DIR")}
    try:
        prepared = prepare(root, shape_name, saes, tokens, say)
        figures = measure(root, prepared, say, shots, pages)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    figures["bench_peak_rss_mb"] = peak_rss_mb(os.getpid())   # building the sources and the store
    return {"shape": shape_name, "saes": [f"{layer}:{kind}" for layer, kind in saes], "tokens": tokens,
            "sae_width": prepared["sae_width"], "prepare_seconds": prepared["seconds"], **figures}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench pages", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(DEFAULT_SAES), default="gpt2-small")
    parser.add_argument("--saes", default=None, help="LAYER:topk|jumprelu, comma-separated (default per shape)")
    parser.add_argument("--tokens", type=int, default=4096, help="harvested tokens (the sidebar's Harvest tokens)")
    parser.add_argument("--keep", type=Path, default=None, help="build the sources and store here once; reuse them")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--pages", default=",".join(PAGES), help=f"which pages, comma-separated (of {', '.join(PAGES)})")
    parser.add_argument("--shots", type=Path, default=None, help="a screenshot of each page into this folder")
    args = parser.parse_args(argv)
    if args.tokens < 1000:
        parser.error("--tokens: the sidebar takes at least 1,000")
    saes = parse_saes(args.saes or DEFAULT_SAES[args.shape])
    pages = [name.strip() for name in args.pages.split(",") if name.strip()]
    if not pages or set(pages) - set(PAGES):
        parser.error(f"--pages: choose from {', '.join(PAGES)}")
    result = run(args.shape, saes, args.tokens, args.keep, shots=args.shots, pages=pages)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0
