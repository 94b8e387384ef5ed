"""What makes a figure legible, tested on the figure objects: as many distinct colours as categories and a
legend in their order, labels that never overlap, named axes, annotated cells, ranges fitted to the data, and
captions that quote the measured numbers next to their null."""

from __future__ import annotations

import re

import numpy as np
import pytest
from plotly.colors import hex_to_rgb

from core.figures.captions import clustering_entropy_caption, galaxy_alpha_caption, isotropic_galaxy_alpha
from core.figures.declutter import boxes_overlap, label_boxes, label_mask, spread_positions
from core.figures.features import activation_histogram, feature_map_figure, map_axis_titles, probe_heatmap
from core.figures.geometry import crystals_figure, lobe_map_figure, probe_map_figure
from core.figures.style import (
    CATEGORY_COLOURS,
    OTHER_COLOUR,
    category_order,
    group_small_categories,
    short_site,
)
from core.figures.superposition import (
    effective_features_figure,
    feature_dimensionality_figure,
    interference_figure,
    toy_weights_figure,
)
from core.metrics.geometry import clustering_entropy, galaxy_spectrum
from core.metrics.probes import ridge_probe
from core.metrics.superposition import effective_features, interference
from core.metrics.toy import toy_geometry


def _lab(colour: str) -> np.ndarray:
    """CIELAB of an sRGB colour (D65), for perceptual distances (Delta E 1976)."""
    rgb = np.asarray(hex_to_rgb(colour), dtype=float) / 255
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
    f = np.cbrt(xyz / np.array([0.95047, 1.0, 1.08883]))
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _min_distance(colours: list[str]) -> float:
    lab = np.array([_lab(c) for c in colours])
    d = np.linalg.norm(lab[:, None] - lab[None], axis=-1)
    return float(d[~np.eye(len(colours), dtype=bool)].min())


def test_palette_colours_are_perceptibly_distinct_and_other_is_apart():
    assert len(set(CATEGORY_COLOURS)) == len(CATEGORY_COLOURS) >= 20
    assert _min_distance(list(CATEGORY_COLOURS)) > 20          # the old Plotly + D3 pair: ~11 (blue next to blue)
    assert _min_distance(list(CATEGORY_COLOURS) + [OTHER_COLOUR]) > 10


def test_twenty_lobes_get_twenty_distinct_colours_in_lobe_order():
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(400) % 20)                # shuffled: the legend must not follow first sight
    fig = lobe_map_figure(rng.standard_normal((400, 2)), labels, axis_titles=("PC 1 (9% var)", "PC 2 (7% var)"))
    names = [t.name for t in fig.data]
    assert names == [f"lobe {i} (20)" for i in range(20)]       # "lobe 2" before "lobe 10", sizes shown
    colours = [t.marker.color for t in fig.data]
    assert len(set(colours)) == 20 and _min_distance(colours) > 20
    assert fig.layout.xaxis.title.text == "PC 1 (9% var)" and fig.layout.yaxis.title.text == "PC 2 (7% var)"


def test_many_small_lobes_are_grouped_as_other_after_the_named_ones():
    labels = np.r_[np.repeat(np.arange(30), 10), np.repeat([30], 200)]      # 31 lobes: more than the palette
    grouped = group_small_categories([f"lobe {i}" for i in labels])
    order = category_order(grouped)
    assert len(order) == len(CATEGORY_COLOURS) and order[-1] == "other" and order[0] == "lobe 0"
    assert "lobe 30" in order                                     # the largest lobe is never merged
    fig = lobe_map_figure(np.zeros((len(labels), 2)), labels)
    assert fig.data[-1].name.startswith("other (") and fig.data[-1].marker.color == OTHER_COLOUR
    assert len({t.marker.color for t in fig.data}) == len(fig.data)


def test_categorical_feature_map_orders_naturally_and_names_its_axes():
    coords = np.random.default_rng(1).standard_normal((120, 2)).astype(np.float32)
    fig = feature_map_figure(coords, np.array([f"lobe {i % 12}" for i in range(120)]), "lobe", categorical=True,
                             axis_titles=("UMAP 1", "UMAP 2"))
    assert [t.name for t in fig.data] == [f"lobe {i}" for i in range(12)]
    assert len({t.marker.color for t in fig.data}) == 12
    assert fig.layout.xaxis.title.text == "UMAP 1" and fig.layout.xaxis.showticklabels is False


def test_map_axis_titles_give_the_variance_share_of_each_pc():
    from core.feature_map import pca_layout

    rng = np.random.default_rng(2)
    W = rng.standard_normal((500, 3)) * np.array([5.0, 2.0, 0.1])   # variance in the first two directions
    coords = pca_layout(W)
    x, y = map_axis_titles("pca", coords, W)
    share = [int(re.search(r"\((\d+)% var\)", t).group(1)) for t in (x, y)]
    assert share[0] > share[1] > 0 and sum(share) >= 95           # unit rows: ~all variance in two PCs
    assert map_axis_titles("umap", coords) == ("UMAP 1", "UMAP 2")
    assert not any(t in ("x", "y") for t in map_axis_titles("pca", coords))


def test_label_mask_keeps_no_two_overlapping_labels_and_anchors_first():
    rng = np.random.default_rng(3)
    points = rng.standard_normal((80, 2))
    texts = [f"word{i}" for i in range(80)]
    priority = np.zeros(80)
    priority[[5, 40]] = 1.0
    shown = label_mask(points, texts, priority=priority)
    centres, half = label_boxes(points, texts)
    kept = np.flatnonzero(shown)
    assert 10 < kept.size < 80 and shown[5] and shown[40]
    assert not any(boxes_overlap(centres, half, i, j) for i in kept for j in kept if i < j)
    # points far apart keep all their labels
    assert label_mask(np.array([[0.0, 0.0], [1.0, 1.0]]), ["a", "b"]).all()


def test_crystal_words_never_overlap_and_every_relation_keeps_an_anchor():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((60, 2)) * 0.3                       # crowded: many labels must go
    B = A + 0.05
    relations = np.repeat(["gender", "capital", "tense", "plural", "comparative", "country"], 10)
    words_a, words_b = [f"a{i}" for i in range(60)], [f"b{i}" for i in range(60)]
    fig = crystals_figure(A, B, relations, words_a, words_b)
    assert [t.name for t in fig.data if t.showlegend is not False] == sorted(set(relations))
    labelled = [(x, y, t) for trace in fig.data if trace.text is not None
                for x, y, t in zip(trace.x, trace.y, trace.text) if t]
    assert 6 <= len(labelled) < 120 and "overlapping words hidden" in fig.layout.title.text
    written = {t for _, _, t in labelled}
    for rel in set(relations):                                    # each relation keeps a written word
        pairs = np.flatnonzero(relations == rel)
        assert written & ({words_a[i] for i in pairs} | {words_b[i] for i in pairs})
    hover = [h for trace in fig.data if trace.hovertext is not None for h in trace.hovertext]
    assert "a0 -&gt; b0 (gender)" in hover                       # every pair still in the hover


def test_interference_names_points_in_the_legend_not_in_overlapping_text():
    rng = np.random.default_rng(5)
    names = [f"decoder blocks.{i}.hook_resid_post" for i in range(4)] + ["unembedding rows"]
    stats = [interference(rng.standard_normal((200, 32))) for _ in names]   # all at one spot
    fig = interference_figure(names, stats)
    points = fig.data[:-1]
    assert [t.name for t in points] == names and all("text" not in t.mode for t in points)
    assert len({(t.marker.color, t.marker.symbol) for t in points}) == len(names)
    assert fig.data[-1].name.startswith("random unit vectors")


def test_psi_reference_is_a_legend_entry_and_sites_are_short():
    results = [effective_features([3.0, 1.0, 1.0], width=2), effective_features([1.0, 1.0, 0.0], width=2)]
    fig = effective_features_figure(["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"], results)
    assert not [a for a in fig.layout.annotations if "neuron" in (a.text or "")]   # no text on the bars
    line = [s for s in fig.layout.shapes if s.y0 == 1.0]
    assert line and line[0].showlegend and "one feature per neuron" in line[0].name
    assert list(fig.data[0].x) == ["L0 resid_post", "L1 mlp_out"] and short_site("unembed") == "unembed"


def test_toy_lab_legend_sits_below_and_reference_labels_are_spread():
    angles = np.linspace(0, 2 * np.pi, 6)[:-1]
    W = np.stack([np.cos(angles), np.sin(angles)])
    fig = toy_weights_figure(W, importance=np.ones(5))
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.y < 0        # not on the colour bar
    dims = feature_dimensionality_figure(toy_geometry(W))
    assert dims.layout.legend.orientation == "h" and dims.layout.margin.r >= 100   # labels own the right margin
    labels = [a for a in dims.layout.annotations if a.xref == "paper"]
    heights = sorted(a.y for a in labels)
    assert {a.text for a in labels} >= {"2/5 (pentagon)", "3/8"} and any(a.text.startswith("D* =") for a in labels)
    assert min(np.diff(heights)) >= 0.05 - 1e-9                 # 2/5 and 3/8 are 0.025 apart: spread
    spread = spread_positions([0.4, 0.375, 1.0], 0.05)
    assert spread[2] == 1.0 and spread[0] - spread[1] == pytest.approx(0.05)
    assert (spread[0] + spread[1]) / 2 == pytest.approx((0.4 + 0.375) / 2)   # centred on what they name


def test_histogram_range_fits_the_data_on_a_log_axis():
    from core.harvest.settings import HarvestSettings

    edges = HarvestSettings().hist_edges                          # 1e-3 .. 1e3, log-spaced
    values = np.random.default_rng(6).uniform(0.1, 0.6, 500)
    row = np.histogram(values, bins=np.r_[0.0, edges, np.inf])[0]
    row[-1] = 3                                                   # a few tokens above the last edge
    fig = activation_histogram(row, edges, 7)
    low, high = fig.layout.xaxis.range
    assert fig.layout.xaxis.type == "log" and 10 ** low >= 0.05 and 10 ** high <= 1.0   # not 0.001 .. 1000
    assert sum(fig.data[0].y) == 500 and "3 above" in fig.layout.title.text
    linear = activation_histogram(np.array([0, 4, 5, 0, 0, 0]), np.linspace(0, 6, 7), 1)
    assert linear.layout.xaxis.type != "log" and linear.layout.xaxis.range == (0.0, 4.0)
    with pytest.raises(ValueError):
        activation_histogram(np.ones(3), edges, 1)


def test_probe_heatmap_labels_every_token_and_site():
    tokens = [f"t{i}" for i in range(60)] + ["<b>"]
    fig = probe_heatmap(np.zeros((2, 61)), tokens, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"],
                        "error", title="Reconstruction error")
    assert len(fig.layout.xaxis.tickvals) == 61 and fig.layout.xaxis.ticktext[-1] == "60:&lt;b&gt;"
    assert list(fig.data[0].y) == ["L0 resid_post", "L1 resid_post"]
    assert fig.layout.xaxis.title.text and fig.layout.yaxis.title.text == "SAE site"


def test_probe_map_axes_name_the_target():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((120, 6))
    y = X[:, :2] @ rng.standard_normal((2, 2))
    fig = probe_map_figure(ridge_probe(X, y), target_names=("longitude", "latitude"))
    assert (fig.layout.xaxis.title.text, fig.layout.yaxis.title.text) == ("longitude", "latitude")
    one = probe_map_figure(ridge_probe(X, y[:, 0]), target_names=("birth year",))
    assert one.layout.xaxis.title.text == "true birth year"


def test_galaxy_caption_explains_the_gap_to_gemma_scope_with_the_null_at_this_shape():
    rng = np.random.default_rng(8)
    spectra = [galaxy_spectrum(rng.standard_normal((1024, 128)) * np.linspace(3, 0.1, 128) ** p) for p in (1, 2)]
    null = isotropic_galaxy_alpha(1024, 128)
    assert 0.15 < null < 0.5                                      # not Gemma Scope's ~0.03: finite-sample spread
    text = galaxy_alpha_caption(spectra, n_features=1024, d=128, null_alpha=null)
    for needle in ("0.24-0.48", "2304", "d = 128", "ranks 13-64", f"alpha = {null:.2f}", "SAE width",
                   f"{spectra[0].alpha:.2f}", f"{spectra[1].alpha:.2f}"):
        assert needle in text, needle


def test_clustering_entropy_caption_says_what_it_is_and_compares_with_its_null():
    rng = np.random.default_rng(9)
    centres = rng.standard_normal((8, 20)) * 6
    clustered = centres[rng.integers(0, 8, 600)] + rng.standard_normal((600, 20))
    result = clustering_entropy(clustered, n_dims=20)
    text = clustering_entropy_caption(result)
    assert f"{result.gap:.2f} nats" in text and f"{result.gap_calibrated:.2f} nats" in text
    assert ">= 0" in text and "null" in text and "more clustered than its Gaussian null" in text
    gaussian = clustering_entropy(rng.standard_normal((600, 20)), n_dims=20)
    assert result.gap_calibrated > gaussian.gap_calibrated


def test_isotropic_alpha_for_large_shapes_matches_a_drawn_sample():
    # Bartlett's Wishart draw (no 65k x 2304 sample in memory) agrees with sampling the rows.
    from core.metrics.geometry import galaxy_spectrum

    drawn = [galaxy_spectrum(np.random.default_rng(s).standard_normal((20_000, 300))).alpha for s in range(3)]
    assert isotropic_galaxy_alpha(20_000, 300) == pytest.approx(np.mean(drawn), abs=0.01)
    assert isotropic_galaxy_alpha(65_536, 2304) < 0.06                     # the paper's ~0.03 at Gemma Scope's shape


def test_map_hover_keeps_long_labels_in_lines_instead_of_cutting_them():
    from core.figures.features import HOVER_LINE, hover_lines

    label = "[auto] " + ", ".join(f"'token{i}' {i}/16" for i in range(12))       # ~170 characters
    fig = feature_map_figure(np.zeros((2, 2), dtype=np.float32), np.zeros(2), "density", categorical=False,
                             hover=[label, "<b>short</b>"])
    lines = fig.data[0].text[0].split("<br>")
    assert "".join(lines) == label and all(len(line) <= HOVER_LINE for line in lines)   # 'token11' survives
    assert fig.data[0].text[1] == "&lt;b&gt;short&lt;/b&gt;"
    assert hover_lines("x" * 1000).endswith("\u2026") and hover_lines("x" * 1000).count("<br>") == 3


def test_checkpoint_heatmap_cells_show_their_values():
    from core.figures.spectral import checkpoint_heatmap_figure

    table = np.array([[16.5, 15.2, np.nan], [14.1, 14.0, 13.9]])
    heat = checkpoint_heatmap_figure(table, [0, 10, 100], [0, 1]).data[0]
    assert heat.texttemplate == "%{text}" and [list(r) for r in heat.text] == [["16.5", "15.2", ""],
                                                                              ["14.1", "14", "13.9"]]
    assert checkpoint_heatmap_figure(np.ones((20, 20)), list(range(20)), list(range(20))).data[0].text is None
