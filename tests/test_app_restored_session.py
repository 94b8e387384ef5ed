"""A session imported from a bundle reads its harvest from the import's own namespace of the artifact store:
nothing is recomputed, and nothing enters this machine's own entries."""

from __future__ import annotations

import pytest

from tests.test_app_pages import _app


@pytest.mark.slow
def test_a_restored_session_reads_its_harvest_from_the_import(app_env, monkeypatch):
    import streamlit as st

    from core.bundles import import_bundle, read_bundle
    from core.sessions import SessionStore
    from core.store import ArtifactStore

    at = _app("features")                                   # harvests into this machine's store
    assert not at.error, [e.value for e in at.error]
    harvest_key = at.session_state["artifact_keys"]["harvest"]
    at.switch_page("../pages/sessions.py").run()
    at.text_input(key="session_title").set_value("shared")
    at.button[0].click().run()
    next(b for b in at.button if b.label == "Prepare bundle").click().run()
    _, data = at.session_state["bundle"]
    assert harvest_key in read_bundle(data).artifacts

    # another machine: an empty artifact store and sessions database
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(app_env / "other-cache"))
    monkeypatch.setenv("ATLAS_HOME", str(app_env / "other-home"))
    st.cache_resource.clear()
    session_id = import_bundle(data, SessionStore(), ArtifactStore())
    fresh = _app(session=session_id)                        # reopens on the Features page
    assert not fresh.error, [e.value for e in fresh.error]
    assert fresh.session_state["artifact_keys"]["harvest"] == harvest_key
    local = ArtifactStore()
    assert local.load(harvest_key) is None                  # not recomputed, not copied into the local entries
    assert local.namespace(session_id).load(harvest_key) is not None
