"""AppTest: the Geometry page on a tiny GPT-2 with a byte-level BPE tokenizer (a local Hugging Face directory,
no SAEs): every tab renders with the library's sets, with an uploaded set, and with the mean read position;
what the model cannot read is listed."""

from __future__ import annotations

import json
from pathlib import Path

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TIMEOUT = 600
DAYS_CSV = b"word\nMonday\nTuesday\nWednesday\nThursday\nFriday\nSaturday\nSunday\n"


def _titles(at) -> list[str]:
    return [json.loads(chart.proto.spec).get("layout", {}).get("title", {}).get("text", "")
            for chart in at.get("plotly_chart")]


def _geometry_on(model_dir: Path, **state):
    from streamlit.testing.v1 import AppTest

    from core.known_dirs import KnownDirectories

    KnownDirectories().remember("model", str(model_dir))
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.session_state["model_source"] = "hf_dir"
    at.session_state["hf_dir"] = str(model_dir)
    at.session_state["sae_set"] = []
    at.session_state["harvest_tokens"] = 1000
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("../pages/geometry.py")
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def test_geometry_tabs_with_library_sets_an_upload_and_the_mean_position(app_env, bpe_gpt2_dir):
    from core.uploads import CONCEPT_SUFFIXES, save_upload

    name = save_upload(DAYS_CSV, "my_days.csv", suffixes=CONCEPT_SUFFIXES)
    at = _geometry_on(bpe_gpt2_dir, concept_sets_probes=["library: historical_figures"])
    # the library's defaults for a model without its own sets
    assert at.multiselect(key="concept_sets_circles").value == ["library: weekdays", "library: months"]
    assert "library: noun_taxonomy" in at.multiselect(key="concept_sets_concepts").value
    titles = _titles(at)
    assert any(t.startswith("weekdays: circle strength") for t in titles), titles
    assert any("Analogy parallelograms (PCA)" in t for t in titles), titles
    assert any("Hierarchical orthogonality" in t for t in titles), titles
    assert any("Held-out items of historical_figures" in t for t in titles), titles
    assert any("The decoder views need SAEs" in i.value for i in at.info)
    text = " ".join(m.value for m in at.markdown)
    assert "items read" in text and "Words the model cannot represent" in text   # listed, never silently dropped
    assert at.radio(key="concept_position").value == "last"

    # an upload saved through core.uploads (what the upload box does), as a restored session names it
    at.session_state["concept_uploads"] = [{"file": name, "kind": "cyclic", "name": "my_days"}]
    at.session_state["concept_sets_circles"] = ["upload: my_days"]
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert "upload: my_days" in at.multiselect(key="concept_sets_circles").options
    assert any(t.startswith("my_days: circle strength") for t in _titles(at))

    at.radio(key="concept_position").set_value("mean").run()
    assert not at.exception and not at.error
    assert any(t.startswith("my_days: circle strength") for t in _titles(at))


def test_an_upload_on_the_page_is_validated_and_saved(app_env):
    """add_upload (the upload box's action): a bad file says what to fix and changes nothing; a good one is saved
    as an upload and chosen in the views its kind fits."""
    from streamlit.testing.v1 import AppTest

    script = '''
import streamlit as st
from app.concept_sets import add_upload
st.session_state.setdefault("concept_uploads", [])
st.session_state.setdefault("concept_sets_circles", None)
add_upload(st.session_state["data"], st.session_state["filename"], st.session_state["kind"])
'''
    at = AppTest.from_string(script, default_timeout=60)
    at.session_state["data"] = b"word,category\nrobin,bird\nrobin,fish\n"
    at.session_state["filename"] = "animals.csv"
    at.session_state["kind"] = ""
    at.run()
    assert at.error and "robin" in at.error[0].value and at.session_state["concept_uploads"] == []
    at.session_state["data"] = DAYS_CSV
    at.session_state["filename"] = "my_days.csv"
    at.session_state["kind"] = "cyclic"
    at.run()
    assert not at.error and at.success
    [entry] = at.session_state["concept_uploads"]
    assert entry["name"] == "my_days" and entry["kind"] == "cyclic" and entry["file"].endswith(".csv")
    assert at.session_state["concept_sets_circles"] == ["upload: my_days"]
    assert at.session_state["geo_cycle"] == "my_days"                     # the Circles tab opens on it
    from app.registry import KEYS

    assert KEYS["concept_uploads"].check([entry]) == [entry]   # what a saved session restores
