"""`python -m core concepts list|reproduce`, in subprocesses: on the tiny organism, on a tiny GPT-2 with a
byte-level BPE tokenizer (local Hugging Face directory: words split into several tokens), and through
the real hub path offline (a tiny GPT-2 cached under the name "gpt2"), up to the download."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.concepts.library import load_library, load_library_set
from tests.fixtures_models import build_tiny_gpt2_dir
from tests.test_offline_hub import _snapshot

ROOT = Path(__file__).resolve().parents[1]


def run_in_process(*args: str, capsys) -> tuple[int, str, str]:
    """The command in this process (torch is already imported here; a subprocess would pay it again)."""
    from core.cli import main

    code = main(["concepts", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def run_cli(*args: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    base.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", ATLAS_CACHE_DIR=str(tmp_path / "cache"),
                PYTHONPATH=str(ROOT), **(env or {}))
    return subprocess.run([sys.executable, "-m", "core", "concepts", *args], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=600)


def test_list_prints_every_set_with_size_kind_and_source(tmp_path, capsys):
    code, out, err = run_in_process("list", capsys=capsys)
    assert code == 0, err
    lines = out.splitlines()
    for name, s in load_library().items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert s.kind in row and f" {len(s)} " in row and s.source[:30] in row
    as_json = json.loads(run_in_process("list", "--json", capsys=capsys)[1])
    assert {e["name"] for e in as_json} == set(load_library())


@pytest.mark.slow
def test_reproduce_on_the_organism(tiny_organism_dir, capsys):
    common = ["--model", "organism", "--organism-dir", str(tiny_organism_dir), "--device", "cpu"]
    code, out, err = run_in_process("reproduce", "engels", *common, capsys=capsys)
    assert code == 0, err
    assert "weekdays (k = 7)" in out and "months (k = 12)" in out and "published:" in out
    assert "reading" in err  # the progress bar
    code, out, err = run_in_process("reproduce", "park", *common, "--json", capsys=capsys)
    assert code == 0, err
    result = json.loads(out)
    assert {p["parent"] for p in result["parents"]} == {"animal", "plant", "object"}
    assert result["sibling_pair"] == ["reptile", "mammal"] and "0.198" in result["published"]
    code, out, err = run_in_process("reproduce", "gurnee", *common, "--json", "--quiet", capsys=capsys)
    assert code == 0, err
    curves = json.loads(out)["curves"]
    assert [c["set_name"] for c in curves] == ["cities", "people"] and all(len(c["r2"]) == 2 for c in curves)
    code, out, _ = run_in_process("reproduce", "engels", *common, "--concepts", "library", "--quiet", capsys=capsys)
    assert code == 0 and "weekdays (k = 7)" in out
    code, _, err = run_in_process("reproduce", "engels", "--model", str(tiny_organism_dir / "missing"), capsys=capsys)
    assert code == 2 and "error:" in err


@pytest.mark.slow
def test_reproduce_on_a_bpe_gpt2_directory(bpe_gpt2_dir, capsys):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(bpe_gpt2_dir))
    split = [i.word for i in load_library_set("historical_figures").items
             if len(tokenizer(" " + i.word, add_special_tokens=False)["input_ids"]) > 1]
    assert len(split) > 100  # names are read over several tokens here
    for paper, extra in (("engels", []), ("park", []), ("gurnee", ["--max-items", "120"])):
        code, out, err = run_in_process("reproduce", paper, "--model", str(bpe_gpt2_dir), "--device", "cpu", "--json",
                                        "--quiet", "--position", "mean" if paper == "gurnee" else "last", *extra,
                                        capsys=capsys)
        assert code == 0, (paper, err)
        result = json.loads(out)
        if paper == "engels":
            assert {s["set_name"] for s in result["sets"]} == {"weekdays", "months"}
            assert all(len(s["rows"]) == 4 for s in result["sets"])  # 2 layers x (word, answer)
        elif paper == "park":
            assert result["n_words"] > 50 and result["parents"]
        else:
            assert result["position"] == "mean"
            assert [c["n_items"] for c in result["curves"]] == [120, 120]


@pytest.mark.slow
def test_reproduce_through_the_offline_hub_cache(tmp_path, word_tokenizer_dir):
    home = tmp_path / "hf_home"
    build_tiny_gpt2_dir(_snapshot(home / "hub", "gpt2"), word_tokenizer_dir)
    env = {"HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub")}
    done = run_cli("reproduce", "engels", "--model", "gpt2", "--device", "cpu", "--quiet", tmp_path=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("engels on gpt2") and "weekdays (k = 7)" in done.stdout
    assert "months (k = 12): no location could be scored" in done.stdout  # only 3 months in its vocabulary
    missing = run_cli("reproduce", "gurnee", "--model", "pythia-70m", "--quiet", tmp_path=tmp_path, env=env)
    assert missing.returncode == 2 and "EleutherAI/pythia-70m" in missing.stderr and "hf download" in missing.stderr
    assert "Traceback" not in missing.stderr
