"""Overview: what is loaded, where each piece came from, and what each page shows."""

import streamlit as st

from app.resources import current_sources, get_model, get_saes, peek_harvest
from app.splice_tables import render_splice_tables
from app.state import set_page
from app.widgets import guarded

set_page("home")
st.title("Atlas")
st.caption("An interpretability dashboard: SAE features, prompt probing, concept geometry, "
           "superposition counts and spectral phases, on the embedded model organism or a model of your own.")

sources = current_sources()
model = guarded(lambda: get_model(sources.model))
saes = guarded(lambda: get_saes(sources)) if model is not None else None
if model is not None:
    card = model.card
    cols = st.columns(4)
    cols[0].metric("Model", card.name)
    cols[1].metric("Layers x width", f"{card.n_layers} x {card.d_model}")
    cols[2].metric("Parameters", f"{card.n_params:,}")
    cols[3].metric("SAEs", len(saes or []))
    st.subheader("Where each piece came from")
    rows = [{"piece": "model", "source": card.source, "from": card.origin, "version": card.revision}]
    for sae in saes or []:
        rows.append({"piece": f"SAE {sae.hook_name}", "source": sae.spec.source, "from": sae.origin,
                     "version": f"{sae.architecture}, {sae.d_sae} features"})
    corpus = sources.corpus
    rows.append({"piece": "corpus", "source": corpus.source,
                 "from": corpus.path or corpus.name or "the organism's synthetic world",
                 "version": f"split {corpus.split}, {corpus.context_size}-token chunks"})
    st.dataframe(rows, hide_index=True, width="stretch")
    if saes:
        st.subheader("How well each SAE stands in for its site")
        # Never harvests here: the table shows once a page that needs the harvest has computed it.
        stored = guarded(lambda: peek_harvest(sources))
        if stored is None:
            st.info("Splice-in quality (CE loss with each SAE spliced in, loss recovered, KL) is measured by the "
                    "harvest, which is not computed yet for these sources. Open Superposition, Geometry or Features "
                    "(or run `python -m core analyze`) to harvest the corpus once; the tables then show here.")
        else:
            render_splice_tables(stored[0])

st.subheader("Pages")
st.markdown("""
- **Probe**: type a prompt; see each token coloured by a feature or by the SAEs' reconstruction error,
  the top features of every layer at a token, a tokens x layers heatmap, the logit lens, and where the
  prompt's active features sit on the feature map.
- **Features**: a searchable table of every feature (density, max, share of L1 mass, top tokens); a
  dashboard per feature (histogram, top and quantile-sampled contexts, logit effects, decoder
  neighbours, co-occurring features); the feature map of decoder directions (click a point to open it).
- **Geometry**: the galaxy spectrum of the decoder cloud, lobes (co-occurrence against geometry), crystals (analogy parallelograms), circles (weekdays and months at any Fourier frequency), categorical simplices and hierarchical orthogonality, and linear probes for space and time.
- **Superposition**: effective features F and psi per layer, their convergence with sample count, interference against 1/m, and a toy-model lab trained live against its ground truth.
- **Spectra**: RankMe, alpha-ReQ, participation ratio and intrinsic dimension across layers, and over training checkpoints with the phase segmentation.
- **Sessions**: save what you are looking at with a title and notes, share it as a link,
  export it as a bundle (JSON + artifacts + a static HTML report) and import bundles.
""")
st.caption("Choose another model, checkpoint, SAEs (several at once, to compare layers), corpus or device in the "
           "sidebar under Sources; the address bar keeps your choice, so a reload or a bookmark reopens it.")
