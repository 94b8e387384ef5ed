"""`python -m core.concepts.build [--out DIR]`: regenerate every library set (assets/concepts/*.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from core.concepts.files import set_to_text
from core.concepts.library import LIBRARY_DIR


def build_all(out: Path, wordnet_dir: Path, questions_words: Path) -> list[str]:
    """Write every library set as <name>.json into `out`; their names. (The licence notices beside them,
    LICENSE-WordNet.txt and sources/NOTICE, are committed files, not generated.)"""
    from core.concepts.build import analogies, calendar, places, wordnet

    wn = wordnet.WordNet(wordnet_dir)
    version = wordnet.debian_version()
    sets = [*calendar.cyclic_sets(), *calendar.ordinal_sets(), wordnet.taxonomy_set(wn, version),
            places.countries(), places.cities(), wordnet.people_set(wn, version),
            *places.country_analogies(), *analogies.analogy_sets(questions_words, wordnet_dir)]
    out.mkdir(parents=True, exist_ok=True)
    for concept_set in sets:
        (out / f"{concept_set.name}.json").write_text(set_to_text(concept_set), encoding="utf-8")
    return [s.name for s in sets]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.concepts.build", description=__doc__)
    parser.add_argument("--out", default=str(LIBRARY_DIR), help="output directory (default: assets/concepts)")
    parser.add_argument("--wordnet-dir", default="/usr/share/wordnet", help="WordNet 3.0 database (wordnet-base)")
    parser.add_argument("--questions-words", default=str(LIBRARY_DIR / "sources" / "questions-words.txt"))
    args = parser.parse_args(argv)
    names = build_all(Path(args.out), Path(args.wordnet_dir), Path(args.questions_words))
    print(json.dumps({"written": len(names), "sets": names}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
