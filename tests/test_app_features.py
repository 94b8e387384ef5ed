"""AppTest of the Features and Probe pages on the tiny organism: links that open features, labels through
sessions, per-token contexts, the test box, co-occurrence that says when phi is undefined, comparison across
SAEs, and the Probe fixes (short truncation note, L0 of TopK SAEs, labelled feature tables)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs

MAIN = str(Path(__file__).resolve().parents[1] / "app" / "main.py")
TIMEOUT = 300
LAYER0, LAYER1 = "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"


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


def _links(at) -> list[tuple[str, dict[str, str], str]]:
    """(page, query params, label) of every st.page_link on the page."""
    out = []
    for link in at.get("page_link"):
        query = {k: v[0] for k, v in parse_qs(link.proto.query_string).items()}
        out.append((link.proto.page, query, link.proto.label))
    return out


def _feature_shown(at) -> tuple[int, str]:
    header = next(h.value for h in at.header if h.value.startswith("Feature "))
    feature, layer = re.match(r"Feature (\d+) on (\S+)", header).groups()
    return int(feature), layer


def test_a_link_opens_its_feature_on_its_layer(app_env):
    at = _app("features", layer=LAYER1, feature="7")
    assert _feature_shown(at) == (7, LAYER1)
    assert at.session_state["layer"] == LAYER1 and at.session_state["feature"] == 7
    # every neighbour / co-occurrence / comparison id on the dashboard is a link to the Features page with its layer
    links = _links(at)
    assert len(links) >= 10 and all(page == "features" for page, _, _ in links)
    assert all(set(query) == {"layer", "feature"} for _, query, _ in links)
    assert any(query["layer"] == LAYER0 for _, query, _ in links)          # the comparison with the other SAE
    assert all(re.match(r"\*\*#\d+\*\* \u00b7 ", label) for _, _, label in links)   # id, then label or tokens
    # following one (what a click does) opens that feature
    _, query, _ = links[0]
    at.query_params["layer"], at.query_params["feature"] = query["layer"], query["feature"]
    at.run()
    assert _feature_shown(at) == (int(query["feature"]), query["layer"])
    # a link to a feature the layer does not have says so instead of failing
    at.query_params["feature"] = "99999"
    at.run()
    assert not at.exception and any("features 0-" in w.value for w in at.warning)


def test_contexts_shade_every_token_and_the_test_box_runs_the_feature(app_env):
    at = _app("features")
    feature, layer = _feature_shown(at)
    assert (at.query_params["layer"], at.query_params["feature"]) == (layer, str(feature))   # a URL to copy
    html = _html(at)
    assert "linear-gradient" in html                                          # the colour legend
    values = [float(v) for v in re.findall(r"\| activation (-?[0-9.]+) \|", html)]
    assert len(values) > 50 and sum(v > 0 for v in values) > 20              # many tokens carry their own value
    at.text_area(key="feature_test_text").set_value("on monday the king <b>went</b> to paris").run()
    html = _html(at)
    assert f"feature {feature} " in html and "<b>went" not in html
    assert any(c.value.startswith(("Largest:", f"Feature {feature} does not fire")) for c in at.caption)


def test_cooccurrence_of_a_feature_firing_in_every_chunk_is_explained(app_env):
    at = _app("features")
    _feature_shown(at)      # the top feature of the tiny organism (opened first) fires in every chunk
    captions = [c.value for c in at.caption]
    assert any("phi is 0/0, undefined" in c for c in captions), captions
    assert any("token by token" in c for c in captions)
    labels = [label for _, _, label in _links(at)]
    assert not any("phi 0.000" in label for label in labels)
    assert any("tokens \u00b7 mean" in label for label in labels)           # token-level co-firing instead


def test_labels_are_searchable_and_travel_with_the_session(app_env):
    at = _app("features")
    feature, _ = _feature_shown(at)
    label_box = next(t for t in at.text_input if t.key.endswith(f"_{feature}_label"))
    label_box.set_value("weekday detector")
    next(t for t in at.text_area if t.key.endswith(f"_{feature}_note")).set_value("verified by hand on calendar sentences")
    next(b for b in at.button if b.label == "Save label").click().run()
    assert not at.exception
    assert any(m.value == "**weekday detector**" for m in at.markdown)
    table = at.dataframe[0].value
    assert table.loc[table["feature"] == feature, "label"].iloc[0] == "weekday detector"
    assert table["label"].str.startswith("[auto] ").sum() == len(table) - 1   # the rest: automatic, marked
    at.text_input(key="search").set_value("WEEKDAY").run()
    assert at.dataframe[0].value["feature"].tolist() == [feature]             # found by its label
    at.text_input(key="search").set_value("calendar").run()
    assert at.dataframe[0].value["feature"].tolist() == [feature]             # ... and by its note

    at.switch_page("../pages/sessions.py").run()
    at.text_input(key="session_title").set_value("labelled")
    at.button[0].click().run()
    from core.sessions import SessionStore

    session_id = SessionStore().list()[0].id
    for path in (app_env / "home" / "labels").glob("*.json"):             # another machine: no label files
        path.unlink()
    fresh = _app(session=session_id)
    if not any(h.value.startswith("Feature ") for h in fresh.header):
        fresh.switch_page("../pages/features.py").run()
    assert any(m.value == "**weekday detector**" for m in fresh.markdown)


def test_compare_across_saes_lists_nearest_directions_in_the_other_sae(app_env):
    at = _app("features", layer=LAYER0, feature="5")
    assert at.selectbox(key="compare_layer").value == LAYER1
    other = [label for _, query, label in _links(at) if query["layer"] == LAYER1]
    cosines = [float(re.search(r"cos (-?[0-9\\.]+)", label).group(1).replace("\\", "")) for label in other]
    assert len(other) == 8 and cosines == sorted(cosines, reverse=True)


def test_probe_fixes(app_env):
    at = _app("probe")
    at.text_area(key="prompt").set_value(" ".join(["monday"] * 20 + ["tuesday"] * 1500)).run()
    warning = next(w.value for w in at.warning if "were cut" in w.value)
    assert len(warning) < 400 and "tokens (" in warning
    at.text_area(key="prompt").set_value("on monday the king of france went to paris").run()
    at.selectbox(key="heatmap_quantity").set_value("l0").run()
    assert any("exactly" in i.value and "L0" in i.value for i in at.info)     # the organism's SAEs are TopK
    table = at.dataframe[0].value
    assert "label" in table.columns and "feature" in table.columns
    # after a harvest exists (the Features page made one), ids in the table carry automatic descriptions
    at.switch_page("../pages/features.py").run()
    at.switch_page("../pages/probe.py").run()
    assert at.dataframe[0].value["label"].str.startswith("[auto] ").all()
    at.radio(key="color_by").set_value("A feature").run()
    assert any(query.get("feature") == str(at.session_state["feature"]) for _, query, _ in _links(at))
