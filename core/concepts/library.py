"""The concept library: the sets committed in assets/concepts/ (built by `python -m core.concepts.build`)."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from core.concepts.files import set_from_json, set_to_text  # noqa: F401  (set_to_text: the build writes with it)
from core.concepts.schema import ConceptError, ConceptSet

LIBRARY_DIR = Path(__file__).resolve().parents[2] / "assets" / "concepts"


def library_names(directory: Path = LIBRARY_DIR) -> list[str]:
    """Names of the library's sets (file stems), sorted."""
    return sorted(p.stem for p in directory.glob("*.json"))


@lru_cache(maxsize=64)
def _load(path: str, mtime: float) -> ConceptSet:
    return set_from_json(json.loads(Path(path).read_text(encoding="utf-8")), origin="library")


def load_library_set(name: str, directory: Path = LIBRARY_DIR) -> ConceptSet:
    """One library set by name; ConceptError naming the available ones when there is no such set."""
    path = directory / f"{name}.json"
    if not path.is_file():
        raise ConceptError(f"The concept library has no set {name!r}; it has {', '.join(library_names(directory))}.")
    return _load(str(path), path.stat().st_mtime)


def load_library(directory: Path = LIBRARY_DIR) -> dict[str, ConceptSet]:
    """Every library set by name."""
    return {name: load_library_set(name, directory) for name in library_names(directory)}


def library_sets_of_kind(kind: str, directory: Path = LIBRARY_DIR) -> list[ConceptSet]:
    return [s for s in load_library(directory).values() if s.kind == kind]
