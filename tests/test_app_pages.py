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
    assert not _unexpected(at)
    return at


def _unexpected(at) -> list[str]:
    """Errors the app shows for an exception that is not Atlas's (a bug): none may appear."""
    from app.widgets import UNEXPECTED

    return [e.value for e in at.error if e.value == UNEXPECTED]


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


# ---- the sources survive a reload; several SAEs at once ------------------------------------------------------
def _hooks(at) -> list[str]:
    return [spec.hook_name or spec.path for spec in at.session_state["valid_sources"].saes]


def _query(at) -> dict:
    return {k: v for k, v in at.query_params.items()}


def test_a_reload_keeps_the_sources(app_env):
    at = _app()
    assert _query(at) == {}                                   # the default view: a bare URL
    at.multiselect(key="sae_set").set_value(["org:blocks.1.hook_resid_post"]).run()
    at.number_input(key="harvest_tokens").set_value(5000).run()
    assert _hooks(at) == ["blocks.1.hook_resid_post"]
    params = _query(at)
    assert params == {"sae": "org:blocks.1.hook_resid_post", "tokens": "5000"}
    fresh = _app("features", **params)                        # a reload is a new browser session with that URL
    assert _hooks(fresh) == ["blocks.1.hook_resid_post"] and fresh.session_state["harvest_tokens"] == 5000
    assert fresh.selectbox(key="layer").options == ["blocks.1.hook_resid_post"]
    shown = _query(fresh)                                     # navigation keeps the URL; Features adds its link
    assert {k: shown.get(k) for k in params} == params and shown["layer"] == "blocks.1.hook_resid_post"


def test_several_local_sae_directories_mixed_with_organism_layers(app_env, tiny_organism_dir):
    at = _app()
    refs = []
    for hook in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post"):
        at.text_input(key="sae_dir_input").set_value(str(tiny_organism_dir / "saes" / hook))
        at.button(key="sae_dir_add").click().run()
        assert not at.exception
        refs = [r for r in at.session_state["sae_set"] if r.startswith("dir:")]
    assert len(refs) == 2
    # Both layers twice (organism + directory) is refused: one SAE per site, the previous choice stays.
    assert any("Several of the chosen SAEs read" in e.value for e in at.sidebar.error)
    at.multiselect(key="sae_set").set_value(refs).run()
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]
    assert {s.source for s in at.session_state["valid_sources"].saes} == {"dir"}
    from core.known_dirs import KnownDirectories

    layer0 = f"dir:{KnownDirectories.id_for('sae', str(tiny_organism_dir / 'saes' / 'blocks.0.hook_resid_post'))}"
    mixed = [layer0, "org:blocks.1.hook_resid_post"]
    at.multiselect(key="sae_set").set_value(mixed).run()
    assert not at.sidebar.error, [e.value for e in at.sidebar.error]
    assert sorted(s.source for s in at.session_state["valid_sources"].saes) == ["dir", "organism"]
    params = _query(at)
    assert str(tiny_organism_dir) not in str(params)          # directories travel as ids
    fresh = _app("features", **params)
    assert sorted(fresh.session_state["sae_set"]) == sorted(mixed)
    assert fresh.selectbox(key="layer").options == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    # A link naming a directory this server never loaded is refused with a notice.
    hostile = _app(sae="dir:0123456789ab")
    assert any("SAE set" in w.value for w in hostile.warning)
    assert all(s.source == "organism" for s in hostile.session_state["valid_sources"].saes)


def test_hostile_link_cannot_name_a_server_file(app_env, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the launch code is 0000\n" * 50)
    at = _app(corpus="file", file=str(secret))
    assert any("corpus file" in w.value and "uploaded to this Atlas" in w.value for w in at.warning)
    assert at.session_state["valid_sources"].corpus.source == "world"
    at.switch_page("../pages/features.py").run()
    assert "launch code" not in str([e.proto for e in at.get("html")])


# ---- feature ids and layers (issue 16 item 3) ---------------------------------------------------------------
def test_changing_the_layer_opens_that_layers_top_feature(app_env):
    at = _app("features")
    at.number_input(key="feature").set_value(3).run()
    layers = at.selectbox(key="layer").options
    at.selectbox(key="layer").set_value(layers[-1]).run()
    top = int(at.dataframe[0].value["feature"].iloc[0])       # the new layer's table, sorted by L1 share
    assert at.session_state["feature"] == top
    assert any(h.value == f"Feature {top} on {layers[-1]}" for h in at.header)


def test_probe_says_when_the_chosen_feature_does_not_fire(app_env):
    import numpy as np

    at = _app("probe")
    at.text_area(key="prompt").set_value("monday tuesday").run()
    at.radio(key="color_by").set_value("A feature").run()
    from app.resources import current_sources, get_model, get_saes
    from core.probe import probe_prompt

    sources = at.session_state["valid_sources"]
    del current_sources
    acts = np.asarray(probe_prompt(get_model(sources.model), get_saes(sources), "monday tuesday")
                      .layer(at.session_state["layer"]).acts)
    silent = int(np.flatnonzero(~(acts > 0).any(axis=0))[0])
    at.number_input(key="feature").set_value(silent).run()
    assert any(f"Feature {silent} does not fire anywhere in this prompt" in i.value for i in at.info)


# ---- one error idiom ------------------------------------------------------------------------------------------
def test_an_atlas_error_shows_once_and_a_bug_shows_no_traceback(app_env, monkeypatch):
    from app.widgets import UNEXPECTED
    from core import probe
    from core.errors import PromptError

    def fails(*args, **kwargs):
        raise PromptError("The prompt could not be probed: shorten it.")

    monkeypatch.setattr(probe, "probe_prompt", fails)
    at = _app("probe")
    assert [e.value for e in at.error] == ["The prompt could not be probed: shorten it."]

    def bug(*args, **kwargs):
        raise ValueError("internal detail /srv/secret/path")

    monkeypatch.setattr(probe, "probe_prompt", bug)
    at.text_area(key="prompt").set_value("monday").run()
    assert not at.exception
    assert [e.value for e in at.error] == [UNEXPECTED]
    assert "secret" not in str([e.proto for e in at.main])


# ---- sessions (issue 16 item 5) ------------------------------------------------------------------------------
def _save(at, title: str, notes: str = "") -> str:
    at.text_input(key="session_title").set_value(title)
    at.text_area(key="session_notes").set_value(notes)
    next(b for b in at.button if b.label == "Save session").click().run()
    success = next(s.value for s in at.success if "Saved as session" in s.value)
    return success.split("Saved as session ")[1].split(";")[0]


def test_sessions_page_link_picker_banner_and_delete_confirmation(app_env):
    at = _app("sessions")
    first = _save(at, "first")
    second = _save(at, "weekend *circles*", "monday\ntuesday")
    assert at.session_state["chosen_session"] == second       # the picker follows the new session
    links = [c.value for c in at.code]
    assert f"http://localhost:8501/?session={second}" in links   # a full URL to copy, not ?session=...
    next(b for b in at.button if b.label == "Prepare bundle").click().run()
    assert at.session_state["bundle"][0] == second

    reopened = _app(session=second)
    banner = " ".join(i.value for i in reopened.info)
    assert "weekend \\*circles\\*" in banner and "monday" in banner and "tuesday" in banner
    reopened.button(key="close_session_banner").click().run()
    assert not any("weekend" in i.value for i in reopened.info)

    from core.sessions import SessionStore

    at.selectbox(key="chosen_session").set_value(first).run()
    next(b for b in at.button if b.label.startswith("Delete this session")).click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    assert len(SessionStore().list()) == 2                    # nothing deleted yet
    next(b for b in at.button if b.label == "Cancel").click().run()
    assert len(SessionStore().list()) == 2
    next(b for b in at.button if b.label.startswith("Delete this session")).click().run()
    next(b for b in at.button if b.label == "Yes, delete it").click().run()
    assert [s.id for s in SessionStore().list()] == [second]
    assert at.session_state["chosen_session"] == second


def test_a_hostile_session_document_is_restored_without_its_file(app_env, tmp_path):
    from core.sessions import Session, SessionStore

    secret = tmp_path / "secret.txt"
    secret.write_text("the launch code is 0000\n" * 50)
    document = Session(title="innocent", settings={"ui_corpus_source": "file", "ui_corpus_path": str(secret),
                                                   "map_method": "<img src=x onerror=alert(1)>"},
                       prompt="monday", page="features")
    session_id = SessionStore().save(document)
    at = _app(session=session_id)
    notices = [w.value for w in at.warning]
    assert any("corpus file" in n and "uploaded to this Atlas" in n for n in notices), notices
    assert any("feature map layout" in n for n in notices)
    assert at.session_state["valid_sources"].corpus.source == "world"
    assert at.session_state["map_method"] == "PCA (quick)"
    assert "launch code" not in str([e.proto for e in at.get("html")])


def test_an_uploaded_corpus_is_named_by_its_upload_and_survives_a_reload(app_env):
    from streamlit.testing.v1 import AppTest

    from core.uploads import save_upload, uploads_dir

    text = "\n\n".join(["monday tuesday wednesday thursday friday saturday sunday"] * 40).encode()
    name = save_upload(text, "week.txt")
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.session_state["corpus_source"] = "file"
    at.session_state["corpus_file"] = name
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    corpus = at.session_state["valid_sources"].corpus
    assert corpus.source == "file" and corpus.path == str(uploads_dir() / name)
    params = _query(at)
    assert params == {"corpus": "file", "file": name}
    fresh = _app(**params)
    assert fresh.session_state["valid_sources"].corpus == corpus


def test_saes_on_an_earlier_checkpoint_are_flagged(app_env):
    """The organism's SAEs (trained on the final checkpoint) on an earlier one: every view page says so."""
    at = _app()
    checkpoints = at.selectbox(key="checkpoint").options
    earlier = next(c for c in checkpoints if c != "final")
    at.selectbox(key="checkpoint").set_value(earlier).run()
    at.switch_page("../pages/features.py")
    at.run()
    assert not at.exception, at.exception
    assert any("trained on its final checkpoint" in w.value and earlier in w.value for w in at.warning)
    at.selectbox(key="checkpoint").set_value("final").run()
    assert not any("trained on its final checkpoint" in w.value for w in at.warning)


def test_each_uploader_carries_its_own_size_limit(app_env):
    """Bundles may be up to MAX_BUNDLE_UPLOAD_MB (a GPT-2-scale session), corpus files only MAX_UPLOAD_MB: the
    server's limit is the larger, so the smaller one must be set on the corpus uploader itself."""
    from core.uploads import MAX_BUNDLE_UPLOAD_MB, MAX_UPLOAD_MB

    at = _app("sessions")
    limits = {u.proto.label: u.proto.max_upload_size_mb for u in at.get("file_uploader")}
    assert limits["Atlas bundle (.zip)"] == MAX_BUNDLE_UPLOAD_MB > MAX_UPLOAD_MB
    at.session_state["corpus_source"] = "file"
    at.run()
    limits = {u.proto.label: u.proto.max_upload_size_mb for u in at.get("file_uploader")}
    assert limits["Corpus file"] == MAX_UPLOAD_MB
