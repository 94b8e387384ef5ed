"""The Geometry page's concept sets: which sets a view can read (the library, the organism's own, the user's
uploads), the upload box, the read-position choice, and the list of what a model could not read.

Labels name a set by where it comes from ("library: weekdays", "organism: weekdays", "upload: my_days"); the
choice of each view is kept in st.session_state["concept_sets_<view>"] (app/registry.py: checked, saved in
sessions), the uploads in st.session_state["concept_uploads"] as {"file", "kind", "name"} (the file saved
through core.uploads like a corpus upload, so a session can name it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from app.registry import options
from app.widgets import escape_markdown, guarded, show_error
from core.analysis.concept_views import LIBRARY_DEFAULTS
from core.concepts import KINDS, ConceptSet, load_library, organism_concept_sets, read_concept_file
from core.errors import AtlasError

POSITION_WORDS = {"last": "the last token", "mean": "the mean of the tokens"}
POSITION_HELP = {
    "last": "A word split into several tokens is read at its last token (as Gurnee & Tegmark read entity names).",
    "mean": "A word split into several tokens is read as the mean over its tokens.",
}


@st.cache_resource(show_spinner=False)
def _library() -> dict[str, ConceptSet]:
    return load_library()


@st.cache_resource(show_spinner=False)
def _organism_sets(directory: str | None) -> dict[str, ConceptSet]:
    return organism_concept_sets(directory)


def _uploaded_set(entry: dict[str, str]) -> ConceptSet:
    from core.uploads import upload_path

    return read_concept_file(upload_path(entry["file"]), filename=entry["file"], kind=entry["kind"] or None,
                             name=entry["name"])


def available_sets(model: Any) -> dict[str, ConceptSet]:
    """Every set the page can offer, by label: the organism's own (on the organism), the library, the uploads.
    An upload that can no longer be read is reported and left out of the list (the entry stays saved)."""
    found: dict[str, ConceptSet] = {}
    spec = getattr(model, "spec", None)
    if spec is not None and getattr(spec, "source", None) == "organism":
        path = getattr(spec, "path", None)
        sets = guarded(lambda: _organism_sets(path))
        found.update({f"organism: {name}": s for name, s in (sets or {}).items()})
    found.update({f"library: {name}": s for name, s in _library().items()})
    for entry in st.session_state.get("concept_uploads") or []:
        try:
            found[f"upload: {entry['name']}"] = _uploaded_set(entry)
        except AtlasError as error:
            show_error(error)
    return found


def default_labels(view: str, fitting: list[str], model: Any) -> list[str]:
    """The organism's own sets on the organism; else the library's defaults for the view."""
    own = [label for label in fitting if label.startswith("organism: ")]
    if own and getattr(getattr(model, "spec", None), "source", None) == "organism":
        return own
    return [label for label in (f"library: {n}" for n in LIBRARY_DEFAULTS[view]) if label in fitting]


def set_chooser(view: str, available: dict[str, ConceptSet], kinds: tuple[str, ...], model: Any) -> list[ConceptSet]:
    """A multiselect of the sets whose kind the view reads; the chosen sets, in order."""
    key = f"concept_sets_{view}"
    fitting = [label for label, s in available.items() if s.kind in kinds]
    chosen = st.session_state.get(key)
    chosen = default_labels(view, fitting, model) if chosen is None else [c for c in chosen if c in fitting]
    st.session_state[key] = chosen   # a saved choice whose upload is gone is left out, not an error
    labels = st.multiselect(f"Concept sets ({', '.join(kinds)})", fitting, key=key,
                            help="From the library (assets/concepts/, docs/CONCEPTS.md), the organism's planted "
                                 "world, or your own upload (above the tabs).")
    return [available[label] for label in labels]


def position_picker() -> str:
    """Where a word split into several tokens is read (st.session_state["concept_position"])."""
    return st.radio("Multi-token words are read at", options("concept_position"), key="concept_position",
                    horizontal=True, format_func=POSITION_WORDS.get,
                    help=" ".join(POSITION_HELP.values()))


def upload_box() -> None:
    """Upload a CSV / JSON concept set: validated with read_concept_file (errors shown, nothing lost), saved
    through core.uploads and listed in st.session_state["concept_uploads"]."""
    from core.uploads import CONCEPT_SUFFIXES, MAX_UPLOAD_MB

    with st.expander("Your own concept set (CSV or JSON; docs/CONCEPTS.md)"):
        st.caption("CSV: a header with `word` and the columns of the kind (`word,category`, `word,parents`, "
                   "`word,latitude,longitude`, `word,year`, `word,value`, `word,pair`); a plain `word` list in cycle "
                   "order needs the kind below. JSON: the library's format.")
        left, right = st.columns([3, 1])
        upload = left.file_uploader("Concept set file", type=[s.lstrip(".") for s in CONCEPT_SUFFIXES],
                                    key="geo_concept_file", max_upload_size=MAX_UPLOAD_MB)
        kind = right.selectbox("Kind (CSV)", ["infer", *KINDS], key="geo_concept_kind",
                               help="Only a plain word list needs it (e.g. cyclic); other CSVs say it by their columns.")
        if upload is not None and st.button("Add this set", key="geo_concept_add"):
            add_upload(upload.getvalue(), upload.name, "" if kind == "infer" else kind)
        entries = st.session_state.get("concept_uploads") or []
        if entries:
            st.caption("Uploaded: " + escape_markdown(", ".join(e["name"] for e in entries)))


def add_upload(data: bytes, filename: str, kind: str) -> ConceptSet | None:
    """Validate and save one upload; its set (chosen in every view that reads its kind), or None after showing
    why it was refused (the earlier uploads and choices stay as they were)."""
    from core.uploads import CONCEPT_SUFFIXES, save_upload

    try:
        concept_set = read_concept_file(data, filename=filename, kind=kind or None, name=Path(filename).stem)
        name = save_upload(data, filename, suffixes=CONCEPT_SUFFIXES)
    except AtlasError as error:
        show_error(error)
        return None
    entry = {"file": name, "kind": kind, "name": concept_set.name}
    entries = [e for e in (st.session_state.get("concept_uploads") or []) if e["name"] != concept_set.name]
    st.session_state["concept_uploads"] = [*entries, entry]
    from core.analysis.concept_views import VIEW_KINDS

    label = f"upload: {concept_set.name}"
    for view, kinds in VIEW_KINDS.items():
        if concept_set.kind in kinds:
            current = st.session_state.get(f"concept_sets_{view}")
            if current is not None and label not in current:   # first: the view opens on the new set
                st.session_state[f"concept_sets_{view}"] = [label, *current]
            elif current is None:
                st.session_state[f"concept_sets_{view}"] = [label]
    if concept_set.kind == "cyclic":
        st.session_state["geo_cycle"] = concept_set.name   # the Circles tab opens on it
    st.success(f"Added {concept_set.name!r}: {len(concept_set)} items, kind {concept_set.kind}.")
    return concept_set


def readings_note(readings: Any) -> None:
    """What the model read of each set: items read, split words, and every word it could not represent
    with the reason (never dropped silently)."""
    for r in readings:
        where = POSITION_WORDS.get(r.position, r.position)
        parts = [f"**{escape_markdown(r.set_name)}** ({r.kind}): {r.n_read} of {r.n_items} items read"
                 + (f" (split words at {where})" if r.split else "")]
        if r.split:
            parts.append(f"{len(r.split)} split into several tokens ({escape_markdown(', '.join(r.split[:12]))}"
                         + (", ..." if len(r.split) > 12 else "") + ")")
        parts += [escape_markdown(n) for n in r.notes]
        st.markdown("; ".join(parts) + ".")
        if r.dropped:
            st.markdown(f"Words the model cannot represent ({len(r.dropped)}):  \n"
                        + "  \n".join(f"- {escape_markdown(d.word)}: {escape_markdown(d.reason)}" for d in r.dropped))
        if r.skipped_templates:
            st.markdown("Templates skipped:  \n" + "  \n".join(f"- {escape_markdown(t)}" for t in r.skipped_templates))
