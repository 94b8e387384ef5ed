"""AppTest: every page of the shell renders on the (tiny) organism, and widgets change what is shown."""

from __future__ import annotations

from pathlib import Path

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TIMEOUT = 300


def _app(page: str | None = None, **query):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    for key, value in query.items():
        at.query_params[key] = value
    at.run()
    if page:
        at.switch_page(f"../pages/{page}.py")
        at.run()
    assert not at.exception, at.exception
    return at


def _html(at) -> str:
    return "\n".join(str(element.proto.body) for element in at.get("html"))


def test_home_shows_model_and_provenance(app_env):
    at = _app()
    assert at.title[0].value == "Atlas"
    assert any(m.label == "Model" for m in at.metric)
    assert not at.error


def test_probe_page_reacts_to_the_prompt(app_env):
    at = _app("probe")
    assert not at.error
    first = _html(at)
    at.text_area(key="prompt").set_value("monday tuesday").run()
    second = _html(at)
    assert first != second and "monday" in second and "tuesday" in second
    # HTML in the prompt is shown as text
    at.text_area(key="prompt").set_value("<script>alert(1)</script> monday").run()
    assert "<script>" not in _html(at)
    # an empty prompt gets a clear message, not an exception
    at.text_area(key="prompt").set_value("   ").run()
    assert not at.exception and any("empty" in i.value for i in at.info)
    # a feature colouring changes the token view
    at.text_area(key="prompt").set_value("monday tuesday").run()
    at.radio(key="color_by").set_value("A feature").run()
    chosen = at.session_state["feature"]   # none was chosen: the feature firing hardest in the prompt
    assert isinstance(chosen, int) and f"feature {chosen}" in _html(at)


def test_probe_marks_unknown_words_and_truncation(app_env):
    at = _app("probe")
    at.text_area(key="prompt").set_value("monday zzqqxx tuesday").run()
    assert any("unknown" in i.value for i in at.info)
    at.text_area(key="prompt").set_value(" ".join(["monday"] * 600)).run()
    assert any("were cut" in w.value for w in at.warning)


def test_features_page_opens_features_and_layers(app_env):
    at = _app("features")
    assert not at.error, [e.value for e in at.error]
    # A fresh session opens the feature with the largest share of the layer's L1 mass: the table's first row.
    top = int(at.dataframe[0].value["feature"].iloc[0])
    assert at.session_state["feature"] == top
    assert any(h.value.startswith(f"Feature {top} on") for h in at.header)
    assert not any(i.value.startswith("This feature never fired") for i in at.info)
    at.number_input(key="feature").set_value(3).run()
    assert any(h.value.startswith("Feature 3 on") for h in at.header)
    layers = at.selectbox(key="layer").options
    at.selectbox(key="layer").set_value(layers[-1]).run()
    assert any(layers[-1] in h.value for h in at.subheader)
    at.selectbox(key="map_color").set_value("lobe").run()
    assert not at.exception
    at.text_input(key="search").set_value("3").run()
    assert not at.exception


def test_session_saved_and_reopened_by_url(app_env):
    at = _app("probe")
    at.text_area(key="prompt").set_value("friday saturday").run()
    at.switch_page("../pages/features.py").run()
    top = at.session_state["feature"]
    chosen = 5 if top != 5 else 6   # not the feature a fresh session opens: the restored one must win
    at.number_input(key="feature").set_value(chosen).run()
    at.switch_page("../pages/sessions.py").run()
    at.text_input(key="session_title").set_value("weekend")
    at.button[0].click().run()   # the form's submit button
    assert any("Saved as session" in s.value for s in at.success), [e.value for e in at.error]
    from core.sessions import SessionStore

    saved = SessionStore().list()
    assert [s.title for s in saved] == ["weekend"]
    fresh = _app(session=saved[0].id)
    assert fresh.session_state["prompt"] == "friday saturday"
    assert fresh.session_state["feature"] == chosen
    assert any(h.value.startswith(f"Feature {chosen} on") for h in fresh.header)   # reopened on the Features page


def test_sessions_page_builds_a_bundle_with_a_report(app_env):
    import io
    import zipfile

    at = _app("probe")
    at.switch_page("../pages/sessions.py").run()
    at.text_input(key="session_title").set_value("bundle me")
    at.button[0].click().run()
    assert any("Saved as session" in s.value for s in at.success)
    next(b for b in at.button if b.label == "Prepare bundle").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    session_id, data = at.session_state["bundle"]
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        report = archive.read("report.html").decode()
    assert "session.json" in names and "bundle me" in report and report.count("plotly.js v") == 1
