"""The causal rows of the ground-truth card (core/organism/verify_causal.py): their pass/fail logic against
planted outcomes, their declared expectations, and that they run on the tiny organism."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from core.harvest.splice import SpliceQuality
from core.interventions import ErasureExperiment, FamilyOutcome, RotationExperiment, RotationOutcome
from core.organism import verify
from core.organism import verify_causal as vc


def _outcome(method: str, moved: int, trials: int) -> RotationOutcome:
    return RotationOutcome(method=method, n_trials=trials, moved_by_steps=moved, changed=moved, per_step_moved=[moved],
                           per_step_trials=[trials], mean_change_norm=0.1)


def _rotation(circle: int, control: int, trials: int = 100) -> RotationExperiment:
    moved = {"circle": circle, "circle to target mean": circle, "random plane": control, "all Fourier planes": circle}
    return RotationExperiment(site="blocks.2.hook_resid_post", words=["a", "b", "c"], frequency=1, share=0.6,
                              n_prompts=50, n_excluded=0, mean_resid_norm=1.0, seed=0,
                              outcomes=[_outcome(m, moved[m], trials) for m in moved])


@pytest.mark.parametrize(("concept", "circle", "control", "status"), [
    ("months", 30, 1, verify.PASS),      # 30% >= 30%, 30x the control, control 1% < 5%
    ("months", 29, 1, verify.FAIL),      # below 30%
    ("months", 40, 14, verify.FAIL),     # under 3x the control
    ("months", 80, 6, verify.FAIL),      # control 6% >= 5%
    ("months", 30, 0, verify.PASS),      # a control that never moves: any ratio
    ("weekdays", 20, 2, verify.PASS),    # weekdays need 20%
    ("weekdays", 19, 0, verify.FAIL),
])
def test_rotation_row_against_planted_outcomes(concept, circle, control, status):
    row = vc.rotation_card_row(concept, _rotation(circle, control))
    assert row.status == status, row
    assert row.kind == vc.CAUSAL and row.measurement == f"{concept}: circle turn vs random plane (L2)"
    assert f"circle {circle}/100 = {circle:.1f}%" in row.measured and f"random plane {control}/100" in row.measured


def test_rotation_expectation_without_trials_fails():
    assert not vc.ROTATION_EXPECTATIONS["months"].met(0, 0, 0, 0)
    assert not vc.ROTATION_EXPECTATIONS["months"].met(5, 10, 0, 0)


def _family(name: str, n: int, before: int, after: int, changed: int, control_changed: float) -> FamilyOutcome:
    return FamilyOutcome(family=name, n=n, correct_before=before, correct_after=after, changed=changed,
                         control_correct_after=float(before), control_changed=control_changed)


def _erasure(ns_after: int, ew_after: int, unrelated_changed: int, control_changed: float) -> ErasureExperiment:
    families = [_family(vc.NORTH_SOUTH, 50, 45, ns_after, 45 - ns_after, control_changed / 2),
                _family(vc.EAST_WEST, 100, 90, ew_after, 90 - ew_after, control_changed),
                _family("number_add", 100, 90, 90, unrelated_changed, control_changed)]
    return ErasureExperiment(site="blocks.0.hook_resid_pre", attribute="latitude", r2_held_out=0.75, n_random=3, seed=0,
                             families=families)


def test_erasure_rows_against_planted_outcomes():
    # north/south -30 points, east/west -5 (< 15), 1% unrelated changed, control 1%: every row passes
    rows = vc.erasure_card_rows(_erasure(ns_after=30, ew_after=85, unrelated_changed=1, control_changed=1.0))
    assert [r.status for r in rows] == [verify.PASS] * 3, rows
    assert [r.measurement.split(" (")[0] for r in rows] == [
        "latitude erasure: north/south answers", "latitude erasure: unrelated answers",
        "latitude erasure: random-direction control"]
    assert rows[0].measurement.endswith("(embeddings)")  # blocks.0.hook_resid_pre, not L0's output
    assert rows[0].measured.startswith("probe R^2 0.75; north/south correct 45 -> 30 of 50 (-30.0 points")
    # north/south only -10 points: the first row fails, the others do not depend on it
    rows = vc.erasure_card_rows(_erasure(ns_after=40, ew_after=90, unrelated_changed=1, control_changed=1.0))
    assert [r.status for r in rows] == [verify.FAIL, verify.PASS, verify.PASS]
    # east/west falls as much as north/south: not specific to latitude
    rows = vc.erasure_card_rows(_erasure(ns_after=30, ew_after=60, unrelated_changed=1, control_changed=1.0))
    assert rows[0].status == verify.FAIL
    # 2 of 100 unrelated answers changed (not under 2%), random directions change 3 of 100
    rows = vc.erasure_card_rows(_erasure(ns_after=30, ew_after=85, unrelated_changed=2, control_changed=3.0))
    assert [r.status for r in rows] == [verify.PASS, verify.FAIL, verify.FAIL]


def _splice(recovered: float, kl_spliced: float, kl_mean: float) -> SpliceQuality:
    return SpliceQuality(tokens=2000, ce_clean=1.0, ce_spliced=1.1, ce_zero_ablated=5.0, ce_mean_ablated=3.0,
                         loss_recovered_zero=recovered, loss_recovered_mean=0.95, kl_spliced=kl_spliced,
                         kl_zero_ablated=4.0, kl_mean_ablated=kl_mean)


def test_splice_rows_against_planted_values():
    harvest = SimpleNamespace(saes={
        "blocks.0.hook_resid_post": SimpleNamespace(hook_name="blocks.0.hook_resid_post", splice=_splice(0.97, 0.05, 1.0)),
        "blocks.1.hook_resid_post": SimpleNamespace(hook_name="blocks.1.hook_resid_post", splice=_splice(0.85, 0.05, 1.0)),
        "blocks.2.hook_resid_post": SimpleNamespace(hook_name="blocks.2.hook_resid_post", splice=_splice(0.97, 2.0, 1.0)),
        "blocks.3.hook_resid_post": SimpleNamespace(hook_name="blocks.3.hook_resid_post", splice=_splice(math.nan, 0.05, 1.0)),
        "blocks.4.hook_resid_post": SimpleNamespace(hook_name="blocks.4.hook_resid_post", splice=None)})
    rows = vc.splice_rows(harvest)
    assert [r.status for r in rows] == [verify.PASS, verify.FAIL, verify.FAIL, verify.FAIL, verify.SKIPPED]
    assert rows[0].measurement == "loss recovered, SAE spliced in (L0)"
    assert rows[0].measured.startswith("0.97 vs zero-abl., 0.95 vs mean-abl.; CE clean 1") and "2000 tokens" in rows[0].measured
    assert rows[3].measured.startswith("n/a")


def test_every_expectation_is_declared_with_its_threshold():
    months, weekdays = vc.ROTATION_EXPECTATIONS["months"], vc.ROTATION_EXPECTATIONS["weekdays"]
    assert (months.min_success, months.min_ratio, months.max_control) == (0.30, 3.0, 0.05)
    assert weekdays.min_success == 0.20
    assert "circle >= 30% of trials and >= 3x the random plane; random plane < 5%" == months.text()
    assert "-20 points" in vc._directions_text()
    assert vc.LOSS_RECOVERED_MIN == 0.9
    assert vc.QUICK_PROMPTS < vc.CARD_PROMPTS


def test_held_out_subset_is_seeded_and_keeps_order():
    items = list(range(100))
    a = vc.held_out_subset(items, 10, seed=0)
    assert a == vc.held_out_subset(items, 10, seed=0) and a == sorted(a) and len(set(a)) == 10
    assert a != vc.held_out_subset(items, 10, seed=1)
    assert vc.held_out_subset(items[:5], 10) == items[:5]


def test_without_ground_truth_the_intervention_rows_are_skipped():
    import torch

    threads = torch.get_num_threads()
    harvest = SimpleNamespace(saes={})
    rows = vc.causal_rows(None, harvest, None)
    assert rows and all(r.status == verify.SKIPPED and r.expected for r in rows)
    assert torch.get_num_threads() == threads  # the rows' one-thread block gives the threads back


@pytest.fixture(scope="module")
def tiny_causal_rows(tiny_organism_dir):
    from core.harvest import HarvestSettings, harvest
    from core.sources.corpus import CorpusSpec, load_corpus
    from core.sources.models import ModelSpec, load_model
    from core.sources.organism import load_ground_truth
    from core.sources.saes import load_sae, organism_sae_specs

    path = str(tiny_organism_dir)
    model = load_model(ModelSpec(source="organism", path=path, device="cpu"))
    saes = [load_sae(spec, model) for spec in organism_sae_specs(path)]
    corpus = load_corpus(CorpusSpec(source="world", path=path, split="eval", max_chunks=40), model)
    result = harvest(model, saes, corpus, HarvestSettings(max_tokens=2000, batch_size=16, splice_tokens=512))
    return vc.causal_rows(model, result, load_ground_truth(tiny_organism_dir), quick=True)


def test_causal_rows_run_on_the_tiny_organism(tiny_causal_rows):
    rows = tiny_causal_rows
    names = [r.measurement for r in rows]
    for label in ("loss recovered, SAE spliced in (L0)", "loss recovered, SAE spliced in (L1)",
                  "months: circle turn vs random plane", "weekdays: circle turn vs random plane",
                  "latitude erasure: north/south answers", "latitude erasure: unrelated answers",
                  "latitude erasure: random-direction control"):
        assert any(n.startswith(label) for n in names), (label, names)
    for row in rows:
        assert row.kind == vc.CAUSAL and row.expected and row.measured
        # the computation ran: a verdict against the expectation, not a skip
        assert row.status in {verify.PASS, verify.FAIL}, row
    turns = [r for r in rows if "circle turn" in r.measurement]
    assert len(turns) == 2 and all("held-out prompts" in r.measured for r in turns)
