"""AppTest of the Steer page on the tiny organism (steering, ablation, activation patching; bad input shown in
place), the "What does this feature do?" action on the Features and Probe pages, and the Steer inputs and
results through a saved session and a bundle."""

from __future__ import annotations

import json

from tests.test_app_pages import _app

LAYER1 = "blocks.1.hook_resid_post"


def _errors(at) -> list[str]:
    return [e.value for e in at.error]


def _frames(at) -> list:
    return [d.value for d in at.dataframe]


def _strongest_feature(hook: str, prompt: str) -> int:
    """The feature of `hook`'s SAE firing hardest at the prompt's last token (the app's own loaded model)."""
    from app.resources import current_sources, get_model, get_saes

    sources = current_sources()
    model = get_model(sources.model)
    sae = next(s for s in get_saes(sources) if s.hook_name == hook)
    acts = sae.encode(model.run(model.tokenize_prompt(prompt).tokens, [hook])[hook])[0, -1]
    return int(acts.argmax())


def _steer_page(**state):
    at = _app("steer")
    for key, value in state.items():
        widget = at.text_area(key=key) if key.endswith("prompt") else at.text_input(key=key)
        widget.set_value(value)
    at.run()
    return at


def test_steering_side_by_side_with_a_sweep_and_clamping(app_env):
    at = _app("steer")
    assert not _errors(at)
    assert at.button(key="steer_run").disabled                         # no feature named yet: nothing to run
    at.text_input(key="steer_features").set_value("3:40, 5:-20").run()
    at.text_input(key="steer_scales").set_value("0, 1").run()
    assert not _errors(at) and not _frames(at)                          # not run until asked
    at.button(key="steer_run").click().run()
    assert not _errors(at), _errors(at)
    table = _frames(at)[0]
    assert table["steering"].iloc[0] == "unsteered" and len(table) == 3
    unsteered, zero, steered = table["completion"]
    assert zero == unsteered and steered != unsteered                   # scale 0 adds nothing; x1 changes the text
    links = [(link.proto.label, link.proto.query_string) for link in at.get("page_link")]
    assert any(label.startswith("**#3**") and "feature=3" in query for label, query in links)   # ids are links
    keys = dict(at.session_state["artifact_keys"])
    assert "steer:steering" in keys
    # clamping through the SAE runs from the same inputs
    at.radio(key="steer_mode").set_value("clamp").run()
    assert not _frames(at)                                              # another request: not stored yet
    at.button(key="steer_run").click().run()
    assert not _errors(at) and len(_frames(at)[0]) == 3
    assert at.session_state["artifact_keys"]["steer:steering"] != keys["steer:steering"]
    # back to the first inputs: the stored result shows at once, without running
    at.radio(key="steer_mode").set_value("add").run()
    assert _frames(at) and _frames(at)[0]["completion"].iloc[2] == steered


def test_bad_input_is_shown_in_place(app_env):
    at = _steer_page(steer_features="99999:4")
    assert any("Feature 99999 does not exist" in e for e in _errors(at)), _errors(at)
    assert at.button(key="steer_run").disabled and not at.exception
    at.text_input(key="steer_features").set_value("3:4").run()
    at.text_area(key="steer_prompt").set_value("   ").run()
    assert any("prompt is empty" in e for e in _errors(at))
    at.text_input(key="ablate_features").set_value("3").run()
    at.text_input(key="ablate_target").set_value("king queen").run()
    assert any("is 2 tokens" in e and "not one" in e for e in _errors(at)), _errors(at)
    at.text_input(key="patch_corrupted").set_value("one month after the march is").run()
    assert any("same length" in e for e in _errors(at)), _errors(at)
    assert at.button(key="patch_run").disabled and not at.exception


def test_ablation_and_activation_patching(app_env):
    feature = _strongest_feature(LAYER1, "on monday the king of france went to")
    at = _app("steer")
    at.selectbox(key="steer_layer").set_value(LAYER1).run()
    at.text_input(key="ablate_features").set_value(str(feature)).run()
    at.text_input(key="ablate_target").set_value("paris").run()
    at.button(key="ablate_run").click().run()
    assert not _errors(at), _errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert float(metrics["KL(clean || ablated)"].split()[0]) > 0
    assert "logit of 'paris'" in metrics
    assert float(metrics["activation before (last token)"]) > 0        # it fired where it was ablated
    assert at.get("plotly_chart")
    # mean ablation needs the harvest: said in place until the Features page has harvested
    at.radio(key="ablate_mode").set_value("mean").run()
    assert any("harvest" in e for e in _errors(at)), _errors(at)
    at.switch_page("../pages/features.py").run()
    at.switch_page("../pages/steer.py").run()
    at.button(key="ablate_run").click().run()
    assert not _errors(at), _errors(at)
    # patching on the defaults (the organism's calendar): a heatmap per component
    at.button(key="patch_run").click().run()
    assert not _errors(at), _errors(at)
    charts = at.get("plotly_chart")
    figure = next(c for c in charts if "Activation patching" in c.proto.spec)
    assert [trace["type"] for trace in json.loads(figure.proto.spec)["data"]] == ["heatmap"] * 3
    assert "steer:patching" in at.session_state["artifact_keys"]


def test_what_does_this_feature_do_on_features_and_probe(app_env):
    at = _app("features")
    feature = at.session_state["feature"]
    at.button(key="features_effect_run").click().run()
    assert not _errors(at), _errors(at)
    assert any(m.value.startswith("**Zero-ablated** on its top context") for m in at.markdown)
    completions = next(f for f in _frames(at) if "completion" in f.columns)
    assert len(completions) == 4                                        # unsteered + the sweep x-2, x2, x6
    assert [label.split()[0] for label in completions["steering"]] == ["unsteered", "x-2", "x2", "x6"]
    # "Open on the Steer page": the same requests, their stored results shown without running
    at.button(key="features_effect_steer").click().run()
    assert at.session_state["steer_features"] == f"{feature}:1" and at.session_state["steer_relative"]
    assert at.session_state["ablate_features"] == str(feature)
    assert not _errors(at), _errors(at)
    assert any(t.value == "Steer" for t in at.title)
    shown = next(f for f in _frames(at) if "completion" in f.columns)
    assert list(shown["completion"]) == list(completions["completion"])
    assert any(m.label == "KL(clean || ablated)" for m in at.metric)

    at = _app("probe")
    at.radio(key="color_by").set_value("A feature").run()
    chosen = at.session_state["feature"]
    at.button(key="probe_effect_run").click().run()
    assert not _errors(at), _errors(at)
    assert any(s.value == f"What does feature {chosen} do?" for s in at.subheader)
    assert any(m.value.startswith("**Zero-ablated** on the probed prompt") for m in at.markdown)


def test_steer_inputs_and_results_travel_with_a_session_and_a_bundle(app_env, monkeypatch):
    import streamlit as st

    from core.bundles import import_bundle
    from core.sessions import SessionStore
    from core.store import ArtifactStore

    at = _app("steer")
    at.selectbox(key="steer_layer").set_value(LAYER1).run()
    at.text_area(key="steer_prompt").set_value("on friday the queen went to").run()
    at.text_input(key="steer_features").set_value("2:30").run()
    at.text_input(key="steer_scales").set_value("1, 2").run()
    at.number_input(key="steer_tokens").set_value(6).run()
    at.number_input(key="steer_temperature").set_value(0.7).run()
    at.number_input(key="steer_seed").set_value(3).run()
    at.button(key="steer_run").click().run()
    assert not _errors(at), _errors(at)
    completions = list(_frames(at)[0]["completion"])
    result_key = at.session_state["artifact_keys"]["steer:steering"]
    inputs = {k: at.session_state[k] for k in ("steer_layer", "steer_prompt", "steer_features", "steer_scales",
                                                "steer_tokens", "steer_temperature", "steer_seed")}
    at.switch_page("../pages/sessions.py").run()
    at.text_input(key="session_title").set_value("steering")
    at.button[0].click().run()
    saved = SessionStore().list()[0]
    assert result_key in SessionStore().load(saved.id).artifact_keys

    reopened = _app(session=saved.id)                                   # opens on the Steer page
    assert {k: reopened.session_state[k] for k in inputs} == inputs
    assert list(_frames(reopened)[0]["completion"]) == completions      # from the store, not run again

    next(b for b in at.button if b.label == "Prepare bundle").click().run()
    _, data = at.session_state["bundle"]
    # another machine: empty store and sessions database; the bundle's artifacts in their own namespace
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(app_env / "other-cache"))
    monkeypatch.setenv("ATLAS_HOME", str(app_env / "other-home"))
    st.cache_resource.clear()
    session_id = import_bundle(data, SessionStore(), ArtifactStore())
    imported = _app(session=session_id)
    assert not _errors(imported), _errors(imported)
    assert list(_frames(imported)[0]["completion"]) == completions
    assert ArtifactStore().load(result_key) is None                    # read from the import, not recomputed


def test_hostile_steer_settings_are_refused_with_a_notice(app_env):
    from app.registry import KEYS
    from app.state import restore_values
    from core.sessions import Session

    settings = {"steer_features": "<script>alert(1)</script>", "steer_temperature": 99, "steer_relative": "yes",
                "steer_mode": "exec", "steer_tokens": 10**6, "ablate_prompt": "monday \ud800",
                "patch_clean": "one month after may is", "steer_scales": "1, 2"}
    values, notices = restore_values(Session(title="t", settings=settings, created="2026-01-02T03:04:05+00:00"))
    for name in ("steer_features", "steer_temperature", "steer_relative", "steer_mode", "steer_tokens", "ablate_prompt"):
        assert values[name] == KEYS[name].default, name
        assert any(KEYS[name].label in n for n in notices), (name, notices)
    assert values["patch_clean"] == "one month after may is" and values["steer_scales"] == "1, 2"
