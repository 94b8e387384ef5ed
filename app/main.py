"""Atlas: the Streamlit entry point. `streamlit run app/main.py`.

Registers one st.Page per file of pages/ (in PAGES order; a listed file that does not exist yet is
skipped, so a new view is added by writing pages/<name>.py and, if it is new here, one PAGES line).
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import streamlit as st  # noqa: E402

# (file in pages/, title, icon, url path). The url path is also the session document's "page".
PAGES = [
    ("home.py", "Overview", ":material/home:", "home"),
    ("probe.py", "Probe", ":material/search:", "probe"),
    ("features.py", "Features", ":material/scatter_plot:", "features"),
    ("geometry.py", "Geometry", ":material/hub:", "geometry"),
    ("superposition.py", "Superposition", ":material/layers:", "superposition"),
    ("spectra.py", "Spectra", ":material/ssid_chart:", "spectra"),
    ("sessions.py", "Sessions", ":material/bookmarks:", "sessions"),
]


def main() -> None:
    from app.resources import get_session_store
    from app.sidebar import render_sidebar
    from app.state import apply_query_session, init_state

    st.set_page_config(page_title="Atlas", page_icon=":material/explore:", layout="wide")
    init_state()
    apply_query_session(get_session_store())
    pages = {url: st.Page(ROOT / "pages" / file, title=title, icon=icon, url_path=url, default=(url == "home"))
             for file, title, icon, url in PAGES if (ROOT / "pages" / file).is_file()}
    navigation = st.navigation(list(pages.values()))
    if error := st.session_state.pop("_startup_error", None):
        st.error(error)
    pending = st.session_state.pop("pending_page", None)
    if pending in pages and pending != getattr(navigation, "url_path", None):
        st.switch_page(pages[pending])
    render_sidebar()
    navigation.run()


main()
