"""Feature figures and HTML: every context token shaded with its value, escaped, under a legend; the map in
WebGL with search rings; logit figures that read at a glance."""

from __future__ import annotations

import re

import numpy as np
import plotly.graph_objects as go

from core.figures.features import (
    ShadedContext,
    contexts_html,
    feature_map_figure,
    logit_effects_figure,
    logit_lens_figure,
)


def test_contexts_shade_every_token_with_its_value_under_one_legend():
    contexts = [ShadedContext(["the", " <b>king</b>", " of", " france"], np.array([0.0, 0.5, 2.0, 1.0]), 2, "2.000"),
                ShadedContext(["<script>alert(1)</script>", " paris"], np.array([0.25, 0.0]), 0, "0.250")]
    html = contexts_html(contexts, vmax=2.0)
    assert "<script>" not in html and "<b>king" not in html and "&lt;b&gt;king" in html
    assert html.count(" title=\"position ") == 6                                      # one span per token
    titles = re.findall(r'title="position \d+ \| activation ([0-9.]+)', html)
    assert titles == ["0.000", "0.500", "2.000", "1.000", "0.250", "0.000"]         # every token's own value
    assert "rgba(230,97,1,0.250)" in html and "rgba(230,97,1,1.000)" in html and "rgba(230,97,1,0.125)" in html
    assert "linear-gradient" in html and ">2</span>" in html                          # the legend, 0 to vmax
    assert html.count("underline") == 2                                               # each centre token
    assert contexts_html(contexts, vmax=2.0, legend=False).count("linear-gradient") == 0


def test_feature_map_is_webgl_with_search_rings_and_ids_on_points():
    rng = np.random.default_rng(0)
    coords = rng.standard_normal((30_000, 2)).astype(np.float32)
    fig = feature_map_figure(coords, rng.random(30_000), "density", categorical=False,
                             hover=["<i>x</i>"] * 30_000, matches=np.array([5, 17, 17, 99_999]),
                             selected=3, match_label="search")
    assert all(isinstance(trace, go.Scattergl) for trace in fig.data)
    points, rings, star = fig.data
    assert len(points.x) == 30_000 and list(points.customdata[:3]) == [0, 1, 2]
    assert rings.name == "search (2)" and list(rings.customdata) == [5, 17]          # out of range ids dropped
    assert list(star.customdata) == [3]
    assert points.text[0] == "&lt;i&gt;x&lt;/i&gt;"                                   # hover text stays text
    categorical = feature_map_figure(coords[:50], np.array(["lobe 1", "lobe 0"] * 25), "lobe", categorical=True)
    assert [t.name for t in categorical.data] == ["lobe 0", "lobe 1"]
    assert sorted(np.concatenate([t.customdata for t in categorical.data]).tolist()) == list(range(50))


def test_logit_effects_are_labelled_by_token_without_numbers():
    fig = logit_effects_figure([("from", 0.5), ("from", 0.4)], [("to", -0.3)], 7)
    ticks = list(fig.layout.yaxis.ticktext)
    assert ticks == ["'to'", "'from'", "'from'"] and not any(re.match(r"\d+\.", t) for t in ticks)


def test_logit_lens_cells_show_token_and_probability_on_a_scale_that_is_not_washed_out():
    probs = np.array([[0.04, 0.02], [0.08, 0.01]])
    fig = logit_lens_figure(probs, [["a", "<b>"], ["c", "d"]], ["block 0", "block 1"])
    heat = fig.data[0]
    assert heat.text[0][0] == "a<br>0.04" and heat.text[0][1] == "&lt;b&gt;<br>0.02"
    assert heat.zmax == 0.08 and heat.texttemplate == "%{text}"
