"""Sessions: save what you look at, reopen it by link, export and import bundles."""

import streamlit as st

from app.resources import current_sources, get_session_store, get_store, session_artifacts
from app.state import apply_session, current_session, session_url
from app.widgets import escape_markdown, guarded
from core.bundles import export_bundle, import_bundle
from core.errors import AtlasError
from core.inputs import printable
from core.uploads import MAX_BUNDLE_UPLOAD_MB

st.title("Sessions")
st.caption("A session remembers the sources, the page, the prompt, the selected feature and layer, and the "
           "cached results they use. Reopen one with its link, or share it as a bundle file.")
sessions = get_session_store()
previous_page = st.session_state.get("page", "home")


def _save(title: str, notes: str) -> str:
    session = current_session(title, notes, current_sources())
    session.page = previous_page if previous_page != "sessions" else "home"
    return sessions.save(session)


st.subheader("Save the current view")
with st.form("save_session", clear_on_submit=False):
    title = st.text_input("Title", key="session_title", placeholder="What is this about?", max_chars=200)
    notes = st.text_area("Notes", key="session_notes", height=80, max_chars=20_000)
    submitted = st.form_submit_button("Save session", type="primary")
if submitted:
    saved_id = guarded(lambda: _save(title, notes))
    if saved_id:
        st.session_state["chosen_session"] = saved_id     # the picker below (and "Prepare bundle") use it
        st.success(f"Saved as session {saved_id}; it is selected below, with its link.")

st.subheader("Saved sessions")
try:
    saved = sessions.list()
except AtlasError as error:  # e.g. a corrupt sessions database: say what to do, keep the page
    st.error(str(error))
    saved = []
if not saved:
    st.write("No saved session yet.")
else:
    st.dataframe([{"id": s.id, "title": printable(s.title), "created": s.created, "page": s.page} for s in saved],
                 hide_index=True, width="stretch")
    labels = {s.id: f"{printable(s.title)} ({s.id}, {s.created})" for s in saved}
    if st.session_state.get("chosen_session") not in labels:
        st.session_state["chosen_session"] = saved[0].id
    chosen = st.selectbox("Session", list(labels), format_func=lambda i: labels[i], key="chosen_session") or saved[0].id

    def _open(session_id: str) -> None:
        try:
            apply_session(sessions.load(session_id), session_id)
        except AtlasError as error:  # a callback cannot draw: shown on the next run, where the page draws
            st.session_state["_notices"] = [f"The session could not be opened: {error}"]

    c1, c2, c3 = st.columns(3)
    c1.button("Open", on_click=_open, args=(chosen,), type="primary")
    if c2.button("Prepare bundle"):
        def _bundle() -> bytes:
            from app.report import report_figures

            session = sessions.load(chosen)
            return export_bundle(session, session_artifacts(chosen), report_figures(session))

        data = guarded(_bundle)
        if data is not None:
            st.session_state["bundle"] = (chosen, data)
    bundle = st.session_state.get("bundle")
    if bundle and bundle[0] == chosen:
        c3.download_button("Download bundle (.zip)", bundle[1], file_name=f"atlas-session-{chosen}.zip",
                           mime="application/zip")
    st.caption("Link to this session (hover it for a copy button):")
    st.code(session_url(chosen), language=None)

    # Deleting asks first: the button only arms a confirmation that names the session.
    if st.session_state.get("confirm_delete") != chosen:
        st.button("Delete this session...", on_click=lambda: st.session_state.update(confirm_delete=chosen))
    else:
        st.warning(f"Delete the session {escape_markdown(labels[chosen])}? This cannot be undone.")
        yes, no = st.columns(2)

        def _delete(session_id: str) -> None:
            if namespace := sessions.delete(session_id):   # an imported session: its artifacts go with it
                get_store().delete_namespace(namespace)
            st.session_state["confirm_delete"] = None
            st.session_state["deleted_session"] = labels[session_id]
            if (st.session_state.get("opened_session") or {}).get("id") == session_id:
                st.session_state["opened_session"] = None

        yes.button("Yes, delete it", on_click=_delete, args=(chosen,), type="primary")
        no.button("Cancel", on_click=lambda: st.session_state.update(confirm_delete=None))
if deleted := st.session_state.pop("deleted_session", None):
    st.success(f"Deleted the session {escape_markdown(deleted)}.")

st.subheader("Import a bundle")
upload = st.file_uploader("Atlas bundle (.zip)", type=["zip"], key="bundle_upload",
                          max_upload_size=MAX_BUNDLE_UPLOAD_MB,
                          help=f"At most {MAX_BUNDLE_UPLOAD_MB:,} MB; larger bundles import with `atlas import-bundle FILE`.")
if upload is not None and st.session_state.get("_imported") != upload.file_id:
    uploaded = upload.getvalue()
    new_id = guarded(lambda: import_bundle(uploaded, sessions, get_store()))
    st.session_state["_imported"] = upload.file_id
    if new_id:
        st.success(f"Imported as session {new_id}: open it above, or with its link:")
        st.code(session_url(new_id), language=None)
