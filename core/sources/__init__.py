"""Where anything Atlas measures comes from: models, SAEs, corpora, the hub, and the embedded organism.

Each kind has one face (`LoadedModel`, `LoadedSAE`, `Corpus`) whatever its origin; `organism` is one
source among the others (the model Atlas trained itself), read through the same faces.
"""
