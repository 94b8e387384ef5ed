"""Probe: one prompt through the model and every SAE."""

import functools

import numpy as np
import streamlit as st

from app.feature_actions import feature_action
from app.feature_data import layer_frame
from app.feature_labels import label_book, label_texts, sync_session_labels
from app.feature_links import clickable_features, feature_link, follow_pending_open
from app.page import feature_map, load_model_inputs
from app.registry import options
from app.resources import decoder_weights, peek_harvest
from app.state import layout_method, set_page
from app.widgets import feature_picker, guarded, layer_picker
from core.feature_views import label_column
from core.figures.features import (
    ERROR_RGB,
    HIGHLIGHT_RGB,
    colour_legend_html,
    feature_map_figure,
    highlight_tokens_html,
    logit_lens_figure,
    map_axis_titles,
    probe_heatmap,
)
from core.hooks import layer_of
from core.probe import probe_prompt, token_features_frame

set_page("probe")
st.title("Probe a prompt")
st.caption("The prompt runs once through the model; every layer's SAE encodes the residual stream at its site.")

model, saes = load_model_inputs()
sync_session_labels(saes)
# Top tokens and automatic descriptions beside feature ids when the harvest is at hand (never harvested here).
harvested = peek_harvest()


@functools.cache   # once per run of the page (the module runs afresh each time)
def layer_labels(hook_name: str) -> list[str]:
    """Every feature's label on `hook_name`: the user's, else the automatic description (with a harvest at
    hand), else ""."""
    sae = next(s for s in saes if s.hook_name == hook_name)
    user = label_texts(label_book(sae))
    if harvested is not None and hook_name in harvested[0].saes:
        harvest, key = harvested
        frame = layer_frame(key, hook_name, harvest.saes[hook_name], model, int(harvest.settings["window_left"]))
        return label_column(frame, user).tolist()
    return [user.get(f, "") for f in range(sae.d_sae)]


st.text_area("Prompt", key="prompt", height=80,
             help="Press Ctrl+Enter (or click outside) to probe. Words the organism does not know become UNK.")
text = st.session_state["prompt"]
if not text.strip():
    st.info("The prompt is empty: type a sentence to probe.")
    st.stop()
result = probe_prompt(model, saes, text)

if result.n_truncated:
    st.warning(result.truncation_note(model.n_ctx))
if result.unknown_positions:
    unknown = ", ".join(str(i) for i in result.unknown_positions)
    st.info(f"{len(result.unknown_positions)} word(s) are unknown to the model and were read as "
            f"{result.str_tokens[result.unknown_positions[0]]!r} (dashed red border; positions {unknown}).")

hooks = result.hook_names
left, right = st.columns([1, 2])
with left:
    hook = layer_picker(hooks)
    st.radio("Colour tokens by", options("color_by"), key="color_by", horizontal=True)
    layer = result.layer(hook)
    if st.session_state["color_by"] == "A feature":
        # With no feature chosen yet, colour by the one that fires hardest in this prompt on this layer.
        active = result.active_features(hook)
        strongest = max(active, key=lambda f: active[f]) if active else 0
        feature = feature_picker(layer.acts.shape[1], default=strongest)
        values, rgb, label = layer.acts[:, feature], HIGHLIGHT_RGB, f"feature {feature}"
        feature_link(hook, feature, layer_labels(hook)[feature], prefix="Open ")
    else:
        values, rgb, label = layer.recon_error, ERROR_RGB, "relative reconstruction error"
with right:
    st.markdown(f"**Tokens coloured by {label}** on `{hook}`")
    top_value = float(np.max(np.abs(values))) if len(values) else 0.0
    st.html(colour_legend_html(top_value, label=label, rgb=rgb)
            + highlight_tokens_html(result.str_tokens, values, rgb=rgb, unknown_positions=result.unknown_positions,
                                    focus=st.session_state.get("position"), value_label=label))
    if st.session_state["color_by"] == "A feature" and top_value == 0:
        st.info(f"Feature {feature} does not fire anywhere in this prompt on {hook}. Pick another feature, "
                "or colour by reconstruction error.")

if st.session_state["color_by"] == "A feature":
    st.subheader(f"What does feature {feature} do?")
    feature_action(model, next(s for s in saes if s.hook_name == hook), feature, text, key="probe_effect",
                   peak=top_value, where="the probed prompt")

st.subheader("Tokens x layers")
quantities = {"recon_error": "reconstruction error ||x - x_hat|| / ||x||", "l0": "active features (L0)",
              "l1": "total feature activation (L1 of the code)", "resid_norm": "residual norm ||x||"}
st.selectbox("Quantity", options("heatmap_quantity"), format_func=lambda q: quantities.get(q, q),
             key="heatmap_quantity")
quantity = st.session_state["heatmap_quantity"]
if quantity == "l0" and (k := result.constant_l0()) is not None:
    st.info(f"Every token has exactly {k} active features on every layer (TopK SAEs fire k features per token), "
            "so an L0 map would be one flat colour. Showing the total feature activation (L1 of the code) instead.")
    quantity = "l1"
st.plotly_chart(probe_heatmap(result.layer_matrix(quantity), result.str_tokens, hooks, quantity.replace("_", " "),
                              result.unknown_positions), key="probe_heatmap")
st.caption(f"Each cell: the {quantities[quantity]} of one token (column) at one SAE site (row).")

st.subheader("One token")
n_pos = len(result.str_tokens)
if not isinstance(st.session_state.get("position"), int) or not 0 <= st.session_state["position"] < n_pos:
    st.session_state["position"] = min(1, n_pos - 1)
st.selectbox("Token", list(range(n_pos)), format_func=lambda i: f"{i}: {result.str_tokens[i]!r}", key="position")
position = st.session_state["position"]
col_features, col_lens = st.columns(2)
with col_features:
    st.markdown("**Top SAE features per layer at this token**")
    frame = token_features_frame(result, position)
    if frame.empty:
        st.write("No feature fires at this token.")
    else:
        described = {h: layer_labels(h) for h in frame["hook"].unique()}
        frame["label"] = [described[h][f] for h, f in zip(frame["hook"], frame["feature"])]
        clickable_features(frame.drop(columns=["hook"]), key="probe_features", hooks=frame["hook"].tolist(),
                           width="stretch", height=300,
                           column_config={"activation": st.column_config.NumberColumn(format="%.3f"),
                                          "label": st.column_config.TextColumn(width="large")})
        st.caption("Click a row to open that feature on the Features page."
                   + ("" if harvested else " Open the Features page once to see top tokens beside the ids."))
with col_lens:
    st.markdown("**Logit lens**: the residual stream after each block, read through the unembedding")
    words = [model.to_str_tokens(result.lens_top_ids[i, position].tolist()) for i in range(len(result.lens_hooks))]
    st.plotly_chart(logit_lens_figure(result.lens_top_probs[:, position], words,
                                      [f"block {layer_of(h)}" for h in result.lens_hooks]), key="logit_lens")
    st.caption("Cells: the top next-token guesses per layer with their probability; colour: the probability, "
               "from 0 to the largest shown.")

st.subheader("The prompt's active features on the feature map")
sae = next(s for s in saes if s.hook_name == hook)
W_dec = decoder_weights(sae)
fmap = guarded(lambda: feature_map(W_dec, layout_method(), f"feature_map:{hook}"))
if fmap is not None:
    active = result.active_features(hook)
    peak = np.zeros(len(W_dec))
    for fid, value in active.items():
        peak[fid] = value
    fig = feature_map_figure(fmap.coords, peak, "max activation in prompt", categorical=False, highlight=active,
                             axis_titles=map_axis_titles(fmap.method, fmap.coords, W_dec),
                             hover=list(layer_labels(hook)),
                             title=f"{hook}: {len(active)} of {len(W_dec)} features fire in the prompt ({fmap.method.upper()})")
    st.plotly_chart(fig, key="probe_map")
    st.caption("One point per feature (its decoder direction); red rings: features active in the prompt, "
               "colour: their largest activation. The layout (PCA or UMAP) is chosen on the Features page.")

follow_pending_open()
