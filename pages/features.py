"""Features: every feature of a layer (searchable, labelled), the feature map, and one feature's dashboard."""

import numpy as np
import streamlit as st

from app.feature_actions import feature_action
from app.feature_data import centre_cofiring, layer_frame, unit_decoder
from app.feature_labels import label_book, label_editor, label_texts, sync_session_labels
from app.feature_links import (
    apply_feature_link,
    clickable_features,
    feature_link_list,
    follow_pending_open,
    md_escape,
    sync_feature_url,
)
from app.page import cached_view, feature_map, load_view_inputs
from app.registry import options
from app.resources import decoder_weights, get_store
from app.state import layout_method, set_page
from app.widgets import feature_picker, guarded, layer_picker
from core import analysis
from core import feature_map as fm
from core.analysis.results import Skipped
from core.errors import AtlasError
from core.feature_views import (
    AUTO_PREFIX,
    comparable_saes,
    cooccurrence_view,
    label_column,
    nearest_directions,
    search_mask,
)
from core.figures.features import (
    ShadedContext,
    activation_histogram,
    colour_legend_html,
    contexts_html,
    feature_map_figure,
    highlight_tokens_html,
    log_density,
    logit_effects_figure,
    map_axis_titles,
)
from core.interventions.requests import context_prompt
from core.probe import feature_on_text

PAGE_ROWS = 200

set_page("features")
st.title("Features")
st.caption("Statistics from one harvest pass over the corpus. Every feature id is a link: click a row, a point "
           "of the map or an id to open that feature.")

model, saes, harvest, harvest_key = load_view_inputs()
hooks = [s.hook_name for s in saes]
if message := apply_feature_link(hooks, {s.hook_name: s.d_sae for s in saes}):
    st.warning(message)
sync_session_labels(saes)

hook = layer_picker(hooks)
sae = next(s for s in saes if s.hook_name == hook)
stats = harvest.saes[hook]
W_dec = decoder_weights(sae)
center = int(harvest.settings["window_left"])
frame = layer_frame(harvest_key, hook, stats, model, center)
book = label_book(sae)
user_labels = label_texts(book)
labels = label_column(frame, user_labels)
d_sae = len(frame)
# A fresh session (none chosen yet; a restored one keeps its own) opens on the feature carrying the
# largest share of this layer's L1 mass.
top_feature = int(np.argmax(stats.l1_mass))
if st.session_state.get("feature") is None:
    st.session_state["feature"] = top_feature


_other_layers: dict = {}


def describe(feature: int, hook_name: str = hook) -> str:
    """A feature's label (the user's, else the automatic description) for links."""
    if hook_name == hook:
        return str(labels.iloc[feature])
    if hook_name not in _other_layers:
        other = layer_frame(harvest_key, hook_name, harvest.saes[hook_name], model, center)
        _other_layers[hook_name] = label_column(other, label_texts(label_book(next(s for s in saes
                                                                                 if s.hook_name == hook_name))))
    return str(_other_layers[hook_name].iloc[feature])


def _open_from_map():
    for point in st.session_state["feature_map"].selection.points:
        custom = point.get("customdata")
        if custom is not None:
            st.session_state["feature"] = int(custom[0] if isinstance(custom, list) else custom)
            return


query = st.session_state.get("search", "").strip()
matches = search_mask(frame, query, book.matching(query))
left, right = st.columns([5, 6])
with left:
    st.subheader(f"All {d_sae:,} features of {hook}")
    st.text_input("Search labels, notes, top tokens or an id", key="search",
                  placeholder="e.g. monday, weekday, or 17")
    c1, c2 = st.columns([3, 2])
    sort = c1.selectbox("Sort by", ["L1 share", "density", "max", "feature"], key="table_sort")
    shown = frame.assign(label=labels)[matches].sort_values(sort, ascending=(sort == "feature"), kind="stable")
    n_pages = max(1, -(-len(shown) // PAGE_ROWS))
    if st.session_state.get("_table_query") != (query, sort, hook):   # a new search starts on its first page
        st.session_state["_table_query"] = (query, sort, hook)
        st.session_state["table_page"] = 1
    st.session_state["table_page"] = min(max(1, int(st.session_state.get("table_page") or 1)), n_pages)
    page = c2.number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, step=1, key="table_page")
    rows = shown.iloc[(page - 1) * PAGE_ROWS: page * PAGE_ROWS]
    clickable_features(rows[["feature", "label", "density", "max", "L1 share", "top tokens"]], key="feature_table",
                       hooks=hook, height=420, width="stretch",
                       column_config={"density": st.column_config.NumberColumn(format="%.2e"),
                                      "max": st.column_config.NumberColumn(format="%.3f"),
                                      "label": st.column_config.TextColumn(width="medium"),
                                      # wide enough for the top tokens; a cell's full text shows when it is selected
                                      "top tokens": st.column_config.TextColumn(width="large"),
                                      "L1 share": st.column_config.ProgressColumn(
                                          format="%.4f", min_value=0.0,
                                          max_value=float(max(frame["L1 share"].max(), 1e-12)))})
    st.caption(f"{len(shown):,} of {d_sae:,} features match; rows {(page - 1) * PAGE_ROWS + 1:,}-"
               f"{min(page * PAGE_ROWS, len(shown)):,} shown. Click a row to open its feature. Labels marked "
               f"{AUTO_PREFIX.strip()} are written automatically from the top contexts. Density: fraction of "
               f"{stats.n_tokens:,} tokens where the feature fires.")
with right:
    st.subheader("Feature map")
    c1, c2 = st.columns(2)
    c1.selectbox("Layout", options("map_method"), key="map_method",
                 help="UMAP of the decoder directions (cosine); the first fit in a process takes ~40 s, then it is cached.")
    c2.selectbox("Colour by", options("map_color"), key="map_color")
    method = layout_method()
    color_kind = st.session_state["map_color"]
    feature_now = int(st.session_state["feature"]) if int(st.session_state["feature"]) < d_sae else None
    hits = np.flatnonzero(matches) if query else None
    if color_kind == "layer":
        same_width = len({s.d_in for s in saes}) == 1
        if not same_width:
            st.info("The SAEs read sites of different widths; showing this layer only.")
        stack = np.concatenate([decoder_weights(s) for s in saes]) if same_width else W_dec
        layer_of_point = np.concatenate([[s.hook_name] * s.d_sae for s in saes]) if same_width else np.array([hook] * d_sae)
        fmap = guarded(lambda: feature_map(stack, method, "feature_map:all"))
        offset = dict(zip(hooks, np.cumsum([0] + [s.d_sae for s in saes]))).get(hook, 0) if same_width else 0
        if fmap is not None:
            fig = feature_map_figure(fmap.coords, layer_of_point, "layer", categorical=True,
                                     axis_titles=map_axis_titles(fmap.method, fmap.coords, stack),
                                     selected=offset + feature_now if feature_now is not None else None,
                                     matches=offset + hits if hits is not None else None,
                                     match_label=f"search \u201c{query}\u201d",
                                     title=f"Every SAE's features ({fmap.method.upper()})")
            st.plotly_chart(fig, key="feature_map_all")
            st.caption("All layers in one map; colour: layer; red rings: search results on this layer.")
    else:
        fmap = guarded(lambda: feature_map(W_dec, method, f"feature_map:{hook}"))
        if fmap is not None:
            if color_kind == "lobe":
                # The Geometry page's lobes (same rule for their number), cached in the store.
                view = guarded(lambda: cached_view(
                    "Clustering co-occurrence into lobes...",
                    lambda: analysis.lobes_view(harvest, sae, store=get_store(), harvest_key=harvest_key)))
                lobes = Skipped("failed") if view is None else view.lobes
                lobe_of = np.full(d_sae, -1)
                if isinstance(lobes, Skipped):
                    st.info(lobes.reason)
                else:
                    lobe_of[lobes.features] = lobes.labels
                color, categorical = np.array([f"lobe {c}" if c >= 0 else "no lobe" for c in lobe_of]), True
            else:
                color, categorical = log_density(stats.fire_count, stats.n_tokens), False
            fig = feature_map_figure(fmap.coords, color, "log10 density" if color_kind == "density" else "lobe",
                                     axis_titles=map_axis_titles(fmap.method, fmap.coords, W_dec),
                                     categorical=categorical, hover=labels.tolist(),
                                     selected=feature_now, matches=hits, match_label=f"search \u201c{query}\u201d",
                                     title=f"{hook}: decoder directions ({fmap.method.upper()})")
            st.plotly_chart(fig, key="feature_map", on_select=_open_from_map, selection_mode="points")
            st.caption("One point per feature; nearby points have similar decoder directions. "
                       + ("Colour: lobes from co-occurrence (spectral clustering of phi)." if color_kind == "lobe"
                          else "Colour: log10 of the firing density.")
                       + (f" Red rings: the {len(hits):,} search results." if hits is not None else "")
                       + " Click a point to open its feature.")

st.divider()
feature = feature_picker(d_sae, default=top_feature)
sync_feature_url(hook, feature)
row = frame.iloc[feature]
entry = book.get(feature)
st.header(f"Feature {feature} on {hook}")
if entry is not None:
    st.markdown(f"**{md_escape(entry.label)}**" if entry.label else "**(no label)**")
    if entry.note:
        st.caption(md_escape(entry.note))
else:
    st.markdown(f"{md_escape(row['auto'])}  \n:gray[automatic description from its top contexts; "
                "write your own label under \u201cLabel and notes\u201d]")
with st.expander("Label and notes" + (" (edit)" if entry else ""), expanded=False):
    label_editor(sae, feature, book)
m = st.columns(4)
m[0].metric("density", f"{row['density']:.2e}")
m[1].metric("max activation", f"{row['max']:.3f}")
m[2].metric("share of L1 mass", f"{row['L1 share']:.4f}")
m[3].metric("fires on tokens", f"{int(stats.fire_count[feature]):,}")
st.markdown(f"**Top tokens** (centre of its top contexts): {md_escape(row['top tokens']) or '-'}")
alive = stats.fire_count[feature] > 0
if not alive:
    st.info("This feature never fired on the harvested corpus (a dead feature): it has no contexts or histogram.")

windows_left = int(harvest.settings["window_left"])


def _shaded(window, acts, caption: str) -> ShadedContext:
    """A harvested window (token ids, -1 = outside the text) and its per-token activations, ready to draw."""
    window = np.asarray(window)
    keep = window >= 0
    return ShadedContext(model.to_str_tokens(window[keep].tolist()), np.asarray(acts)[keep],
                         int(keep[:windows_left].sum()), caption)


col_a, col_b = st.columns(2)
with col_a:
    hist = np.asarray(stats.hist[feature])
    if hist.any():
        st.plotly_chart(activation_histogram(hist, np.asarray(stats.hist_edges), feature), key="feature_hist")
        st.caption("Log-spaced bins on a log axis, fitted to the bins that hold tokens; counts on a log axis.")
    effects = fm.logit_effects(W_dec[feature], model.W_U, k=10)
    decode = model.to_str_tokens
    st.plotly_chart(logit_effects_figure(list(zip(decode(effects.top_ids), effects.top_values)),
                                         list(zip(decode(effects.bottom_ids), effects.bottom_values)), feature),
                    key="logit_effects")
    st.caption("Red: the tokens whose logits this feature's decoder direction raises most; blue: lowers most "
               "(W_dec[i] @ W_U, top-k over the vocabulary, no layer norm).")
with col_b:
    values = np.asarray(stats.top_values[feature])
    vmax = float(values.max()) if values.size and values.max() > 0 else None
    st.markdown("**Top activating contexts**: every token shaded by this feature's activation on it; "
                "underlined: the token of the top activation")
    if (values > 0).any():
        top = [_shaded(stats.top_tokens[feature, slot], stats.top_acts[feature, slot], f"{values[slot]:.3f}")
               for slot in np.flatnonzero(values > 0)[:10]]
        st.html(contexts_html(top, vmax=vmax))
        sampled = stats.quantile_contexts(feature)                      # filled cells only, band by band
        q_edges = np.asarray(stats.quantile_edges)
        shown = [i for band in sorted(set(sampled.band.tolist()), reverse=True)[:4]
                 for i in np.flatnonzero(sampled.band == band)[:2]]
        if shown:
            st.markdown("**Contexts sampled by activation band** (weaker activations, same colour scale)")
            st.html(contexts_html([_shaded(sampled.tokens[i], sampled.acts[i],
                                           f"{sampled.value[i]:.3f} in [{q_edges[sampled.band[i]]:.3g}, "
                                           f"{q_edges[sampled.band[i] + 1]:.3g})") for i in shown],
                                  vmax=vmax, legend=False))
    else:
        st.write("No contexts.")

st.subheader("Test this feature")
st.text_area("Text to test the feature on (its activation is shown on each token)", key="feature_test_text", height=68,
             placeholder="e.g. on monday the king went to paris")
test_text = st.session_state.get("feature_test_text") or ""
if test_text.strip():
    try:
        tested = feature_on_text(model, sae, test_text, feature)
    except AtlasError as error:
        st.info(str(error))
    else:
        scale = max(float(tested.acts.max()), vmax or 0.0) or 1.0
        st.html(colour_legend_html(scale, label=f"feature {feature} activation")
                + highlight_tokens_html(tested.str_tokens, tested.acts, vmax=scale,
                                        unknown_positions=tested.unknown_positions,
                                        value_label=f"feature {feature}"))
        peak = int(np.argmax(tested.acts))
        cut = f" The last {tested.n_truncated} tokens were cut to fit the context." if tested.n_truncated else ""
        if tested.acts[peak] > 0:
            st.caption(f"Largest: {tested.acts[peak]:.3f} on {tested.str_tokens[peak]!r} (position {peak}); the colour "
                       f"scale runs to {scale:.3g}, the feature's top activation in the corpus or above.{cut}")
        else:
            st.caption(f"Feature {feature} does not fire on any token of this text.{cut}")

st.subheader("What does this feature do?")
if alive and (values > 0).any():
    top_prompt = guarded(lambda: context_prompt(model, stats.top_tokens[feature, 0], windows_left))
    if top_prompt is not None:
        feature_action(model, sae, feature, top_prompt, key="features_effect", where="its top context")
else:
    st.caption("A feature that never fired has no context to ablate it on.")

col_c, col_d = st.columns(2)
with col_c:
    st.markdown("**Decoder-cosine neighbours** (cosine of decoder directions)")
    neighbours = fm.decoder_neighbours(W_dec, feature, k=10, W_unit=unit_decoder(sae))
    feature_link_list([(hook, j, f"{c:.3f} \u00b7 {describe(j)}") for j, c in neighbours])
with col_d:
    st.markdown("**Co-occurring features** (fire in the same chunks)")
    view = cooccurrence_view(stats.cooc_counts(), stats.cooc_n_chunks, feature, total_chunks=stats.cooc_total_chunks,
                             chunk_tokens=int(harvest.settings.get("cooc_chunk_tokens", 0)) or None)
    st.caption(view.message)
    if view.status == "ok":
        feature_link_list([(hook, r.feature, (f"phi {r.phi:.3f} \u00b7 P(it | this) {r.p_other_given_this:.2f} "
                                              f"\u00b7 {describe(r.feature)}")) for r in view.rows])
    elif view.status == "always":
        shared = guarded(lambda: centre_cofiring(harvest_key, harvest, sae, model, feature))
        n_top = int((values > 0).sum())
        st.caption(f"Instead, token by token: the features that fire on the same tokens as its {n_top} strongest "
                   "activations (how many of them, and their mean activation there).")
        feature_link_list([(hook, j, f"{n}/{n_top} tokens \u00b7 mean {a:.3f} \u00b7 {describe(j)}")
                           for j, n, a in shared or []], empty="No other feature fires on those tokens.")

others = comparable_saes(saes, hook)
st.subheader("Compare across SAEs")
if not others:
    st.caption("Load another SAE with the same width in the sidebar (another layer, or another SAE on this site) "
               "to find this feature's nearest decoder directions in it.")
else:
    other_hooks = [s.hook_name for s in others]
    if st.session_state.get("compare_layer") not in other_hooks:
        st.session_state["compare_layer"] = other_hooks[min(hooks.index(hook), len(other_hooks) - 1)]
    other_hook = st.selectbox("Other SAE", other_hooks, key="compare_layer")
    other = next(s for s in others if s.hook_name == other_hook)
    nearest = nearest_directions(W_dec[feature], unit_decoder(other), k=8)
    here, there = st.columns(2)
    with here:
        st.markdown(f"**This feature: #{feature} on {hook}**")
        st.markdown(f"{md_escape(describe(feature))}  \n:gray[top tokens: {md_escape(row['top tokens']) or '-'}]")
    with there:
        st.markdown(f"**Nearest decoder directions on {other_hook}** (cosine)")
        feature_link_list([(other_hook, j, f"cos {c:.3f} \u00b7 {describe(j, other_hook)}") for j, c in nearest])
    st.caption("Cosine between decoder directions of two SAEs reading the same width of residual stream; "
               "above ~0.7 the two features usually write the same direction.")

follow_pending_open()
