"""Features: the table of every feature, one feature's dashboard, and the feature map."""

import numpy as np
import streamlit as st

from app.resources import cached_view, decoder_weights, get_feature_map, get_store, load_view_inputs
from app.state import layout_method, set_page
from app.widgets import feature_picker, guarded, layer_picker
from core import analysis
from core import feature_map as fm
from core.analysis.results import Skipped
from core.figures.features import activation_histogram, context_html, feature_map_figure, logit_effects_figure

set_page("features")
st.title("Features")
st.caption("Statistics from one harvest pass over the corpus; click a table row or a point of the map to open a feature.")

model, saes, harvest, harvest_key = load_view_inputs()

hook = layer_picker([s.hook_name for s in saes])
sae = next(s for s in saes if s.hook_name == hook)
stats = harvest.saes[hook]
W_dec = decoder_weights(sae)
center = int(harvest.settings["window_left"])


@st.cache_data(show_spinner=False, max_entries=16)
def _table(harvest_key: str, hook: str):
    ids = fm.top_token_ids(stats.top_tokens, stats.top_values, center)
    words = [", ".join(repr(w) for w in model.to_str_tokens(row)) if row else "" for row in ids]
    return fm.feature_table(stats.l1_mass, stats.fire_count, stats.max_act, stats.n_tokens, words)


table = _table(harvest_key, hook)
d_sae = len(table)
# Open on the most useful feature: with none chosen yet (a fresh session; a restored one keeps its own),
# the one carrying the largest share of this layer's L1 mass.
top_feature = int(np.argmax(stats.l1_mass))
if st.session_state.get("feature") is None:
    st.session_state["feature"] = top_feature


def _open_from_table():
    rows = st.session_state["feature_table"].selection.rows
    if rows:
        st.session_state["feature"] = int(st.session_state["_table_ids"][rows[0]])


def _open_from_map():
    points = st.session_state["feature_map"].selection.points
    for point in points:
        custom = point.get("customdata")
        if custom:
            st.session_state["feature"] = int(custom[0] if isinstance(custom, list) else custom)
            return


left, right = st.columns([5, 6])
with left:
    st.subheader(f"All {d_sae} features of {hook}")
    st.text_input("Search top tokens or id", key="search", placeholder="e.g. monday, or 17")
    query = st.session_state["search"].strip().lower()
    shown = table
    if query:
        shown = table[table["top tokens"].str.lower().str.contains(query, regex=False)
                      | (table["feature"].astype(str) == query)]
    shown = shown.sort_values("L1 share", ascending=False)
    st.session_state["_table_ids"] = shown["feature"].tolist()
    st.dataframe(shown, hide_index=True, width="stretch", height=420, key="feature_table",
                 on_select=_open_from_table, selection_mode="single-row",
                 column_config={"density": st.column_config.NumberColumn(format="%.2e"),
                                "max": st.column_config.NumberColumn(format="%.3f"),
                                "L1 share": st.column_config.ProgressColumn(format="%.4f", min_value=0.0,
                                                                            max_value=float(max(table["L1 share"].max(), 1e-12)))})
    st.caption(f"{len(shown)} shown; sorted by share of the L1 mass (click a column to sort). "
               f"Density: fraction of {stats.n_tokens:,} tokens where the feature fires.")
with right:
    st.subheader("Feature map")
    c1, c2 = st.columns(2)
    c1.selectbox("Layout", ["PCA (quick)", "UMAP"], key="map_method",
                 help="UMAP of the decoder directions (cosine); the first fit in a process takes ~40 s, then it is cached.")
    c2.selectbox("Colour by", ["density", "lobe", "layer"], key="map_color")
    method = layout_method()
    color_kind = st.session_state["map_color"]
    if color_kind == "layer":
        same_width = len({s.d_in for s in saes}) == 1
        if not same_width:
            st.info("The SAEs read sites of different widths; showing this layer only.")
        stack = np.concatenate([decoder_weights(s) for s in saes]) if same_width else W_dec
        labels = np.concatenate([[s.hook_name] * s.d_sae for s in saes]) if same_width else np.array([hook] * d_sae)
        fmap = guarded(lambda: get_feature_map(stack, method, "feature_map:all"))
        ids_offset = {s.hook_name: o for s, o in zip(saes, np.cumsum([0] + [s.d_sae for s in saes]))}
        selected = None
        if fmap is not None:
            fig = feature_map_figure(fmap.coords, labels, "layer", categorical=True,
                                     selected=ids_offset[hook] + int(st.session_state["feature"])
                                     if same_width and int(st.session_state["feature"]) < d_sae else None,
                                     title=f"Every SAE's features ({fmap.method.upper()})")
            st.plotly_chart(fig, key="feature_map_all")
            st.caption("All layers in one map; colour: layer. Clicking opens features on the Layer above only.")
    else:
        fmap = guarded(lambda: get_feature_map(W_dec, method, f"feature_map:{hook}"))
        if fmap is not None:
            if color_kind == "lobe":
                # The Geometry page's lobes (same rule for their number), cached in the store.
                view = cached_view("Clustering co-occurrence into lobes...",
                                   lambda: analysis.lobes_view(harvest, sae, store=get_store(), harvest_key=harvest_key),
                                   done="Lobes ready.")
                lobes = Skipped("failed") if view is None else view.lobes
                lobe_of = np.full(d_sae, -1)
                if isinstance(lobes, Skipped):
                    st.info(lobes.reason)
                else:
                    lobe_of[lobes.features] = lobes.labels
                color = np.array([f"lobe {c}" if c >= 0 else "no lobe" for c in lobe_of])
                categorical = True
            else:
                color = np.log10(np.maximum(table["density"].to_numpy(), 1e-7))
                categorical = False
            fig = feature_map_figure(fmap.coords, color, "log10 density" if color_kind == "density" else "lobe",
                                     categorical=categorical, hover=table["top tokens"].tolist(),
                                     selected=int(st.session_state["feature"]) if int(st.session_state["feature"]) < d_sae else None,
                                     title=f"{hook}: decoder directions ({fmap.method.upper()})")
            st.plotly_chart(fig, key="feature_map", on_select=_open_from_map, selection_mode="points")
            st.caption("One point per feature; nearby points have similar decoder directions. "
                       + ("Colour: lobes from co-occurrence (spectral clustering of phi)." if color_kind == "lobe"
                          else "Colour: log10 of the firing density.") + " Click a point to open its feature.")

st.divider()
feature = feature_picker(d_sae, default=top_feature)
row = table.iloc[feature]
st.header(f"Feature {feature} on {hook}")
m = st.columns(5)
m[0].metric("density", f"{row['density']:.2e}")
m[1].metric("max activation", f"{row['max']:.3f}")
m[2].metric("share of L1 mass", f"{row['L1 share']:.4f}")
m[3].metric("fires on tokens", f"{int(stats.fire_count[feature]):,}")
m[4].metric("top tokens", row["top tokens"] or "-")

if stats.fire_count[feature] == 0:
    st.info("This feature never fired on the harvested corpus (a dead feature): it has no contexts or histogram.")



def _context(window, value: float, vmax: float | None) -> str:
    """HTML of one context window (token ids, -1 = outside the corpus) with `value` on its centre token."""
    window = np.asarray(window)
    keep = window >= 0
    words = model.to_str_tokens(window[keep].tolist())
    acts = np.zeros(len(words))
    centre_index = int(keep[:center].sum())
    acts[centre_index] = value
    return context_html(words, acts, vmax=vmax, center=centre_index)


col_a, col_b = st.columns(2)
with col_a:
    hist = np.asarray(stats.hist[feature])
    edges = np.asarray(stats.hist_edges)
    nonzero = np.flatnonzero(hist[1:-1])
    if len(nonzero):
        lo, hi = nonzero[0], nonzero[-1] + 1
        st.plotly_chart(activation_histogram(hist[1:-1][lo:hi], edges[lo:hi + 1], feature), key="feature_hist")
        st.caption(f"Log-spaced bins. Outside the range: {int(hist[0])} below {edges[0]:g}, {int(hist[-1])} above {edges[-1]:g}.")
    W_U = model.W_U.cpu().numpy()
    top, bottom = fm.logit_effects(W_dec, W_U, feature, k=10)
    decode = model.to_str_tokens
    st.plotly_chart(logit_effects_figure(list(zip(decode([t for t, _ in top]), [v for _, v in top])),
                                         list(zip(decode([t for t, _ in bottom]), [v for _, v in bottom])), feature),
                    key="logit_effects")
    st.caption("Red: tokens whose logits this feature's decoder direction raises; blue: lowers (W_dec[i] @ W_U, no layer norm).")
with col_b:
    st.markdown("**Top activating contexts** (highlighted: the token where it fired, with its activation)")
    values = np.asarray(stats.top_values[feature])
    vmax = float(values.max()) if values.size and values.max() > 0 else None
    shown_any = False
    for slot in np.flatnonzero(values > 0)[:10]:
        st.html(f"<div style='font-size:0.8em;color:#666'>{values[slot]:.3f}</div>"
                + _context(stats.top_tokens[feature, slot], values[slot], vmax))
        shown_any = True
    if not shown_any:
        st.write("No contexts.")
    st.markdown("**Contexts sampled by activation band**")
    sampled = stats.quantile_contexts(feature)                      # filled cells only, band by band
    q_edges = np.asarray(stats.quantile_edges)
    for band in sorted(set(sampled.band.tolist()), reverse=True)[:4]:
        st.markdown(f"<span style='font-size:0.85em'>activation in [{q_edges[band]:.3g}, {q_edges[band + 1]:.3g})</span>",
                    unsafe_allow_html=True)
        for i in np.flatnonzero(sampled.band == band)[:2]:
            st.html(_context(sampled.tokens[i], sampled.value[i], vmax))

col_c, col_d = st.columns(2)
with col_c:
    st.markdown("**Decoder-cosine neighbours**")
    neighbours = fm.decoder_neighbours(W_dec, feature, k=10)
    st.dataframe([{"feature": j, "cosine": round(c, 4), "top tokens": table.iloc[j]["top tokens"]} for j, c in neighbours],
                 hide_index=True, width="stretch")
with col_d:
    st.markdown("**Co-occurring features** (fire in the same chunks; phi coefficient)")
    pairs = fm.cooccurring_features(stats.cooc_counts(), feature, stats.cooc_n_chunks, k=10)
    if not pairs:
        st.write("No feature fires in the same chunks as this one.")
    st.dataframe([{"feature": int(j), "phi": round(p, 4), "chunks together": n,
                   "top tokens": table.iloc[int(j)]["top tokens"]} for j, p, n in pairs],
                 hide_index=True, width="stretch")
    if stats.cooc_sampled:
        st.caption(f"phi over a uniform sample of {stats.cooc_n_chunks:,} of {stats.cooc_total_chunks:,} chunks "
                   f"(standard error about {1 / np.sqrt(stats.cooc_n_chunks):.3f}).")
