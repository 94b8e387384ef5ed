"""The real hub code path, offline (issue 2, item 5).

We build a tiny GPT-2 (transformers GPT2Config, 16 wide, 2 layers, n_ctx given explicitly) with a
word-level tokenizer, and a tiny SAELens SAE, and lay them out in a Hugging Face hub cache the way
huggingface_hub writes it (`models--<org>--<name>/snapshots/<commit>/...` plus `refs/main`), under the
names the real calls ask for:

- `load_model(ModelSpec(source="transformer_lens", name="gpt2"))` runs
  `HookedTransformer.from_pretrained("gpt2")`, which asks the hub client for repo "gpt2"
  (`AutoConfig.from_pretrained("gpt2")`, `AutoModelForCausalLM.from_pretrained("gpt2")`,
  `AutoTokenizer.from_pretrained("gpt2")`); TransformerLens converts whatever config the cache holds, so
  a tiny config under the real name is loaded through exactly the calls a networked user makes.
- `load_sae(SAESpec(source="release", release="gpt2-small-res-jb", sae_id="blocks.0.hook_resid_pre"))`
  runs `SAE.from_pretrained`, which looks the release up in the registry shipped inside sae-lens and
  calls `hf_hub_download("jbloom/GPT2-Small-SAEs-Reformatted", "blocks.0.hook_resid_pre/cfg.json")`
  and `.../sae_weights.safetensors` (and tries the optional sparsity file).

HF_HUB_OFFLINE is read at import time, so everything runs in a fresh subprocess with HF_HOME and
HF_HUB_CACHE pointing into tmp_path and HF_HUB_OFFLINE=1. The same subprocess then asks for a model
and an SAE that are not in the cache and must get OfflineError naming the repo and how to get it.
The subprocess timeout is the guard against the minutes-long retry loop the hub client would run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures_models import build_tiny_gpt2_dir, make_tiny_sae

REPO_ROOT = Path(__file__).resolve().parents[1]
COMMIT = "a" * 40
SAE_REPO = "jbloom/GPT2-Small-SAEs-Reformatted"
SAE_RELEASE = "gpt2-small-res-jb"
SAE_ID = "blocks.0.hook_resid_pre"

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from core.errors import OfflineError
from core.sources.models import ModelSpec, load_model
from core.sources.saes import SAESpec, load_sae
out = {}
model = load_model(ModelSpec(source="transformer_lens", name="gpt2", device="cpu"))
out["card"] = {"name": model.card.name, "d_model": model.d_model, "n_layers": model.n_layers,
               "d_vocab": model.d_vocab, "origin": model.card.origin}
tokens = model.to_tokens(["the cat sat on the mat"])
acts = model.run(tokens, ["blocks.0.hook_resid_pre"])
out["acts_shape"] = list(acts["blocks.0.hook_resid_pre"].shape)
sae = load_sae(SAESpec(source="release", release="gpt2-small-res-jb", sae_id="blocks.0.hook_resid_pre"), model)
out["sae"] = {"hook": sae.hook_name, "d_in": sae.d_in, "d_sae": sae.d_sae, "arch": sae.architecture,
              "warnings": sae.fit_warnings}
z = sae.encode(acts["blocks.0.hook_resid_pre"])
out["z_shape"] = list(z.shape)
for label, call in [
    ("missing_model", lambda: load_model(ModelSpec(source="transformer_lens", name="pythia-70m", device="cpu"))),
    ("missing_sae", lambda: load_sae(SAESpec(source="release", release="gpt2-small-res-jb",
                                             sae_id="blocks.1.hook_resid_pre"))),
]:
    start = time.perf_counter()
    try:
        call()
        out[label] = {"error": None}
    except OfflineError as error:
        out[label] = {"error": "OfflineError", "message": str(error), "seconds": time.perf_counter() - start}
print("RESULT " + json.dumps(out))
"""


def _snapshot(hub: Path, repo_id: str) -> Path:
    """The directory huggingface_hub reads a repo's files from, with refs/main pointing to it."""
    repo_dir = hub / ("models--" + repo_id.replace("/", "--"))
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(COMMIT)
    snapshot = repo_dir / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


@pytest.fixture(scope="module")
def offline_hub(tmp_path_factory, word_tokenizer_dir) -> Path:
    home = tmp_path_factory.mktemp("hf_home")
    hub = home / "hub"
    build_tiny_gpt2_dir(_snapshot(hub, "gpt2"), word_tokenizer_dir)
    sae = make_tiny_sae("standard", d_in=16, d_sae=32, hook_name=SAE_ID, model_name="gpt2-small")
    sae.save_model(str(_snapshot(hub, SAE_REPO) / SAE_ID))
    return home


@pytest.mark.slow
def test_real_hub_calls_load_from_an_offline_cache(offline_hub: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(
        HF_HOME=str(offline_hub),
        HF_HUB_CACHE=str(offline_hub / "hub"),
        HF_HUB_OFFLINE="1",
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
    )
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(REPO_ROOT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        cwd=str(offline_hub),
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    out = json.loads(lines[-1].removeprefix("RESULT "))

    # the tiny model came through HookedTransformer.from_pretrained("gpt2")
    assert out["card"] == {
        "name": "gpt2", "d_model": 16, "n_layers": 2, "d_vocab": 45, "origin": "transformer_lens:gpt2"
    }
    assert out["acts_shape"] == [1, 7, 16]  # BOS + six words
    # the tiny SAE came through SAE.from_pretrained(release, sae_id); its model name is an alias
    assert out["sae"]["hook"] == SAE_ID and out["sae"]["d_in"] == 16 and out["sae"]["d_sae"] == 32
    assert out["sae"]["arch"] == "standard"
    assert len(out["sae"]["warnings"]) == 1 and "gpt2-small" in out["sae"]["warnings"][0]
    assert out["z_shape"] == [1, 7, 32]

    # what is not cached fails with a message naming the repo and the way to get it
    missing_model = out["missing_model"]
    assert missing_model["error"] == "OfflineError"
    assert "EleutherAI/pythia-70m" in missing_model["message"] and "hf download" in missing_model["message"]
    missing_sae = out["missing_sae"]
    assert missing_sae["error"] == "OfflineError"
    assert SAE_REPO in missing_sae["message"] and "blocks.1.hook_resid_pre" in missing_sae["message"]


def test_require_cached_names_missing_files(tmp_path, monkeypatch):
    """Without a usable hub, a file missing from the cache is an OfflineError; a cached one passes."""
    from core.errors import OfflineError
    from core.sources import hub

    cache = tmp_path / "hub"
    snapshot = _snapshot(cache, "org/model")
    (snapshot / "config.json").write_text("{}")
    monkeypatch.setattr(hub, "hub_usable", lambda: False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    import huggingface_hub.file_download as fd

    if hasattr(fd, "constants"):
        monkeypatch.setattr(fd.constants, "HF_HUB_CACHE", str(cache))
    hub.require_cached("org/model", ["config.json"], "The model")
    with pytest.raises(OfflineError) as info:
        hub.require_cached("org/model", ["config.json", "model.safetensors"], "The model")
    message = str(info.value)
    assert "model.safetensors" in message and "org/model" in message and "config.json" not in message


def test_offline_failures_are_recognised_through_the_cause_chain():
    from huggingface_hub.errors import LocalEntryNotFoundError

    from core.sources.hub import is_offline_failure

    try:
        try:
            raise LocalEntryNotFoundError("not cached")
        except LocalEntryNotFoundError as inner:
            raise OSError("wrapped by transformers") from inner
    except OSError as error:
        assert is_offline_failure(error)
    assert not is_offline_failure(ValueError("shape mismatch"))
