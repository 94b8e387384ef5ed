"""Concept sets as files: the JSON format (library and uploads) and the CSV shorthand (docs/CONCEPTS.md).

Only text is parsed (json, csv); nothing in a file is executed. Errors are ConceptError with the
row or field to fix.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Mapping

from core.concepts.schema import (
    FORMAT,
    FORMAT_VERSION,
    KINDS,
    ConceptError,
    ConceptItem,
    ConceptSet,
    RelationTemplate,
    item_from_mapping,
)

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ITEMS = 50_000
JSON_FIELDS = {"format", "version", "name", "kind", "description", "source", "licence", "value_names",
               "context_templates", "relation_templates", "items"}
ITEM_FIELDS = {"word", "values", "parents", "pair", "attributes"}
# CSV columns by kind, after "word" (the one column every kind has)
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "cyclic": (),
    "ordinal": ("value",),
    "categorical": ("category",),
    "hierarchical": ("parents",),  # "animal > mammal": root first, separated by ">"
    "spatial": ("latitude", "longitude"),
    "temporal": ("year",),
    "analogy": ("pair",),
}
OPTIONAL_CSV_COLUMNS: dict[str, tuple[str, ...]] = {"spatial": ("country",)}


def set_from_json(data: Any, *, origin: str = "") -> ConceptSet:
    """A ConceptSet from the JSON format (an object; see docs/CONCEPTS.md)."""
    if not isinstance(data, Mapping):
        raise ConceptError("A concept file in JSON must hold one object with 'name', 'kind' and 'items'.")
    unknown = sorted(set(data) - JSON_FIELDS)
    if unknown:
        raise ConceptError(f"Unknown field(s) {', '.join(map(repr, unknown))} in the concept file; "
                           f"the fields are {', '.join(sorted(JSON_FIELDS))}.")
    if data.get("format", FORMAT) != FORMAT or int(data.get("version", FORMAT_VERSION)) > FORMAT_VERSION:
        raise ConceptError(f"This is not an {FORMAT} file of version {FORMAT_VERSION} or older.")
    items = data.get("items")
    if not isinstance(items, list):
        raise ConceptError("The concept file needs 'items': a list of words or of objects with a 'word'.")
    if len(items) > MAX_ITEMS:
        raise ConceptError(f"The concept file has {len(items)} items; at most {MAX_ITEMS} are read.")
    parsed = []
    for position, entry in enumerate(items, start=1):
        if isinstance(entry, str):
            parsed.append(ConceptItem(entry))
            continue
        if not isinstance(entry, Mapping):
            raise ConceptError(f"Item {position} must be a word or an object with a 'word'.")
        extra = sorted(set(entry) - ITEM_FIELDS)
        if extra:
            raise ConceptError(f"Item {position} has unknown field(s) {', '.join(map(repr, extra))}; "
                               f"an item has {', '.join(sorted(ITEM_FIELDS))}.")
        parsed.append(item_from_mapping(entry))
    relations = []
    for template in data.get("relation_templates") or []:
        if isinstance(template, str):
            template = {"text": template}
        if not isinstance(template, Mapping) or not isinstance(template.get("text"), str):
            raise ConceptError("Each relation template is a string or an object with 'text' and 'answer'.")
        relations.append(RelationTemplate(template["text"], str(template.get("answer") or "none")))
    contexts = data.get("context_templates") or []
    if not isinstance(contexts, list) or not all(isinstance(t, str) for t in contexts):
        raise ConceptError("'context_templates' must be a list of strings with {word} in each.")
    return ConceptSet.create(name=str(data.get("name") or ""), kind=str(data.get("kind") or ""), items=parsed,
                             context_templates=contexts, relation_templates=relations,
                             value_names=list(data.get("value_names") or []), description=str(data.get("description") or ""),
                             source=str(data.get("source") or ""), licence=str(data.get("licence") or ""),
                             origin=origin)


def set_to_text(concept_set: ConceptSet) -> str:
    """The JSON text of a set, deterministic: one field per line, one template or item per line."""
    fields = []
    for key, value in concept_set.to_json().items():
        if isinstance(value, list) and value:
            inner = ",\n".join("  " + json.dumps(v, ensure_ascii=False) for v in value)
            fields.append(f" {json.dumps(key)}: [\n{inner}\n ]")
        else:
            fields.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(fields) + "\n}\n"


def infer_kind(columns: list[str]) -> str | None:
    """The kind a CSV header implies, or None (only a word column: the caller must say)."""
    present = set(columns)
    for kind in ("analogy", "spatial", "temporal", "hierarchical", "categorical", "ordinal"):
        if set(CSV_COLUMNS[kind]) <= present:
            return kind
    return None


def set_from_csv(text: str, *, name: str, kind: str | None = None, origin: str = "") -> ConceptSet:
    """A ConceptSet from CSV text: a header row with `word` and the columns of its kind (CSV_COLUMNS);
    templates are the kind's defaults."""
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if not rows:
        raise ConceptError("The CSV file is empty: give a header row (word, ...) and one row per item.")
    header = [h.strip().lower() for h in rows[0]]
    if "word" not in header:
        raise ConceptError(f"The CSV header {rows[0]} has no 'word' column; the first row must name the columns "
                           "(word, and e.g. category, parents, value, latitude/longitude, year or pair).")
    kind = kind or infer_kind(header)
    if kind is None:
        raise ConceptError("A CSV with only a 'word' column does not say what structure it has: choose its kind "
                           f"({', '.join(KINDS)}), e.g. cyclic for words in cyclic order.")
    if kind not in KINDS:
        raise ConceptError(f"Unknown kind {kind!r}; choose one of {', '.join(KINDS)}.")
    allowed = ("word", *CSV_COLUMNS[kind], *OPTIONAL_CSV_COLUMNS.get(kind, ()))
    wrong = [h for h in header if h not in allowed]
    missing = [c for c in CSV_COLUMNS[kind] if c not in header]
    if wrong or missing or len(set(header)) != len(header):
        problem = (f"unknown column(s) {', '.join(map(repr, wrong))}" if wrong else
                   f"missing column(s) {', '.join(map(repr, missing))}" if missing else "a repeated column")
        raise ConceptError(f"The CSV has {problem}; a {kind} set has the columns {', '.join(allowed)}.")
    if len(rows) - 1 > MAX_ITEMS:
        raise ConceptError(f"The CSV has {len(rows) - 1} rows; at most {MAX_ITEMS} are read.")
    column = {h: i for i, h in enumerate(header)}
    items = []
    for line, row in enumerate(rows[1:], start=2):
        cell = {h: (row[i].strip() if i < len(row) else "") for h, i in column.items()}
        items.append(_csv_item(kind, cell, line))
    value_names = {"ordinal": ["value"], "spatial": ["latitude", "longitude"], "temporal": ["year"]}.get(kind, [])
    return ConceptSet.create(name=name, kind=kind, items=items, value_names=value_names,
                             source=f"user file {origin or name}", origin=origin)


def _csv_item(kind: str, cell: dict[str, str], line: int) -> ConceptItem:
    values = []
    for column in CSV_COLUMNS[kind]:
        if column in ("value", "latitude", "longitude", "year"):
            try:
                values.append(float(cell[column]))
            except ValueError as error:
                raise ConceptError(f"Row {line}: {column} {cell[column]!r} is not a number.") from error
    parents: tuple[str, ...] = ()
    if kind == "categorical":
        parents = (cell["category"],) if cell["category"] else ()
    elif kind == "hierarchical":
        parents = tuple(p.strip() for p in cell["parents"].split(">") if p.strip())
    attributes = (("country", cell["country"]),) if cell.get("country") else ()
    return ConceptItem(cell["word"], tuple(values), parents, cell.get("pair") or None, attributes)


def read_concept_file(source: str | Path | bytes, *, filename: str | None = None, kind: str | None = None,
                      name: str | None = None) -> ConceptSet:
    """A user's concept set from a path or the bytes of an upload (`filename` then says .csv or .json).

    JSON carries its own kind and templates; a CSV takes `kind` (or infers it from its columns) and the
    kind's default templates; `name` defaults to the file's stem.
    """
    if isinstance(source, bytes):
        raw, label = source, filename or "upload"
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ConceptError(f"No concept file at {str(path)!r}.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConceptError(f"{path.name} is larger than {MAX_FILE_BYTES // 2**20} MB; concept files are word lists.")
        raw, label = path.read_bytes(), filename or path.name
    if len(raw) > MAX_FILE_BYTES:
        raise ConceptError(f"{label} is larger than {MAX_FILE_BYTES // 2**20} MB; concept files are word lists.")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConceptError(f"{label} is not UTF-8 text ({error}).") from error
    suffix = Path(label).suffix.lower()
    stem = name or Path(label).stem
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConceptError(f"{label} is not valid JSON (line {error.lineno}: {error.msg}).") from error
        if isinstance(data, Mapping) and not data.get("name"):
            data = {**data, "name": stem}
        return set_from_json(data, origin=label)
    if suffix == ".csv":
        return set_from_csv(text, name=stem, kind=kind, origin=label)
    raise ConceptError(f"{label}: a concept file is .csv or .json.")
