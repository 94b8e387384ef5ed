"""The sidebar: model, checkpoint, the SAE set, corpus and device; the model card and provenance.

The SAE set holds any number of SAEs (organism layers, ids of SAELens releases, local SAELens directories,
mixed) as references (app/sources.py), kept in canonical order so the same set in any order is the same
request. Each SAE loads on its own, so adding one loads only that one. A choice that fails to load shows the
error and leaves the previous valid sources in use; a choice that loads becomes the URL's parameters
(app/state.py), so a reload keeps it.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from app.registry import HARVEST_TOKENS, options
from app.resources import current_sources, get_model, get_saes, resolve_sources
from app.sources import (
    CORPUS_SOURCES,
    MAX_SAES,
    MODEL_SOURCES,
    Sources,
    chosen_refs,
    default_sources,
    organism_refs,
    request,
    sae_label,
)
from app.state import remember_loaded_sources
from app.widgets import escape_markdown, guarded, working
from core.errors import AtlasError


def render_sidebar() -> None:
    """Draw the sidebar. The sources in use (the new choice if it loads, else the last valid one) are left in
    st.session_state["valid_sources"], where pages read them through app.resources.current_sources()."""
    from core.device import available_devices

    sb = st.sidebar
    sb.markdown("### Atlas")
    sb.caption("Concept geometry, superposition and spectra of a language model.")
    with sb.expander("Sources", expanded=False):
        _model_pickers()
        _sae_pickers()
        _corpus_pickers()
        st.number_input("Harvest tokens", min_value=HARVEST_TOKENS[0], max_value=HARVEST_TOKENS[1], step=10_000,
                        key="harvest_tokens", help="How many corpus tokens the feature statistics are computed from.")
        devices = ["auto", *available_devices()]
        if st.session_state["device"] not in devices:
            st.session_state["device"] = "auto"
        st.selectbox("Device", devices, key="device")
    _load(sb)
    if note := st.session_state.get("chunk_note"):
        sb.caption(escape_markdown(note))
    _provenance(sb, current_sources())


# ---- pickers -------------------------------------------------------------------------------------------
def _model_pickers() -> None:
    from core.sources.organism import list_checkpoints

    st.selectbox("Model", options("model_source"), format_func=lambda source: MODEL_SOURCES.get(source, source), key="model_source")
    source = st.session_state["model_source"]
    if source == "organism":
        try:
            checkpoints = list_checkpoints()
        except AtlasError:
            checkpoints = ["final"]
        if st.session_state["checkpoint"] not in checkpoints:
            st.session_state["checkpoint"] = checkpoints[-1]
        st.selectbox("Checkpoint", checkpoints, key="checkpoint",
                     help="Training checkpoints of the organism, in training order.")
    elif source == "transformer_lens":
        st.text_input("TransformerLens model name", key="tl_name", help="e.g. gpt2, pythia-70m-deduped")
        st.text_input("Checkpoint (optional)", key="tl_checkpoint", help="index like 12, or value:143000")
    else:
        st.text_input("Model directory", key="hf_dir", placeholder="/path/to/model")


def _sae_pickers() -> None:
    organism_model = st.session_state["model_source"] == "organism"
    refs = chosen_refs(st.session_state)
    st.session_state["sae_set"] = refs           # canonical order, whatever order they were picked in
    offered = set(refs)
    if organism_model:
        offered |= set(organism_refs())
    release = st.session_state.get("sae_release")
    if release and not organism_model:
        from core.sources.saes import list_sae_ids

        offered |= {f"rel:{release}/{sae_id}" for sae_id in guarded(lambda: list_sae_ids(release)) or []}
    st.multiselect("SAEs", sorted(offered), key="sae_set", format_func=sae_label, max_selections=MAX_SAES,
                   placeholder="choose SAEs",
                   help="Any number of SAEs, one per site: organism layers, SAEs of SAELens releases and local "
                        "SAELens directories. Adding one computes only what is new to it.")
    if not organism_model:
        _release_picker()
    st.text_input("Add a local SAELens directory", key="sae_dir_input", placeholder="/path/to/sae (cfg.json + weights)")
    st.button("Add directory", key="sae_dir_add", on_click=_add_sae_dir)
    if error := st.session_state.pop("_sae_dir_error", None):
        st.error(escape_markdown(error))


def _release_picker() -> None:
    from core.sources.saes import list_releases

    model_name = st.session_state["tl_name"] if st.session_state["model_source"] == "transformer_lens" else None
    releases = guarded(lambda: list_releases(model_name) or list_releases())
    if not releases:
        return
    if st.session_state.get("sae_release") not in releases:
        st.session_state["sae_release"] = None
    st.selectbox("Offer the SAEs of a SAELens release", releases, key="sae_release", index=None,
                 placeholder="choose a release",
                 help="Its SAE ids join the SAEs list above; pick the ones to use there.")


def _add_sae_dir() -> None:
    """Add the typed directory to the SAE set (remembered as known to this server, so links can name it)."""
    from core.known_dirs import KnownDirectories
    from core.sources.saes import SAE_FILES

    typed = (st.session_state.get("sae_dir_input") or "").strip()
    path = Path(typed).expanduser()
    if not typed or not path.is_dir():
        st.session_state["_sae_dir_error"] = f"{typed or 'The path'} is not a directory on this server."
        return
    missing = [name for name in SAE_FILES if not (path / name).is_file()]
    if missing:
        st.session_state["_sae_dir_error"] = (f"{typed} has no {' or '.join(missing)}: it is not a SAELens SAE "
                                              "directory (save one with SAE.save_model).")
        return
    ref = f"dir:{KnownDirectories().remember('sae', str(path))}"
    st.session_state["sae_set"] = sorted({*chosen_refs(st.session_state), ref})
    st.session_state["sae_dir_input"] = ""


def _corpus_pickers() -> None:
    from core.sources.corpus import list_columns
    from core.uploads import MAX_UPLOAD_MB, save_upload, upload_path

    st.selectbox("Corpus", options("corpus_source"), format_func=lambda source: CORPUS_SOURCES.get(source, source), key="corpus_source")
    if st.session_state["corpus_source"] == "file":
        upload = st.file_uploader("Corpus file", type=["txt", "jsonl", "csv"], key="corpus_upload",
                                  max_upload_size=MAX_UPLOAD_MB,
                                  help=f"Stored in Atlas's upload folder (at most {MAX_UPLOAD_MB} MB).")
        # A rerun with the same upload skips re-reading and re-hashing the file.
        if upload is not None and st.session_state.get("_corpus_upload_id") != upload.file_id:
            st.session_state["_corpus_upload_id"] = upload.file_id
            name = guarded(lambda: save_upload(upload.getvalue(), upload.name))
            if name:
                st.session_state["corpus_file"] = name
        name = st.session_state["corpus_file"]
        if name and upload is None:
            st.caption(f"In use: the uploaded file {name}.")
        if name.endswith((".jsonl", ".csv")):
            columns = guarded(lambda: list_columns(upload_path(name))) or []
            if columns:
                if st.session_state["corpus_column"] not in columns:
                    st.session_state["corpus_column"] = columns[0]
                st.selectbox("Text column", columns, key="corpus_column")
    elif st.session_state["corpus_source"] == "hf_dataset":
        st.text_input("Dataset name", key="hf_dataset")
        st.text_input("Split", key="hf_split")
        st.text_input("Text column", key="corpus_column")


# ---- loading ---------------------------------------------------------------------------------------------
def _load(sb) -> None:
    """Load the sidebar's request when it changed; on success it becomes the sources in use (and the URL's)."""
    try:
        wanted = request(st.session_state)
    except AtlasError as error:
        sb.error(escape_markdown(str(error)))
        wanted = None
    if wanted is not None and wanted != st.session_state.get("_wanted"):
        try:
            with working(_loading_label(wanted, st.session_state.get("_wanted")), where=sb):
                resolved, note = resolve_sources(wanted)
        except AtlasError as error:
            sb.error(escape_markdown(str(error)))
            if st.session_state.get("valid_sources") is None:
                st.session_state["valid_sources"] = default_sources()
            sb.caption("Still showing the previous valid choice.")
            return
        if wanted.model.source == "hf_dir" and wanted.model.path:
            from core.known_dirs import KnownDirectories

            KnownDirectories().remember("model", wanted.model.path)
        st.session_state.update(valid_sources=resolved, _wanted=wanted, chunk_note=note)
    if wanted is not None and wanted == st.session_state.get("_wanted"):
        remember_loaded_sources()


def _loading_label(wanted: Sources, previous: Sources | None) -> str:
    """Say what is new, so a changed SAE set does not look like everything is loaded again."""
    parts = []
    if previous is None or previous.model != wanted.model:
        parts.append(f"the model {wanted.model.name}")
    new = [s for s in wanted.saes if previous is None or previous.model != wanted.model or s not in previous.saes]
    if new:
        parts.append(f"{len(new)} new SAE{'s' if len(new) > 1 else ''}")
    return f"Loading {' and '.join(parts)}..." if parts else "Applying the new choice..."


def _provenance(sb, sources: Sources) -> None:
    try:
        model = get_model(sources.model)
        saes = get_saes(sources)
    except AtlasError as error:
        sb.error(escape_markdown(str(error)))
        return
    card = model.card
    with sb.expander(f"Model card: {card.name}", expanded=False):
        st.markdown(
            f"- **source**: {card.source}  \n- **from**: `{card.origin}`  \n- **checkpoint**: {card.revision}  \n"
            f"- **size**: {card.n_params:,} parameters, {card.n_layers} layers x {card.d_model}, "
            f"vocabulary {card.d_vocab:,}, context {card.n_ctx}  \n- **device**: {card.device} ({card.dtype})")
        st.markdown("**SAEs**  \n" + ("  \n".join(f"- {s.describe()}" for s in saes) or "none"))
        for sae in saes:
            for warning in getattr(sae, "fit_warnings", []):
                st.warning(warning)
        corpus = sources.corpus
        where = {"file": f" (upload {Path(corpus.path or '').name})", "hf_dataset": f" `{corpus.name}`"}
        st.markdown(f"**Corpus**: {corpus.source}{where.get(corpus.source, '')}, chunks of "
                    f"{corpus.context_size} tokens ({'BOS first' if corpus.prepend_bos else 'no BOS'}), "
                    "as the SAEs were trained")
