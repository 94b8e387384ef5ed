"""The one registry of the session-state keys the pages share.

Each StateKey says: its default; where a session document keeps it (`saved`); the domain its widget
offers (`check`, which returns the clean value or raises core.inputs.InvalidValue); and, for the sources,
the URL query parameter that keeps them across a page reload (`url`, present only while `when` holds).
app/state.py derives everything else from this list: init, session save and restore, URL persistence.
Widgets read their options from OPTIONS, so a widget and its check cannot drift apart.

Keys a single page owns (geo_* other than the dial's, toy_*, spectra_*...) are not listed: they live and die with their page.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.sources import (
    CORPUS_SOURCES,
    MAX_SAES,
    MODEL_NAME_RE,
    MODEL_SOURCES,
    SPLIT_RE,
    StateValues,
    check_dataset_name,
    check_sae_ref,
)
from core.errors import AtlasError
from core.inputs import InvalidValue, check_choice, check_int, check_list, check_text, optional
from core.known_dirs import DirKind

# The options of the widgets whose value is a choice (pages read them from here).
OPTIONS: dict[str, tuple[Any, ...]] = {
    "model_source": tuple(MODEL_SOURCES),
    "corpus_source": tuple(CORPUS_SOURCES),
    "color_by": ("Reconstruction error", "A feature"),
    "heatmap_quantity": ("recon_error", "l0", "l1", "resid_norm"),
    "map_method": ("PCA (quick)", "UMAP"),
    "map_color": ("density", "lobe", "layer"),
    "steer_mode": ("add", "clamp"),
    "ablate_mode": ("zero", "mean"),
    "concept_position": ("last", "mean"),   # where a word split into several tokens is read (docs/CONCEPTS.md)
}
CONCEPT_VIEWS = ("circles", "crystals", "concepts", "probes")   # core.analysis.concept_views.VIEWS
MAX_CONCEPT_UPLOADS = 20
SET_LABEL_RE = r"(library|organism|upload): [^\x00-\x1f]{1,120}"   # app.concept_sets labels
HARVEST_TOKENS = (1_000, 10_000_000)   # the sidebar's number input range
MAX_PROMPT = 20_000                    # as core.sessions allows
MAX_FEATURE_ID = 2**31 - 1
HOOK_RE = r"[A-Za-z0-9_.]{1,200}"
MAX_STEER_PROMPT = 2_000               # a session's settings hold strings of up to 2,000 characters
FEATURE_LIST_RE = r"[0-9#:.,;eE+\- ]*"  # '12:4, 87:-2' and sweeps '0.5, 1, 2' (parsed in core.interventions.requests)
MAX_DIAL_STEPS = 100                   # the dial clamps to its concept's range (k - 1 steps either way)
MAX_DIAL_PROMPT = 300                  # the dial's own-prompt box


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidValue("is not true or false")
    return value


def _number(minimum: float, maximum: float) -> Callable[[Any], float]:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not minimum <= value <= maximum:
            raise InvalidValue(f"is not a number in {minimum:g}..{maximum:g}")
        return float(value)
    return check


def _steer_text(max_length: int) -> Callable[[Any], str]:
    return lambda value: check_text(value, max_length=max_length)


def _choice(name: str) -> Callable[[Any], Any]:
    return lambda value: check_choice(value, OPTIONS[name])


def _checkpoint(value: Any) -> str:
    from core.sources.organism import list_checkpoints

    try:
        offered = list_checkpoints()
    except AtlasError:
        offered = ["final"]
    return check_choice(value, offered)


def _tl_checkpoint(value: Any) -> str:
    from core.sources.models import parse_tl_checkpoint

    text = check_text(value, max_length=40, pattern=r"[A-Za-z0-9:= ]*")
    try:
        parse_tl_checkpoint(text)
    except AtlasError:
        raise InvalidValue("is not a checkpoint index or training step") from None
    return text


def _device(value: Any) -> str:
    from core.device import available_devices

    return check_choice(value, ["auto", *available_devices()])


def _known_dir(kind: DirKind) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        from core.known_dirs import KnownDirectories

        path = check_text(value, max_length=1000)
        if path and not KnownDirectories().is_known(kind, path):
            raise InvalidValue("is a directory this server has not loaded from its sidebar; type it there to use it")
        return path
    return check


def _dir_to_url(kind: DirKind) -> Callable[[Any], str | None]:
    def encode(path: Any) -> str | None:
        from core.known_dirs import KnownDirectories

        return KnownDirectories.id_for(kind, path) if path else None
    return encode


def _dir_from_url(kind: DirKind) -> Callable[[str], str]:
    def decode(dir_id: str) -> str:
        from core.known_dirs import KnownDirectories

        path = KnownDirectories().path_of(kind, dir_id)
        if path is None:
            raise InvalidValue("names a directory this server has not loaded from its sidebar")
        return path
    return decode


def _corpus_file(value: Any) -> str:
    from core.uploads import UploadError, upload_name_of

    if value == "":
        return ""
    try:
        name = upload_name_of(check_text(value, max_length=1000))
    except UploadError:
        raise InvalidValue("is not a file uploaded to this Atlas (only its own uploads can be a corpus: upload "
                           "the file in the sidebar under Sources > Corpus)") from None
    if name.endswith(".json"):
        raise InvalidValue("is a concept set, not a corpus (.txt, .jsonl or .csv)")
    return name


def _concept_upload(value: Any) -> dict[str, str]:
    """{"file": an upload name (.csv / .json), "kind": "" or a kind (a plain word list), "name": the set's name}."""
    from core.concepts import KINDS
    from core.uploads import UploadError, upload_name_of

    if not isinstance(value, dict) or set(value) != {"file", "kind", "name"}:
        raise InvalidValue("is not an uploaded concept set")
    try:
        file = upload_name_of(check_text(value["file"], max_length=40))
    except UploadError:
        raise InvalidValue("names a concept file no longer uploaded to this Atlas (upload it again on the "
                           "Geometry page)") from None
    if not file.endswith((".csv", ".json")):
        raise InvalidValue("is not a .csv or .json concept file")
    kind = "" if value["kind"] == "" else check_choice(value["kind"], KINDS)
    return {"file": file, "kind": kind, "name": check_text(value["name"], max_length=100, pattern=r"[^\x00-\x1f]+")}


def _dataset(value: Any) -> str:
    return "" if value == "" else check_dataset_name(value)


def _sae_set(value: Any) -> list[str]:
    return sorted(check_list(value, check_sae_ref, max_items=MAX_SAES))


def _sae_set_to_url(refs: Any) -> list[str] | None:
    from app.sources import canonical, organism_refs

    if refs is None or canonical(refs) == canonical(organism_refs()):
        return None   # the default: every organism layer
    return canonical(refs) or ["none"]


def _sae_set_from_url(values: list[str]) -> list[str]:
    return [] if values == ["none"] else values


@dataclass(frozen=True)
class StateKey:
    name: str
    default: Any
    label: str                                   # how a notice names it
    saved: str | None = None                     # "ui": settings["ui_<name>"]; "settings": settings[name];
    #                                              a Session field name; None: not in session documents
    check: Callable[[Any], Any] | None = None    # the widget's domain
    url: str | None = None                       # query parameter (sources only)
    when: tuple[str, tuple[str, ...]] | None = None   # in the URL only while this key has one of these values
    repeated: bool = False                       # a list: one query parameter per entry
    to_url: Callable[[Any], Any] | None = None   # value -> parameter text (None: leave it out)
    from_url: Callable[[Any], Any] | None = None  # parameter text -> value (then `check`)

    def fresh_default(self) -> Any:
        return copy.deepcopy(self.default)


_TL = ("model_source", ("transformer_lens",))
REGISTRY: tuple[StateKey, ...] = (
    # sources (the sidebar)
    StateKey("model_source", "organism", "model source", "ui", _choice("model_source"), url="model"),
    StateKey("tl_name", "gpt2", "TransformerLens model name", "ui",
             lambda v: check_text(v, max_length=200, pattern=MODEL_NAME_RE), url="tl", when=_TL),
    StateKey("tl_checkpoint", "", "TransformerLens checkpoint", "ui", _tl_checkpoint, url="tlckpt", when=_TL),
    StateKey("hf_dir", "", "model directory", "ui", _known_dir("model"), url="hf",
             when=("model_source", ("hf_dir",)), to_url=_dir_to_url("model"), from_url=_dir_from_url("model")),
    StateKey("checkpoint", "final", "organism checkpoint", "ui", _checkpoint, url="ckpt",
             when=("model_source", ("organism",))),
    StateKey("sae_set", None, "SAE set", "ui", optional(_sae_set), url="sae", repeated=True,
             to_url=_sae_set_to_url, from_url=_sae_set_from_url),
    StateKey("sae_release", None, "SAELens release being browsed"),
    StateKey("corpus_source", "world", "corpus source", "ui", _choice("corpus_source"), url="corpus"),
    StateKey("corpus_file", "", "corpus file", "ui", _corpus_file, url="file", when=("corpus_source", ("file",))),
    StateKey("corpus_column", "text", "text column", "ui", lambda v: check_text(v, max_length=200), url="col",
             when=("corpus_source", ("file", "hf_dataset"))),
    StateKey("hf_dataset", "", "dataset name", "ui", _dataset, url="ds", when=("corpus_source", ("hf_dataset",))),
    StateKey("hf_split", "train", "dataset split", "ui", lambda v: check_text(v, max_length=100, pattern=SPLIT_RE),
             url="split", when=("corpus_source", ("hf_dataset",))),
    StateKey("device", "auto", "device", "settings", _device, url="device"),
    StateKey("harvest_tokens", 100_000, "harvest token count", "settings",
             lambda v: check_int(v, minimum=HARVEST_TOKENS[0], maximum=HARVEST_TOKENS[1]), url="tokens"),
    # what the pages show
    StateKey("prompt", "on monday the king of france went to paris", "prompt", "prompt",
             lambda v: check_text(v, max_length=MAX_PROMPT)),
    StateKey("layer", None, "selected layer", "selected_layer",
             optional(lambda v: check_text(v, max_length=200, pattern=HOOK_RE))),
    StateKey("feature", None, "selected feature", "selected_feature",   # None: not chosen (a page picks the top one)
             optional(lambda v: check_int(v, minimum=0, maximum=MAX_FEATURE_ID))),
    StateKey("color_by", "Reconstruction error", "token colouring", "settings", _choice("color_by")),
    StateKey("heatmap_quantity", "recon_error", "heatmap quantity", "settings", _choice("heatmap_quantity")),
    StateKey("map_method", "PCA (quick)", "feature map layout", "settings", _choice("map_method")),
    StateKey("map_color", "density", "feature map colouring", "settings", _choice("map_color")),
    StateKey("position", 1, "selected token", "settings", lambda v: check_int(v, minimum=0, maximum=1_000_000)),
    StateKey("search", "", "feature search", "settings", lambda v: check_text(v, max_length=200)),
    StateKey("concept_position", "last", "multi-token read position", "settings", _choice("concept_position")),
    StateKey("concept_uploads", [], "uploaded concept sets", "settings",
             lambda v: check_list(v, _concept_upload, max_items=MAX_CONCEPT_UPLOADS)),
    *(StateKey(f"concept_sets_{view}", None, f"concept sets ({view})", "settings",   # None: the page's default
               optional(lambda v: check_list(v, lambda x: check_text(x, max_length=140, pattern=SET_LABEL_RE),
                                             max_items=50)))
      for view in CONCEPT_VIEWS),
    StateKey("page", "home", "page", "page", lambda v: check_text(v, max_length=32, pattern=r"[a-z_]{1,32}")),
    # the Steer page's inputs (pages/steer.py; saved so a reopened session finds its stored results)
    StateKey("steer_layer", None, "Steer page SAE", "settings",
             optional(lambda v: check_text(v, max_length=200, pattern=HOOK_RE))),
    StateKey("steer_prompt", "on monday the king of france went to", "steering prompt", "settings",
             _steer_text(MAX_STEER_PROMPT)),
    StateKey("steer_features", "", "steering features", "settings",
             lambda v: check_text(v, max_length=400, pattern=FEATURE_LIST_RE)),
    StateKey("steer_mode", "add", "steering mode", "settings", _choice("steer_mode")),
    StateKey("steer_scales", "1", "steering sweep", "settings",
             lambda v: check_text(v, max_length=200, pattern=FEATURE_LIST_RE)),
    StateKey("steer_relative", False, "strengths relative to the max activation", "settings", _flag),
    StateKey("steer_from", 0, "first steered position", "settings", lambda v: check_int(v, minimum=0, maximum=1_000_000)),
    StateKey("steer_tokens", 20, "tokens to generate", "settings", lambda v: check_int(v, minimum=1, maximum=64)),
    StateKey("steer_temperature", 0.0, "sampling temperature", "settings", _number(0.0, 5.0)),
    StateKey("steer_seed", 0, "sampling seed", "settings", lambda v: check_int(v, minimum=0, maximum=2**31 - 1)),
    StateKey("ablate_prompt", "on monday the king of france went to", "ablation prompt", "settings",
             _steer_text(MAX_STEER_PROMPT)),
    StateKey("ablate_features", "", "ablated features", "settings",
             lambda v: check_text(v, max_length=400, pattern=FEATURE_LIST_RE)),
    StateKey("ablate_mode", "zero", "ablation mode", "settings", _choice("ablate_mode")),
    StateKey("ablate_target", "", "token to follow", "settings", _steer_text(200)),
    StateKey("patch_clean", "one month after january is", "clean prompt", "settings", _steer_text(MAX_STEER_PROMPT)),
    StateKey("patch_corrupted", "one month after march is", "corrupted prompt", "settings",
             _steer_text(MAX_STEER_PROMPT)),
    StateKey("patch_correct", "february", "correct answer", "settings", _steer_text(200)),
    StateKey("patch_wrong", "april", "wrong answer", "settings", _steer_text(200)),
    # the circle dial on the Geometry page (app/circle_dial.py; saved so a reopened session turns the same circle)
    StateKey("geo_dial_concept", None, "circle dial concept", "settings",   # None: the first cyclic concept
             optional(lambda v: check_text(v, max_length=40, pattern=r"[a-z_]{1,40}"))),
    StateKey("geo_dial_site", None, "circle dial site", "settings",         # None: the strongest circle's site
             optional(lambda v: check_text(v, max_length=200, pattern=HOOK_RE))),
    StateKey("geo_dial_steps", 1.0, "circle dial steps", "settings", _number(-MAX_DIAL_STEPS, MAX_DIAL_STEPS)),
    StateKey("geo_dial_prompt", 0, "circle dial prompt", "settings", lambda v: check_int(v, minimum=0, maximum=10_000)),
    StateKey("geo_dial_own", "", "circle dial's own prompt", "settings", _steer_text(MAX_DIAL_PROMPT)),
    # the app's own bookkeeping (never saved as such)
    StateKey("artifact_keys", {}, "artifacts in use"),      # purpose -> artifact key; a session saves the keys
    StateKey("valid_sources", None, "sources in use"),      # app.sources.Sources that last loaded
    StateKey("chunk_note", None, "chunking note"),          # why the corpus chunks have their length
    StateKey("opened_session", None, "opened session"),     # {"id", "title", "notes", "created", "url"}
)
KEYS: dict[str, StateKey] = {key.name: key for key in REGISTRY}


def options(name: str) -> list[Any]:
    """The options a choice widget offers (its domain)."""
    return list(OPTIONS[name])


def in_url(key: StateKey, values: StateValues) -> bool:
    """Whether `key` belongs in the URL for these values (its `when` condition holds)."""
    if key.url is None:
        return False
    if key.when is None:
        return True
    other, allowed = key.when
    return values.get(other, KEYS[other].default) in allowed
