"""Concept sets: the typed form of every word list Atlas measures geometry on (docs/CONCEPTS.md).

A ConceptSet is a kind (what structure its items carry), its items, the prompt templates that put an
item in context, and where it came from. Every set (the library's, the organism's, a user's file)
is built through `ConceptSet.create`, which validates it and raises ConceptError with a message that
says what to fix.

Templates: `{word}` is the item (`{}` is accepted and means the same); analogy sets also have
`{pair}`, the item's partner (king -> queen). A *context* template is read at the item's own tokens
("Let's meet on {word}"); a *relation* template is read at its last token, where the model must
produce the answer ("two days after {word} is" -> the item two steps on). What the answer is comes
from the template's `answer` spec:

    offset:N       cyclic / ordinal sets: the item N steps on (cyclic: modulo the cycle)
    pair           analogy sets: the item's partner
    parent         categorical / hierarchical sets: the nearest parent (parent:0 is the root)
    value          the item's first value (a year), written as an integer
    attribute:NAME the item's attribute NAME (a city's country)
    none           no answer is known; the position is still read (for probes)
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from core.errors import AtlasError

KINDS = ("cyclic", "ordinal", "categorical", "hierarchical", "spatial", "temporal", "analogy")
FORMAT = "atlas-concepts"
FORMAT_VERSION = 1
MIN_ITEMS = {"cyclic": 3}  # every other kind: 2
SPATIAL_VALUES = ("latitude", "longitude")

_FIELD = re.compile(r"\{([^{}]*)\}")
_ANSWER = re.compile(r"^(offset:[+-]?\d+|pair|parent(:\d+)?|value|attribute:[\w ]+|none)$")


class ConceptError(AtlasError):
    """A concept set or file that cannot be used as it is; the message says what to change."""


@dataclass(frozen=True)
class ConceptItem:
    """One item: the text put in the templates, and what the set's kind says about it."""

    word: str
    values: tuple[float, ...] = ()  # named by ConceptSet.value_names (year; latitude, longitude; number)
    parents: tuple[str, ...] = ()  # categorical: (category,); hierarchical: path from the root, nearest last
    pair: str | None = None  # analogy: the partner (king -> queen)
    attributes: tuple[tuple[str, str], ...] = ()  # other facts (a city's country, a country's capital)

    def attribute(self, name: str) -> str | None:
        return dict(self.attributes).get(name)


@dataclass(frozen=True)
class RelationTemplate:
    """A prompt read at its last token, where the model must produce `answer` (spec in the module doc)."""

    text: str
    answer: str = "none"


@dataclass(frozen=True)
class ConceptSet:
    name: str
    kind: str
    items: tuple[ConceptItem, ...]
    context_templates: tuple[str, ...]
    relation_templates: tuple[RelationTemplate, ...] = ()
    value_names: tuple[str, ...] = ()
    description: str = ""
    source: str = ""
    licence: str = ""
    origin: str = ""  # "library", "organism", or the file a user loaded it from

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def create(cls, *, name: str, kind: str, items: Iterable[ConceptItem], context_templates: Sequence[str] = (),
               relation_templates: Sequence[RelationTemplate] = (), value_names: Sequence[str] = (),
               description: str = "", source: str = "", licence: str = "", origin: str = "") -> "ConceptSet":
        """A validated ConceptSet; templates default to the kind's (DEFAULT_TEMPLATES) when none are given."""
        name = str(name or "").strip()
        if not name:
            raise ConceptError("A concept set needs a name.")
        if kind not in KINDS:
            raise ConceptError(f"Concept set {name!r}: unknown kind {kind!r}; choose one of {', '.join(KINDS)}.")
        items = tuple(_clean_item(item) for item in items)
        if not context_templates and not relation_templates:
            context_templates, relation_templates = DEFAULT_TEMPLATES[kind]
        concept_set = cls(name=name, kind=kind, items=items,
                          context_templates=tuple(normalize_template(t) for t in context_templates),
                          relation_templates=tuple(RelationTemplate(normalize_template(t.text), t.answer.strip())
                                                   for t in relation_templates),
                          value_names=tuple(str(v).strip() for v in value_names), description=description,
                          source=source, licence=licence, origin=origin)
        concept_set.validate()
        return concept_set

    def validate(self) -> None:
        where = f"Concept set {self.name!r} ({self.kind})"
        minimum = MIN_ITEMS.get(self.kind, 2)
        if len(self.items) < minimum:
            raise ConceptError(f"{where} has {len(self.items)} item(s); it needs at least {minimum}."
                               if self.items else f"{where} is empty: give at least {minimum} items.")
        duplicates = sorted(w for w, n in Counter(i.word for i in self.items).items() if n > 1)
        if duplicates:
            raise ConceptError(f"{where} lists {_some(duplicates)} more than once; each word may appear once.")
        for position, item in enumerate(self.items, start=1):
            if not item.word:
                raise ConceptError(f"{where}: item {position} has an empty word.")
            if len(item.values) != len(self.value_names):
                raise ConceptError(f"{where}: item {position} ({item.word!r}) has {len(item.values)} value(s); the set "
                                   f"names {len(self.value_names)} ({', '.join(self.value_names) or 'none'}).")
            if not all(math.isfinite(v) for v in item.values):
                raise ConceptError(f"{where}: item {position} ({item.word!r}) has a value that is not a finite number.")
        self._validate_kind(where)
        if not self.context_templates and not self.relation_templates:
            raise ConceptError(f"{where} has no templates.")
        fields = {"word", "pair"} if self.kind == "analogy" else {"word"}
        for template in self.context_templates:
            used = set(_FIELD.findall(template))
            if not used or not used <= fields:
                raise ConceptError(f"{where}: the context template {template!r} must contain {{word}}"
                                   f"{' or {pair}' if self.kind == 'analogy' else ''} and no other field.")
        for relation in self.relation_templates:
            used = set(_FIELD.findall(relation.text))
            if "word" not in used or not used <= fields:
                raise ConceptError(f"{where}: the relation template {relation.text!r} must contain {{word}} "
                                   "and no other field but {pair} (analogy sets).")
            self._validate_answer(where, relation)

    def _validate_kind(self, where: str) -> None:
        kind = self.kind
        if kind == "ordinal" and len(self.value_names) != 1:
            raise ConceptError(f"{where}: an ordinal set needs exactly one value per item (its number or year).")
        if kind == "spatial" and not set(SPATIAL_VALUES) <= set(self.value_names):
            raise ConceptError(f"{where}: a spatial set needs the values latitude and longitude.")
        if kind == "spatial":
            lat, lon = (self.value_names.index(n) for n in SPATIAL_VALUES)
            bad = [i.word for i in self.items if not (-90 <= i.values[lat] <= 90 and -180 <= i.values[lon] <= 180)]
            if bad:
                raise ConceptError(f"{where}: latitude must lie in -90..90 and longitude in -180..180 ({_some(bad)}).")
        if kind == "temporal" and not self.value_names:
            raise ConceptError(f"{where}: a temporal set needs a year (or another time) per item.")
        if kind in ("categorical", "hierarchical"):
            orphans = [i.word for i in self.items if not i.parents]
            if orphans:
                raise ConceptError(f"{where}: every item needs a {'category' if kind == 'categorical' else 'parent path'}; "
                                   f"{_some(orphans)} has none.")
            if kind == "categorical" and any(len(i.parents) != 1 for i in self.items):
                raise ConceptError(f"{where}: a categorical item has exactly one category; use kind hierarchical for paths.")
            if len({i.parents[-1] for i in self.items}) < 2:
                raise ConceptError(f"{where}: all items share one category; give at least two.")
        if kind == "analogy":
            unpaired = [i.word for i in self.items if not i.pair]
            if unpaired:
                raise ConceptError(f"{where}: every analogy item needs its pair; {_some(unpaired)} has none.")

    def _validate_answer(self, where: str, template: RelationTemplate) -> None:
        answer = template.answer
        if not _ANSWER.match(answer):
            raise ConceptError(f"{where}: the answer {answer!r} of {template.text!r} is not one of offset:N, pair, "
                               "parent, parent:N, value, attribute:NAME, none.")
        kind_of = answer.split(":")[0]
        allowed = {"offset": ("cyclic", "ordinal"), "pair": ("analogy",), "parent": ("categorical", "hierarchical")}
        if kind_of in allowed and self.kind not in allowed[kind_of]:
            raise ConceptError(f"{where}: the answer {answer!r} needs a {' or '.join(allowed[kind_of])} set.")
        if kind_of == "value" and not self.value_names:
            raise ConceptError(f"{where}: the answer 'value' needs items with values.")

    # ---- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.items)

    @property
    def words(self) -> tuple[str, ...]:
        return tuple(i.word for i in self.items)

    def values(self, name: str | None = None) -> list[float]:
        """The value `name` (default: the first) of every item, in item order."""
        index = 0 if name is None else self.value_names.index(name)
        return [i.values[index] for i in self.items]

    def categories(self, level: int = -1) -> dict[str, list[str]]:
        """Category -> its words at parent level `level` (-1: the nearest parent; 0: the root), in item order."""
        out: dict[str, list[str]] = {}
        for item in self.items:
            if item.parents and -len(item.parents) <= level < len(item.parents):
                out.setdefault(item.parents[level], []).append(item.word)
        return out

    def children(self) -> dict[str, list[str]]:
        """Hierarchy: parent node -> its child nodes (categories one level down), in first-seen order."""
        out: dict[str, list[str]] = {}
        for item in self.items:
            for parent, child in zip(item.parents, item.parents[1:]):
                if child not in out.setdefault(parent, []):
                    out[parent].append(child)
        return out

    def answer(self, index: int, template: RelationTemplate) -> tuple[str | None, int | None]:
        """(answer text, index of the answer item or None) of item `index` in `template` (module doc)."""
        item = self.items[index]
        kind_of, _, arg = template.answer.partition(":")
        if kind_of == "offset":
            target = index + int(arg)
            if self.kind == "cyclic":
                target %= len(self.items)
            return (self.items[target].word, target) if 0 <= target < len(self.items) else (None, None)
        if kind_of == "pair":
            return item.pair, None
        if kind_of == "parent":
            level = int(arg) if arg else -1
            return (item.parents[level], None) if -len(item.parents) <= level < len(item.parents) else (None, None)
        if kind_of == "value":
            return f"{item.values[0]:.0f}", None
        if kind_of == "attribute":
            return item.attribute(arg), None
        return None, None

    def to_json(self) -> dict[str, Any]:
        """The set in the library / upload JSON format (docs/CONCEPTS.md)."""
        items = []
        for i in self.items:
            entry: dict[str, Any] = {"word": i.word}
            if i.values:
                entry["values"] = [int(v) if float(v).is_integer() else v for v in i.values]
            if i.parents:
                entry["parents"] = list(i.parents)
            if i.pair is not None:
                entry["pair"] = i.pair
            if i.attributes:
                entry["attributes"] = dict(i.attributes)
            items.append(entry)
        return {"format": FORMAT, "version": FORMAT_VERSION, "name": self.name, "kind": self.kind,
                "description": self.description, "source": self.source, "licence": self.licence,
                "value_names": list(self.value_names), "context_templates": list(self.context_templates),
                "relation_templates": [{"text": t.text, "answer": t.answer} for t in self.relation_templates],
                "items": items}


def normalize_template(template: str) -> str:
    """`{}` -> `{word}`; surrounding whitespace removed (a trailing space would become its own token)."""
    return str(template).replace("{}", "{word}").strip()


def fill(template: str, word: str, pair: str | None = None) -> str:
    return template.replace("{word}", word).replace("{pair}", pair if pair is not None else "{pair}")


def _clean_item(item: ConceptItem | Mapping[str, Any]) -> ConceptItem:
    if isinstance(item, Mapping):
        item = item_from_mapping(item)
    return ConceptItem(word=str(item.word).strip(), values=tuple(float(v) for v in item.values),
                       parents=tuple(str(p).strip() for p in item.parents),
                       pair=None if item.pair is None else str(item.pair).strip(),
                       attributes=tuple((str(k), str(v)) for k, v in item.attributes))


def item_from_mapping(entry: Mapping[str, Any]) -> ConceptItem:
    values = entry.get("values") or ()
    attributes = entry.get("attributes") or {}
    if not isinstance(values, (list, tuple)) or not isinstance(attributes, Mapping):
        raise ConceptError(f"Item {entry.get('word')!r}: 'values' must be a list and 'attributes' an object.")
    try:
        numbers = tuple(float(v) for v in values)
    except (TypeError, ValueError) as error:
        raise ConceptError(f"Item {entry.get('word')!r}: its values must be numbers ({error}).") from error
    parents = entry.get("parents") or ()
    if isinstance(parents, str):
        parents = (parents,)
    return ConceptItem(word=str(entry.get("word") or ""), values=numbers, parents=tuple(parents),
                       pair=entry.get("pair"), attributes=tuple(sorted(attributes.items())))


def _some(words: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(repr(w) for w in list(words)[:n])
    return shown + (f" and {len(words) - n} more" if len(words) > n else "")


# Templates of a set that comes without any (a user's CSV): the word alone, a neutral context, and
# the relation that the kind defines.
DEFAULT_TEMPLATES: dict[str, tuple[tuple[str, ...], tuple[RelationTemplate, ...]]] = {
    "cyclic": (("{word}", "It was {word}"), (RelationTemplate("The one after {word} is", "offset:1"),
                                             RelationTemplate("The one before {word} is", "offset:-1"))),
    "ordinal": (("{word}", "It was {word}"), (RelationTemplate("The one after {word} is", "offset:1"),)),
    "categorical": (("{word}", "This is a {word}"), (RelationTemplate("A {word} is a kind of", "parent"),)),
    "hierarchical": (("{word}", "This is a {word}"), (RelationTemplate("A {word} is a kind of", "parent"),)),
    "spatial": (("{word}", "I travelled to {word}"), (RelationTemplate("{word} is located in", "none"),)),
    "temporal": (("{word}", "A book about {word}"), (RelationTemplate("{word} lived in the year", "none"),)),
    "analogy": (("{word}", "{pair}"), (RelationTemplate("{word} :", "pair"),)),
}
