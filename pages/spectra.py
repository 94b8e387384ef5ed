"""Spectra: RankMe, alpha-ReQ, participation ratio and intrinsic dimension across layers, and the
spectral phases over training checkpoints (Li et al. 2025; METHODS.md sections 4-5)."""

import math

import streamlit as st

from app.page import cached_view, load_view_inputs
from app.resources import current_sources, get_store
from app.state import remember_artifact, set_page
from app.widgets import working
from core import analysis
from core.analysis.results import Skipped
from core.figures.spectral import checkpoint_heatmap_figure, eigenspectrum_figure, layer_profile_figure, phase_figure
from core.harvest.distributed import cluster_from_env  # Ray when $ATLAS_RAY_ADDRESS is set (docs/SCALING.md)

set_page("spectra")
st.title("Spectra")
st.caption("How many dimensions the representations use, layer by layer and over training. "
           "RankMe = exp(entropy of the variance shares); PR = (sum lam)^2 / sum lam^2; alpha-ReQ = decay exponent "
           "of the eigenspectrum; TwoNN / MLE = intrinsic dimension of the harvest's token samples.")

sources = current_sources()
model, saes, harvest, harvest_key = load_view_inputs(require_saes=False)
store = get_store()

spectra = cached_view("Computing spectra and intrinsic dimensions per site...",
                      lambda: analysis.spectra_by_layer(harvest, store=store, harvest_key=harvest_key))
remember_artifact("spectra", spectra.key)

sites = list(spectra.sites)
per = spectra.per_site
st.subheader("Across layers")
layers = [str(e.layer) if e.layer is not None else e.site for e in per]
ids = {"TwoNN": [None if isinstance(e.twonn, Skipped) else e.twonn.dimension for e in per],
       "MLE": [None if isinstance(e.mle, Skipped) else e.mle.dimension for e in per]}
st.plotly_chart(layer_profile_figure(layers, [e.spectrum.rankme for e in per], [e.spectrum.alpha.alpha for e in per],
                                     [e.spectrum.participation_ratio for e in per], ids), key="spectra_profile")
st.caption("Expected on trained LMs: intrinsic dimension low early, expanding mid-depth, compressing late; "
           "RankMe and PR count effective directions (at most d), alpha is higher when variance sits in fewer directions.")
if spectra.fit_note:
    st.info(f"Small-d fit range: {spectra.fit_note}")

site = st.selectbox("Site for the eigenspectrum", sites, key="spectra_site")
entry = spectra.at(site)
fit = entry.spectrum.alpha
fitted = math.isfinite(fit.alpha)
st.plotly_chart(eigenspectrum_figure(entry.spectrum.eigenvalues, fit if fitted else None,
                                     title=f"Eigenspectrum of {site}"), key="spectra_eigen")
c1, c2, c3, c4 = st.columns(4)
c1.metric("RankMe", f"{entry.spectrum.rankme:.2f}")
c2.metric("participation ratio", f"{entry.spectrum.participation_ratio:.2f}")
c3.metric("alpha-ReQ", f"{fit.alpha:.3f}" if fitted else "n/a", help=f"fitted over ranks {fit.first_rank}..{fit.last_rank}")
twonn = entry.twonn
c4.metric("TwoNN ID", "n/a" if isinstance(twonn, Skipped) else f"{twonn.dimension:.2f}",
          help=twonn.reason if isinstance(twonn, Skipped) else "TwoNN (Facco et al. 2017) on the reservoir samples")
st.caption(f"Dashed line: the alpha-ReQ power law over its shaded fit range; {spectra.n_tokens:,} harvested tokens.")

st.subheader("Over training checkpoints")
is_organism = sources.model.source == "organism"
checkpoint_spec = sources.model
options = analysis.checkpoint_options(checkpoint_spec)
if not options:
    st.info(f"{sources.model.name} has no training checkpoints that Atlas can list. Layer x checkpoint tables run "
            "on the organism's saved checkpoints and on the TransformerLens models that publish theirs "
            "(Pythia, stanford-crfm).")
    st.stop()
c1, c2, c3 = st.columns(3)
tokens = c1.select_slider("Tokens per checkpoint", [1024, 2048, 4096, 8192], value=2048, key="spectra_ckpt_tokens")
metric = c2.selectbox("Heatmap", ["RankMe", "alpha-ReQ", "participation ratio"], key="spectra_ckpt_metric")
smoothing = c3.select_slider("Smoothing width (log-step)", [0.0, 0.25, 0.5, 1.0], value=0.5, key="spectra_smoothing")
if is_organism:
    run_now = st.toggle("Compute the checkpoint tables", value=True, key="spectra_ckpt_on",
                        help="Loads every checkpoint and harvests its activation moments on a slice of the world corpus.")
    if not run_now:
        st.stop()
    bar = st.progress(0.0, text="checkpoints")
    over = analysis.spectra_over_checkpoints(
        checkpoint_spec, max_tokens=int(tokens), store=store, smoothing=float(smoothing),
        progress=lambda f, text: bar.progress(f, text=text), cluster=cluster_from_env())
    bar.empty()
else:
    chosen = st.multiselect(
        "Checkpoints", list(options), default=analysis.default_checkpoints(options, 8), key="spectra_tl_ckpts",
        format_func=lambda c: f"step {options[c]:,} (index {c})",
        help="Training checkpoints TransformerLens lists for this model; the default is 8 spread evenly in log(step).")
    st.warning(f"Each checkpoint is a separate download of {sources.model.name} unless it is already in the Hugging "
               f"Face cache. Every checkpoint is harvested on {int(tokens):,} tokens of the sidebar's corpus, "
               "then freed; results are cached per checkpoint, so adding one later computes only that one.")
    request = (checkpoint_spec, tuple(sorted(chosen, key=lambda c: options[c])), int(tokens), float(smoothing),
               sources.corpus)
    results = st.session_state.setdefault("spectra_tl_results", {})
    if st.button("Compute over these checkpoints", key="spectra_tl_run", disabled=len(chosen) < 2):
        with working(f"Computing spectra over {len(chosen)} checkpoints...", expanded=True):
            bar = st.progress(0.0, text="checkpoints")
            results[request] = analysis.spectra_over_checkpoints(
                checkpoint_spec, list(request[1]), max_tokens=int(tokens), store=store, smoothing=float(smoothing),
                corpus=sources.corpus, progress=lambda f, text: bar.progress(f, text=text),
                cluster=cluster_from_env())
    over = results.get(request)
    if over is None:
        if len(chosen) < 2:
            st.info("Choose at least 2 checkpoints.")
        st.stop()
remember_artifact("spectra_checkpoints", over.key)
table = {"RankMe": over.rankme, "alpha-ReQ": over.alpha, "participation ratio": over.participation_ratio}[metric]
st.plotly_chart(checkpoint_heatmap_figure(table, list(over.steps), list(over.layers), metric), key="spectra_heatmap")
phase_site = st.selectbox("Layer for the phases", list(over.sites), key="spectra_phase_site")
st.plotly_chart(phase_figure(over.phases[phase_site]), key="spectra_phases")
segments = over.phases[phase_site].segments
st.caption("Phases: warmup = RankMe collapses; entropy-seeking = RankMe rises (alpha falls); compression-seeking = "
           "RankMe falls after rising (alpha rises). Read from the sign of d(smoothed RankMe)/d log(step); raw points shown. "
           + (f"Alpha fit range: {over.fit_note}" if over.fit_note else ""))
st.dataframe([{"phase": s.label, "from step": int(s.start_step), "to step": int(s.end_step),
               "RankMe change": s.rankme_change, "alpha change": s.alpha_change,
               "alpha moved opposite": s.alpha_agrees} for s in segments], hide_index=True)
