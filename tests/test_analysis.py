"""core.analysis: planted answers through the orchestration layer, caching in the store, and every
view on the tiny organism (shapes, finite values, well-formed JSON)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from core import analysis as A
from core.store import ArtifactStore


def _site(cov: np.ndarray, reservoir: np.ndarray) -> SimpleNamespace:
    return SimpleNamespace(n=reservoir.shape[0], mean=np.zeros(cov.shape[0]), cov=cov, reservoir=reservoir)


def _planted_harvest(alpha: float = 1.3, d: int = 200, intrinsic: int = 4, seed: int = 0) -> SimpleNamespace:
    rng = np.random.default_rng(seed)
    cov = np.diag(np.arange(1, d + 1, dtype=float) ** -alpha)
    basis = np.linalg.qr(rng.normal(size=(d, intrinsic)))[0]  # a 4-dim Gaussian embedded linearly in d dims
    reservoir = rng.normal(size=(1500, intrinsic)) @ basis.T
    return SimpleNamespace(sites={"blocks.0.hook_resid_post": _site(cov, reservoir),
                                  "blocks.1.hook_resid_post": _site(np.eye(d), rng.normal(size=(600, 3)) @ basis[:, :3].T)},
                           saes={}, n_tokens=1500, sources={"planted": seed}, settings={"alpha": alpha})


def test_spectra_by_layer_recovers_planted_spectrum_and_dimension():
    result = A.spectra_by_layer(_planted_harvest(alpha=1.3))
    assert result["sites"] == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    planted = result["per_site"]["blocks.0.hook_resid_post"]
    assert abs(planted["alpha"]["alpha"] - 1.3) < 0.05
    assert (planted["alpha"]["first_rank"], planted["alpha"]["last_rank"]) == (12, 100)  # the paper's range, d >= 100
    assert abs(planted["twonn"]["dimension"] - 4) < 0.4 and abs(planted["mle"]["dimension"] - 4) < 0.6
    flat = result["per_site"]["blocks.1.hook_resid_post"]
    assert flat["rankme"] == pytest.approx(200, rel=1e-3) and flat["participation_ratio"] == pytest.approx(200)
    assert abs(flat["twonn"]["dimension"] - 3) < 0.4
    json.dumps(result)  # JSON-safe


def test_small_d_fit_range_is_reported():
    harvest = _planted_harvest(d=40)
    result = A.spectra_by_layer(harvest)
    alpha = result["per_site"]["blocks.0.hook_resid_post"]["alpha"]
    assert alpha["adapted"] and (alpha["first_rank"], alpha["last_rank"]) == (4, 20)
    assert "d = 40 < 100" in result["fit_note"]


def test_results_are_cached_in_the_store(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    harvest = _planted_harvest()
    first = A.spectra_by_layer(harvest, store)
    assert store.has(first["key"])

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(A, "site_spectrum", boom)
    assert A.spectra_by_layer(harvest, store) == first
    # other settings are another key, computed afresh
    with pytest.raises(AssertionError, match="recomputed"):
        A.spectra_by_layer(harvest, store, fit_range=(2, 50))


def test_superposition_uniform_mass_and_random_directions():
    k, d_sae, m = 37, 64, 16
    rng = np.random.default_rng(1)
    mass = np.zeros(d_sae)
    mass[:k] = 2.5
    fire = (mass > 0).astype(np.int64) * 10
    snaps = np.stack([mass * f for f in (0.1, 0.5, 1.0)])
    stats = SimpleNamespace(l1_mass=mass, fire_count=fire, n_tokens=100, explained_variance=0.9, l0=3.7,
                            l1_snapshots=snaps, l1_snapshot_tokens=np.array([10, 50, 100]))
    W = rng.normal(size=(d_sae, m))
    sae = SimpleNamespace(hook_name="blocks.0.hook_resid_post", d_sae=d_sae, d_in=m, W_dec=W)
    model = SimpleNamespace(W_U=rng.normal(size=(m, 3000)))
    harvest = SimpleNamespace(sites={}, saes={sae.hook_name: stats}, sources={"s": 1}, settings={})
    result = A.superposition_by_layer(harvest, [sae], model)
    entry = result["per_sae"][sae.hook_name]
    assert entry["effective"]["F"] == pytest.approx(k)
    assert entry["effective"]["psi"] == pytest.approx(k / m)
    assert entry["effective"]["alive"] == k and entry["effective"]["mean_l0"] == pytest.approx(k * 10 / 100)
    assert entry["convergence"]["F"] == pytest.approx([k, k, k])
    assert entry["interference"]["msq_ratio"] == pytest.approx(1.0, abs=0.25)
    assert result["unembedding"]["msq_ratio"] == pytest.approx(1.0, abs=0.05)


def test_slot_prompt_and_templates():
    text, prefix = A.slot_prompt("{n} days after {day} is", "day", "friday", {"n": "three"})
    assert text == "three days after friday is" and prefix == "three days after friday"
    text, prefix = A.slot_prompt("the capital of {0} is {1}", "1", "paris", {"0": "france", "1": "x"})
    assert (text, prefix) == ("the capital of france is paris", "the capital of france is paris")
    pairs = A.analogy_pairs({"analogies": {"capital": [["france", "paris", "french"]], "gender": [["man", "woman"]]}})
    assert pairs == [("capital", "capital", "france", "paris"), ("language", "capital", "france", "french"),
                     ("gender", "gender", "man", "woman")]


def test_no_ground_truth_is_skipped_cleanly():
    result = A.ground_truth_geometry(SimpleNamespace(), None)
    assert "skipped" in result and "ground truth" in result["skipped"]


# ------------------------------------------------------------------------------- organism
@pytest.fixture(scope="module")
def organism(tiny_organism_dir, tmp_path_factory):
    from core.corpus import CorpusSpec, load_corpus
    from core.harvest import HarvestSettings, harvest_cached
    from core.models import ModelSpec, load_model
    from core.saes import load_sae, organism_sae_specs

    path = str(tiny_organism_dir)
    store = ArtifactStore(tmp_path_factory.mktemp("analysis_store"))
    model = load_model(ModelSpec(source="organism", path=path, checkpoint="final", device="cpu"))
    saes = [load_sae(spec, model) for spec in organism_sae_specs(path)]
    corpus = load_corpus(CorpusSpec(source="world", path=path), model)
    harvest, key = harvest_cached(model, saes, corpus, HarvestSettings(max_tokens=3000), store)
    return SimpleNamespace(model=model, saes=saes, harvest=harvest, key=key, store=store, path=path)


def test_run_all_on_the_tiny_organism(organism):
    out = A.run_all(organism.model, organism.saes, organism.harvest, store=organism.store)
    assert A.harvest_key_of(organism.harvest) == organism.key
    n_layers, d = organism.model.n_layers, organism.model.d_model
    spectra = out["spectra"]
    assert len(spectra["sites"]) == n_layers
    for entry in spectra["per_site"].values():
        assert 1 <= entry["rankme"] <= d and len(entry["eigenvalues"]) == d
        assert entry["alpha"]["adapted"] and math.isfinite(entry["alpha"]["alpha"])
        assert 0 < entry["twonn"]["dimension"] < d
    for hook, entry in out["superposition"]["per_sae"].items():
        eff = entry["effective"]
        assert 1 <= eff["F"] <= eff["alive"] <= entry["d_sae"]
        assert eff["psi"] == pytest.approx(eff["F"] / d)
        assert entry["convergence"]["F"][-1] == pytest.approx(eff["F"], rel=0.2)
    geo = out["geometry"]["per_sae"]
    for entry in geo.values():
        assert math.isfinite(entry["galaxy"]["alpha"]) and entry["galaxy"]["adapted"]
        assert "agreement" in entry["lobes"] or "skipped" in entry["lobes"]
        for cluster in entry["circles"].get("clusters", []):
            assert len(cluster["projections"]) == len(cluster["tokens"])
    gt = out["ground_truth"]
    circles = gt["circles"]
    assert set(circles) == {"weekdays", "months"}
    assert circles["weekdays"]["sites"][-1] == "unembed"
    week = circles["weekdays"]["per_site"][spectra["sites"][0]]["circularity"]
    assert len(week["shares"]) == 3 and sum(week["shares"]) == pytest.approx(1.0)
    assert len(circles["months"]["per_site"]["unembed"]["circularity"]["shares"]) == 6
    crystals = gt["crystals"]
    assert {"gender", "capital", "language", "tense", "plural", "comparative"} <= set(crystals["relations"])
    for site in crystals["sites"]:
        q = crystals["per_site"][site]["quality"]
        assert -1 <= q["raw"]["within_cos"] <= 1 and q["lda"] is not None
        assert len(crystals["per_site"][site]["pca"]["a"]) == len(crystals["words_a"])
    kingdoms = gt["concepts"]["kingdoms"]
    assert set(kingdoms) == {"animal", "plant", "object"}
    assert all(len(k["shuffled_rows_abs_cos"]) == 20 for k in kingdoms.values())
    for attribute in ("space", "time"):
        probe = gt["probes"][attribute]
        assert len(probe["r2"]) == n_layers and probe["best_layer"] in probe["layers"]
    assert len(out["artifact_keys"]) == 4 and all(organism.store.has(k) for k in out["artifact_keys"])
    json.dumps(out, allow_nan=False)  # NaN became None: strict JSON


def test_representations_are_read_at_the_word(organism):
    """The representation of a prompt's word equals the activation at that token when run alone."""
    import torch

    model = organism.model
    site = "blocks.1.hook_resid_post"
    text, prefix = A.slot_prompt("we met on {day} and again on", "day", "friday")
    reps = A.representations_at(model, [(text, prefix), ("monday", "monday")], [site])
    alone = model.run(model.to_tokens(prefix), [site])[site][0, -1].cpu().numpy()
    np.testing.assert_allclose(reps[site][0], alone, rtol=1e-4, atol=1e-5)
    assert not np.allclose(reps[site][0], reps[site][1])
    assert torch.is_tensor(model.W_U)


def test_spectra_over_checkpoints_tables_and_phases(organism):
    from core.organism.loading import list_checkpoints

    names = list_checkpoints(organism.path)[::3] + ["final"]
    names = list(dict.fromkeys(names))
    ticks = []
    out = A.spectra_over_checkpoints(organism.path, names, max_tokens=256, store=organism.store,
                                     progress=lambda f, text: ticks.append(f))
    n_layers = organism.model.n_layers
    assert out["checkpoints"] == names and len(out["steps"]) == len(names)
    for table in out["tables"].values():
        assert np.asarray(table, dtype=float).shape == (n_layers, len(names))
        assert np.all(np.isfinite(np.asarray(table, dtype=float)))
    for site in out["sites"]:
        seg = out["phases"][site]["segments"]
        assert seg[0]["start_step"] == out["steps"][0] and seg[-1]["end_step"] == out["steps"][-1]
        assert {s["label"] for s in seg} <= {"warmup", "entropy-seeking", "compression-seeking"}
    assert ticks and ticks[-1] == 1.0
    with pytest.raises(A.AnalysisError, match="Unknown checkpoint"):
        A.spectra_over_checkpoints(organism.path, ["step_999999", "final"])


def test_toy_lab_pentagon_is_cached(tmp_path):
    store = ArtifactStore(tmp_path)
    out = A.toy_lab(n=5, m=2, sparsity=0.95, importance_decay=1.0, steps=1500, store=store)
    assert np.asarray(out["W"]).shape == (2, 5)
    d_i = np.asarray(out["geometry"]["D_i"], dtype=float)
    assert np.allclose(d_i[d_i > 0], 0.4, atol=0.08)  # pentagon: D_i = 2/5
    assert out["F_true"] > 1 and out["F_sae"] > 1
    assert A.toy_lab(n=5, m=2, sparsity=0.95, importance_decay=1.0, steps=1500, store=store) == out
