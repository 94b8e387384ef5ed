"""Fixtures: the Streamlit app on the tiny organism (owned by app/ and pages/).

`app_env` points the app at the tiny organism and at this test's own artifact store and sessions
database (ATLAS_ORGANISM_DIR, ATLAS_CACHE_DIR, ATLAS_HOME), and clears Streamlit's caches so no
resource of another test leaks in. It returns the test's tmp_path.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def app_env(tiny_organism_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ATLAS_ORGANISM_DIR", str(tiny_organism_dir))
    monkeypatch.setenv("ATLAS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    import streamlit as st

    st.cache_resource.clear()   # stores and sessions live under this test's tmp dirs
    st.cache_data.clear()
    return tmp_path
