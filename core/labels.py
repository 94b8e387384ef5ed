"""Labels and notes that users write on features, kept per SAE, carried by sessions and bundles.

Where they live
    One JSON file per SAE: `$ATLAS_HOME/labels/<sae key>.json` (`LabelStore`). The SAE key is the
    start of the sha256 of its decoder weights (`core.feature_map.decoder_fingerprint`), so the same
    SAE finds its labels whatever directory or release it was loaded from, and another SAE never
    sees them. Every browser session of one Atlas server shares these files, like a lab notebook.

Sessions and bundles
    A session does not copy labels into its document: the pages snapshot the labels of the loaded
    SAEs into the artifact store (`snapshot`: kind "feature_labels", content-keyed, JSON only) and
    record that artifact among the session's `artifact_keys`. Bundles therefore ship it and
    `import_bundle` restores it like any other artifact; opening the session merges it back into the
    local files (`LabelBook.merged`: for each feature the later edit wins, so reopening an old session
    never overwrites a newer label). Clearing a label keeps an empty entry with its time (a
    tombstone), so an older snapshot does not bring it back.

Everything read from disk or from a bundle is validated (`book_from_dict`): sizes are capped and
nothing but plain JSON is ever read.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema

from core.errors import AtlasError

LABELS_KIND = "feature_labels"
BOOK_VERSION = 1
MAX_LABEL_CHARS = 200
MAX_NOTE_CHARS = 5000
MAX_LABELS_PER_SAE = 100_000
MAX_BOOK_BYTES = 64 * 1024**2
SAE_KEY_RE = re.compile(r"^[0-9a-f]{16,64}$")


class LabelError(AtlasError):
    """A label that is too long, or a label file / snapshot that is not valid."""


_ENTRY = {
    "type": "object",
    "additionalProperties": False,
    "required": ["label", "note", "updated"],
    "properties": {
        "label": {"type": "string", "maxLength": MAX_LABEL_CHARS},
        "note": {"type": "string", "maxLength": MAX_NOTE_CHARS},
        "updated": {"type": "string", "maxLength": 64},
    },
}
BOOK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["version", "sae_key", "sae", "labels"],
    "properties": {
        "version": {"const": BOOK_VERSION},
        "sae_key": {"type": "string", "pattern": SAE_KEY_RE.pattern},
        "sae": {"type": "string", "maxLength": 500},
        "labels": {
            "type": "object",
            "maxProperties": MAX_LABELS_PER_SAE,
            "propertyNames": {"pattern": r"^(0|[1-9][0-9]{0,8})$"},
            "additionalProperties": _ENTRY,
        },
    },
}


def now() -> str:
    """UTC time with microseconds: edits made in one second still order correctly."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


def sae_key(decoder_fingerprint: str) -> str:
    """The labels key of an SAE: the first 24 hex digits of its decoder fingerprint."""
    key = str(decoder_fingerprint)[:24]
    if not SAE_KEY_RE.match(key):
        raise LabelError(f"{decoder_fingerprint!r} is not a decoder fingerprint (hex digits).")
    return key


@dataclass(frozen=True)
class FeatureLabel:
    """A user's label (a short name) and note (free text) on one feature. Both empty: a cleared label."""

    label: str = ""
    note: str = ""
    updated: str = ""

    @property
    def empty(self) -> bool:
        return not self.label.strip() and not self.note.strip()


@dataclass(frozen=True)
class LabelBook:
    """The labels of one SAE: feature id -> FeatureLabel (cleared ones included, as tombstones).

    Immutable: `with_label`, `merged` return new books.
    """

    sae_key: str
    sae: str = ""                                   # a human description of the SAE (hook, width)
    entries: Mapping[int, FeatureLabel] = field(default_factory=dict)

    def get(self, feature: int) -> FeatureLabel | None:
        """The feature's label, or None when it has none (or it was cleared)."""
        entry = self.entries.get(int(feature))
        return None if entry is None or entry.empty else entry

    @property
    def labels(self) -> dict[int, FeatureLabel]:
        """The features that have a label or a note (tombstones left out), by id."""
        return {f: e for f, e in sorted(self.entries.items()) if not e.empty}

    def with_label(self, feature: int, label: str, note: str = "", *, updated: str | None = None) -> LabelBook:
        """A book where `feature` has this label and note (both empty: cleared)."""
        feature = int(feature)
        label, note = str(label).strip(), str(note).strip()
        if feature < 0:
            raise LabelError("Feature ids are 0 or more.")
        if len(label) > MAX_LABEL_CHARS:
            raise LabelError(f"A label holds at most {MAX_LABEL_CHARS} characters (this one has {len(label)}); "
                             "put the longer text in the note.")
        if len(note) > MAX_NOTE_CHARS:
            raise LabelError(f"A note holds at most {MAX_NOTE_CHARS} characters (this one has {len(note)}).")
        if feature not in self.entries and len(self.entries) >= MAX_LABELS_PER_SAE:
            raise LabelError(f"An SAE holds at most {MAX_LABELS_PER_SAE:,} labels.")
        entries = dict(self.entries)
        entries[feature] = FeatureLabel(label, note, updated or now())
        return replace(self, entries=entries)

    def merged(self, other: LabelBook) -> LabelBook:
        """Both books' labels; where both have a feature, the later edit (by `updated`) wins."""
        if other.sae_key != self.sae_key:
            raise LabelError("Labels of two different SAEs cannot be merged.")
        entries = dict(self.entries)
        for feature, entry in other.entries.items():
            mine = entries.get(feature)
            if mine is None or entry.updated > mine.updated:
                entries[feature] = entry
        return replace(self, sae=self.sae or other.sae, entries=entries)

    def matching(self, query: str) -> set[int]:
        """Features whose label or note contains `query` (case-insensitive)."""
        query = query.strip().lower()
        if not query:
            return set()
        return {f for f, e in self.entries.items()
                if not e.empty and (query in e.label.lower() or query in e.note.lower())}

    def to_dict(self, *, tombstones: bool = True) -> dict[str, Any]:
        return {"version": BOOK_VERSION, "sae_key": self.sae_key, "sae": self.sae,
                "labels": {str(f): {"label": e.label, "note": e.note, "updated": e.updated}
                           for f, e in sorted(self.entries.items()) if tombstones or not e.empty}}


def book_from_dict(document: Any) -> LabelBook:
    """A LabelBook from its JSON form, validated (LabelError saying what is wrong)."""
    try:
        jsonschema.validate(document, BOOK_SCHEMA, cls=jsonschema.Draft202012Validator)
    except jsonschema.ValidationError as error:
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        raise LabelError(f"The feature labels are not valid at {where}: {error.message}") from None
    entries = {int(f): FeatureLabel(e["label"], e["note"], e["updated"]) for f, e in document["labels"].items()}
    return LabelBook(document["sae_key"], document["sae"], entries)


def default_labels_dir() -> Path:
    """$ATLAS_HOME/labels, or ~/.atlas/labels."""
    home = os.environ.get("ATLAS_HOME")
    return (Path(home) if home else Path.home() / ".atlas") / "labels"


class LabelStore:
    """One JSON file per SAE, written atomically (temp file + rename); read-modify-write under a lock."""

    _lock = threading.Lock()   # one per process: Streamlit serves every browser session from one process

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_labels_dir()

    def path_for(self, key: str) -> Path:
        if not SAE_KEY_RE.match(str(key)):
            raise LabelError(f"{key!r} is not an SAE labels key.")
        return self.root / f"{key}.json"

    def load(self, key: str, sae: str = "") -> LabelBook:
        """The SAE's labels (an empty book when it has none yet)."""
        path = self.path_for(key)
        if not path.is_file():
            return LabelBook(key, sae)
        if path.stat().st_size > MAX_BOOK_BYTES:
            raise LabelError(f"The labels file {path} is larger than {MAX_BOOK_BYTES:,} bytes.")
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise LabelError(f"The labels file {path} cannot be read ({error}); move it away to start afresh.") from None
        book = book_from_dict(document)
        if book.sae_key != key:
            raise LabelError(f"The labels file {path} belongs to another SAE ({book.sae_key}).")
        return book

    def save(self, book: LabelBook) -> None:
        path = self.path_for(book.sae_key)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(book.to_dict(), ensure_ascii=False, sort_keys=True)
        handle, tmp = tempfile.mkstemp(prefix=f".{book.sae_key}-", suffix=".json", dir=path.parent)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def update(self, key: str, change: Callable[[LabelBook], LabelBook], sae: str = "") -> LabelBook:
        """Load, change and save one SAE's book as one step (two browser sessions never lose an edit)."""
        with self._lock:
            book = change(self.load(key, sae))
            self.save(book)
            return book

    def set_label(self, key: str, feature: int, label: str, note: str = "", sae: str = "") -> LabelBook:
        return self.update(key, lambda book: book.with_label(feature, label, note), sae)

    def merge(self, books: Iterable[LabelBook]) -> int:
        """Merge books (from a session's snapshot) into the files; returns how many labels changed."""
        changed = 0
        for incoming in books:
            def change(book: LabelBook, incoming: LabelBook = incoming) -> LabelBook:
                nonlocal changed
                merged = book.merged(incoming)
                changed += sum(merged.entries.get(f) != book.entries.get(f) for f in incoming.entries)
                return merged
            self.update(incoming.sae_key, change, incoming.sae)
        return changed


# ------------------------------------------------------------------ session snapshots

def snapshot(books: Iterable[LabelBook]) -> tuple[str, dict[str, Any]] | None:
    """(artifact key, meta) of a snapshot of these books' labels, or None when there is no label.

    Saved with `store.save(key, {}, meta)`; the key is content-based, so an unchanged set of labels
    is one artifact however often it is snapshotted.
    """
    from core.store import artifact_key

    documents = [book.to_dict(tombstones=False) for book in sorted(books, key=lambda b: b.sae_key)]
    documents = [d for d in documents if d["labels"]]
    if not documents:
        return None
    meta = {"kind": LABELS_KIND, "books": documents}
    return artifact_key(kind=LABELS_KIND, books=documents), meta


def books_from_snapshot(meta: Mapping[str, Any]) -> list[LabelBook]:
    """The books of a snapshot's meta (from the store or a bundle), validated; [] for another kind."""
    if not isinstance(meta, Mapping) or meta.get("kind") != LABELS_KIND:
        return []
    documents = meta.get("books")
    if not isinstance(documents, list) or len(documents) > 1024:
        raise LabelError("A feature-labels snapshot must hold a list of at most 1024 label books.")
    return [book_from_dict(d) for d in documents]
