"""Relation families for the crystals view, from the word2vec analogy test set (Mikolov et al. 2013,
`questions-words.txt`, committed under assets/concepts/sources/ from gensim 4.4.0's test data).

Each family becomes one analogy ConceptSet of (word, pair) items, in the file's order. The file's
past-tense family pairs a present participle with the past ("dancing" -> "danced"); present-past
takes the base form from the participle family ("dance" -> "dancing") or, where that family lacks
the verb, from WordNet's verb index by removing "-ing" (then "-ing" + "e", then a doubled consonant).
"""

from __future__ import annotations

from pathlib import Path

from core.concepts.schema import ConceptItem, ConceptSet, RelationTemplate

SOURCE = ("word2vec analogy test set (Mikolov et al. 2013, questions-words.txt, Apache-2.0), as shipped in "
          "gensim 4.4.0's test data; committed as assets/concepts/sources/questions-words.txt")
LICENCE = "Apache-2.0"

# questions-words section -> (set name, description, context templates, relation template)
FAMILIES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "family": ("analogy_male_female", "Male -> female (boy -> girl, king -> queen).",
               ("I met the {word}", "I met the {pair}"), "The female counterpart of the {word} is the"),
    "gram8-plural": ("analogy_singular_plural", "Singular -> plural noun.",
                     ("I saw the {word}", "I saw the {pair}"), "One {word}, two"),
    "gram3-comparative": ("analogy_base_comparative", "Adjective -> comparative.",
                          ("It is {word}", "It is {pair}"), "The comparative of {word} is"),
    "gram4-superlative": ("analogy_base_superlative", "Adjective -> superlative.",
                          ("It is {word}", "It is the {pair}"), "The superlative of {word} is"),
    "gram7-past-tense": ("analogy_present_past", "Verb -> past tense (base form; see the module doc).",
                         ("Today I {word}", "Yesterday I {pair}"), "Today I {word}; yesterday I"),
    "gram5-present-participle": ("analogy_base_participle", "Verb -> present participle.",
                                 ("I {word}", "I am {pair}"), "I {word}; right now I am"),
    "gram9-plural-verbs": ("analogy_verb_third_person", "Verb -> third person singular.",
                           ("We {word}", "She {pair}"), "We {word}; she"),
    "gram1-adjective-to-adverb": ("analogy_adjective_adverb", "Adjective -> adverb.",
                                  ("It was {word}", "It went {pair}"), "The adverb of {word} is"),
    "gram2-opposite": ("analogy_opposite", "Adjective -> its negation (aware -> unaware).",
                       ("It is {word}", "It is {pair}"), "The opposite of {word} is"),
    "gram6-nationality-adjective": ("analogy_country_nationality", "Country -> nationality adjective.",
                                    ("I visited {word}", "She is {pair}"), "A person from {word} is"),
    "currency": ("analogy_country_currency", "Country -> currency.",
                 ("I visited {word}", "It costs one {pair}"), "The currency of {word} is the"),
    "city-in-state": ("analogy_city_state", "US city -> its state.",
                      ("I live in {word}", "I live in {pair}"), "{word} is a city in the state of"),
}


def read_sections(path: Path) -> dict[str, dict[str, str]]:
    """section -> {first word: second word} over every analogy line "a b c d" (pairs a:b and c:d)."""
    sections: dict[str, dict[str, str]] = {}
    current = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith(":"):
            current = line[1:].strip()
            sections[current] = {}
        elif line.strip() and current is not None:
            a, b, c, d = line.split()
            sections[current].setdefault(a, b)
            sections[current].setdefault(c, d)
    return sections


def verb_lemmas(wordnet_dir: Path) -> set[str]:
    return {line.split()[0] for line in (wordnet_dir / "index.verb").read_text().splitlines()
            if line and not line.startswith("  ")}


def base_of_participle(participle: str, known: dict[str, str], verbs: set[str]) -> str | None:
    if participle in known:
        return known[participle]
    stem = participle[: -len("ing")] if participle.endswith("ing") else None
    if not stem:
        return None
    for candidate in (stem, stem + "e", stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else ""):
        if candidate and candidate in verbs:
            return candidate
    return None


def analogy_sets(questions_words: Path, wordnet_dir: Path) -> list[ConceptSet]:
    sections = read_sections(questions_words)
    participles = {p: b for b, p in sections["gram5-present-participle"].items()}
    verbs = verb_lemmas(wordnet_dir)
    out = []
    for section, (name, description, contexts, relation) in FAMILIES.items():
        pairs = sections[section]
        if section == "gram7-past-tense":
            based: dict[str, str] = {}
            for participle, past in pairs.items():
                base = base_of_participle(participle, participles, verbs)
                if base is None:
                    raise ValueError(f"No base form for {participle!r} (questions-words gram7).")
                based.setdefault(base, past)
            pairs = based
        source = SOURCE + ("; base forms: WordNet 3.0 verb index" if section == "gram7-past-tense" else "")
        out.append(ConceptSet.create(
            name=name, kind="analogy", items=[ConceptItem(a, pair=b) for a, b in pairs.items()],
            description=description, context_templates=["{word}", "{pair}", *contexts],
            relation_templates=[RelationTemplate(relation, "pair")], source=source,
            licence=LICENCE + ("; WordNet 3.0 licence (LICENSE-WordNet.txt)" if section == "gram7-past-tense" else ""),
            origin="library"))
    return out
