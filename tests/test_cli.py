"""`python -m core analyze` end to end, in subprocesses, on the tiny organism and a local HF directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.bundles import read_bundle
from core.sessions import session_from_json
from core.store import ArtifactStore
from tests.fixtures_models import make_tiny_sae

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "ATLAS_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "core", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def check_output_dir(out: Path, n_saes: int) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    session = session_from_json((out / "session.json").read_text())
    assert session.artifact_keys[0] == summary["harvest_key"]
    assert ArtifactStore(out / "store").has(summary["harvest_key"])
    bundle = read_bundle(out / "bundle.zip")
    assert summary["harvest_key"] in bundle.artifacts
    arrays, meta = bundle.artifacts[summary["harvest_key"]]
    assert meta["kind"] == "harvest" and len(meta["saes"]) == n_saes
    assert summary["n_tokens"] > 0
    return summary


def test_help_documents_every_option(tmp_path):
    done = run_cli("analyze", "--help", tmp_path=tmp_path)
    assert done.returncode == 0
    for option in ("--model", "--checkpoint", "--sae", "--corpus", "--max-tokens", "--batch-size", "--device",
                   "--out", "--cache-dir", "--top-k", "--cooc-threshold"):
        assert option in done.stdout


@pytest.mark.slow
def test_analyze_organism(tiny_organism_dir, tmp_path):
    out = tmp_path / "run"
    args = ["analyze", "--model", "organism", "--organism-dir", str(tiny_organism_dir), "--sae", "organism",
            "--corpus", "world", "--max-tokens", "600", "--batch-size", "4", "--device", "cpu", "--out", str(out)]
    done = run_cli(*args, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "harvest" in done.stderr  # the tqdm bar
    summary = check_output_dir(out, n_saes=len(list((tiny_organism_dir / "saes").iterdir())))
    for sae in summary["saes"].values():
        assert 0 < sae["alive"] <= sae["d_sae"] and sae["l0"] > 0
    # a second run is a cache hit with the same key
    again = run_cli(*args[:-1], str(tmp_path / "run2"), tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "run2" / "summary.json").read_text())["harvest_key"] == summary["harvest_key"]


@pytest.mark.slow
def test_analyze_local_hf_directory(tiny_hf_dir, tmp_path):
    sae_dir = tmp_path / "sae"
    make_tiny_sae("topk", hook_name="blocks.1.hook_resid_post", model_name=tiny_hf_dir.name).save_model(str(sae_dir))
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join("the cat sat on the mat and the dog ran to paris in january" for _ in range(40)))
    out = tmp_path / "run"
    done = run_cli("analyze", "--model", str(tiny_hf_dir), "--sae", str(sae_dir), "--corpus", str(text),
                   "--context-size", "16", "--max-tokens", "300", "--quiet", "--out", str(out), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = check_output_dir(out, n_saes=1)
    assert list(summary["saes"]) == ["blocks.1.hook_resid_post"]


def test_bad_input_is_a_clear_error(tmp_path):
    done = run_cli("analyze", "--model", "organism", "--organism-dir", str(tmp_path / "missing"), "--corpus", "world",
                   "--out", str(tmp_path / "o"), tmp_path=tmp_path)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error:")
