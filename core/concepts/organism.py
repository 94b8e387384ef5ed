"""The organism's ground truth as the organism's own concept sets (docs/ORGANISM.md for the schema).

Every planted structure becomes a ConceptSet with the world's own templates, so that the organism is
read through the same path as any model and any library set:

    weekdays, months   cyclic; context templates = the mention and the arithmetic prompts with every count
                       (read at the word); relation templates = the world's arithmetic facts turned into
                       templates ("three days after {word} is", offset +3), both directions
    numbers, years     ordinal (value = the number / the year)
    taxonomy           hierarchical (kingdom > category > species)
    cities             spatial (latitude, longitude; the ground truth stores [longitude, latitude])
    people             temporal (birth year)
    analogy_<family>   analogy sets: gender, capital (country -> capital), language (country -> language),
                       tense, plural, comparative
"""

from __future__ import annotations

import re
from typing import Any, Mapping, TypedDict

from core.concepts.schema import ConceptError, ConceptItem, ConceptSet, RelationTemplate

SOURCE = "the model organism's planted world (assets/organism/world/ground_truth.json, core/organism/world.py)"
LICENCE = "same as Atlas (generated)"
_SLOT = re.compile(r"\{(\w+)\}")


class _Provenance(TypedDict):
    """The provenance fields every organism set shares (ConceptSet.create keywords)."""

    source: str
    licence: str
    origin: str


def _template(text: str, mapping: Mapping[str, str]) -> str | None:
    """`text` with its fields renamed by `mapping` ({day} -> {word}); None when a field is not mapped."""
    fields = _SLOT.findall(text)
    if any(f not in mapping for f in fields):
        return None
    return _SLOT.sub(lambda m: "{" + mapping[m.group(1)] + "}", text)


def _prefix(text: str | None, field: str) -> str | None:
    """The template up to and including {field} (what a causal model has seen at that word)."""
    if not text or "{" + field + "}" not in text:
        return None
    return text[: text.index("{" + field + "}") + len(field) + 2]


def _present(*templates: str | None) -> list[str]:
    """The templates that exist, each once, in order."""
    return list(dict.fromkeys(t for t in templates if t))


def cyclic_relations(ground_truth: Mapping[str, Any], name: str, words: list[str]) -> list[RelationTemplate]:
    """Relation templates of a cyclic set from the world's arithmetic facts (train and held out): each
    fact's prompt with its one cyclic word replaced by {word}; offset = answer index - word index."""
    family = {"weekdays": "weekday_arith", "months": "month_arith"}.get(name)
    index = {w: i for i, w in enumerate(words)}
    found: dict[str, int] = {}
    for split in ("train", "held_out"):
        for fact in ((ground_truth.get("eval_facts") or {}).get(split) or {}).get(family or "", []):
            prompt, answer = fact
            tokens = prompt.split()
            present = [t for t in tokens if t in index]
            if len(present) != 1 or answer not in index:
                continue
            template = " ".join("{word}" if t == present[0] else t for t in tokens)
            offset = (index[answer] - index[present[0]]) % len(words)
            if " before " in f" {prompt} ":
                offset -= len(words)  # keep "before" negative, as it reads
            found.setdefault(template, offset)
    return [RelationTemplate(t, f"offset:{o}") for t, o in found.items()]


def concept_sets_from_ground_truth(ground_truth: Mapping[str, Any]) -> dict[str, ConceptSet]:
    """Every planted structure of `ground_truth` as a ConceptSet, by name (see the module docstring)."""
    if not isinstance(ground_truth, Mapping):
        raise ConceptError("The ground truth must be a JSON object (docs/ORGANISM.md).")
    t = ground_truth.get("templates") or {}
    common = _Provenance(source=SOURCE, licence=LICENCE, origin="organism")
    out: dict[str, ConceptSet] = {}
    cyclic_slot = {"weekdays": ("weekday", "day"), "months": ("month", "month")}
    numbers = list(ground_truth.get("numbers") or [])
    for name, words in (ground_truth.get("cyclic") or {}).items():
        words = list(words)
        family, slot = cyclic_slot.get(name, ("", ""))
        mention = _template(t.get(f"{family}_mention") or "", {slot: "word"}) if family else None
        # The word is read in the mention and in the arithmetic prompts with every count 1 .. k-1 ("two days
        # after {word} is"), as the ground-truth card always read it; the prompt is cut at the word.
        arith = _template(t.get(f"{family}_arith") or "", {slot: "word", "n": "n"}) if family else None
        counts = [arith.replace("{n}", n) for n in numbers[1:len(words)]] if arith and "{n}" in arith else []
        out[name] = ConceptSet.create(
            name=name, kind="cyclic", items=[ConceptItem(w) for w in words],
            description=f"The organism's {name} in cycle order.",
            context_templates=_present(mention, *counts) or ["{word}"],
            relation_templates=cyclic_relations(ground_truth, name, words), **common)
    if numbers:
        out["numbers"] = ConceptSet.create(
            name="numbers", kind="ordinal", value_names=["number"],
            items=[ConceptItem(w, (float(i),)) for i, w in enumerate(numbers)],
            description="The organism's number words (index = value).",
            context_templates=_present("{word}", _prefix(_template(t.get("number_compare") or "", {"a": "word", "b": "b"}), "word"),
                                       _prefix(_template(t.get("number_add") or "", {"a": "word", "b": "b"}), "word")),
            **common)
    years = list(ground_truth.get("years") or [])
    if years:
        out["years"] = ConceptSet.create(
            name="years", kind="ordinal", value_names=["year"], items=[ConceptItem(y, (float(y),)) for y in years],
            description="The organism's years.",
            context_templates=["{word}", "the year after {word}"], **common)
    taxonomy = ground_truth.get("taxonomy") or {}
    if taxonomy:
        species = [ConceptItem(sp, parents=(kingdom, category))
                   for kingdom, categories in taxonomy.items() for category, words in categories.items() for sp in words]
        contexts = [_prefix(_template(t.get(key) or "", {"species": "word"}), "word")
                    for key in ("taxonomy_category", "taxonomy_ability", "taxonomy_part", "kingdom_quality")]
        relation = _template(t.get("taxonomy_category") or "", {"species": "word"})
        out["taxonomy"] = ConceptSet.create(
            name="taxonomy", kind="hierarchical", items=species,
            description="The organism's taxonomy: kingdom > category > species.",
            context_templates=list(dict.fromkeys(["{word}", *[c for c in contexts if c]])),
            relation_templates=[RelationTemplate(relation, "parent")] if relation else [], **common)
    cities = ground_truth.get("cities") or {}
    if cities:
        out["cities"] = ConceptSet.create(
            name="cities", kind="spatial", value_names=["latitude", "longitude"],
            items=[ConceptItem(c, (float(lat), float(lon))) for c, (lon, lat) in cities.items()],
            description="The organism's cities with their (approximate real) coordinates.",
            context_templates=_present("{word}", _prefix(_template(t.get("city_mention") or "", {"a": "word"}), "word"),
                                       _prefix(_template(t.get("city_direction") or "", {"a": "word", "b": "b"}), "word")),
            **common)
    people = ground_truth.get("people") or {}
    if people:
        birth = _template(t.get("people_birth") or "", {"person": "word"})
        out["people"] = ConceptSet.create(
            name="people", kind="temporal", value_names=["birth_year"],
            items=[ConceptItem(p, (float(y),)) for p, y in people.items()],
            description="The organism's people with their birth years.",
            context_templates=_present("{word}", _prefix(birth, "word"),
                                       _prefix(_template(t.get("people_order") or "", {"a": "word", "b": "b"}), "word")),
            relation_templates=[RelationTemplate(birth, "value")] if birth else [], **common)
    out.update(_analogy_sets(ground_truth, common))
    return out


def _analogy_sets(ground_truth: Mapping[str, Any], common: _Provenance) -> dict[str, ConceptSet]:
    """One analogy set per family; a capital triple (country, capital, language) gives two: capital and
    language. Templates: the family's context templates whose fields map to {word}/{pair}."""
    t = ground_truth.get("templates") or {}
    contexts = t.get("analogy_context") or {}
    evaluated = t.get("analogy") or {}
    out = {}
    for family, rows in (ground_truth.get("analogies") or {}).items():
        relations = [(family, "1")] if family != "capital" else [("capital", "1"), ("language", "2")]
        for relation, partner in relations:
            mapping = {"0": "word", partner: "pair"}
            renamed = [_template(x, mapping) for x in [*(contexts.get(family) or []), evaluated.get(family) or ""]]
            templates = [x for x in dict.fromkeys(renamed) if x and "{word}" in x]
            answer = [x[: x.index("{pair}")].rstrip() for x in templates
                      if x.endswith("{pair}") and "{word}" in x[: x.index("{pair}")]]
            items = [ConceptItem(row[0], pair=row[int(partner)]) for row in rows if len(row) > int(partner)]
            out[f"analogy_{relation}"] = ConceptSet.create(
                name=f"analogy_{relation}", kind="analogy", items=items,
                description=f"The organism's {relation} pairs.",
                context_templates=["{word}", "{pair}", *templates],
                relation_templates=[RelationTemplate(a, "pair") for a in dict.fromkeys(answer)], **common)
    return out


def organism_concept_sets(directory: str | None = None) -> dict[str, ConceptSet]:
    """The organism's concept sets from its directory (core.sources.organism.resolve_dir rules)."""
    from core.sources.organism import load_ground_truth

    return concept_sets_from_ground_truth(load_ground_truth(directory))
