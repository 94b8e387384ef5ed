"""The sidebar's choice of sources: the values in session state, their domains, and the specs built from them.

The SAE set is a list of short references, the one form it takes in session state, in session documents
and in the URL:
    org:<hook name>            an SAE of the embedded organism          org:blocks.1.hook_resid_post
    rel:<release>/<sae id>     an SAE of a SAELens release              rel:gpt2-small-res-jb/blocks.6.hook_resid_pre
    dir:<id>                   a local SAELens directory this server    dir:3f9a2c1b0d4e
                               has loaded from its sidebar (core.known_dirs)
The set is a set: `canonical` sorts it, so the same SAEs in any order are the same Sources (and the same
cache entries). A corpus file is named by its upload name (core.uploads), never by a path.

Everything here reads a plain mapping of values (st.session_state, or a restored document's values), so
the sidebar, session restore and the bundle report build specs the same way.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import AtlasError
from core.inputs import InvalidValue, check_text
from core.sources.corpus import CorpusSpec
from core.sources.models import ModelSpec
from core.sources.saes import SAESpec

MODEL_SOURCES = {"organism": "Embedded organism", "transformer_lens": "TransformerLens name",
                 "hf_dir": "Local Hugging Face directory"}
CORPUS_SOURCES = {"world": "Organism world corpus", "file": "Uploaded file (.txt/.jsonl/.csv)",
                  "hf_dataset": "Hugging Face dataset"}
MAX_SAES = 32
SAE_REF_RE = re.compile(r"^(org|rel|dir):([A-Za-z0-9_.-]{1,100})(?:/([A-Za-z0-9_./-]{1,120}))?$")
MODEL_NAME_RE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?"
DATASET_NAME_RE = MODEL_NAME_RE
SPLIT_RE = r"[A-Za-z0-9_.:%+\[\]-]{1,100}"

# Widget values read by key: a plain dict, or st.session_state itself (a MutableMapping whose keys are str | int).
StateValues = Mapping[str, Any] | MutableMapping[str | int, Any]


@dataclass(frozen=True)
class Sources:
    model: ModelSpec
    saes: tuple[SAESpec, ...]
    corpus: CorpusSpec


# ---- SAE references ---------------------------------------------------------------------------------
def organism_refs() -> list[str]:
    """One reference per SAE of the organism, in layer order ([] when the organism has none)."""
    from core.sources.organism import organism_sae_dirs

    try:
        return [f"org:{hook}" for hook in organism_sae_dirs()]
    except (AtlasError, OSError, ValueError):
        return []


def check_sae_ref(value: Any) -> str:
    """A reference to an SAE this server can offer: an organism layer, an id of an installed SAELens
    release, or a local directory loaded here before. InvalidValue otherwise."""
    ref = check_text(value, max_length=240)
    match = SAE_REF_RE.match(ref)
    if not match:
        raise InvalidValue("is not an SAE reference (org:<hook>, rel:<release>/<id> or dir:<id>)")
    kind, head, tail = match.groups()
    if kind == "org":
        if ref not in organism_refs():
            raise InvalidValue("names an organism layer that has no SAE")
    elif kind == "rel":
        from core.sources.saes import list_releases, list_sae_ids

        if tail is None or head not in list_releases() or tail not in list_sae_ids(head):
            raise InvalidValue("names an SAE that SAELens's list of releases does not have")
    else:
        from core.known_dirs import KnownDirectories

        if tail is not None or KnownDirectories().path_of("sae", head) is None:
            raise InvalidValue("names a local SAE directory this server has not loaded; type its path in the "
                               "sidebar to add it")
    return ref


def canonical(refs: Any) -> list[str]:
    """The SAE set in its one order (sorted, no repeats), whatever order it was chosen in."""
    return sorted(set(refs or ()))


def sae_spec(ref: str) -> SAESpec:
    kind, _, rest = ref.partition(":")
    if kind == "org":
        return SAESpec(source="organism", hook_name=rest)
    if kind == "rel":
        release, _, sae_id = rest.partition("/")
        return SAESpec(source="release", release=release, sae_id=sae_id)
    from core.known_dirs import KnownDirectories

    path = KnownDirectories().path_of("sae", rest)
    if path is None:
        raise AtlasError("A local SAE directory of this choice is not known to this server any more: type its "
                         "path in the sidebar under Sources > SAEs to add it again.")
    return SAESpec(source="dir", path=path)


def sae_label(ref: str) -> str:
    """How the sidebar names an SAE reference."""
    kind, _, rest = ref.partition(":")
    if kind == "org":
        return f"organism {rest}"
    if kind == "rel":
        return rest.replace("/", " \u00b7 ", 1)
    from core.known_dirs import KnownDirectories

    path = KnownDirectories().path_of("sae", rest)
    return f"directory {Path(path).name if path else '(unknown)'} [{rest}]"


def chosen_refs(values: StateValues) -> list[str]:
    """The SAE set of `values`: None (never chosen) means every organism layer when the model is the organism."""
    refs = values.get("sae_set")
    if refs is None:
        refs = organism_refs() if values.get("model_source", "organism") == "organism" else []
    return canonical(refs)


# ---- specs --------------------------------------------------------------------------------------------
def model_spec(values: StateValues) -> ModelSpec:
    source = values.get("model_source")
    device = values.get("device") or "auto"
    if source == "transformer_lens":
        name = (values.get("tl_name") or "").strip()
        if not name:
            raise AtlasError("Type the name of a TransformerLens model (for example gpt2 or pythia-70m-deduped).")
        return ModelSpec(source="transformer_lens", name=name,
                         checkpoint=(values.get("tl_checkpoint") or "").strip() or None, device=device)
    if source == "hf_dir":
        path = (values.get("hf_dir") or "").strip()
        if not path:
            raise AtlasError("Type the path of a local Hugging Face model directory.")
        return ModelSpec(source="hf_dir", name=Path(path).name or "local", path=path, device=device)
    return ModelSpec(source="organism", checkpoint=values.get("checkpoint") or "final", device=device)


def sae_specs(values: StateValues) -> tuple[SAESpec, ...]:
    return tuple(sae_spec(ref) for ref in chosen_refs(values))


def corpus_base(values: StateValues) -> CorpusSpec:
    """The corpus spec before the SAEs set its chunk length (core.sources.chunking)."""
    source = values.get("corpus_source")
    column = (values.get("corpus_column") or "").strip() or None
    if source == "file":
        from core.uploads import upload_path

        if not values.get("corpus_file"):
            raise AtlasError("Upload a .txt, .jsonl or .csv file for the corpus (Sources > Corpus in the sidebar).")
        return CorpusSpec(source="file", path=str(upload_path(values["corpus_file"])), column=column)
    if source == "hf_dataset":
        name = check_dataset_name((values.get("hf_dataset") or "").strip())
        return CorpusSpec(source="hf_dataset", name=name, split=(values.get("hf_split") or "train").strip(),
                          column=column)
    return CorpusSpec(source="world", max_chunks=None)


def check_dataset_name(value: Any) -> str:
    """A Hugging Face dataset name, never a path: `datasets.load_dataset` would read a local directory or
    file of that name, which would let a typed or restored name open server files."""
    if not value:
        raise AtlasError("Type the name of a Hugging Face dataset (for example wikitext or roneneldan/TinyStories).")
    try:
        name = check_text(value, max_length=200, pattern=DATASET_NAME_RE)
    except InvalidValue:
        raise InvalidValue("is not a Hugging Face dataset name (owner/name, letters, digits, '-', '_', '.'); "
                           "to use a file of your own, upload it as the corpus") from None
    if Path(name).exists():
        raise InvalidValue("names a path on the server, not a Hugging Face dataset; to use a file of your own, "
                           "upload it as the corpus")
    return name


def request(values: StateValues) -> Sources:
    """The sources `values` ask for (the corpus before chunking); AtlasError when a choice is incomplete."""
    return Sources(model_spec(values), sae_specs(values), corpus_base(values))


def default_sources() -> Sources:
    return Sources(ModelSpec(source="organism", checkpoint="final"),
                   tuple(sae_spec(ref) for ref in canonical(organism_refs())), CorpusSpec(source="world", max_chunks=None))
