"""core.analysis.concept_views: the Geometry views of concept sets on any model, through core.concepts.read_concepts.

On the committed organism, the library's weekday and month sets find the planted circles at the verify card's
numbers; on a tiny GPT-2 with a byte-level BPE tokenizer every view runs on library sets and on a user's file,
words it cannot read are listed, the read position matters for split words, and results round-trip the store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.analysis import concept_geometry, sets_for_view
from core.analysis.results import Circles, Concepts, Crystals, GroundTruthGeometry, Probes, Skipped
from core.concepts import load_library_set, read_concept_file

ORGANISM_DIR = Path(__file__).resolve().parents[1] / "assets" / "organism"
committed = pytest.mark.skipif(not (ORGANISM_DIR / "manifest.json").is_file(), reason="no committed organism")


@pytest.fixture(scope="module")
def bpe_model(bpe_gpt2_dir):
    from core.sources.models import ModelSpec, load_model

    return load_model(ModelSpec(source="hf_dir", name="bpe-gpt2", path=str(bpe_gpt2_dir), device="cpu"))


@committed
def test_library_weekdays_and_months_on_the_organism_give_the_verify_card_circles():
    """The verify card (python -m core.organism verify): weekdays f = 3, share 0.67, p = 0.005 at the answer
    position of L1; months f = 1, share 0.67, p = 0.005 at the answer position of L2."""
    from core.sources.models import ModelSpec, load_model

    model = load_model(ModelSpec(source="organism", path=str(ORGANISM_DIR), checkpoint="final", device="cpu"))
    sets = [load_library_set("weekdays"), load_library_set("months")]
    found = concept_geometry(model, sets, views=("circles",))
    assert isinstance(found.circles, Circles) and isinstance(found.crystals, Skipped)
    expected = {"weekdays": ("blocks.1.hook_resid_post", 3), "months": ("blocks.2.hook_resid_post", 1)}
    for name, (site, frequency) in expected.items():
        best = found.circles.cycles[name].best
        assert (best.location, best.site, best.frequency, round(best.share, 2)) == ("answer position", site,
                                                                                    frequency, 0.67)
        assert best.p_value == pytest.approx(1 / 201) and best.circle
    # the library writes "Monday": the organism's lower-case world reads "monday"; Engels' templates it cannot read
    # are listed, not used
    reading = next(r for r in found.readings if r.set_name == "weekdays")
    assert reading.n_read == 7 and not reading.dropped
    assert any("Let's" in t for t in reading.skipped_templates)


def test_every_view_on_a_bpe_gpt2_with_library_sets(bpe_model):
    sets = [load_library_set(n) for n in ("weekdays", "months", "analogy_male_female", "analogy_singular_plural",
                                          "noun_taxonomy", "countries", "historical_figures")]
    found = concept_geometry(bpe_model, sets, max_probe_items=60, n_permutations=20)
    assert isinstance(found.circles, Circles) and set(found.circles.cycles) == {"weekdays", "months"}
    for cycle in found.circles.cycles.values():
        assert set(cycle.locations) == {"token", "answer position"}
        assert "unembed" in cycle.locations["token"].sites or any("unembed" in r.notes[0] for r in found.readings
                                                                   if r.notes and r.view == "circles")
    assert isinstance(found.crystals, Crystals)
    assert set(found.crystals.relations) == {"analogy_male_female", "analogy_singular_plural"}
    assert len(found.crystals.per_site) == bpe_model.n_layers
    assert isinstance(found.concepts, Concepts)
    assert "countries" in found.concepts.kingdoms or any(c.kingdom == "countries" for c in found.concepts.categories.values())
    assert isinstance(found.probes, Probes)
    probe = found.probes.attributes["historical_figures (death_year)"]
    assert len(probe.item_names) <= 60 and np.isfinite(probe.probes.best_r2)
    # one reading per (set, view), and words without a single-token form are listed with the reason
    assert {(r.set_name, r.view) for r in found.readings} >= {("weekdays", "circles"), ("noun_taxonomy", "concepts"),
                                                              ("historical_figures", "probes")}
    taxonomy = next(r for r in found.readings if r.set_name == "noun_taxonomy")
    assert taxonomy.n_read + len(taxonomy.dropped) == taxonomy.n_items
    assert all("single-token" in d.reason or "unknown" in d.reason for d in taxonomy.dropped)
    figures = next(r for r in found.readings if r.set_name == "historical_figures")
    assert figures.split and any("sample of 60" in n for n in figures.notes)


def test_a_users_file_the_read_position_and_the_store(bpe_model, tmp_path):
    from core.store import ArtifactStore

    days = read_concept_file(b"word\nMonday\nTuesday\nWednesday\nThursday\nFriday\nSaturday\nSunday\n",
                             filename="my_days.csv", kind="cyclic")
    cities = read_concept_file(("word,latitude,longitude\n" + "\n".join(
        f"{w},{lat},{lon}" for w, lat, lon in [("Paris", 48.9, 2.35), ("London", 51.5, -0.13), ("Berlin", 52.5, 13.4),
                                               ("Madrid", 40.4, -3.7), ("Rome", 41.9, 12.5), ("Tokyo", 35.7, 139.7),
                                               ("Lima", -12.0, -77.0), ("Cairo", 30.0, 31.2), ("Oslo", 59.9, 10.7),
                                               ("Zzyzxqv", 1.0, 2.0)])).encode(), filename="cities.csv")
    store = ArtifactStore(tmp_path / "store")
    last = concept_geometry(bpe_model, [days, cities], views=("circles", "probes"), store=store, n_permutations=20)
    assert isinstance(last.circles, Circles) and "my_days" in last.circles.cycles
    assert isinstance(last.probes, Probes) and "cities (longitude, latitude)" in last.probes.attributes
    reading = next(r for r in last.readings if r.set_name == "cities")
    assert "Zzyzxqv" in reading.split                     # read over several tokens, and said so
    mean = concept_geometry(bpe_model, [days, cities], views=("circles", "probes"), position="mean", store=store,
                            n_permutations=20)
    assert mean.key != last.key and mean.position == "mean"
    a = last.probes.attributes["cities (longitude, latitude)"].probes
    b = mean.probes.attributes["cities (longitude, latitude)"].probes
    assert not np.array_equal(a.r2, b.r2)                 # split words are read differently
    again = concept_geometry(bpe_model, [days, cities], views=("circles", "probes"), store=store, n_permutations=20)
    assert again == last and again.key == last.key      # read back from the store, the same typed result
    assert GroundTruthGeometry.from_dict(last.to_dict()) == last


def test_sets_fit_their_views_and_a_single_relation_is_not_a_crystal(bpe_model):
    sets = [load_library_set(n) for n in ("weekdays", "analogy_male_female", "world_cities")]
    assert [s.name for s in sets_for_view(sets, "circles")] == ["weekdays"]
    assert [s.name for s in sets_for_view(sets, "probes")] == ["world_cities"]
    found = concept_geometry(bpe_model, sets, views=("crystals", "concepts"))
    assert isinstance(found.crystals, Skipped) and "at least two analogy sets" in found.crystals.reason
    assert isinstance(found.concepts, Skipped) and isinstance(found.circles, Skipped)


def test_progress_moves_forward_through_every_set_and_view(bpe_model):
    sets = [load_library_set(n) for n in ("weekdays", "seasons", "analogy_male_female", "analogy_opposite")]
    seen: list[tuple[float, str]] = []
    concept_geometry(bpe_model, sets, views=("circles", "crystals"), n_permutations=10,
                     progress=lambda fraction, text: seen.append((fraction, text)))
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) > 6
    texts = " ".join(t for _, t in seen)
    assert all(name in texts for name in ("weekdays", "seasons", "analogy_opposite"))
