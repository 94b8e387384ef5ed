"""Run every measurement over a harvest's artifacts: the one place the CLI, the verify card and the
pages get their numbers from.

Pure orchestration (no streamlit): each function takes the loaded model / SAEs (core.sources.faces) /
HarvestResult / ground truth, calls `core.metrics.*`, and returns one typed result per view (frozen
dataclasses in core.analysis.results, with `to_dict` / `from_dict`). With a store, `to_dict()` is
saved under a key derived from what it was computed from (the harvest key, or the model identity and a
hash of the ground truth, plus the settings and ANALYSIS_VERSION), so a second call costs a read.
Options are keyword-only.

Views:
    spectra_by_layer           RankMe, alpha-ReQ (fit range reported), PR, TwoNN + MLE ID per site
    spectra_over_checkpoints   moments-only harvest per training checkpoint (organism, Pythia,
                               stanford-crfm; cached per checkpoint) -> layer x checkpoint tables
                               and the phase segmentation per layer
    superposition_by_layer     F, psi (N = d_in of the site), alive, mean L0, convergence curve,
                               interference of decoder rows and of unembedding rows vs 1/m
    geometry_by_layer          galaxy spectrum, lobes (co-occurrence vs geometry, AMI vs null),
                               decoder clusters with the PCA of their reconstructions
    concept_geometry           circles, crystals, concepts and probes of concept sets (core.concepts: the
                               library, users' files, the organism's own sets) on any model
    ground_truth_geometry      needs a ground truth (the organism's, or word lists in its schema):
                               circles of cyclic items per layer (at the item token and at the answer
                               position of the cyclic-arithmetic prompts), crystals, concepts, probes
    run_all                    everything above that the inputs allow

Modules: results (the result types), keys (cache keys, the cache), spectra, checkpoints, superposition, geometry, prompts (token
representations from templates), circles, concepts (crystals, Park concepts, probes), run (run_all).
Loading checkpoints and harvesting them lives in core.harvest.checkpoints.
"""

from core.analysis.checkpoints import checkpoint_spectrum, spectra_over_checkpoints
from core.analysis.circles import (
                                   best_circle,
                                   circles_at_answer,
                                   circles_from_tokens,
                                   cyclic_arithmetic_facts,
                                   cyclic_circles,
                                   cyclic_token_ids,
)
from core.analysis.concept_views import PAGE_MAX_PROBE_ITEMS, VIEW_KINDS, VIEWS, concept_geometry, sets_for_view
from core.analysis.concepts import (
                                   concepts_from_unembedding,
                                   crystals_from_tokens,
                                   ground_truth_geometry,
                                   organism_ground_truth,
                                   probes_from_tokens,
)
from core.analysis.geometry import decoder_circles_for_sae, geometry_by_layer, lobes_for_sae, lobes_view
from core.analysis.keys import ANALYSIS_VERSION, AnalysisError, analysis_key, harvest_key_of
from core.analysis.prompts import DEFAULT_TEMPLATES, analogy_pairs, fill_template, representations_at, slot_prompt
from core.analysis.results import (
                                   AllAnalyses,
                                   GeometryByLayer,
                                   GroundTruthGeometry,
                                   LobesView,
                                   Skipped,
                                   SpectraByLayer,
                                   SpectraOverCheckpoints,
                                   SuperpositionByLayer,
                                   ToyLab,
)
from core.analysis.run import run_all
from core.analysis.spectra import site_spectrum, spectra_by_layer
from core.analysis.superposition import superposition_by_layer, toy_lab
from core.harvest.checkpoints import checkpoint_options, default_checkpoints

__all__ = ["ANALYSIS_VERSION", "AllAnalyses", "GeometryByLayer", "GroundTruthGeometry", "LobesView", "Skipped",
           "SpectraByLayer", "SpectraOverCheckpoints", "SuperpositionByLayer", "ToyLab", "AnalysisError", "DEFAULT_TEMPLATES", "analogy_pairs", "analysis_key", "best_circle",
           "checkpoint_options", "checkpoint_spectrum", "circles_at_answer", "circles_from_tokens",
           "concepts_from_unembedding", "crystals_from_tokens", "cyclic_arithmetic_facts", "cyclic_circles",
           "cyclic_token_ids", "decoder_circles_for_sae", "default_checkpoints", "fill_template", "geometry_by_layer",
           "ground_truth_geometry", "harvest_key_of", "lobes_for_sae", "lobes_view", "organism_ground_truth",
           "probes_from_tokens", "representations_at", "run_all", "site_spectrum", "slot_prompt", "spectra_by_layer",
           "spectra_over_checkpoints", "superposition_by_layer", "toy_lab",
           "VIEWS", "VIEW_KINDS", "PAGE_MAX_PROBE_ITEMS", "concept_geometry", "sets_for_view"]
