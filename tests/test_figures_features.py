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
    thin_map_points,
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
    # 30,000 > MAP_THIN_ABOVE: one point per screen cell, each at its own feature's place, the title says so
    drawn = np.asarray(points.customdata)
    assert 1_000 < len(drawn) < 30_000 and np.array_equal(np.asarray(points.x), coords[drawn, 0])
    assert f"{len(drawn):,} of 30,000 drawn" in fig.layout.title.text
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


def test_thinning_keeps_one_point_per_occupied_cell_the_most_active():
    # 4 cells of a 2 x 2 grid: 3 points in the lower-left cell, one in each of the others
    coords = np.array([[0.0, 0.0], [0.1, 0.1], [0.2, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    assert thin_map_points(coords, np.array([0.1, 0.9, 0.5, 0, 0, 0]), grid=2).tolist() == [1, 3, 4, 5]
    assert thin_map_points(coords, None, grid=2).tolist() == [0, 3, 4, 5]          # ties: the lowest id
    assert thin_map_points(coords, np.array([np.nan, 0.2, 0.1, 0, 0, 0]), grid=2).tolist() == [1, 3, 4, 5]
    # a small map is drawn whole; every cell of a large one keeps a point
    small = feature_map_figure(coords, np.arange(6.0), "density", categorical=False)
    assert list(small.data[0].customdata) == list(range(6)) and "drawn" not in (small.layout.title.text or "")
    big = np.random.default_rng(1).random((20_000, 2))
    kept = thin_map_points(big, grid=50)
    cells = np.floor((big - big.min(0)) / np.ptp(big, axis=0) * (50 - 1e-9)).astype(int)
    assert len(kept) == len({tuple(c) for c in cells}) > 2_400 and len({tuple(c) for c in cells[kept]}) == len(kept)
