"""Atlas: the Streamlit entry point. `streamlit run app/main.py`.

Registers one st.Page per file of pages/ (in PAGES order; a listed file that does not exist yet is
skipped, so a new view is added by writing pages/<name>.py and, if it is new here, one PAGES line).
Every run: session state from the registry (app/state.py), on a browser session's first run what the
URL names, the sidebar, the URL kept on the sources in use, then the page. An AtlasError that reaches
this level is shown once with its message; any other exception is logged on the server and the browser
gets a message saying what to do, never a traceback (app/widgets.py: the error idiom).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import streamlit as st  # noqa: E402

from core.errors import AtlasError  # noqa: E402

# (file in pages/, title, icon, url path). The url path is also the session document's "page".
PAGES = [
    ("home.py", "Overview", ":material/home:", "home"),
    ("probe.py", "Probe", ":material/search:", "probe"),
    ("features.py", "Features", ":material/scatter_plot:", "features"),
    ("geometry.py", "Geometry", ":material/hub:", "geometry"),
    ("superposition.py", "Superposition", ":material/layers:", "superposition"),
    ("spectra.py", "Spectra", ":material/ssid_chart:", "spectra"),
    ("steer.py", "Steer", ":material/tune:", "steer"),
    ("sessions.py", "Sessions", ":material/bookmarks:", "sessions"),
]
# An emoji favicon becomes an inline data: URL in the browser; a :material/...: one would be fetched from
# fonts.gstatic.com, and Atlas makes no outbound calls.
FAVICON = "\U0001F9ED"
LOG = logging.getLogger("atlas.app")


def main() -> None:
    from app.resources import get_session_store, start_seeding
    from app.sidebar import render_sidebar
    from app.state import init_state, open_from_url, sync_url
    from app.widgets import UNEXPECTED, show_error

    st.set_page_config(page_title="Atlas", page_icon=FAVICON, layout="wide")
    pages = {url: st.Page(ROOT / "pages" / file, title=title, icon=icon, url_path=url, default=(url == "home"))
             for file, title, icon, url in PAGES if (ROOT / "pages" / file).is_file()}
    navigation = st.navigation(list(pages.values()))
    start_seeding()   # the prebuilt default views (core.snapshot), copied while the first page loads the model
    try:
        init_state()
        open_from_url(get_session_store())
        pending = st.session_state.pop("pending_page", None)
        if pending in pages and pending != getattr(navigation, "url_path", None):
            st.switch_page(pages[pending])
        render_sidebar()
        sync_url()
        _session_banner()
        _notices()
        navigation.run()
    except AtlasError as error:
        show_error(error)
    except Exception:
        LOG.exception("Unexpected error on page %r", getattr(navigation, "url_path", "?"))
        st.error(UNEXPECTED)


def _close_banner() -> None:
    st.session_state["opened_session"] = None


def _session_banner() -> None:
    """While the view is an opened session: its title, notes and date on top of every page."""
    from app.widgets import escape_markdown

    opened = st.session_state.get("opened_session")
    if not opened:
        return
    text = f"**Session: {escape_markdown(opened['title'])}** (saved {escape_markdown(opened['created'])})"
    if opened["notes"].strip():
        text += "  \n" + escape_markdown(opened["notes"])
    left, right = st.columns([12, 1], vertical_alignment="center")
    left.info(text, icon=":material/bookmark:")
    right.button("Close", key="close_session_banner", on_click=_close_banner,
                 help="Hide this banner (the view stays as it is).")


def _notices() -> None:
    """What was refused while restoring a session or a link: shown once."""
    from app.widgets import escape_markdown

    for notice in st.session_state.pop("_notices", None) or []:
        st.warning(escape_markdown(notice))


main()
