"""Sessions: save what you look at, reopen it by link, export and import bundles."""

import streamlit as st

from app.resources import current_sources, get_session_store, get_store, session_artifacts
from app.state import apply_session, current_session
from core.bundles import export_bundle, import_bundle
from core.errors import AtlasError

st.title("Sessions")
st.caption("A session remembers the sources, the page, the prompt, the selected feature and layer, and the "
           "cached results they use. Open one with its link `?session=<id>`, or share it as a bundle file.")
sessions = get_session_store()
previous_page = st.session_state.get("page", "home")

if opened := st.session_state.get("opened_session"):
    st.success(f"Opened session {opened[1]!r} ({opened[0]}).")

st.subheader("Save the current view")
with st.form("save_session", clear_on_submit=False):
    title = st.text_input("Title", key="session_title", placeholder="What is this about?")
    notes = st.text_area("Notes", key="session_notes", height=80)
    submitted = st.form_submit_button("Save session", type="primary")
if submitted:
    try:
        session = current_session(title, notes, current_sources())
        session.page = previous_page if previous_page != "sessions" else "home"
        session_id = sessions.save(session)
        st.success(f"Saved as session {session_id}.")
        st.markdown(f"Link: [`?session={session_id}`](/?session={session_id})")
        st.code(f"?session={session_id}", language=None)
    except AtlasError as error:
        st.error(str(error))

st.subheader("Saved sessions")
try:
    saved = sessions.list()
except AtlasError as error:  # e.g. a corrupt sessions database: say what to do, keep the page
    st.error(str(error))
    saved = []
if not saved:
    st.write("No saved session yet.")
else:
    st.dataframe([{"id": s.id, "title": s.title, "created": s.created, "page": s.page} for s in saved],
                 hide_index=True, width="stretch")
    labels = {s.id: f"{s.title} ({s.id}, {s.created})" for s in saved}
    chosen = st.selectbox("Session", list(labels), format_func=labels.get, key="chosen_session")

    def _open(session_id: str) -> None:
        try:
            apply_session(sessions.load(session_id))
            st.session_state["opened_session"] = (session_id, labels[session_id])
        except AtlasError as error:
            st.session_state["_startup_error"] = str(error)

    c1, c2, c3 = st.columns(3)
    if c1.button("Open", on_click=_open, args=(chosen,)):
        st.rerun()
    if c2.button("Prepare bundle"):
        try:
            session = sessions.load(chosen)
            from app.report import report_figures

            figures = report_figures(session)
            st.session_state["bundle"] = (chosen, export_bundle(session, session_artifacts(chosen), figures))
        except AtlasError as error:
            st.error(str(error))
    bundle = st.session_state.get("bundle")
    if bundle and bundle[0] == chosen:
        c3.download_button("Download bundle (.zip)", bundle[1], file_name=f"atlas-session-{chosen}.zip",
                           mime="application/zip")
    if st.button("Delete this session"):
        if namespace := sessions.delete(chosen):   # an imported session: its artifacts go with it
            get_store().delete_namespace(namespace)
        st.rerun()

st.subheader("Import a bundle")
upload = st.file_uploader("Atlas bundle (.zip)", type=["zip"], key="bundle_upload")
if upload is not None and st.session_state.get("_imported") != upload.file_id:
    try:
        new_id = import_bundle(upload.getvalue(), sessions, get_store())
        st.session_state["_imported"] = upload.file_id
        st.success(f"Imported as session {new_id}: open it above, or with `?session={new_id}`.")
    except AtlasError as error:
        st.error(str(error))
