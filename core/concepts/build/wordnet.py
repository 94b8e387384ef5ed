"""WordNet 3.0 (Debian's `wordnet-base`: /usr/share/wordnet) read directly from its database files.

Only the noun database is needed: `data.noun` (synsets, their words, pointers and glosses),
`index.noun` (each lemma's senses, most frequent first) and `cntlist.rev` (SemCor tag counts per
sense key, used to prefer common words). Formats: wndb(5WN) and senseidx(5WN) of WordNet 3.0.
Used at build time only (python -m core.concepts.build); the derived sets are committed.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

WORDNET_DIR = Path("/usr/share/wordnet")
NOUN_POS = 1  # the ss_type number of nouns in sense keys


@dataclass(frozen=True)
class Synset:
    offset: str
    lex_filenum: int
    words: tuple[tuple[str, int], ...]  # (lemma as written, lex_id)
    hypernyms: tuple[str, ...]  # "@" pointers
    instance_hypernyms: tuple[str, ...]  # "@i" pointers
    hyponyms: tuple[str, ...]  # "~" pointers
    gloss: str
    n_pointers: int  # pointers of every kind (derived forms such as "Darwinian" included)


def read_synsets(path: Path) -> dict[str, Synset]:
    """Every noun synset of data.noun by its 8-digit offset (license header lines start with spaces)."""
    synsets = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("  "):
                continue
            head, _, gloss = line.partition(" | ")
            fields = head.split()
            offset, lex_filenum = fields[0], int(fields[1])
            n_words = int(fields[3], 16)
            words = tuple((fields[4 + 2 * i], int(fields[5 + 2 * i], 16)) for i in range(n_words))
            at = 4 + 2 * n_words
            n_pointers = int(fields[at])
            pointers: dict[str, list[str]] = {"@": [], "@i": [], "~": []}
            for j in range(n_pointers):
                symbol, target, pos = fields[at + 1 + 4 * j: at + 4 + 4 * j]
                if pos == "n" and symbol in pointers:
                    pointers[symbol].append(target)
            synsets[offset] = Synset(offset, lex_filenum, words, tuple(pointers["@"]), tuple(pointers["@i"]),
                                     tuple(pointers["~"]), gloss.strip(), n_pointers)
    return synsets


def read_index(path: Path) -> dict[str, list[str]]:
    """lemma (lower case, underscores) -> its noun synset offsets, most frequent sense first."""
    index = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("  "):
                continue
            fields = line.split()
            n_synsets, n_pointers = int(fields[2]), int(fields[3])
            index[fields[0]] = fields[6 + n_pointers: 6 + n_pointers + n_synsets]
    return index


def read_counts(path: Path) -> dict[str, int]:
    """sense key -> SemCor tag count (cntlist.rev: "sense_key sense_number tag_cnt")."""
    counts = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            key, _, count = line.split()
            counts[key] = int(count)
    return counts


def sense_key(lemma: str, synset: Synset, lex_id: int) -> str:
    """The noun sense key of `lemma` in `synset` (senseidx(5WN)): lemma%1:lex_filenum:lex_id::."""
    return f"{lemma.lower()}%{NOUN_POS}:{synset.lex_filenum:02d}:{lex_id:02d}::"


class WordNet:
    """The three noun files, parsed once."""

    def __init__(self, directory: Path = WORDNET_DIR):
        self.directory = Path(directory)
        missing = [f for f in ("data.noun", "index.noun", "cntlist.rev") if not (self.directory / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"WordNet 3.0 is not at {self.directory} (missing {', '.join(missing)}): "
                "`apt-get install -y wordnet-base` installs it."
            )
        self.synsets = read_synsets(self.directory / "data.noun")
        self.index = read_index(self.directory / "index.noun")
        self.counts = read_counts(self.directory / "cntlist.rev")

    def synset(self, lemma: str, sense: int = 1) -> Synset:
        """The `sense`-th noun sense (1 = most frequent) of `lemma`."""
        return self.synsets[self.index[lemma][sense - 1]]

    def ancestors(self, synset: Synset) -> set[str]:
        """Offsets of every hypernym (class and instance pointers) above `synset`, transitively."""
        seen: set[str] = set()
        stack = list(synset.hypernyms + synset.instance_hypernyms)
        while stack:
            offset = stack.pop()
            if offset not in seen:
                seen.add(offset)
                parent = self.synsets[offset]
                stack.extend(parent.hypernyms + parent.instance_hypernyms)
        return seen

    def descendants(self, synset: Synset) -> list[Synset]:
        """Every synset below `synset` through "~" hyponym pointers (not instances), sorted by offset."""
        seen: set[str] = set()
        stack = list(synset.hyponyms)
        while stack:
            offset = stack.pop()
            if offset not in seen:
                seen.add(offset)
                stack.extend(self.synsets[offset].hyponyms)
        return [self.synsets[o] for o in sorted(seen)]

    def tag_count(self, lemma: str, synset: Synset, lex_id: int) -> int:
        return self.counts.get(sense_key(lemma, synset, lex_id), 0)



# ---- the noun taxonomy (Park et al. 2024's hierarchy, from WordNet's hypernym tree) ------------
# root lemma and sense -> its categories (lemma, sense); each category's synset must lie below the root.
TAXONOMY_SPEC: dict[tuple[str, int], tuple[tuple[str, int], ...]] = {
    ("animal", 1): (("mammal", 1), ("bird", 1), ("fish", 1), ("reptile", 1), ("insect", 1)),
    ("plant", 2): (("tree", 1), ("flower", 1), ("shrub", 1), ("herb", 1)),
    ("artifact", 1): (("vehicle", 1), ("tool", 1), ("furniture", 1), ("musical_instrument", 1), ("weapon", 1),
                      ("garment", 1), ("building", 1)),
    ("food", 1): (("beverage", 1), ("bread", 1)),
}
WORDS_PER_CATEGORY = 20


def gloss_frequencies(wn: WordNet) -> Counter:
    """How often each lower-case word occurs in all noun glosses: a corpus-frequency proxy for words
    SemCor never tagged (used only to rank candidates)."""
    counts: Counter = Counter()
    for synset in wn.synsets.values():
        counts.update(re.findall(r"[a-z]+", synset.gloss.lower()))
    return counts


def taxonomy_words(wn: WordNet, per_category: int = WORDS_PER_CATEGORY) -> list[tuple[str, str, str, str]]:
    """(word, root, category, synset offset) rows, category by category.

    A category's candidates are the single-word, lower-case lemmas of every synset below it whose most
    frequent noun sense is that synset (so "bass" the fish is out: its first sense is musical); words
    that WordNet lists as inflected forms (noun.exc, "oxen") or plurals of another lemma ("cows") are
    out; a word that qualifies under two categories is out. Ranked by SemCor tag count, then by gloss
    frequency, then alphabetically; the first `per_category` are kept.
    """
    inflected = {line.split()[0] for line in (wn.directory / "noun.exc").read_text().splitlines() if line.strip()}
    frequency = gloss_frequencies(wn)
    candidates: dict[tuple[str, str], dict[str, tuple[int, str]]] = {}
    for (root, root_sense), categories in TAXONOMY_SPEC.items():
        root_synset = wn.synset(root, root_sense)
        for category, sense in categories:
            synset = wn.synset(category, sense)
            if root_synset.offset not in wn.ancestors(synset):
                raise ValueError(f"WordNet: {category}.{sense} is not below {root}.{root_sense}.")
            found: dict[str, tuple[int, str]] = {}
            for below in wn.descendants(synset):
                for lemma, lex_id in below.words:
                    if not (lemma.isalpha() and lemma.islower()) or lemma in inflected:
                        continue
                    if lemma.endswith("s") and (lemma[:-1] in wn.index or lemma[:-2] in wn.index):
                        continue
                    if wn.index.get(lemma, [None])[0] != below.offset:
                        continue
                    count = wn.tag_count(lemma, below, lex_id)
                    if lemma not in found or count > found[lemma][0]:
                        found[lemma] = (count, below.offset)
            candidates[(root, category)] = found
    owners = Counter(word for found in candidates.values() for word in found)
    labels = {name for (root, _), cats in TAXONOMY_SPEC.items() for name in (root, *(c for c, _ in cats))}
    rows = []
    for (root, category), found in candidates.items():
        ranked = sorted((w for w in found if owners[w] == 1 and w not in labels),
                        key=lambda w: (-found[w][0], -frequency[w], w))
        rows += [(w, root, category.replace("_", " "), found[w][1]) for w in ranked[:per_category]]
    return rows


# ---- people with their years (Gurnee & Tegmark 2023's historical figures) ----------------------
LIFESPAN = re.compile(r"\((?:(?:circa|c\.) )?(\d{1,4})( BC)?-(\d{1,4})( BC)?\)")
PEOPLE = 400
CAPITALISED_RUN = re.compile(r"[A-Z][\w.'-]*(?: (?:[A-Z][\w.'-]*|de|van|von|da|of|the))*(?<! of)(?<! the)")


def lifespan(gloss: str) -> tuple[int, int] | None:
    """(birth, death) from a gloss's "(1879-1955)" or "(525-456 BC)"; BC years are negative."""
    match = LIFESPAN.search(gloss)
    if not match:
        return None
    born, born_bc, died, died_bc = match.groups()
    if len(died) < len(born) and not (born_bc or died_bc):  # "(1785-73)"
        died = born[: len(born) - len(died)] + died
    b = -int(born) if (born_bc or died_bc) else int(born)
    d = -int(died) if died_bc else int(died)
    return (b, d) if 0 < d - b < 110 else None


def person_name(synset: Synset) -> str:
    """The full name: the first lemma of two or more words without a title, else the first lemma."""
    titles = ("Sir_", "Saint_", "President_", "Lord_", "Dame_", "King_", "Queen_", "Pope_", "St._")
    for lemma, _ in synset.words:
        if "_" in lemma and not lemma.startswith(titles):
            return lemma.replace("_", " ")
    return synset.words[0][0].replace("_", " ")


def people(wn: WordNet, n: int = PEOPLE) -> list[tuple[str, int, int, str, str]]:
    """(name, birth, death, description, synset offset) of `n` people: WordNet instances of person.n.01
    whose gloss gives a lifespan, ranked by a fame proxy (how many other glosses name them in full,
    then how many pointers their synset has: derived words such as "Darwinian", domain links), then
    by name; one row per name."""
    person = wn.synset("person").offset
    found: dict[str, tuple[int, int, int, str, str]] = {}  # name -> (pointers, birth, death, description, offset)
    for synset in wn.synsets.values():
        if not synset.instance_hypernyms:
            continue
        years = lifespan(synset.gloss)
        if years is None or person not in wn.ancestors(synset):
            continue
        name = person_name(synset)
        description = re.split(r"[;(]", synset.gloss)[0].strip()
        if name not in found or synset.n_pointers > found[name][0]:
            found[name] = (synset.n_pointers, *years, description, synset.offset)
    names = Counter(m.group(0) for s in wn.synsets.values() for m in CAPITALISED_RUN.finditer(s.gloss))
    ranked = sorted(found, key=lambda name: (-names[name], -found[name][0], name))[:n]
    return [(name, *found[name][1:]) for name in ranked]


# ---- the two sets -----------------------------------------------------------------------------
SOURCE = "WordNet 3.0 noun database (Debian package wordnet-base {version}), read by core/concepts/build/wordnet.py"
LICENCE = "WordNet 3.0 licence (Princeton University): redistribution with the notice in LICENSE-WordNet.txt"


def debian_version(package: str = "wordnet-base") -> str:
    """The installed Debian package version (recorded in `source`), or "unknown" off Debian."""
    import subprocess

    try:
        done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def taxonomy_set(wn: WordNet, version: str):
    from core.concepts.schema import ConceptItem, ConceptSet, RelationTemplate

    items = [ConceptItem(word, parents=(root, category), attributes=(("synset", offset),))
             for word, root, category, offset in taxonomy_words(wn)]
    return ConceptSet.create(
        name="noun_taxonomy", kind="hierarchical", items=items,
        description="Nouns under 4 roots and 18 categories of WordNet's hypernym tree (animal > mammal > horse), "
                    f"{WORDS_PER_CATEGORY} common words per category (Park et al. 2024).",
        context_templates=["{word}", "I saw a {word}", "This is a {word}", "Look at the {word}"],
        relation_templates=[RelationTemplate("A {word} is a kind of", "parent")],
        source=SOURCE.format(version=version), licence=LICENCE, origin="library")


def people_set(wn: WordNet, version: str):
    from core.concepts.schema import ConceptItem, ConceptSet, RelationTemplate

    items = [ConceptItem(name, (float(born), float(died)), attributes=(("description", description), ("synset", offset)))
             for name, born, died, description, offset in people(wn)]
    return ConceptSet.create(
        name="historical_figures", kind="temporal", items=items, value_names=["birth_year", "death_year"],
        description=f"{PEOPLE} people with birth and death years from WordNet glosses (BC years negative); "
                    "Gurnee & Tegmark 2023 probe the death year.",
        context_templates=["{word}", "The life of {word}", "A biography of {word}", "I read about {word}"],
        relation_templates=[RelationTemplate("{word} was born in the year", "value")],
        source=SOURCE.format(version=version) + "; years parsed from the glosses' '(1879-1955)'",
        licence=LICENCE, origin="library")
