"""Concept sets on any model (docs/CONCEPTS.md): the library, users' files, the organism's ground truth,
the read-out of their items at every resid_post site, and the papers' experiments on them."""

from core.concepts.experiments import (
    PUBLISHED,
    CircleRow,
    CircleSetResult,
    EngelsResult,
    GurneeResult,
    ParentOrthogonality,
    ParkResult,
    ProbeCurve,
    circle_rows,
    engels_circles,
    gurnee_probes,
    park_hierarchy,
    probe_target,
    unembedding_ids,
)
from core.concepts.files import read_concept_file, set_from_csv, set_from_json, set_to_text
from core.concepts.library import LIBRARY_DIR, library_names, library_sets_of_kind, load_library, load_library_set
from core.concepts.organism import concept_sets_from_ground_truth, organism_concept_sets
from core.concepts.readout import (
    ConceptReadout,
    DroppedItem,
    SkippedTemplate,
    SplitWord,
    TokenizationReport,
    check_tokenization,
    default_sites,
    read_concepts,
)
from core.concepts.schema import KINDS, ConceptError, ConceptItem, ConceptSet, RelationTemplate

__all__ = [
    "KINDS", "ConceptError", "ConceptItem", "ConceptSet", "RelationTemplate",
    "read_concept_file", "set_from_csv", "set_from_json", "set_to_text",
    "LIBRARY_DIR", "library_names", "library_sets_of_kind", "load_library", "load_library_set",
    "concept_sets_from_ground_truth", "organism_concept_sets",
    "ConceptReadout", "DroppedItem", "SkippedTemplate", "SplitWord", "TokenizationReport", "check_tokenization",
    "default_sites", "read_concepts",
    "PUBLISHED", "CircleRow", "CircleSetResult", "EngelsResult", "GurneeResult", "ParentOrthogonality", "ParkResult",
    "ProbeCurve", "circle_rows", "engels_circles", "gurnee_probes", "park_hierarchy", "probe_target", "unembedding_ids",
]
