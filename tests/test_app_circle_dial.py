"""AppTest: the circle dial (app/circle_dial.py) and the splice-in quality tables (app/splice_tables.py on the
Overview and Superposition pages), on the tiny organism; and the dial's core against a planted circle."""

from __future__ import annotations

from pathlib import Path

import numpy as np

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TIMEOUT = 300


def _dial_script():
    from app.circle_dial import render_circle_dial
    from app.resources import get_model
    from core.sources.models import ModelSpec
    from core.sources.organism import load_ground_truth

    render_circle_dial(get_model(ModelSpec(source="organism", device="cpu")), load_ground_truth())


def test_circle_dial_turns_and_shows_before_after_and_control(app_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_dial_script, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    labels = [m.label for m in at.metric]
    assert labels[0] == "Answer before" and labels[1].startswith("After turning 1 step") and labels[2].startswith("Control")
    assert len(at.get("plotly_chart")) == 2
    sites = at.selectbox(key="geo_dial_site").options
    assert len(sites) >= 2 and any("strongest" in s for s in sites)
    at.slider(key="geo_dial_steps").set_value(3.0).run()
    assert not at.exception and at.metric[1].label == "After turning 3 step(s)"
    concepts = at.selectbox(key="geo_dial_concept").options
    assert set(concepts) <= {"months", "weekdays"} and concepts
    at.selectbox(key="geo_dial_concept").set_value(concepts[-1]).run()
    assert not at.exception
    at.text_input(key="geo_dial_own").input("   ").run()  # blank: the chosen fact is used
    assert not at.exception and len(at.metric) == 3


def test_circle_dial_reports_a_prompt_the_model_cannot_read(app_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_function(_dial_script, default_timeout=TIMEOUT)
    at.run()
    at.text_input(key="geo_dial_own").input("one " * 60).run()  # 60 words: longer than the tiny organism's context (32)
    assert not at.exception
    assert at.error and "context" in at.error[0].value  # the AtlasError in place, the rest of the page drawn
    assert not at.metric


def test_overview_says_how_to_get_splice_quality_then_shows_it(app_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.session_state["harvest_tokens"] = 4000
    at.run()
    assert not at.exception, at.exception
    assert any("not computed yet" in i.value for i in at.info)  # the Overview never harvests
    assert not [d for d in at.dataframe if "measure" in d.value.columns]
    at.switch_page("../pages/superposition.py").run()
    assert not at.exception, at.exception
    (table,) = [d.value for d in at.dataframe if "loss recovered (zero-abl.)" in d.value.columns]
    assert {"loss recovered (zero-abl.)", "KL spliced"} <= set(table.columns)
    assert table["loss recovered (zero-abl.)"].notna().all()
    at.switch_page("../pages/home.py").run()
    assert not at.exception, at.exception
    assert not any("not computed yet" in i.value for i in at.info)
    splice_tables = [d.value for d in at.dataframe if "measure" in d.value.columns]
    assert len(splice_tables) == len(table)  # one per SAE
    measures = list(splice_tables[0]["measure"])
    assert measures[:5] == ["CE clean", "CE spliced", "CE zero-ablated", "CE mean-ablated", "loss recovered (zero)"]
    assert "KL spliced" in measures
    assert any("ce_loss_score" in c.value and "SAEBench" in c.value for c in at.caption)
    recovered = float(splice_tables[0].set_index("measure").loc["loss recovered (zero)", "value"])
    assert abs(recovered - table["loss recovered (zero-abl.)"].iloc[0]) < 1e-3


WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def test_circle_dial_core_moves_a_planted_circle_and_the_control_does_not(tiny_hooked):
    """A planted model that answers a weekday with the nearest weekday on a frequency-1 circle: turning by
    s steps gives item a + s with the chord's norm; the random-plane control of that norm leaves it alone."""
    from core.interventions import active_hook_count
    from core.interventions.circles import fit_cycle
    from core.interventions.dial import CircleDial, circle_dial
    from tests.interventions_helpers import circle_vectors, planted_model

    points = circle_vectors(7, 1, seed=4)
    embed = dict(zip(WEEKDAYS, points))
    model = planted_model(tiny_hooked.tokenizer, embed, embed)
    fit = fit_cycle(model, [(w, w) for w in WEEKDAYS], WEEKDAYS, site="blocks.0.hook_resid_post")
    dial = circle_dial(model, fit, "tuesday", 2, top_k=3)
    assert dial.turn.answer_before == "tuesday" and dial.turn.answer_after == "thursday"
    assert dial.expected_answer == "thursday" and dial.moved_as_expected
    assert dial.top_after[0].token == "thursday" and len(dial.top_before) == 3
    assert np.isclose(dial.change_norm, 2 * 3.0 * np.sin(np.pi * 2 / 7), atol=1e-4)  # the chord of 2 steps, radius 3
    assert dial.control_answer == "tuesday"
    assert CircleDial.from_dict(dial.to_dict()) == dial
    assert circle_dial(model, fit, "tuesday", 0.5).expected_answer == ""  # half a step: no expected item
    assert active_hook_count(model) == 0


def test_geometry_page_shows_the_dial_on_its_circles_tab(app_env):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.session_state["harvest_tokens"] = 4000
    at.run()
    at.switch_page("../pages/geometry.py").run()
    assert not at.exception, at.exception
    assert [m.label for m in at.metric][:1] == ["Answer before"]
    at.slider(key="geo_dial_steps").set_value(2.0).run()
    assert not at.exception and any(m.label == "After turning 2 step(s)" for m in at.metric)


def test_dial_settings_travel_with_a_session_and_foreign_values_fall_back(app_env):
    """A saved session reopens the dial on the same concept, site, steps and prompt, with the same answers; values
    this organism cannot offer (another model's concept or site, steps past the circle) fall back with no error."""
    from app.state import restore_values
    from core.sessions import Session, SessionStore
    from tests.test_app_pages import _app

    at = _app("geometry")
    concepts = at.selectbox(key="geo_dial_concept").options
    at.selectbox(key="geo_dial_concept").set_value(concepts[-1]).run()
    sites = at.selectbox(key="geo_dial_site").options
    at.selectbox(key="geo_dial_site").set_value(sites[0]).run()
    at.slider(key="geo_dial_steps").set_value(2.5).run()
    at.selectbox(key="geo_dial_prompt").set_value(1).run()
    assert not at.exception, at.exception
    names = ("geo_dial_concept", "geo_dial_site", "geo_dial_steps", "geo_dial_prompt", "geo_dial_own")
    chosen = {k: at.session_state[k] for k in names}
    answers = [m.value for m in at.metric]
    at.switch_page("../pages/sessions.py").run()
    at.text_input(key="session_title").set_value("dial")
    at.button[0].click().run()
    saved = SessionStore().list()[0]
    assert {k: SessionStore().load(saved.id).settings[k] for k in names} == chosen

    reopened = _app(session=saved.id)                                   # opens on the Geometry page
    assert {k: reopened.session_state[k] for k in names} == chosen
    assert [m.value for m in reopened.metric] == answers

    values, notices = restore_values(Session(title="t", created="2026-01-02T03:04:05+00:00", settings={
        "geo_dial_concept": "<b>x</b>", "geo_dial_steps": 1e9, "geo_dial_own": "x" * 5000, "geo_dial_prompt": -1}))
    assert values["geo_dial_concept"] is None and values["geo_dial_steps"] == 1.0
    assert values["geo_dial_own"] == "" and values["geo_dial_prompt"] == 0 and len(notices) == 4
    foreign = _app(session=SessionStore().save(Session(
        title="foreign", page="geometry", created="2026-01-02T03:04:05+00:00",
        settings={"geo_dial_concept": "planets", "geo_dial_site": "blocks.9.hook_resid_post", "geo_dial_steps": 50.0,
                  "geo_dial_prompt": 9999})))
    assert not foreign.exception and not foreign.error, [e.value for e in foreign.error]
    assert foreign.session_state["geo_dial_concept"] in concepts
    site_labels = foreign.selectbox(key="geo_dial_site").options     # "<site> (f = .., share ..)[ strongest]"
    assert any(label.startswith(foreign.session_state["geo_dial_site"] + " ") and label.endswith("strongest")
               for label in site_labels)
    assert abs(foreign.session_state["geo_dial_steps"]) < 50 and foreign.session_state["geo_dial_prompt"] == 0
