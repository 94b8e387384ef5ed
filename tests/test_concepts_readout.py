"""Reading concept sets on models: the position rule for split words, unknown words and templates, the
answer position; the organism's ground truth as concept sets; and the experiments on planted structure."""

from __future__ import annotations

import numpy as np
import pytest

from core.concepts.experiments import engels_circles, gurnee_probes, park_hierarchy
from core.concepts.library import load_library_set
from core.concepts.organism import concept_sets_from_ground_truth
from core.concepts.readout import check_tokenization, read_concepts
from core.concepts.schema import ConceptError, ConceptItem, ConceptSet, RelationTemplate
from tests.concepts_fakes import FakeModel

SITES = ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]


def days(**kw) -> ConceptSet:
    kw.setdefault("context_templates", ["on {word}"])
    return ConceptSet.create(name="days", kind="cyclic", items=[ConceptItem(w) for w in ("Monday", "Tuesday", "Sunday")],
                             **kw)


def test_split_words_are_read_at_the_last_token_or_the_mean():
    model = FakeModel(["on", "Monday", "Tuesday", "Sunday"], piece=3)  # Mon|day, Tue|sda|y, Sun|day
    last = read_concepts(model, days(), sites=SITES)
    mean = read_concepts(model, days(), sites=SITES, position="mean")
    assert last.position == "last" and mean.position == "mean" and last.words == ("Monday", "Tuesday", "Sunday")
    np.testing.assert_allclose(last.arrays[SITES[0]][1], model.vector("y"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(last.arrays[SITES[1]][0], 2 * model.vector("day"), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean.arrays[SITES[0]][1], np.mean([model.vector(t) for t in ("Tue", "sda", "y")], 0), rtol=1e-5, atol=1e-6)
    split = {s.word: s.pieces for s in last.split}
    assert split["Tuesday"] == ("Tue", "sda", "y") and not last.dropped


def test_unknown_words_are_listed_lower_case_is_tried_and_unreadable_templates_are_skipped():
    model = FakeModel(["on", "monday", "Tuesday", "I", "was"])
    s = days(context_templates=["{word}", "on {word}", "we met on {word}"])
    report = check_tokenization(model, s)
    assert report.lowered == {"Monday": "monday"}
    assert [(d.word, "unknown token" in d.reason) for d in report.dropped] == [("Sunday", True)]
    assert [t.template for t in report.skipped_templates] == ["we met on {word}"]
    assert "'we', 'met'" in report.skipped_templates[0].reason
    r = read_concepts(model, s, sites=SITES)
    assert r.words == ("Monday", "Tuesday") and r.forms == ("monday", "Tuesday")
    assert r.templates == ("{word}", "on {word}") and list(r.n_prompts) == [2, 2]
    assert [d.word for d in r.dropped] == ["Sunday"]
    np.testing.assert_allclose(r.arrays[SITES[0]][0], model.vector("monday"), rtol=1e-5, atol=1e-6)


def test_answer_position_grouped_by_answer():
    model = FakeModel(["on", "Monday", "Tuesday", "Sunday", "after", "comes", "before", "is"])
    s = days(relation_templates=[RelationTemplate("after {word} comes", "offset:1"),
                                 RelationTemplate("before {word} is", "offset:-1")])
    r = read_concepts(model, s, location="answer", group="answer", sites=SITES)
    assert r.position == "last prompt token" and r.items == (0, 1, 2) and list(r.n_prompts) == [2, 2, 2]
    np.testing.assert_allclose(r.arrays[SITES[0]][0], (model.vector("comes") + model.vector("is")) / 2, rtol=1e-5, atol=1e-6)
    # an answer the tokenizer cannot represent is dropped, not a crash (Tuesday answers "after Monday comes")
    unknown = read_concepts(FakeModel(["on", "Monday", "Sunday", "after", "comes", "before", "is"]), s,
                            location="answer", group="answer", sites=SITES)
    assert unknown.words == ("Monday", "Sunday") and [d.word for d in unknown.dropped] == ["Tuesday"]
    with pytest.raises(ConceptError, match="group is"):
        read_concepts(model, s, location="word", group="answer")
    with pytest.raises(ConceptError, match="position must be"):
        read_concepts(model, s, position="first")


def test_analogy_pairs_and_prompts_longer_than_the_context():
    words = ["king", "queen", "man", "woman", "the", "met"]
    model = FakeModel(words, n_ctx=4)
    s = ConceptSet.create(name="g", kind="analogy", items=[ConceptItem("king", pair="queen"), ConceptItem("man", pair="woman")],
                          context_templates=["{word}", "{pair}", "the {word} met the {pair}"])
    r = read_concepts(model, s, sites=SITES, keep_prompts=True)
    np.testing.assert_allclose(r.pair_arrays[SITES[0]][0], model.vector("queen"))  # the 5-token prompt is too long
    assert list(r.n_prompts) == [2, 2] and r.prompt_arrays[SITES[0]].shape == (4, model.d_model)
    short = FakeModel(words, n_ctx=1)
    dropped = read_concepts(short, s, sites=SITES)
    assert len(dropped) == 0 and {d.reason for d in dropped.dropped} == {"its prompts are longer than the model's context"}


# ---- the experiments on planted structure -----------------------------------------------------
def test_engels_finds_a_planted_calendar_circle():
    months = [f"m{i}" for i in range(12)]
    rng = np.random.default_rng(0)
    circle = {m: np.r_[np.cos(2 * np.pi * i / 12), np.sin(2 * np.pi * i / 12), 0.01 * rng.normal(size=6)]
              for i, m in enumerate(months)}
    model = FakeModel(months, embeddings=circle)
    s = ConceptSet.create(name="months", kind="cyclic", items=[ConceptItem(m) for m in months], context_templates=["{word}"])
    result = engels_circles(model, [s], n_permutations=50)
    best = result.sets[0].best
    assert best.circle and best.frequency == 1 and best.share > 0.95 and best.regular_visit and best.visit_step == 1
    assert result.sets[0].skipped == ("answer: the set has no relation templates",)
    noise = FakeModel(months, seed=3)
    assert engels_circles(noise, [s], n_permutations=50).sets[0].best.share < 0.6


def test_gurnee_probes_recover_planted_coordinates_and_not_noise():
    rng = np.random.default_rng(1)
    names = [f"c{i}" for i in range(60)]
    coords = rng.uniform(-60, 60, size=(60, 2))
    A = rng.normal(size=(2, 8))
    model = FakeModel(names, embeddings={n: coords[i] @ A / 60 + 0.01 * rng.normal(size=8) for i, n in enumerate(names)})
    places = ConceptSet.create(name="p", kind="spatial", value_names=["latitude", "longitude"],
                               items=[ConceptItem(n, tuple(coords[i])) for i, n in enumerate(names)],
                               context_templates=["{word}"])
    curve = gurnee_probes(model, [places]).curves[0]
    assert curve.target == ("latitude", "longitude") and curve.n_items == 60 and curve.best_r2 > 0.95
    shuffled = gurnee_probes(FakeModel(names, seed=5), [places]).curves[0]
    assert shuffled.best_r2 < 0.5
    assert gurnee_probes(model, [places], max_items=20).curves[0].n_items == 20


def test_park_orthogonality_on_a_planted_hierarchy():
    rng = np.random.default_rng(2)
    d = 16
    roots = {"animal": rng.normal(size=d), "object": rng.normal(size=d)}
    items, planted = [], {}
    for root, cats in (("animal", ("mammal", "reptile")), ("object", ("tool", "vehicle"))):
        for cat in cats:
            offset = rng.normal(size=d)
            offset -= offset @ roots[root] / (roots[root] @ roots[root]) * roots[root]  # child - parent _|_ parent
            for j in range(8):
                word = f"{cat}{j}"
                planted[word] = 3 * roots[root] + 3 * offset + 0.3 * rng.normal(size=d)
                items.append(ConceptItem(word, parents=(root, cat)))
    filler = [f"x{i}" for i in range(300)]
    model = FakeModel([*planted, *filler], d=d, embeddings=planted)
    tax = ConceptSet.create(name="tax", kind="hierarchical", items=items, context_templates=["{word}"])
    result = park_hierarchy(model, tax, n_shuffles=10)
    assert {p.parent for p in result.parents} == {"animal", "object"} and result.n_words == 32
    assert result.mean_abs_cos < result.shuffled_rows_mean
    assert result.sibling_pair == ("reptile", "mammal") and result.sibling_cos is not None


# ---- real models --------------------------------------------------------------------------------
def test_library_sets_on_a_word_level_model(tiny_model):
    weekdays = read_concepts(tiny_model, load_library_set("weekdays"))
    assert len(weekdays) == 7 and weekdays.forms[0] == "monday" and weekdays.templates == ("{word}",)
    assert weekdays.arrays["blocks.1.hook_resid_post"].shape == (7, tiny_model.d_model)
    months = read_concepts(tiny_model, load_library_set("months"))
    assert months.forms == ("january", "february", "march")
    assert {d.word for d in months.dropped} >= {"April", "December"}
    assert all("unknown token" in d.reason for d in months.dropped)
    assert any(t.template == "We met in {word}" for t in months.skipped_templates)


def test_the_organism_ground_truth_as_concept_sets(tiny_organism_dir):
    from core.sources.models import ModelSpec, load_model
    from core.sources.organism import load_ground_truth

    gt = load_ground_truth(tiny_organism_dir)
    sets = concept_sets_from_ground_truth(gt)
    assert {"weekdays", "months", "taxonomy", "cities", "people", "analogy_gender", "analogy_capital",
            "analogy_language"} <= set(sets)
    months = sets["months"]
    assert months.words == tuple(gt["cyclic"]["months"])
    assert all(t.answer.startswith("offset:") for t in months.relation_templates)
    lon, lat = gt["cities"][sets["cities"].words[0]]
    assert sets["cities"].items[0].values == (lat, lon)
    assert sets["taxonomy"].kind == "hierarchical" and len(sets["taxonomy"].items[0].parents) == 2
    assert sets["analogy_capital"].items[0].pair == gt["analogies"]["capital"][0][1]
    assert sets["analogy_language"].items[0].pair == gt["analogies"]["capital"][0][2]

    model = load_model(ModelSpec(source="organism", path=str(tiny_organism_dir), device="cpu"))
    for name, k in (("weekdays", 7), ("months", 12)):  # the library's sets run on the organism
        library = load_library_set(name)
        answer = read_concepts(model, library, location="answer", group="answer")
        assert len(answer) == k and set(answer.forms) == set(gt["cyclic"][name])
        assert all(t[0].islower() for t in answer.templates)  # the English-only templates were skipped
        assert answer.arrays["blocks.0.hook_resid_post"].shape == (k, model.d_model)
    own = engels_circles(model, [sets["weekdays"], sets["months"]], n_permutations=20)
    assert all(s.best is not None and len(s.rows) == 2 * model.n_layers for s in own.sets)
    with pytest.raises(ConceptError, match="must be a JSON object"):
        concept_sets_from_ground_truth([])
