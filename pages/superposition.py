"""Superposition: effective features per neuron per layer, their convergence, interference against 1/m,
and the toy-model lab (Bereska et al. 2025; Liu, Liu & Gore 2025; Elhage et al. 2022)."""

import streamlit as st

from app.page import cached_view, load_view_inputs
from app.resources import get_store
from app.splice_tables import SPLICE_CAPTION, splice_columns
from app.state import remember_artifact, set_page
from app.widgets import guarded
from core import analysis
from core.analysis.results import Skipped
from core.figures.superposition import (
    convergence_figure,
    effective_features_figure,
    feature_dimensionality_figure,
    interference_figure,
    toy_weights_figure,
)

set_page("superposition")
st.title("Superposition")
st.caption("How many features each layer carries per dimension. F = exp(entropy of each feature's share of the "
           "total L1 activation mass), pooled over every harvested token; psi = F / N with N = the site's width.")

tab_model, tab_toy = st.tabs(["This model", "Toy-model lab"])

with tab_toy:
    st.caption("Toy model of superposition (Elhage et al. 2022): n features, each present with probability 1 - S, "
               "squeezed into m dimensions and read back through ReLU(W^T W x + b). Expected: dense features (S ~ 0) "
               "get one dimension each (D_i = 1) or are dropped; sparse ones share dimensions in regular shapes "
               "(antipodal pairs D_i = 1/2, pentagons 2/5).")
    c1, c2, c3, c4 = st.columns(4)
    n = c1.slider("features n", 2, 20, 5, key="toy_n")
    m = c2.slider("dimensions m", 1, 10, 2, key="toy_m")
    one_minus_s = c3.select_slider("feature probability 1 - S", [1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01], value=0.05,
                                   key="toy_density")
    decay = c4.select_slider("importance decay (I_i = decay^i)", [1.0, 0.9, 0.8, 0.7], value=1.0, key="toy_decay")
    if st.button("Train the toy model", key="toy_train"):
        st.session_state["toy_result"] = guarded(lambda: cached_view(
            f"Training a toy model with {n} features in {m} dimensions and an SAE on it...",
            lambda: analysis.toy_lab(n=n, m=m, sparsity=round(1.0 - one_minus_s, 6), importance_decay=decay,
                                     steps=1500, store=get_store())))
    toy = st.session_state.get("toy_result")
    if toy:
        t = toy.settings
        st.markdown(f"**Trained:** n = {t.n}, m = {t.m}, S = {t.sparsity:g}, decay {t.importance_decay:g}; "
                    f"loss {toy.final_loss:.4f}")
        c1, c2, c3 = st.columns(3)
        c1.metric("D* = m / ||W||_F^2", f"{toy.geometry.D_star:.3f}")
        c2.metric("F through an SAE", f"{toy.F_sae:.2f}", help=f"SAE with {toy.sae_dictionary} latents, L1 0.1")
        c3.metric("ground-truth F", f"{toy.F_true:.2f}",
                  help="exp(entropy) of the true features' L1 mass, over the features the toy represents")
        left, right = st.columns(2)
        left.plotly_chart(toy_weights_figure(toy.W, toy.importance), key="toy_weights")
        right.plotly_chart(feature_dimensionality_figure(toy.geometry), key="toy_dims")
        st.caption("Right: D_i per feature against the reference values of the paper (dotted). The pentagon setting "
                   "(n = 5, m = 2, 1 - S = 0.05, decay 1) gives D_i near 2/5.")
    else:
        st.info("Choose the settings and press the button: training takes a few seconds.")

with tab_model:
    model, saes, harvest, harvest_key = load_view_inputs(
        no_saes="Superposition counts need SAEs: choose them in the sidebar.")
    store = get_store()
    with st.spinner("Effective features and interference..."):
        result = analysis.superposition_by_layer(harvest, saes, model, store=store, harvest_key=harvest_key)
    remember_artifact("superposition", result.key)
    fired = [(e, effective) for e in result.per_sae if not isinstance(effective := e.effective, Skipped)]
    if fired:
        st.plotly_chart(effective_features_figure([e.hook_name for e, _ in fired], [f for _, f in fired]),
                        key="sup_effective")
        st.caption("Expected (Bereska et al. 2025, Pythia-70M): MLP > residual > attention; counts rise early, compress "
                   "mid-depth and re-expand. F <= alive features <= dictionary size always.")
        st.dataframe([{"site": e.hook_name, "F": f.F, "psi": f.psi, "alive": f.alive, "dictionary": e.d_sae,
                       "mean L0": f.mean_l0, "explained variance": e.explained_variance,
                       **splice_columns(harvest, e.hook_name)}
                      for e, f in fired], hide_index=True, key="sup_table")
        st.caption("Loss recovered: how much of the next-token loss the model keeps with the SAE's reconstruction "
                   "spliced in (1 = all, 0 = as bad as zero- or mean-ablating the site); KL spliced = KL(clean || "
                   "spliced) per token. The full definitions are on the Overview page.",
                   help=SPLICE_CAPTION)
    curves = {e.hook_name: e.convergence for e in result.per_sae if not isinstance(e.convergence, Skipped)}
    shown = st.multiselect("Sites on the convergence curve", list(curves), default=list(curves), key="sup_curve_sites")
    if shown:
        st.plotly_chart(convergence_figure({h: curves[h] for h in shown}), key="sup_convergence")
        st.caption("F measured on the first t tokens: a flat end means the corpus is large enough "
                   "(Pythia-70M saturates after ~2e4 tokens).")
    names = [f"decoder {e.hook_name}" for e in result.per_sae]
    stats = [e.interference for e in result.per_sae]
    if not isinstance(result.unembedding, Skipped):
        names.append("unembedding rows")
        stats.append(result.unembedding)
    st.plotly_chart(interference_figure(names, stats), key="sup_interference")
    st.caption("Mean-squared |cos| between directions against 1/m: random unit vectors sit on the line msq = 1/m; "
               "strong superposition keeps msq near it (Liu, Liu & Gore 2025).")
