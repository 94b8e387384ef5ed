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
def _local_sae_and_text(model_dir: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A tiny TopK SAE directory on the model's layer 1 and a small text file, as a user would pass them."""
    sae_dir = tmp_path / "sae"
    make_tiny_sae("topk", hook_name="blocks.1.hook_resid_post", model_name=model_dir.name).save_model(str(sae_dir))
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join("the cat sat on the mat and the dog ran to paris in january" for _ in range(40)))
    return sae_dir, text


def test_analyze_local_hf_directory(tiny_hf_dir, tmp_path):
    sae_dir, text = _local_sae_and_text(tiny_hf_dir, tmp_path)
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


def _analyze_in_process(*args: str, capsys) -> tuple[int, str]:
    from core.cli import main

    code = main(["analyze", *args])
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_analyze_with_the_users_concept_sets(bpe_gpt2_dir, tmp_path, capsys, monkeypatch):
    """--concepts FILE: the user's sets are analysed with the rest and written into the output (summary.json, the
    session's artifacts, the bundle)."""
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    days = tmp_path / "my_days.csv"
    days.write_text("word\nMonday\nTuesday\nWednesday\nThursday\nFriday\nSaturday\nSunday\n")
    animals = tmp_path / "animals.csv"
    animals.write_text("word,category\nrobin,bird\nowl,bird\neagle,bird\ntrout,fish\ncarp,fish\nsalmon,fish\n")
    text = tmp_path / "text.txt"
    text.write_text("\n\n".join("On Monday the king of France went to Paris in January" for _ in range(40)))
    out = tmp_path / "run"
    code, err = _analyze_in_process("--model", str(bpe_gpt2_dir), "--corpus", str(text), "--context-size", "16",
                                    "--max-tokens", "200", "--device", "cpu", "--quiet", "--concepts", str(days),
                                    "--concepts", str(animals), "--concept-kind", "cyclic", "--out", str(out),
                                    capsys=capsys)
    assert code == 2 and "animals.csv" in err and "category" in err   # --concept-kind cyclic does not fit animals
    code, err = _analyze_in_process("--model", str(bpe_gpt2_dir), "--corpus", str(text), "--context-size", "16",
                                    "--max-tokens", "200", "--device", "cpu", "--quiet", "--concepts", str(animals),
                                    "--concept-position", "mean", "--out", str(out), capsys=capsys)
    assert code == 0, err[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    concepts = summary["concepts"]
    assert concepts["position"] == "mean" and concepts["sets"]["animals"]["kind"] == "categorical"
    assert "concepts" in concepts["sets"]["animals"]
    session = session_from_json((out / "session.json").read_text())
    assert concepts["key"] in session.artifact_keys and ArtifactStore(out / "store").has(concepts["key"])
    assert concepts["key"] in read_bundle(out / "bundle.zip").artifacts
    days_out = tmp_path / "run_days"
    code, err = _analyze_in_process("--model", str(bpe_gpt2_dir), "--corpus", str(text), "--context-size", "16",
                                    "--max-tokens", "200", "--device", "cpu", "--quiet", "--concepts", str(days),
                                    "--concept-kind", "cyclic", "--out", str(days_out), capsys=capsys)
    assert code == 0, err[-2000:]
    days_summary = json.loads((days_out / "summary.json").read_text())["concepts"]["sets"]["my_days"]
    assert days_summary["circles"]["read"] == 7 and days_summary["circles"]["dropped"] == []
    assert set(days_summary["best_circle"]) >= {"location", "site", "frequency", "share", "p_value"}


def test_a_bad_concept_file_is_a_clear_error_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("word,colour\nrobin,red\n")
    code, err = _analyze_in_process("--model", "organism", "--concepts", str(bad), "--out", str(tmp_path / "o"),
                                    capsys=capsys)
    assert code == 2 and err.strip().splitlines()[-1].startswith("error:") and "bad.csv" in err
    assert not (tmp_path / "o").exists()


def test_an_analyze_bundle_reopens_on_its_own_sources_in_the_dashboard(tiny_hf_dir, tmp_path, monkeypatch):
    """`atlas analyze` on a local model, SAE directory and text file, then its bundle imported into the dashboard:
    the session opens on that model, SAE and corpus (not the organism), with no refusal notice."""
    from streamlit.testing.v1 import AppTest

    from app.registry import HARVEST_TOKENS
    from core.bundles import import_bundle
    from core.cli.dashboard_sources import HARVEST_TOKENS as CLI_HARVEST_TOKENS
    from core.known_dirs import KnownDirectories
    from core.sessions import SessionStore

    assert CLI_HARVEST_TOKENS == HARVEST_TOKENS
    monkeypatch.setenv("ATLAS_HOME", str(tmp_path / "home"))          # the CLI and the dashboard share it
    sae_dir, text = _local_sae_and_text(tiny_hf_dir, tmp_path)
    out = tmp_path / "run"
    done = run_cli("analyze", "--model", str(tiny_hf_dir), "--sae", str(sae_dir), "--corpus", str(text),
                   "--max-tokens", "1000", "--quiet", "--out", str(out), tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    settings = session_from_json((out / "session.json").read_text()).settings
    sae_ref = f"dir:{KnownDirectories.id_for('sae', str(sae_dir.resolve()))}"
    assert settings["ui_model_source"] == "hf_dir" and settings["ui_sae_set"] == [sae_ref]
    assert settings["ui_corpus_source"] == "file" and settings["harvest_tokens"] == 1000

    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "dashboard-cache"))
    session_id = import_bundle(out / "bundle.zip", SessionStore(), ArtifactStore())
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=300)
    at.query_params["session"] = session_id
    at.run()
    assert not at.exception, at.exception
    assert not at.warning, [w.value for w in at.warning]               # nothing refused
    state = at.session_state
    assert state["model_source"] == "hf_dir" and state["hf_dir"] == str(tiny_hf_dir.resolve())
    assert state["sae_set"] == [sae_ref] and state["corpus_source"] == "file" and state["corpus_file"]
    at.switch_page("../pages/features.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["layer"] == "blocks.1.hook_resid_post"
