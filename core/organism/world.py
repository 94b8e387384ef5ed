"""The synthetic world the organism is trained on, with its ground truth.

Everything here is deterministic from a seed: the held-out split, the city map, the birth years
and every sampled document. The world is a set of *facts* (a prompt whose answer is its last word,
grouped in families such as weekday arithmetic or capital -> language) plus *context sentences*
that carry the statistics the papers say shape representations:

- cyclic co-occurrence: two weekdays (or months) are mentioned together with a probability that
  falls as exp(-cyclic distance), and ordered runs ("monday tuesday wednesday") appear; this is the
  lever behind circles (Karkada et al., "Symmetry in language statistics shapes the geometry of
  model representations", PAPERS.md);
- held-out combinations: for every family a seeded fraction of facts never appears in training
  text, so answer accuracy on them measures generalisation rather than memory.

Every concept word is a single word, hence a single token of the word-level tokenizer.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable

WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
MONTHS = [
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
]
NUMBER_WORDS = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty",
]

# kingdom -> category -> species; every category has one ability ("can") and one part ("has"),
# every kingdom one quality ("is"), inherited by everything below it.
TAXONOMY: dict[str, dict[str, list[str]]] = {
    "animal": {
        "mammal": ["dog", "horse", "cow", "lion", "rabbit"],
        "bird": ["robin", "eagle", "sparrow", "owl", "parrot"],
        "fish": ["salmon", "trout", "shark", "tuna", "carp"],
        "reptile": ["snake", "lizard", "turtle", "crocodile", "gecko"],
        "insect": ["ant", "bee", "beetle", "butterfly", "wasp"],
    },
    "plant": {
        "tree": ["oak", "pine", "maple", "birch", "willow"],
        "flower": ["rose", "tulip", "daisy", "lily", "orchid"],
        "vegetable": ["carrot", "potato", "onion", "cabbage", "pea"],
    },
    "object": {
        "vehicle": ["car", "bus", "truck", "bicycle", "tram"],
        "tool": ["hammer", "saw", "drill", "wrench", "chisel"],
        "furniture": ["chair", "table", "sofa", "bed", "shelf"],
    },
}
CATEGORY_ABILITY = {
    "mammal": "run", "bird": "fly", "fish": "swim", "reptile": "crawl", "insect": "buzz",
    "tree": "shade", "flower": "bloom", "vegetable": "sprout",
    "vehicle": "move", "tool": "cut", "furniture": "support",
}
CATEGORY_PART = {
    "mammal": "fur", "bird": "feathers", "fish": "fins", "reptile": "scales", "insect": "antennae",
    "tree": "bark", "flower": "petals", "vegetable": "roots",
    "vehicle": "wheels", "tool": "handles", "furniture": "legs",
}
KINGDOM_QUALITY = {"animal": "alive", "plant": "rooted", "object": "built"}

ANALOGY_PAIRS: dict[str, list[tuple[str, ...]]] = {
    "gender": [
        ("man", "woman"), ("king", "queen"), ("boy", "girl"), ("prince", "princess"),
        ("father", "mother"), ("son", "daughter"), ("brother", "sister"), ("uncle", "aunt"),
        ("husband", "wife"), ("actor", "actress"), ("waiter", "waitress"), ("nephew", "niece"),
        ("duke", "duchess"), ("monk", "nun"),
    ],
    "capital": [
        ("france", "paris", "french"), ("germany", "berlin", "german"), ("italy", "rome", "italian"),
        ("spain", "madrid", "spanish"), ("japan", "tokyo", "japanese"), ("china", "beijing", "chinese"),
        ("russia", "moscow", "russian"), ("greece", "athens", "greek"), ("poland", "warsaw", "polish"),
        ("sweden", "stockholm", "swedish"), ("turkey", "ankara", "turkish"),
        ("portugal", "lisbon", "portuguese"), ("norway", "oslo", "norwegian"),
        ("finland", "helsinki", "finnish"), ("korea", "seoul", "korean"),
        ("hungary", "budapest", "hungarian"),
    ],
    "tense": [
        ("walk", "walked"), ("talk", "talked"), ("jump", "jumped"), ("play", "played"),
        ("sing", "sang"), ("write", "wrote"), ("eat", "ate"), ("see", "saw_past"),
        ("go", "went"), ("take", "took"), ("give", "gave"), ("think", "thought"),
        ("dance", "danced"), ("climb", "climbed"), ("open", "opened"), ("begin", "began"),
    ],
    "plural": [
        ("book", "books"), ("house", "houses"), ("apple", "apples"), ("child", "children"),
        ("mouse", "mice"), ("foot", "feet"), ("box", "boxes"), ("cup", "cups"), ("key", "keys"),
        ("shoe", "shoes"), ("stone", "stones"), ("pen", "pens"), ("coin", "coins"),
        ("ring", "rings"), ("lamp", "lamps"), ("door", "doors"),
    ],
    "comparative": [
        ("big", "bigger"), ("small", "smaller"), ("fast", "faster"), ("slow", "slower"),
        ("tall", "taller"), ("short", "shorter"), ("old", "older"), ("young", "younger"),
        ("good", "better"), ("bad", "worse"), ("hot", "hotter"), ("cold", "colder"),
        ("strong", "stronger"), ("weak", "weaker"), ("happy", "happier"), ("dark", "darker"),
    ],
}
# "saw" is both a tool and the past of "see": the past tense gets its own token so that every
# concept word is exactly one unambiguous token.

# Approximate (longitude, latitude) of real cities, so the map is familiar in the UI.
CITY_COORDS: dict[str, tuple[float, float]] = {
    "london": (-0.1, 51.5), "dublin": (-6.3, 53.3), "edinburgh": (-3.2, 56.0),
    "amsterdam": (4.9, 52.4), "brussels": (4.4, 50.8), "vienna": (16.4, 48.2),
    "prague": (14.4, 50.1), "copenhagen": (12.6, 55.7), "bern": (7.4, 46.9),
    "kyiv": (30.5, 50.5), "bucharest": (26.1, 44.4), "sofia": (23.3, 42.7),
    "belgrade": (20.5, 44.8), "zagreb": (16.0, 45.8), "riga": (24.1, 56.9),
    "vilnius": (25.3, 54.7), "tallinn": (24.8, 59.4), "reykjavik": (-21.9, 64.1),
    "marseille": (5.4, 43.3), "lyon": (4.8, 45.8), "munich": (11.6, 48.1),
    "hamburg": (10.0, 53.6), "milan": (9.2, 45.5), "naples": (14.3, 40.9),
    "barcelona": (2.2, 41.4), "seville": (-6.0, 37.4), "porto": (-8.6, 41.2),
    "krakow": (19.9, 50.1), "gothenburg": (12.0, 57.7), "bergen": (5.3, 60.4),
}
PEOPLE = [
    "alice", "bob", "carol", "david", "emma", "frank", "grace", "henry", "irene", "jack",
    "karen", "louis", "maria", "nathan", "olivia", "peter", "quinn", "rachel", "simon", "tina",
    "victor", "wendy", "xavier", "yara",
]
YEARS = list(range(1900, 2000))


@dataclass(frozen=True)
class Fact:
    """One question with a one-word answer: `prompt + " " + answer` is a sentence of the world."""

    family: str
    prompt: str
    answer: str

    @property
    def sentence(self) -> str:
        return f"{self.prompt} {self.answer}"


@dataclass
class WorldConfig:
    seed: int = 0
    held_out_fraction: float = 0.2
    n_ctx: int = 64  # tokens per document including BOS


@dataclass
class World:
    """Facts (split into train / held out), context-sentence samplers and the ground truth."""

    config: WorldConfig
    train_facts: dict[str, list[Fact]]
    held_out_facts: dict[str, list[Fact]]
    cities: dict[str, tuple[float, float]]
    birth_years: dict[str, int]
    samplers: list[tuple[float, Callable[[random.Random], str]]] = field(default_factory=list)

    def vocabulary(self) -> list[str]:
        """Every word the world can write, sorted (the tokenizer adds its special tokens)."""
        words: set[str] = set()
        for facts in (*self.train_facts.values(), *self.held_out_facts.values()):
            for fact in facts:
                words.update(fact.sentence.split())
        rng = random.Random(0)
        for _ in range(4000):  # context sentences: sample widely so every template word is seen
            for _, sampler in self.samplers:
                words.update(sampler(rng).split())
        words.update(_all_concept_words(self))
        words.update([".", ","])
        return sorted(words)

    def sample_sentence(self, rng: random.Random) -> str:
        weights = [w for w, _ in self.samplers]
        _, sampler = rng.choices(self.samplers, weights=weights, k=1)[0]
        return sampler(rng)

    def sample_document(self, rng: random.Random) -> str:
        """Sentences joined by " . " until the next would overflow n_ctx - 1 word tokens."""
        budget = self.config.n_ctx - 1
        sentences: list[str] = []
        used = 0
        while True:
            sentence = self.sample_sentence(rng)
            cost = len(sentence.split()) + 1  # the trailing "."
            if used + cost > budget:
                break
            sentences.append(sentence)
            used += cost
        return " . ".join(sentences) + " ."

    def documents(self, n: int, seed: int) -> list[str]:
        rng = random.Random(seed)
        return [self.sample_document(rng) for _ in range(n)]

    def held_out_sentences(self) -> set[str]:
        return {f.sentence for facts in self.held_out_facts.values() for f in facts}


def _all_concept_words(world: World) -> list[str]:
    words = WEEKDAYS + MONTHS + NUMBER_WORDS + PEOPLE + [str(y) for y in YEARS] + list(world.cities)
    for kingdom, categories in TAXONOMY.items():
        words.append(kingdom)
        for category, species in categories.items():
            words += [category, *species, CATEGORY_ABILITY[category], CATEGORY_PART[category]]
        words.append(KINGDOM_QUALITY[kingdom])
    for pairs in ANALOGY_PAIRS.values():
        for pair in pairs:
            words += list(pair)
    return words


def _cyclic_offset(rng: random.Random, n: int) -> int:
    """An offset in 1..n-1 drawn with weight exp(-cyclic distance): the co-occurrence lever."""
    offsets = list(range(1, n))
    weights = [math.exp(-min(k, n - k)) for k in offsets]
    return rng.choices(offsets, weights=weights, k=1)[0]


def _unit(n: int, unit: str) -> str:
    return unit if n == 1 else unit + "s"


def _cyclic_facts(names: list[str], unit: str, family: str) -> list[Fact]:
    n = len(names)
    facts = []
    for i, name in enumerate(names):
        for k in range(1, n):
            word = NUMBER_WORDS[k]
            facts.append(Fact(family, f"{word} {_unit(k, unit)} after {name} is", names[(i + k) % n]))
            facts.append(Fact(family, f"{word} {_unit(k, unit)} before {name} is", names[(i - k) % n]))
    return facts


def _number_facts() -> tuple[list[Fact], list[Fact]]:
    compare, add = [], []
    for a in range(21):
        for b in range(21):
            if a != b:
                compare.append(Fact("number_compare", f"the greater of {NUMBER_WORDS[a]} and {NUMBER_WORDS[b]} is", NUMBER_WORDS[max(a, b)]))
                compare.append(Fact("number_compare", f"the lesser of {NUMBER_WORDS[a]} and {NUMBER_WORDS[b]} is", NUMBER_WORDS[min(a, b)]))
            if a + b <= 20:
                add.append(Fact("number_add", f"{NUMBER_WORDS[a]} plus {NUMBER_WORDS[b]} is", NUMBER_WORDS[a + b]))
    return compare, add


def _taxonomy_facts() -> list[Fact]:
    facts = []
    for kingdom, categories in TAXONOMY.items():
        for category, species in categories.items():
            for sp in species:
                facts.append(Fact("taxonomy_inherit", f"a {sp} can", CATEGORY_ABILITY[category]))
                facts.append(Fact("taxonomy_inherit", f"a {sp} has", CATEGORY_PART[category]))
                facts.append(Fact("taxonomy_inherit", f"every {sp} is", KINGDOM_QUALITY[kingdom]))
    return facts


# The evaluated template per analogy family (answer last); the other templates below carry the
# pair in training even when this one is held out, so a held-out answer is a transfer, not a guess.
ANALOGY_EVAL_TEMPLATES = {
    "gender": "he is a {0} and she is a {1}",
    "capital": "people in {1} speak {2}",
    "tense": "today i {0} , yesterday i {1}",
    "plural": "i have one {0} and you have two {1}",
    "comparative": "this one is {0} but that one is {1}",
}
ANALOGY_CONTEXT_TEMPLATES = {
    "gender": ["she is a {1} and he is a {0}", "the {0} met the {1}", "the {1} met the {0}",
               "a {0} is a man", "a {1} is a woman"],
    "capital": ["the capital of {0} is {1}", "{1} is the capital of {0}", "people in {0} speak {2}",
                "{2} is spoken in {0}", "the {2} language belongs to {0}"],
    "tense": ["yesterday i {1} , today i {0}", "i {0} now and i {1} before", "the past of {0} is {1}"],
    "plural": ["you have two {1} and i have one {0}", "many {1} , a single {0}", "the plural of {0} is {1}"],
    "comparative": ["that one is {1} but this one is {0}", "it was {0} and then it got {1}",
                    "the comparative of {0} is {1}"],
}


def _analogy_facts(family: str) -> list[Fact]:
    template = ANALOGY_EVAL_TEMPLATES[family]
    facts = []
    for pair in ANALOGY_PAIRS[family]:
        words = template.format(*pair).split()
        facts.append(Fact(f"analogy_{family}", " ".join(words[:-1]), words[-1]))
    return facts


def _direction(src: tuple[float, float], dst: tuple[float, float]) -> str:
    dx, dy = dst[0] - src[0], dst[1] - src[1]
    if abs(dx) >= abs(dy):
        return "east" if dx > 0 else "west"
    return "north" if dy > 0 else "south"


def _city_facts(cities: dict[str, tuple[float, float]]) -> list[Fact]:
    facts = []
    names = list(cities)
    for a in names:
        for b in names:
            if a != b:
                facts.append(Fact("city_direction", f"going from {a} to {b} you travel", _direction(cities[a], cities[b])))
    return facts


def _people_facts(years: dict[str, int]) -> list[Fact]:
    facts = []
    for a in years:
        for b in years:
            if a != b and years[a] != years[b]:
                older = a if years[a] < years[b] else b
                facts.append(Fact("people_order", f"of {a} and {b} the older is", older))
    return facts


def _pair_key(fact: Fact) -> str:
    """Facts about the same unordered pair share a key, so "a and b" and "b and a" split together."""
    words = fact.prompt.split()
    if fact.family == "city_direction":
        return " ".join(sorted((words[2], words[4])))
    if fact.family == "people_order":
        return " ".join(sorted((words[1], words[3])))
    if fact.family == "number_compare":
        return " ".join(sorted((words[3], words[5])))
    return fact.prompt


def _split(facts: list[Fact], fraction: float, rng: random.Random) -> tuple[list[Fact], list[Fact]]:
    """Hold out a seeded `fraction` of the (unordered-pair) groups of one family."""
    keys = sorted({_pair_key(f) for f in facts})
    rng.shuffle(keys)
    held_keys = set(keys[: max(1, round(fraction * len(keys)))])
    train = [f for f in facts if _pair_key(f) not in held_keys]
    held = [f for f in facts if _pair_key(f) in held_keys]
    return train, held


def build_world(config: WorldConfig | None = None) -> World:
    """The whole world from `config.seed`: facts, held-out split, samplers."""
    config = config or WorldConfig()
    rng = random.Random(config.seed)
    cities = dict(CITY_COORDS)
    birth_years = {name: rng.randint(1920, 1995) for name in PEOPLE}

    compare, add = _number_facts()
    all_facts: dict[str, list[Fact]] = {
        "weekday_arith": _cyclic_facts(WEEKDAYS, "day", "weekday_arith"),
        "month_arith": _cyclic_facts(MONTHS, "month", "month_arith"),
        "number_compare": compare,
        "number_add": add,
        "taxonomy_inherit": _taxonomy_facts(),
        **{f"analogy_{family}": _analogy_facts(family) for family in ANALOGY_EVAL_TEMPLATES},
        "city_direction": _city_facts(cities),
        "people_order": _people_facts(birth_years),
    }
    train, held = {}, {}
    for family, facts in all_facts.items():
        train[family], held[family] = _split(facts, config.held_out_fraction, rng)
    world = World(config, train, held, cities, birth_years)
    world.samplers = _samplers(world)
    return world


def _samplers(world: World) -> list[tuple[float, Callable[[random.Random], str]]]:
    """(weight, sampler) pairs; weights are shares of sentences."""
    train = world.train_facts
    held_sentences = world.held_out_sentences()
    cities, years = world.cities, world.birth_years
    city_names = list(cities)

    def fact_sampler(family: str) -> Callable[[random.Random], str]:
        return lambda rng: rng.choice(train[family]).sentence

    def cyclic_pair(names: list[str]) -> Callable[[random.Random], str]:
        templates = ["we met on {0} and again on {1}", "between {0} and {1}", "i work on {0} and {1}",
                     "from {0} to {1}", "{0} or {1}"]

        def sample(rng: random.Random) -> str:
            i = rng.randrange(len(names))
            j = (i + _cyclic_offset(rng, len(names))) % len(names)
            return rng.choice(templates).format(names[i], names[j])
        return sample

    def cyclic_run(names: list[str]) -> Callable[[random.Random], str]:
        def sample(rng: random.Random) -> str:
            start, length = rng.randrange(len(names)), rng.randint(3, len(names))
            return " ".join(names[(start + t) % len(names)] for t in range(length))
        return sample

    def cyclic_next(names: list[str], unit: str) -> Callable[[random.Random], str]:
        def sample(rng: random.Random) -> str:
            i = rng.randrange(len(names))
            n = len(names)
            return rng.choice([
                f"the {unit} after {names[i]} is {names[(i + 1) % n]}",
                f"the {unit} before {names[i]} is {names[(i - 1) % n]}",
                f"{names[(i + 1) % n]} comes after {names[i]}",
            ])
        return sample

    def number_context(rng: random.Random) -> str:
        a = rng.randrange(20)
        choice = rng.randrange(3)
        if choice == 0:
            start = rng.randrange(18)
            return " ".join(NUMBER_WORDS[start:start + rng.randint(3, 21 - start)])
        if choice == 1:
            return f"{NUMBER_WORDS[a]} comes before {NUMBER_WORDS[a + 1]}"
        b = rng.randrange(21)
        rel = "more" if a > b else "less" if a < b else "as much"
        return f"{NUMBER_WORDS[a]} is {rel} than {NUMBER_WORDS[b]}" if a != b else f"{NUMBER_WORDS[a]} equals {NUMBER_WORDS[a]}"

    def taxonomy_context(rng: random.Random) -> str:
        kingdom = rng.choice(list(TAXONOMY))
        category = rng.choice(list(TAXONOMY[kingdom]))
        species = rng.choice(TAXONOMY[kingdom][category])
        return rng.choice([
            f"a {species} is a kind of {category}",
            f"a {category} is a kind of {kingdom}",
            f"a {category} can {CATEGORY_ABILITY[category]}",
            f"a {category} has {CATEGORY_PART[category]}",
            f"every {category} is {KINGDOM_QUALITY[kingdom]}",
            f"every {kingdom} is {KINGDOM_QUALITY[kingdom]}",
            f"the {species} and the {rng.choice(TAXONOMY[kingdom][category])} are both {category}s",
        ])

    def analogy_context(family: str) -> Callable[[random.Random], str]:
        def sample(rng: random.Random) -> str:
            pair = rng.choice(ANALOGY_PAIRS[family])
            return rng.choice(ANALOGY_CONTEXT_TEMPLATES[family]).format(*pair)
        return sample

    def city_context(rng: random.Random) -> str:
        a = rng.choice(city_names)
        dist = {b: math.dist(cities[a], cities[b]) for b in city_names if b != a}
        # Co-occurrence falls with map distance, the spatial analogue of the cyclic lever.
        b = rng.choices(list(dist), weights=[math.exp(-d / 8.0) for d in dist.values()], k=1)[0]
        sentence = rng.choice([
            f"i drove from {a} to {b}", f"{a} is near {b}" if dist[b] < 8 else f"{a} is far from {b}",
            f"{b} is {_direction(cities[a], cities[b])} of {a}",
        ])
        if f"going from {a} to {b} you travel {_direction(cities[a], cities[b])}" in held_sentences and "of" in sentence:
            return f"i drove from {a} to {b}"  # the held-out direction must not leak in another wording
        return sentence

    def people_context(rng: random.Random) -> str:
        a = rng.choice(PEOPLE)
        choice = rng.randrange(3)
        if choice == 0:
            return f"{a} was born in {years[a]}"
        if choice == 1:
            y = rng.choice(YEARS[:-1])
            return rng.choice([f"{y} comes before {y + 1}", f"the year after {y} is {y + 1}",
                               " ".join(str(y + t) for t in range(min(4, 1999 - y + 1)))])
        y = rng.choice(YEARS)
        return f"{a} was born {'before' if years[a] < y else 'after' if years[a] > y else 'in'} {y}"

    samplers: list[tuple[float, Callable[[random.Random], str]]] = [
        (6.0, fact_sampler("weekday_arith")), (6.0, fact_sampler("month_arith")),
        (5.0, cyclic_pair(WEEKDAYS)), (5.0, cyclic_pair(MONTHS)),
        (2.0, cyclic_run(WEEKDAYS)), (2.0, cyclic_run(MONTHS)),
        (2.0, cyclic_next(WEEKDAYS, "day")), (2.0, cyclic_next(MONTHS, "month")),
        (4.0, fact_sampler("number_compare")), (4.0, fact_sampler("number_add")), (3.0, number_context),
        (4.0, fact_sampler("taxonomy_inherit")), (4.0, taxonomy_context),
        (6.0, city_context), (5.0, fact_sampler("city_direction")),
        (3.0, people_context), (4.0, fact_sampler("people_order")),
    ]
    for family in ANALOGY_EVAL_TEMPLATES:
        samplers.append((1.5, fact_sampler(f"analogy_{family}")))
        samplers.append((2.5, analogy_context(family)))
    return samplers


def ground_truth(world: World) -> dict:
    """The planted structures, as plain JSON (schema in docs/ORGANISM.md)."""
    def fact_list(facts: dict[str, list[Fact]]) -> dict[str, list[list[str]]]:
        return {family: [[f.prompt, f.answer] for f in fs] for family, fs in facts.items()}

    return {
        "schema_version": 1,
        "seed": world.config.seed,
        "cyclic": {"weekdays": WEEKDAYS, "months": MONTHS},
        "numbers": NUMBER_WORDS,
        "years": [str(y) for y in YEARS],
        "taxonomy": TAXONOMY,
        "properties": {
            "ability": CATEGORY_ABILITY, "part": CATEGORY_PART, "kingdom_quality": KINGDOM_QUALITY,
        },
        "analogies": {family: [list(p) for p in pairs] for family, pairs in ANALOGY_PAIRS.items()},
        "cities": {name: list(xy) for name, xy in world.cities.items()},
        "people": dict(world.birth_years),
        "templates": {
            "weekday_arith": "{n} days after {day} is",
            "month_arith": "{n} months after {month} is",
            "number_compare": "the greater of {a} and {b} is",
            "number_add": "{a} plus {b} is",
            "taxonomy_category": "a {species} is a kind of",
            "taxonomy_ability": "a {species} can",
            "taxonomy_part": "a {species} has",
            "kingdom_quality": "every {species} is",
            "analogy": ANALOGY_EVAL_TEMPLATES,
            "analogy_context": ANALOGY_CONTEXT_TEMPLATES,
            "city_direction": "going from {a} to {b} you travel",
            "city_mention": "i drove from {a} to",
            "people_order": "of {a} and {b} the older is",
            "people_birth": "{person} was born in",
            "weekday_mention": "we met on {day} and again on",
            "month_mention": "we met on {month} and again on",
        },
        "eval_facts": {"train": fact_list(world.train_facts), "held_out": fact_list(world.held_out_facts)},
    }
