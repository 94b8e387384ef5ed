"""The result types of core.analysis: one frozen dataclass per view, its parts dataclasses too.

Every type is a `core.jsonable.Result`: `to_dict()` is plain JSON (what the store keeps),
`Type.from_dict(d)` rebuilds it, `==` compares arrays by value. A part that could not be computed
on these inputs is a `Skipped(reason)` in its place (one idiom: `isinstance(part, Skipped)`).
Per-site and per-SAE entries are tuples in layer order; each entry names its own site.

    view function               result                  parts
    spectra_by_layer            SpectraByLayer          SiteSpectrum (SpectralSummary, IntrinsicDimension)
    checkpoint_spectrum         CheckpointSpectrum
    spectra_over_checkpoints    SpectraOverCheckpoints  PhaseSegmentation per site
    superposition_by_layer      SuperpositionByLayer    SAESuperposition (EffectiveFeatures, ConvergenceCurve,
                                                        InterferenceStats)
    toy_lab                     ToyLab                  ToySettings, ToyGeometry
    geometry_by_layer           GeometryByLayer         SAEGeometry (GalaxySpectrum, ClusteringEntropy, Lobes,
                                                        DecoderClusters -> DecoderCluster)
    lobes_view                  LobesView               Lobes (LobeAgreement)
    ground_truth_geometry       GroundTruthGeometry     Circles -> CycleCircles -> CircleLocation -> SiteCircle,
                                                        BestCircle; Crystals -> SiteCrystal -> CrystalFit;
                                                        Concepts -> Category; Probes -> AttributeProbes
    run_all                     AllAnalyses             the views above
Views computed through the store carry their artifact `key` ("" when not stored).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, TypeVar

from core.hooks import layer_of
from core.jsonable import FloatArray, IntArray, Result
from core.metrics.circles import Circularity
from core.metrics.concepts import HierarchicalOrthogonality
from core.metrics.crystals import CrystalQuality
from core.metrics.geometry import ClusteringEntropy, GalaxySpectrum, LobeAgreement
from core.metrics.intrinsic_dim import IntrinsicDimension
from core.metrics.probes import LayerProbes
from core.metrics.spectral import PhaseSegmentation, SpectralSummary
from core.metrics.superposition import ConvergenceCurve, EffectiveFeatures, InterferenceStats
from core.metrics.toy import ToyGeometry

Entry = TypeVar("Entry")


@dataclass(frozen=True, eq=False)
class Skipped(Result):
    """A part that these inputs do not allow, and why (written for the reader, shown as it is)."""

    reason: str


def _entry(entries: Sequence[Entry], name: str, attribute: str) -> Entry:
    for entry in entries:
        if getattr(entry, attribute) == name:
            return entry
    raise KeyError(f"no entry for {name!r}")


class _Site:
    """Mixin for entries with a `site`: their layer (None outside the blocks, e.g. "unembed")."""

    site: str

    @property
    def layer(self) -> int | None:
        return layer_of(self.site)


class _Hook:
    """Mixin for per-SAE entries: their layer."""

    hook_name: str

    @property
    def layer(self) -> int | None:
        return layer_of(self.hook_name)


# ------------------------------------------------------------------------------------- spectra
@dataclass(frozen=True, eq=False)
class SiteSpectrum(_Site, Result):
    """One site: the spectral summary of its covariance and the intrinsic dimension of its reservoir."""

    site: str
    spectrum: SpectralSummary  # d, RankMe, participation ratio, alpha-ReQ with its fit range, eigenvalues
    twonn: IntrinsicDimension | Skipped
    mle: IntrinsicDimension | Skipped


@dataclass(frozen=True, eq=False)
class SpectraByLayer(Result):
    per_site: tuple[SiteSpectrum, ...]  # layer order
    fit_note: str  # the small-d fit ranges, when the paper's did not fit
    n_tokens: int
    key: str = ""

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(e.site for e in self.per_site)

    def at(self, site: str) -> SiteSpectrum:
        return _entry(self.per_site, site, "site")


@dataclass(frozen=True, eq=False)
class CheckpointSpectrum(Result):
    """RankMe, alpha-ReQ and PR of every resid_post site of one checkpoint (arrays aligned with `sites`)."""

    sites: tuple[str, ...]
    rankme: FloatArray
    alpha: FloatArray
    participation_ratio: FloatArray
    fit_note: str
    harvest: str  # the key of the moments-only harvest it was read from
    key: str = ""


@dataclass(frozen=True, eq=False)
class SpectraOverCheckpoints(Result):
    """[site x checkpoint] tables and the phases over training of each site."""

    sites: tuple[str, ...]
    checkpoints: tuple[str, ...]
    steps: tuple[int, ...]
    rankme: FloatArray  # [site, checkpoint]
    alpha: FloatArray
    participation_ratio: FloatArray
    phases: dict[str, PhaseSegmentation]  # by site
    fit_note: str
    max_tokens: int
    smoothing: float
    checkpoint_keys: tuple[str, ...]
    key: str = ""

    @property
    def layers(self) -> tuple[int | None, ...]:
        return tuple(layer_of(s) for s in self.sites)


# ------------------------------------------------------------------------------- superposition
@dataclass(frozen=True, eq=False)
class SAESuperposition(_Hook, Result):
    hook_name: str
    d_sae: int
    width: int  # N = d_in of the site
    explained_variance: float
    l0: float
    n_tokens: int
    effective: EffectiveFeatures | Skipped
    convergence: ConvergenceCurve | Skipped
    interference: InterferenceStats  # of the decoder rows


@dataclass(frozen=True, eq=False)
class SuperpositionByLayer(Result):
    per_sae: tuple[SAESuperposition, ...]  # layer order
    unembedding: InterferenceStats | Skipped  # of the unembedding rows (W_U.T)
    key: str = ""

    @property
    def hooks(self) -> tuple[str, ...]:
        return tuple(e.hook_name for e in self.per_sae)


@dataclass(frozen=True, eq=False)
class ToySettings(Result):
    n: int
    m: int
    sparsity: float
    importance_decay: float
    steps: int
    sae_dictionary: int | None
    seed: int


@dataclass(frozen=True, eq=False)
class ToyLab(Result):
    """One trained toy model (Elhage et al. 2022) and F measured through an SAE on it."""

    settings: ToySettings
    W: FloatArray  # [m, n]
    importance: FloatArray  # [n]
    final_loss: float
    geometry: ToyGeometry
    F_true: float
    F_sae: float
    sae_dictionary: int
    key: str = ""


# ------------------------------------------------------------------------------------ geometry
@dataclass(frozen=True, eq=False)
class Lobes(Result):
    """Spectral clusters of co-occurrence (lobes) and of decoder angles, and their agreement."""

    features: IntArray  # SAE feature ids, one per label
    n_lobes: int
    affinity: str
    n_chunks: int
    labels: IntArray  # lobe of each feature
    geometric: IntArray  # decoder-geometry cluster of each feature
    agreement: LobeAgreement
    lobe_sizes: IntArray


@dataclass(frozen=True, eq=False)
class DecoderCluster(Result):
    cluster: int
    features: IntArray
    score: float  # the ranking score (share of mass on cyclic tokens, or total mass)
    n_tokens: int
    explained_variance_ratio: FloatArray
    projections: FloatArray  # [n_shown, n_components] reconstructions on their PCs
    tokens: IntArray  # token id of each shown projection
    top_tokens: tuple[int, ...]
    circularity: dict[str, Circularity]  # cyclic set -> circularity of its items' mean PCs


@dataclass(frozen=True, eq=False)
class DecoderClusters(Result):
    n_clusters: int
    cluster_sizes: IntArray
    clusters: tuple[DecoderCluster, ...]  # the top ones, best first
    ranked_by: str
    method: str = "exact"  # how the labels were found: exact, or sampled above core.metrics.knn.EXACT_MAX_ROWS


@dataclass(frozen=True, eq=False)
class SAEGeometry(_Hook, Result):
    hook_name: str
    galaxy: GalaxySpectrum | Skipped
    clustering_entropy: ClusteringEntropy | Skipped
    lobes: Lobes | Skipped
    circles: DecoderClusters | Skipped


@dataclass(frozen=True, eq=False)
class GeometryByLayer(Result):
    per_sae: tuple[SAEGeometry, ...]  # layer order
    key: str = ""

    @property
    def hooks(self) -> tuple[str, ...]:
        return tuple(e.hook_name for e in self.per_sae)

    def at(self, hook_name: str) -> SAEGeometry:
        return _entry(self.per_sae, hook_name, "hook_name")


@dataclass(frozen=True, eq=False)
class LobesView(Result):
    hook_name: str
    lobes: Lobes | Skipped
    key: str = ""


# ------------------------------------------------------------------------ ground-truth geometry
@dataclass(frozen=True, eq=False)
class SiteCircle(_Site, Result):
    site: str  # a resid site, or "unembed" (the items' unembedding rows)
    circularity: Circularity
    pcs: FloatArray  # [k, <= 5] the items on their top PCs
    pc_variance: FloatArray


@dataclass(frozen=True, eq=False)
class CircleLocation(Result):
    per_site: tuple[SiteCircle, ...]  # sites where the items differ
    n_prompts: IntArray | None  # prompts per answer (answer position), None at the item token

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(e.site for e in self.per_site)

    def at(self, site: str) -> SiteCircle:
        return _entry(self.per_site, site, "site")


@dataclass(frozen=True, eq=False)
class BestCircle(Result):
    """The strongest circle of a cycle over locations and sites."""

    location: str
    site: str
    layer: int | None
    frequency: int
    share: float
    p_value: float
    coprime: bool
    visit_step: int
    regular_visit: bool
    circle_balance: float
    circle: bool  # p < alpha at a frequency with a 2-D Fourier plane


@dataclass(frozen=True, eq=False)
class CycleCircles(Result):
    words: tuple[str, ...]
    locations: dict[str, CircleLocation]  # "token", "answer position"
    best: BestCircle | Skipped


@dataclass(frozen=True, eq=False)
class Circles(Result):
    cycles: dict[str, CycleCircles]  # cyclic set (weekdays, months) -> its circles


@dataclass(frozen=True, eq=False)
class CrystalArrows(Result):
    """2-D projections of the analogy pairs' a and b words (arrows a -> b)."""

    a: FloatArray
    b: FloatArray


@dataclass(frozen=True, eq=False)
class CrystalFit(Result):
    quality: CrystalQuality
    pca: CrystalArrows
    lda: CrystalArrows


@dataclass(frozen=True, eq=False)
class SiteCrystal(_Site, Result):
    site: str
    fit: CrystalFit | Skipped


@dataclass(frozen=True, eq=False)
class Crystals(Result):
    relations: tuple[str, ...]  # of each pair
    words_a: tuple[str, ...]
    words_b: tuple[str, ...]
    per_site: tuple[SiteCrystal, ...]

    @property
    def sites(self) -> tuple[str, ...]:
        return tuple(e.site for e in self.per_site)


@dataclass(frozen=True, eq=False)
class Category(Result):
    kingdom: str
    words: tuple[str, ...]
    ell: FloatArray  # its vector representation in the causal inner product
    word_rows: FloatArray  # its words' rows of g


@dataclass(frozen=True, eq=False)
class Concepts(Result):
    kingdoms: dict[str, HierarchicalOrthogonality]
    categories: dict[str, Category]
    d_model: int


@dataclass(frozen=True, eq=False)
class AttributeProbes(Result):
    probes: LayerProbes
    item_names: tuple[str, ...]  # the entity of each sample row


@dataclass(frozen=True, eq=False)
class Probes(Result):
    attributes: dict[str, AttributeProbes | Skipped]  # "space", "time"


@dataclass(frozen=True, eq=False)
class DroppedWord(Result):
    word: str
    reason: str  # why the model cannot read it (unknown token, no single-token form, no readable prompt...)


@dataclass(frozen=True, eq=False)
class SetReading(Result):
    """How the model read one concept set for one view (core.analysis.concept_views): never silently dropped."""

    set_name: str
    kind: str
    view: str  # circles | crystals | concepts | probes
    n_items: int
    n_read: int
    position: str  # "last" | "mean" (the word's tokens), "unembedding row" (concepts)
    dropped: tuple[DroppedWord, ...]
    split: tuple[str, ...]  # words read over several tokens (at `position`)
    skipped_templates: tuple[str, ...]  # templates with words the tokenizer does not know, with the reason
    notes: tuple[str, ...]  # locations that could not be scored, samples taken


@dataclass(frozen=True, eq=False)
class GroundTruthGeometry(Result):
    sites: tuple[str, ...]
    circles: Circles | Skipped
    crystals: Crystals | Skipped
    concepts: Concepts | Skipped
    probes: Probes | Skipped
    position: str = "last"  # where a word split into several tokens is read ("last" | "mean")
    readings: tuple[SetReading, ...] = ()  # one per concept set read (concept_geometry)
    key: str = ""

    @property
    def skipped(self) -> Skipped | None:
        """The reason when every part was skipped for one reason (no ground truth), else None."""
        parts = (self.circles, self.crystals, self.concepts, self.probes)
        reasons = {p.reason for p in parts if isinstance(p, Skipped)}
        return Skipped(reasons.pop()) if len(reasons) == 1 and all(isinstance(p, Skipped) for p in parts) else None


# ------------------------------------------------------------------------------------- run_all
@dataclass(frozen=True, eq=False)
class AllAnalyses(Result):
    spectra: SpectraByLayer
    superposition: SuperpositionByLayer | Skipped
    geometry: GeometryByLayer | Skipped
    ground_truth: GroundTruthGeometry
    checkpoints: SpectraOverCheckpoints | Skipped
    page_views: tuple[str, ...] = ()   # keys of what the pages read besides these (maps, lobes, concept views)

    @property
    def artifact_keys(self) -> tuple[str, ...]:
        views = (self.spectra, self.superposition, self.geometry, self.ground_truth, self.checkpoints)
        return tuple(v.key for v in views if not isinstance(v, Skipped) and v.key) + self.page_views
