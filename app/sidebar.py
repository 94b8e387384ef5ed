"""The sidebar: model, checkpoint, SAE(s), corpus and device; the model card and provenance.

A choice that fails to load shows the error and leaves the previous valid sources in use.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from app.resources import Sources, atlas_home, current_sources, default_sources, get_model, get_saes
from core.errors import AtlasError
from core.sources.corpus import CorpusSpec
from core.sources.models import ModelSpec
from core.sources.saes import SAESpec

MODEL_SOURCES = {"organism": "Embedded organism", "transformer_lens": "TransformerLens name",
                 "hf_dir": "Local Hugging Face directory"}
SAE_SOURCES = {"organism": "Organism SAEs (one per layer)", "release": "SAELens release", "dir": "Local SAELens directory"}
CORPUS_SOURCES = {"world": "Organism world corpus", "file": "Uploaded file (.txt/.jsonl/.csv)",
                  "hf_dataset": "Hugging Face dataset"}


def _organism_checkpoints() -> list[str]:
    from core.sources.organism import list_checkpoints

    try:
        return list_checkpoints()
    except AtlasError:
        return ["final"]


def _organism_hooks() -> list[str]:
    from core.sources.organism import organism_sae_dirs

    return list(organism_sae_dirs())


def _model_spec(device: str) -> ModelSpec:
    source = st.session_state["model_source"]
    if source == "organism":
        return ModelSpec(source="organism", checkpoint=st.session_state["checkpoint"],
                         device=device)
    if source == "transformer_lens":
        return ModelSpec(source="transformer_lens", name=st.session_state["tl_name"].strip(),
                         checkpoint=st.session_state["tl_checkpoint"].strip() or None, device=device)
    return ModelSpec(source="hf_dir", name=Path(st.session_state["hf_dir"]).name or "local",
                     path=st.session_state["hf_dir"].strip(), device=device)


def _sae_specs() -> tuple[SAESpec, ...]:
    source = st.session_state["sae_source"]
    if source == "organism":
        hooks = st.session_state["sae_hooks"] or _organism_hooks()
        return tuple(SAESpec(source="organism", hook_name=h) for h in hooks)
    if source == "release":
        if not st.session_state["sae_release"] or not st.session_state["sae_id"]:
            raise AtlasError("Choose an SAELens release and an SAE id.")
        return (SAESpec(source="release", release=st.session_state["sae_release"], sae_id=st.session_state["sae_id"]),)
    return (SAESpec(source="dir", path=st.session_state["sae_dir"].strip()),)


def _corpus_spec() -> CorpusSpec:
    source = st.session_state["corpus_source"]
    if source == "world":
        return CorpusSpec(source="world")
    if source == "file":
        if not st.session_state["corpus_path"]:
            raise AtlasError("Upload a .txt, .jsonl or .csv file for the corpus.")
        return CorpusSpec(source="file", path=st.session_state["corpus_path"],
                          column=st.session_state["corpus_column"] or None)
    if not st.session_state["hf_dataset"].strip():
        raise AtlasError("Type the name of a Hugging Face dataset.")
    return CorpusSpec(source="hf_dataset", name=st.session_state["hf_dataset"].strip(),
                      split=st.session_state["hf_split"] or "train", column=st.session_state["corpus_column"] or None)


def _save_upload(upload) -> str:
    data = upload.getvalue()
    suffix = Path(upload.name).suffix.lower()
    directory = atlas_home() / "uploads"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{hashlib.sha256(data).hexdigest()[:16]}{suffix}"
    if not path.exists():
        path.write_bytes(data)
    return str(path)


def render_sidebar() -> None:
    """Draw the sidebar. The sources in use (the new choice if it loads, else the last valid one) are left in
    st.session_state["valid_sources"], where pages read them through app.resources.current_sources()."""
    from core.device import available_devices

    sb = st.sidebar
    sb.markdown("### Atlas")
    sb.caption("Concept geometry, superposition and spectra of a language model.")
    with sb.expander("Sources", expanded=False):
        st.selectbox("Model", list(MODEL_SOURCES), format_func=MODEL_SOURCES.get, key="model_source")
        source = st.session_state["model_source"]
        if source == "organism":
            checkpoints = _organism_checkpoints()
            if st.session_state["checkpoint"] not in checkpoints:
                st.session_state["checkpoint"] = checkpoints[-1]
            st.selectbox("Checkpoint", checkpoints, key="checkpoint",
                         help="Training checkpoints of the organism, in training order.")
        elif source == "transformer_lens":
            st.text_input("TransformerLens model name", key="tl_name", help="e.g. gpt2, pythia-70m-deduped")
            st.text_input("Checkpoint (optional)", key="tl_checkpoint", help="index like 12, or value:143000")
        else:
            st.text_input("Model directory", key="hf_dir", placeholder="/path/to/model")

        st.selectbox("SAEs", list(SAE_SOURCES), format_func=SAE_SOURCES.get, key="sae_source")
        if st.session_state["sae_source"] == "organism":
            hooks = _organism_hooks()
            if st.session_state["sae_hooks"] is None or not set(st.session_state["sae_hooks"]) <= set(hooks):
                st.session_state["sae_hooks"] = hooks
            st.multiselect("Layers", hooks, key="sae_hooks")
        elif st.session_state["sae_source"] == "release":
            _release_pickers()
        else:
            st.text_input("SAE directory", key="sae_dir", placeholder="/path/to/sae (cfg.json + weights)")

        st.selectbox("Corpus", list(CORPUS_SOURCES), format_func=CORPUS_SOURCES.get, key="corpus_source")
        if st.session_state["corpus_source"] == "file":
            upload = st.file_uploader("Corpus file", type=["txt", "jsonl", "csv"], key="corpus_upload")
            # A rerun with the same upload skips re-reading and re-hashing the file.
            if upload is not None and st.session_state.get("_corpus_upload_id") != upload.file_id:
                st.session_state["corpus_path"] = _save_upload(upload)
                st.session_state["_corpus_upload_id"] = upload.file_id
            if st.session_state["corpus_path"].endswith((".jsonl", ".csv")):
                from core.sources.corpus import list_columns

                try:
                    columns = list_columns(st.session_state["corpus_path"])
                except AtlasError as error:
                    st.error(str(error))
                    columns = []
                if columns:
                    if st.session_state["corpus_column"] not in columns:
                        st.session_state["corpus_column"] = columns[0]
                    st.selectbox("Text column", columns, key="corpus_column")
        elif st.session_state["corpus_source"] == "hf_dataset":
            st.text_input("Dataset name", key="hf_dataset")
            st.text_input("Split", key="hf_split")
            st.text_input("Text column", key="corpus_column")
        st.number_input("Harvest tokens", min_value=1000, max_value=10_000_000, step=10_000, key="harvest_tokens",
                        help="How many corpus tokens the feature statistics are computed from.")
        devices = ["auto", *available_devices()]
        if st.session_state["device"] not in devices:
            st.session_state["device"] = "auto"
        st.selectbox("Device", devices, key="device")

    try:
        wanted = Sources(_model_spec(st.session_state["device"]), _sae_specs(), _corpus_spec())
    except AtlasError as error:
        sb.error(str(error))
        wanted = None
    if wanted is not None and wanted != st.session_state.get("valid_sources"):
        try:
            with sb.status("Loading the model and SAEs...") as status:
                get_model(wanted.model)
                get_saes(wanted)
                status.update(label="Model and SAEs loaded.", state="complete")
            st.session_state["valid_sources"] = wanted
        except AtlasError as error:
            sb.error(str(error))
            if st.session_state.get("valid_sources") is None:
                st.session_state["valid_sources"] = default_sources()
            sb.caption("Still showing the previous valid choice.")
    _provenance(sb, current_sources())


def _release_pickers() -> None:
    from core.sources.saes import list_releases, list_sae_ids

    model_name = st.session_state["tl_name"] if st.session_state["model_source"] == "transformer_lens" else None
    try:
        releases = list_releases(model_name) or list_releases()
    except AtlasError as error:
        st.error(str(error))
        return
    st.selectbox("Release", releases, key="sae_release", index=None, placeholder="choose a release")
    if st.session_state["sae_release"]:
        try:
            ids = list_sae_ids(st.session_state["sae_release"])
        except AtlasError as error:
            st.error(str(error))
            return
        st.selectbox("SAE id", ids, key="sae_id", index=None, placeholder="choose an SAE")


def _provenance(sb, sources: Sources) -> None:
    try:
        model = get_model(sources.model)
        saes = get_saes(sources)
    except AtlasError as error:
        sb.error(str(error))
        return
    card = model.card
    with sb.expander(f"Model card: {card.name}", expanded=False):
        st.markdown(
            f"- **source**: {card.source}  \n- **from**: `{card.origin}`  \n- **checkpoint**: {card.revision}  \n"
            f"- **size**: {card.n_params:,} parameters, {card.n_layers} layers x {card.d_model}, "
            f"vocabulary {card.d_vocab:,}, context {card.n_ctx}  \n- **device**: {card.device} ({card.dtype})")
        st.markdown("**SAEs**  \n" + "  \n".join(f"- {s.describe()}" for s in saes))
        for sae in saes:
            for warning in getattr(sae, "fit_warnings", []):
                st.warning(warning)
        st.markdown(f"**Corpus**: {sources.corpus.source}"
                    + (f" `{sources.corpus.path or sources.corpus.name}`" if sources.corpus.source != "world" else ""))

