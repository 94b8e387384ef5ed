"""core.analysis: planted answers through the orchestration layer, caching in the store, and every
view on the tiny organism (shapes, finite values, well-formed JSON)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from core import analysis as A
from core.analysis import circles as analysis_circles
from core.analysis import prompts as analysis_prompts
from core.analysis import spectra as analysis_spectra
from core.analysis.circles import circle_entry
from core.analysis.results import CircleLocation, Lobes, Skipped
from core.harvest.checkpoints import CheckpointError, resolve_checkpoints
from core.hooks import site_order
from core.metrics.circles import Circularity
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
    assert result.sites == ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post")
    planted = result.at("blocks.0.hook_resid_post")
    assert abs(planted.spectrum.alpha.alpha - 1.3) < 0.05
    assert (planted.spectrum.alpha.first_rank, planted.spectrum.alpha.last_rank) == (12, 100)  # the paper's range
    assert abs(planted.twonn.dimension - 4) < 0.4 and abs(planted.mle.dimension - 4) < 0.6
    flat = result.at("blocks.1.hook_resid_post")
    assert flat.spectrum.rankme == pytest.approx(200, rel=1e-3) and flat.spectrum.participation_ratio == pytest.approx(200)
    assert abs(flat.twonn.dimension - 3) < 0.4
    json.dumps(result.to_dict(), allow_nan=False)  # strict JSON


def test_small_d_fit_range_is_reported():
    harvest = _planted_harvest(d=40)
    result = A.spectra_by_layer(harvest)
    alpha = result.at("blocks.0.hook_resid_post").spectrum.alpha
    assert alpha.adapted and (alpha.first_rank, alpha.last_rank) == (4, 20)
    assert "d = 40 < 100" in result.fit_note


def test_results_are_cached_in_the_store(tmp_path, monkeypatch):
    store = ArtifactStore(tmp_path)
    harvest = _planted_harvest()
    first = A.spectra_by_layer(harvest, store=store)
    assert store.has(first.key)

    def boom(*args, **kwargs):
        raise AssertionError("recomputed although cached")

    monkeypatch.setattr(analysis_spectra, "site_spectrum", boom)
    assert A.spectra_by_layer(harvest, store=store) == first
    # other settings are another key, computed afresh
    with pytest.raises(AssertionError, match="recomputed"):
        A.spectra_by_layer(harvest, store=store, fit_range=(2, 50))


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
    (entry,) = result.per_sae
    assert entry.hook_name == sae.hook_name and entry.layer == 0
    assert entry.effective.F == pytest.approx(k)
    assert entry.effective.psi == pytest.approx(k / m)
    assert entry.effective.alive == k and entry.effective.mean_l0 == pytest.approx(k * 10 / 100)
    assert entry.convergence.F == pytest.approx([k, k, k])
    assert entry.interference.msq_ratio == pytest.approx(1.0, abs=0.25)
    assert result.unembedding.msq_ratio == pytest.approx(1.0, abs=0.05)
    # without a model the unembedding part is skipped, with its reason
    assert isinstance(A.superposition_by_layer(harvest, [sae]).unembedding, Skipped)


def test_slot_prompt_and_templates():
    text, prefix = A.slot_prompt("{n} days after {day} is", "day", "friday", {"n": "three"})
    assert text == "three days after friday is" and prefix == "three days after friday"
    text, prefix = A.slot_prompt("the capital of {0} is {1}", "1", "paris", {"0": "france", "1": "x"})
    assert (text, prefix) == ("the capital of france is paris", "the capital of france is paris")
    pairs = A.analogy_pairs({"analogies": {"capital": [["france", "paris", "french"]], "gender": [["man", "woman"]]}})
    assert pairs == [("capital", "capital", "france", "paris"), ("language", "capital", "france", "french"),
                     ("gender", "gender", "man", "woman")]


WEEK = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven"]


def test_cyclic_arithmetic_facts_from_eval_facts_and_from_the_template():
    truth = {"eval_facts": {"train": {"weekday_arith": [["one day after mon is", "tue"], ["two days before mon is", "sat"]]},
                            "held_out": {"weekday_arith": [["three days after fri is", "mon"], ["x is", "nope"]]}}}
    assert A.cyclic_arithmetic_facts(truth, "weekdays", WEEK) == [
        (1, "one day after mon is"), (5, "two days before mon is"), (0, "three days after fri is")]
    # no facts: built from the template, the answer i + n mod k ("before": i - n)
    truth = {"templates": {"weekday_arith": "{n} days after {day} is"}, "numbers": NUMBERS}
    facts = A.cyclic_arithmetic_facts(truth, "weekdays", WEEK)
    assert len(facts) == 7 * 6 and (0, "three days after fri is") in facts and (6, "six days after mon is") in facts
    truth["templates"]["weekday_arith"] = "{n} days before {day} is"
    assert (1, "three days before fri is") in A.cyclic_arithmetic_facts(truth, "weekdays", WEEK)
    assert A.cyclic_arithmetic_facts({"numbers": NUMBERS}, "weekdays", WEEK) == []  # no template of that family


def _planted_answer_reps(monkeypatch, frequency: int, k: int, d: int = 16, noise: float = 0.05):
    """representations_at replaced by a planted model: the residual at the end of a prompt is the answer's
    point on a frequency-`frequency` circle in a random plane, plus noise (a different draw per prompt)."""
    rng = np.random.default_rng(frequency)
    plane = np.linalg.qr(rng.normal(size=(d, 2)))[0]
    angle = 2 * np.pi * frequency * np.arange(k) / k
    points = np.stack([np.cos(angle), np.sin(angle)], 1) @ plane.T
    answer_of = {}

    def fake(model, prompts, sites, batch_size=64):
        rows = np.stack([points[answer_of[text]] + noise * rng.normal(size=d) for text, _ in prompts])
        return {s: rows.copy() for s in sites}

    monkeypatch.setattr(analysis_circles, "representations_at", fake)
    monkeypatch.setattr(analysis_prompts, "representations_at", fake)
    return answer_of


def test_circles_at_the_answer_position_recover_the_planted_frequency(monkeypatch):
    months = [f"m{i}" for i in range(12)]
    facts = [[f"{n} after {w} is", months[(i + n) % 12]] for i, w in enumerate(months) for n in range(1, 12)]
    truth = {"cyclic": {"months": months}, "eval_facts": {"train": {"month_arith": facts}, "held_out": {}}}
    answer_of = _planted_answer_reps(monkeypatch, frequency=5, k=12)
    answer_of.update({prompt: months.index(answer) for prompt, answer in facts})
    out = A.circles_at_answer(None, truth, ["blocks.0.hook_resid_post"], n_permutations=100)
    entry = out["months"].locations["answer position"]
    assert list(entry.n_prompts) == [11] * 12
    c = entry.at("blocks.0.hook_resid_post").circularity
    assert c.best_frequency == 5 and c.best_share > 0.9 and c.p_value < 0.05
    assert c.regular_visit and c.visit_step == 5  # 5^-1 mod 12 = 5: neighbours 0, 5, 10, ...
    # shuffled answers: no circle
    rng = np.random.default_rng(0)
    answer_of.update({prompt: int(rng.integers(12)) for prompt, _ in facts})
    c = A.circles_at_answer(None, truth, ["blocks.0.hook_resid_post"], n_permutations=100)["months"]
    assert c.locations["answer position"].at("blocks.0.hook_resid_post").circularity.p_value > 0.05


def test_cyclic_circles_reports_the_best_location(monkeypatch):
    facts = [[f"{n} after {w} is", WEEK[(i + n) % 7]] for i, w in enumerate(WEEK) for n in range(1, 7)]
    truth = {"cyclic": {"weekdays": WEEK}, "eval_facts": {"train": {"weekday_arith": facts}}}
    answer_of = _planted_answer_reps(monkeypatch, frequency=2, k=7)
    answer_of.update({prompt: WEEK.index(answer) for prompt, answer in facts})
    noise = np.random.default_rng(3).normal(size=(7, 16))
    sites = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    monkeypatch.setattr(analysis_circles, "circles_from_tokens", lambda model, truth, sites, n_permutations, seed: {
        "weekdays": analysis_circles._one_location("token", WEEK, CircleLocation(per_site=tuple(
            circle_entry(s, noise, n_permutations=n_permutations, seed=seed) for s in sites), n_prompts=None))})
    out = A.cyclic_circles(None, truth, sites, n_permutations=100)["weekdays"]
    assert set(out.locations) == {"token", "answer position"}
    best = out.best
    assert best.location == "answer position" and best.frequency == 2 and best.circle
    assert best.layer in (0, 1) and best.p_value < 0.05
    json.dumps(out.to_dict(), allow_nan=False)


def test_best_circle_prefers_a_significant_plane_over_a_nyquist_line():
    from core.analysis.results import SiteCircle

    def entry(site, f, k, share, p):
        empty = np.zeros(0)
        c = Circularity(k=k, frequencies=np.arange(1, k // 2 + 1), shares=empty, best_frequency=f, best_share=share,
                        p_value=p, null_best_shares=empty, null_share_mean=empty, null_share_q95=empty,
                        circle_balance=1.0, visit_order=np.arange(k), steps=np.ones(k, np.int64), visit_step=1,
                        regular_visit=True, coprime=True, points_2d=np.zeros((k, 2)))
        return SiteCircle(site=site, circularity=c, pcs=np.zeros((k, 2)), pc_variance=np.zeros(2))

    locations = {"token": CircleLocation(per_site=(entry("blocks.0.hook_resid_post", 6, 12, 0.9, 0.005),),
                                         n_prompts=None),
                 "answer position": CircleLocation(per_site=(entry("blocks.1.hook_resid_post", 1, 12, 0.4, 0.01),
                                                             entry("blocks.2.hook_resid_post", 1, 12, 0.5, 0.01)),
                                                   n_prompts=np.ones(12, np.int64))}
    best = A.best_circle(locations)
    assert (best.location, best.layer, best.share, best.circle) == ("answer position", 2, 0.5, True)
    del locations["answer position"]
    assert A.best_circle(locations).circle is False  # f = k/2 is a 1-D alternation, not a circle
    assert isinstance(A.best_circle({}), Skipped)


def test_lobes_use_the_decoder_rows_of_the_features_that_vary():
    """lobes_for_sae reads the counts through the harvest's accessors (cooc_fired, cooc_submatrix over the
    chunk incidence) and the decoder rows at the ids of the features used. Planted: feature i belongs to
    group i % 3 (its decoder row near the group's direction; it fires in the chunks of its group); a random
    half of the features never fires, so a misaligned W_dec[:F] would put features in the wrong groups."""
    from core.harvest.result import ChunkCooccurrence

    rng = np.random.default_rng(0)
    d_sae, d, n_chunks = 90, 16, 240
    group = np.arange(d_sae) % 3
    W_dec = rng.normal(size=(3, d))[group] + 0.1 * rng.normal(size=(d_sae, d))
    chunk_group = rng.integers(3, size=n_chunks)
    live = np.sort(rng.choice(d_sae, d_sae // 2, replace=False))
    active = (chunk_group[:, None] == group[None, :]) & (rng.random((n_chunks, d_sae)) < 0.8)
    active[:, np.setdiff1d(np.arange(d_sae), live)] = False
    offsets = np.concatenate([[0], np.cumsum(active.sum(1))])
    counts = ChunkCooccurrence(np.arange(n_chunks), offsets, np.nonzero(active)[1], d_sae)
    stats = SimpleNamespace(cooc_n_chunks=n_chunks, cooc_fired=counts.diagonal, cooc_submatrix=counts.submatrix)
    out = A.lobes_for_sae(stats, W_dec, n_lobes=3, n_permutations=50)
    assert isinstance(out, Lobes)
    assert list(out.features) == list(live)
    assert out.agreement.ami > 0.9 and out.agreement.p_value < 0.05
    # the lobes and the geometric clusters both recover the planted groups
    from sklearn.metrics import adjusted_mutual_info_score

    assert adjusted_mutual_info_score(group[live], out.geometric) > 0.9
    assert adjusted_mutual_info_score(group[live], out.labels) > 0.9


def test_no_ground_truth_is_skipped_cleanly():
    result = A.ground_truth_geometry(SimpleNamespace(), None)
    assert result.skipped is not None and "ground truth" in result.skipped.reason
    assert all(isinstance(part, Skipped) for part in (result.circles, result.crystals, result.concepts, result.probes))


# ------------------------------------------------------------------------------- organism
@pytest.fixture(scope="module")
def organism(tiny_organism_dir, tmp_path_factory):
    from core.harvest import HarvestSettings, harvest_cached
    from core.sources.corpus import CorpusSpec, load_corpus
    from core.sources.models import ModelSpec, load_model
    from core.sources.saes import load_sae, organism_sae_specs

    path = str(tiny_organism_dir)
    store = ArtifactStore(tmp_path_factory.mktemp("analysis_store"))
    model = load_model(ModelSpec(source="organism", path=path, checkpoint="final", device="cpu"))
    saes = [load_sae(spec, model) for spec in organism_sae_specs(path)]
    corpus = load_corpus(CorpusSpec(source="world", path=path), model)
    harvest, key = harvest_cached(model, saes, corpus, HarvestSettings(max_tokens=3000), store)
    return SimpleNamespace(model=model, saes=saes, harvest=harvest, key=key, store=store, path=path)


def test_run_all_on_the_tiny_organism(organism):
    from core.analysis.results import AllAnalyses, DecoderClusters

    out = A.run_all(organism.model, organism.saes, organism.harvest, store=organism.store)
    assert A.harvest_key_of(organism.harvest) == organism.key
    n_layers, d = organism.model.n_layers, organism.model.d_model
    spectra = out.spectra
    assert len(spectra.sites) == n_layers
    for entry in spectra.per_site:
        assert 1 <= entry.spectrum.rankme <= d and len(entry.spectrum.eigenvalues) == d
        assert entry.spectrum.alpha.adapted and math.isfinite(entry.spectrum.alpha.alpha)
        assert 0 < entry.twonn.dimension < d
    for entry in out.superposition.per_sae:
        eff = entry.effective
        assert 1 <= eff.F <= eff.alive <= entry.d_sae
        assert eff.psi == pytest.approx(eff.F / d)
        assert entry.convergence.F[-1] == pytest.approx(eff.F, rel=0.2)
    for entry in out.geometry.per_sae:
        assert math.isfinite(entry.galaxy.alpha) and entry.galaxy.adapted
        assert isinstance(entry.lobes, (Lobes, Skipped))
        for cluster in entry.circles.clusters if isinstance(entry.circles, DecoderClusters) else ():
            assert len(cluster.projections) == len(cluster.tokens)
    gt = out.ground_truth
    circles = gt.circles.cycles
    assert set(circles) == {"weekdays", "months"}
    for name, k in (("weekdays", 7), ("months", 12)):
        assert set(circles[name].locations) == {"token", "answer position"}
        token, answer = circles[name].locations["token"], circles[name].locations["answer position"]
        assert token.sites[-1] == "unembed" and answer.sites == spectra.sites
        assert token.n_prompts is None and sum(answer.n_prompts) > 0 and min(answer.n_prompts) >= 1
        for entry in (token, answer):
            for scored in entry.per_site:
                assert len(scored.circularity.shares) == k // 2 and sum(scored.circularity.shares) == pytest.approx(1.0)
        best = circles[name].best
        assert best.location in {"token", "answer position"} and 0 < best.p_value <= 1
        chosen = circles[name].locations[best.location].at(best.site).circularity
        assert (best.frequency, best.share) == (chosen.best_frequency, chosen.best_share)
    crystals = gt.crystals
    assert {"gender", "capital", "language", "tense", "plural", "comparative"} <= set(crystals.relations)
    for entry in crystals.per_site:
        q = entry.fit.quality
        assert -1 <= q.raw.within_cos <= 1 and q.lda is not None
        assert len(entry.fit.pca.a) == len(crystals.words_a)
    kingdoms = gt.concepts.kingdoms
    assert set(kingdoms) == {"animal", "plant", "object"}
    assert all(len(k.shuffled_rows_abs_cos) == 20 for k in kingdoms.values())
    for attribute in ("space", "time"):
        probe = gt.probes.attributes[attribute].probes
        assert len(probe.r2) == n_layers and probe.best_layer in probe.layers
    assert len(out.artifact_keys) == 4 + len(out.page_views) and all(organism.store.has(k) for k in out.artifact_keys)
    assert isinstance(out.checkpoints, Skipped)
    document = json.loads(json.dumps(out.to_dict(), allow_nan=False))  # NaN became None: strict JSON
    assert AllAnalyses.from_dict(document) == out
    # a second run reads every view back from the store: the same result
    assert A.run_all(organism.model, organism.saes, organism.harvest, store=organism.store) == out
    # what the pages read besides these views is stored too, so no page computes it on a first visit: each SAE's
    # feature map in the default layout (PCA), its default lobes (the geometry view's), the default concept views
    from core import feature_map as fm

    for sae in organism.saes:
        assert fm.feature_map_key(sae.W_dec.detach().cpu().numpy(), "pca", 15, 0.1, 0) in out.page_views
        lobes = A.lobes_view(organism.harvest, sae, store=organism.store)
        assert lobes.key in out.page_views and lobes.lobes == out.geometry.at(sae.hook_name).lobes
    concept_keys = [k for k in out.page_views if organism.store.load(k).meta["kind"] == "analysis:concept_geometry"]
    assert concept_keys and all(organism.store.has(k) for k in out.artifact_keys)


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
    from core.sources.organism import list_checkpoints

    names = list_checkpoints(organism.path)[::3] + ["final"]
    names = list(dict.fromkeys(names))
    ticks = []
    out = A.spectra_over_checkpoints(organism.path, names, max_tokens=256, store=organism.store,
                                     progress=lambda f, text: ticks.append(f))
    n_layers = organism.model.n_layers
    assert out.checkpoints == tuple(names) and len(out.steps) == len(names)
    for table in (out.rankme, out.alpha, out.participation_ratio):
        assert table.shape == (n_layers, len(names)) and np.all(np.isfinite(table))
    for site in out.sites:
        seg = out.phases[site].segments
        assert seg[0].start_step == out.steps[0] and seg[-1].end_step == out.steps[-1]
        assert {s.label for s in seg} <= {"warmup", "entropy-seeking", "compression-seeking"}
    assert ticks and ticks[-1] == 1.0
    with pytest.raises(CheckpointError, match="Unknown checkpoint"):
        A.spectra_over_checkpoints(organism.path, ["step_999999", "final"])


def _direct_rankme(path: str, name: str, max_tokens: int) -> list[float]:
    """RankMe per layer of one organism checkpoint, harvested here without any cache (the reference)."""
    from core.harvest import HarvestSettings, harvest
    from core.metrics.spectral import spectral_summary
    from core.sources.corpus import CorpusSpec, load_corpus
    from core.sources.models import ModelSpec, load_model

    model = load_model(ModelSpec(source="organism", path=path, checkpoint=name, device="cpu"))
    corpus = load_corpus(CorpusSpec(source="world", path=path, split="eval",
                                    max_chunks=max(1, -(-max_tokens // model.n_ctx))), model)
    result = harvest(model, [], corpus, HarvestSettings(max_tokens=max_tokens, reservoir_size=0, batch_size=32))
    return [spectral_summary(np.asarray(result.sites[s].cov, dtype=np.float64)).rankme
            for s in sorted(result.sites, key=site_order)]


def test_spectra_over_checkpoints_from_a_model_spec_matches_a_direct_harvest(organism, tmp_path, monkeypatch):
    import core.sources.models
    from core.sources.models import ModelSpec
    from core.sources.organism import list_checkpoints

    all_names = list_checkpoints(organism.path)
    names = [all_names[0], all_names[len(all_names) // 2], "final"]
    spec = ModelSpec(source="organism", path=organism.path, device="cpu")
    assert list(A.checkpoint_options(spec)) == all_names
    reference = np.array([_direct_rankme(organism.path, n, 256) for n in names[:2]]).T  # [layer, checkpoint]
    store = ArtifactStore(tmp_path)
    loads: list[str] = []
    real_load = core.sources.models.load_model

    def counting_load(model_spec):
        loads.append(model_spec.checkpoint)
        return real_load(model_spec)

    monkeypatch.setattr(core.sources.models, "load_model", counting_load)
    first = A.spectra_over_checkpoints(spec, names[:2], max_tokens=256, store=store)
    assert loads == names[:2]
    np.testing.assert_allclose(first.rankme, reference, rtol=1e-6)
    # the directory form (verify card, run_all) names the same weights: the same cached result
    by_directory = A.spectra_over_checkpoints(organism.path, names[:2], max_tokens=256, store=store)
    assert by_directory == first and loads == names[:2]
    # adding a checkpoint loads only that one; the others come from the per-checkpoint cache
    loads.clear()
    grown = A.spectra_over_checkpoints(spec, [names[2], *names[:2]], max_tokens=256, store=store)
    assert loads == ["final"] and grown.checkpoints == tuple(names)
    for metric in ("rankme", "alpha", "participation_ratio"):
        np.testing.assert_array_equal(getattr(grown, metric)[:, :2], getattr(first, metric))
    # a different slice is another key: every checkpoint again
    loads.clear()
    A.spectra_over_checkpoints(spec, names[:2], max_tokens=128, store=store)
    assert loads == names[:2]


def test_default_checkpoints_are_log_spaced():
    options = {f"c{i}": 2 ** i - 1 for i in range(17)}  # log(step + 1) = i log 2: evenly spaced already
    assert A.default_checkpoints(options, 5) == ["c0", "c4", "c8", "c12", "c16"]
    assert A.default_checkpoints({"a": 0, "b": 10}, 8) == ["a", "b"]


def test_pythia_checkpoints_come_from_transformer_lens_tables_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformer_lens.loading_from_pretrained import PYTHIA_CHECKPOINTS

    from core.errors import AtlasError
    from core.sources.models import ModelSpec

    spec = ModelSpec(source="transformer_lens", name="pythia-70m-deduped")
    options = A.checkpoint_options(spec)
    assert len(options) == len(PYTHIA_CHECKPOINTS) == 154
    assert options["0"] == 0 and options["153"] == 143000 and list(options.values()) == sorted(PYTHIA_CHECKPOINTS)
    chosen = A.default_checkpoints(options)
    assert [options[c] for c in chosen] == [0, 4, 32, 128, 1000, 5000, 26000, 143000]
    assert resolve_checkpoints(spec, options, ["value:143000", "index:3", "3"]) == ["3", "153"]
    with pytest.raises(CheckpointError, match="Unknown checkpoint"):
        resolve_checkpoints(spec, options, ["value:143001"])
    assert A.checkpoint_options(ModelSpec(source="transformer_lens", name="gpt2")) == {}
    with pytest.raises(CheckpointError, match="no training checkpoints"):
        A.spectra_over_checkpoints(ModelSpec(source="transformer_lens", name="gpt2"), ["0", "1"])
    with pytest.raises(A.AnalysisError, match="corpus"):  # refused before any download
        A.spectra_over_checkpoints(spec, ["0", "153"])

    import core.sources.models
    from core.errors import OfflineError
    from core.sources.corpus import CorpusSpec

    def offline(model_spec):
        assert model_spec.checkpoint == "0" and model_spec.name == "pythia-70m-deduped"
        raise OfflineError("no network")

    monkeypatch.setattr(core.sources.models, "load_model", offline)
    with pytest.raises(AtlasError, match="no network"):
        A.spectra_over_checkpoints(spec, ["153", "0"], corpus=CorpusSpec(source="world"))


def test_toy_lab_pentagon_is_cached(tmp_path):
    store = ArtifactStore(tmp_path)
    out = A.toy_lab(n=5, m=2, sparsity=0.95, importance_decay=1.0, steps=1500, store=store)
    assert out.W.shape == (2, 5) and out.settings.n == 5 and store.has(out.key)
    d_i = out.geometry.D_i
    assert np.allclose(d_i[d_i > 0], 0.4, atol=0.08)  # pentagon: D_i = 2/5
    assert out.F_true > 1 and out.F_sae > 1
    assert A.toy_lab(n=5, m=2, sparsity=0.95, importance_decay=1.0, steps=1500, store=store) == out
