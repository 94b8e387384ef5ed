"""Geometry: how SAE features and concepts are arranged in activation space, from galaxy scale (decoder
spectrum) through lobes (co-occurrence vs geometry), crystals (analogies), circles (weekdays, months),
categorical simplices and hierarchies, to linear probes of space and time (METHODS.md sections 6-9)."""

import numpy as np
import streamlit as st

from app.circle_dial import render_circle_dial
from app.concept_sets import available_sets, position_picker, readings_note, set_chooser, upload_box
from app.page import cached_view, load_model_inputs, load_view_inputs
from app.resources import decoder_weights, get_store
from app.state import remember_artifact, set_page
from app.widgets import guarded
from core import analysis
from core.analysis.concept_views import VIEW_KINDS
from core.analysis.results import Concepts, CrystalFit, Crystals, DecoderClusters, Lobes, Skipped
from core.feature_map import pca_layout
from core.figures.analysis_views import (
    circularity_by_layer_figure,
    cluster_pca_figure,
    crystal_quality_figure,
)
from core.figures.captions import clustering_entropy_caption, galaxy_alpha_caption, isotropic_galaxy_alpha
from core.figures.features import map_axis_titles
from core.figures.geometry import (
    alpha_per_layer_figure,
    circle_pcs_figure,
    crystals_figure,
    fourier_shares_figure,
    galaxy_spectrum_figure,
    hierarchy_figure,
    lobe_agreement_figure,
    lobe_map_figure,
    probe_figures_from_layers,
    probe_map_figure,
    simplex_figure,
)
from core.metrics.concepts import simplex_projection

set_page("geometry")
st.title("Geometry")
st.caption("The shape of the feature cloud and of concepts. Concept sets (the library, the organism's planted "
           "world, or your own) are read on any model: weekdays and months should form circles, analogies "
           "parallelograms, taxonomies simplices and hierarchies, cities a map.")

model, saes = load_model_inputs(require_saes=False)
store = get_store()
upload_box()
position = position_picker()
available = available_sets(model)
truth = analysis.organism_ground_truth(model)
cyclic_ids = analysis.cyclic_token_ids(model, truth)
geo = None
if saes:
    model, saes, harvest, harvest_key = load_view_inputs()
    geo = cached_view("Decoder spectra, lobes and decoder clusters per SAE...",
                      lambda progress: analysis.geometry_by_layer(harvest, saes, store=store, cyclic_token_ids=cyclic_ids,
                                                                  harvest_key=harvest_key, progress=progress),
                      progress=True)
    remember_artifact("geometry", geo.key)
MAX_PROBE_ITEMS = analysis.PAGE_MAX_PROBE_ITEMS   # probes read a seeded sample of a larger set
NO_SAES = "The decoder views need SAEs: choose them in the sidebar under Sources."


def concept_view(view: str):
    """The chosen sets' `view` (circles, crystals, concepts, probes) on this model, with what could not be read."""
    chosen = set_chooser(view, available, VIEW_KINDS[view], model)
    if not chosen:
        st.info(f"Choose a concept set for this view ({', '.join(VIEW_KINDS[view])}), or upload your own above.")
        return Skipped("no set chosen")
    names = ", ".join(s.name for s in chosen)
    result = guarded(lambda: cached_view(f"Reading {names} on the model...", lambda progress: analysis.concept_geometry(
        model, chosen, views=(view,), position=position, store=store, progress=progress,
        max_probe_items=MAX_PROBE_ITEMS), progress=True))
    if result is None:
        return Skipped("failed")
    remember_artifact(f"concepts_{view}", result.key)
    dropped = sum(len(r.dropped) for r in result.readings)
    with st.expander(f"What the model read ({dropped} word{'s' if dropped != 1 else ''} it cannot represent)",
                     expanded=bool(dropped)):
        readings_note(result.readings)
    return getattr(result, view)


hooks = list(geo.hooks) if geo else []
tabs = st.tabs(["Galaxy", "Lobes", "Crystals", "Circles", "Concepts", "Probes"])


def probe_columns_of(label: str) -> tuple[str, ...]:
    """The values a probe predicts, from its label "set (longitude, latitude)" (concept_views.probes_of_sets)."""
    return tuple(label.rsplit(" (", 1)[-1].rstrip(")").split(", "))


def _words(ids):
    return model.to_str_tokens([int(i) for i in ids]) if len(ids) else []


with tabs[0]:
    fitted = [e for e in geo.per_sae if not isinstance(e.galaxy, Skipped)] if geo else []
    if geo is None:
        st.info(NO_SAES)
    elif fitted:
        shape = next(s for s in saes if s.hook_name == fitted[0].hook_name)
        null_alpha = isotropic_galaxy_alpha(shape.d_sae, shape.d_in)
        st.plotly_chart(alpha_per_layer_figure([e.layer for e in fitted], [e.galaxy.alpha for e in fitted],
                                               isotropic_reference=null_alpha), key="geo_alpha_layers")
        st.caption(galaxy_alpha_caption([e.galaxy for e in fitted], n_features=shape.d_sae, d=shape.d_in,
                                        null_alpha=null_alpha))
        hook = st.selectbox("SAE", [e.hook_name for e in fitted], key="geo_galaxy_hook")
        entry = geo.at(hook)
        st.plotly_chart(galaxy_spectrum_figure(entry.galaxy, title=f"Decoder-cloud spectrum of {hook}"), key="geo_galaxy")
        ce = entry.clustering_entropy
        if not isinstance(ce, Skipped):
            st.caption(clustering_entropy_caption(ce))
    else:
        st.info("No decoder spectrum could be fitted: " + "; ".join(e.galaxy.reason for e in geo.per_sae))

with tabs[1]:
    if geo is None:
        st.info(NO_SAES)
    else:
        c1, c2, c3 = st.columns(3)
        hook = c1.selectbox("SAE", hooks, key="geo_lobe_hook")
        affinity = c2.selectbox("Co-occurrence affinity", ["phi", "jaccard", "dice", "overlap", "simple_matching"],
                                key="geo_affinity")
        n_lobes = c3.number_input("Lobes (0 = automatic)", min_value=0, max_value=50, value=0, step=1, key="geo_n_lobes")
        sae = next(s for s in saes if s.hook_name == hook)
        lobes: Lobes | Skipped
        if affinity == "phi" and n_lobes == 0:
            lobes = geo.at(hook).lobes
        else:
            with st.spinner("Clustering..."):
                view = guarded(lambda: analysis.lobes_view(harvest, sae, store=store, n_lobes=n_lobes or None,
                                                           affinity=affinity, harvest_key=harvest_key))
            lobes = Skipped("failed") if view is None else view.lobes
        if isinstance(lobes, Skipped):
            st.info(lobes.reason)
        else:
            ag = lobes.agreement
            left, right = st.columns(2)
            left.plotly_chart(lobe_agreement_figure(ag, title=f"Lobes ({affinity}) vs decoder geometry: AMI"),
                              key="geo_lobe_ami")
            rows = decoder_weights(sae)[lobes.features]
            coords = pca_layout(rows)
            right.plotly_chart(lobe_map_figure(coords, lobes.labels, hover=[f"feature {i}" for i in lobes.features],
                                               title="Features on the top-2 PCs of their decoder rows, coloured by lobe",
                                               axis_titles=map_axis_titles("pca", coords, rows)),
                               key="geo_lobe_map")
            st.caption(f"{len(lobes.features)} features in {lobes.n_lobes} lobes over {lobes.n_chunks} chunks. "
                       "Lobes: spectral clusters of how features fire together in the same chunk; geometry: spectral "
                       "clusters of decoder angles. AMI far right of the permutation null = functional lobes are also "
                       f"geometric (observed {ag.ami:.3f}, null {ag.null_mean:.3f} +- {ag.null_std:.3f}, p = {ag.p_value:.3g}).")

with tabs[2]:
    crystals = concept_view("crystals")
    if not isinstance(crystals, Crystals):
        st.info(crystals.reason)
    else:
        use_lda = st.toggle("Remove distractor directions with LDA", value=False, key="geo_lda")
        fits = {e.site: e.fit for e in crystals.per_site if isinstance(e.fit, CrystalFit)}
        sites_ok = list(fits)
        st.plotly_chart(crystal_quality_figure([e.layer for e in crystals.per_site if e.site in fits],
                                               [f.quality for f in fits.values()], use_lda),
                        key="geo_crystal_layers")
        site = st.selectbox("Layer", sites_ok, key="geo_crystal_site")
        arrows = fits[site].lda if use_lda else fits[site].pca
        st.plotly_chart(crystals_figure(arrows.a, arrows.b, list(crystals.relations),
                                        list(crystals.words_a), list(crystals.words_b), use_lda=use_lda), key="geo_crystals")
        q = fits[site].quality.lda if use_lda else fits[site].quality.raw
        scores = ("" if q is None else f"Here: within-relation cos {q.within_cos:.2f} vs across {q.across_cos:.2f}, "
                  f"silhouette {q.silhouette:.2f}. ")
        st.caption(f"Arrows a -> b of each analogy pair (man -> woman, france -> paris, walk -> walked, ...). "
                   f"Parallelograms: arrows of one relation parallel. {scores}"
                   "LDA scores are held out (fitted on other pairs); the LDA picture is fitted on all pairs, for display.")

with tabs[3]:
    circles = concept_view("circles")
    cycles = {} if isinstance(circles, Skipped) else circles.cycles
    if isinstance(circles, Skipped) and circles.reason not in ("no set chosen", "failed"):
        st.info(circles.reason)
    if cycles:
        name = st.selectbox("Cyclic items", list(cycles), key="geo_cycle")
        cycle = cycles[name]
        best = cycle.best
        if not isinstance(best, Skipped):
            st.markdown(f"Strongest: **{best.location}**, {best.site}: f = {best.frequency}, "
                        f"share {best.share:.2f}, p = {best.p_value:.3g}"
                        + ("" if best.circle else " (no circle at p < 0.05)") + ".")
        location = st.radio("Where the representations are read", list(cycle.locations), horizontal=True,
                            key="geo_circle_location",
                            help="token: at the item's own token(s) in the set's context templates; answer position: "
                                 "at the last token of its relation templates ('two days after {word} is'), "
                                 "averaged over the prompts that share an answer.")
        entry = cycle.locations[location]
        if not entry.per_site:
            st.info("Nothing to score at this location (every item has the same representation).")
        else:
            st.plotly_chart(circularity_by_layer_figure(entry, name, location), key="geo_circ_layers")
            # Open on the site with the clearest circle (smallest p, then largest share).
            clearest = min(entry.per_site, key=lambda e: (e.circularity.p_value, -e.circularity.best_share))
            site_names = list(entry.sites)
            site = st.selectbox("Site", site_names, index=site_names.index(clearest.site), key="geo_circle_site")
            scored = entry.at(site)
            c = scored.circularity
            left, right = st.columns(2)
            left.plotly_chart(fourier_shares_figure(c), key="geo_fourier")
            n_pc = len(scored.pc_variance)
            # The best-f Fourier plane shows a circle at any frequency; a PC pair only when it is the top variance.
            fourier_plane = f"Fourier plane of f = {c.best_frequency}"
            views = [fourier_plane] + [(a, a + 1) for a in range(n_pc - 1)]
            view = st.selectbox("Projection", views, key="geo_pc_pair",
                                format_func=lambda v: v if isinstance(v, str) else f"PC {v[0] + 1} - PC {v[1] + 1}")
            if isinstance(view, str):   # the Fourier plane; the others are PC pairs
                right.plotly_chart(circle_pcs_figure(c.points_2d, list(cycle.words), pcs=(0, 1),
                                                     cycle_order=list(c.visit_order), axis_label="Fourier",
                                                     title=f"{name}: the f = {c.best_frequency} plane"),
                                   key="geo_circle_pcs")
            else:
                right.plotly_chart(circle_pcs_figure(scored.pcs, list(cycle.words),
                                                     pcs=view, title=f"{name} (mean representations at the "
                                                                     f"{location}) on PCs, joined in cycle order"),
                                   key="geo_circle_pcs")
            st.caption(f"Best frequency f = {c.best_frequency} holds {c.best_share:.0%} of the variance "
                       f"(p = {c.p_value:.3g} against shuffled labels). f = 1 is calendar order; a small model trained "
                       f"on modular arithmetic may circle at another f coprime with k (visiting order here: "
                       f"{', '.join(cycle.words[i] for i in c.visit_order)}).")
    if truth:
        render_circle_dial(model, truth)
    st.markdown("**Decoder clusters** (Engels et al. 2024): spectral clusters of decoder directions; the PCA of each "
                "cluster's reconstructions over the harvest's token samples.")
    hook = st.selectbox("SAE", hooks, key="geo_cluster_hook")
    dc = geo.at(hook).circles if geo else Skipped(NO_SAES)
    if not isinstance(dc, DecoderClusters) or not dc.clusters:
        st.info(dc.reason if isinstance(dc, Skipped) else "No cluster fired on the harvested tokens.")
    else:
        clusters = dc.clusters
        chosen_cluster = st.selectbox("Cluster", list(range(len(clusters))), key="geo_cluster",
                              format_func=lambda i: f"cluster {clusters[i].cluster} "
                              f"({len(clusters[i].features)} features; top tokens: "
                              f"{', '.join(_words(clusters[i].top_tokens[:4]))})")
        cluster = clusters[chosen_cluster or 0]
        highlight = {}
        for ids in cyclic_ids.values():
            highlight.update({t: i for i, t in enumerate(ids)})
        st.plotly_chart(cluster_pca_figure(cluster, _words(cluster.tokens), pcs=(0, 1), highlight=highlight),
                        key="geo_cluster_pca")
        st.caption(f"Clusters ranked by {dc.ranked_by}; {dc.n_clusters} clusters in all. "
                   + "".join(f"Circularity of {k} in this cluster: f = {v.best_frequency}, share {v.best_share:.2f}, "
                             f"p = {v.p_value:.3g}. " for k, v in cluster.circularity.items()))

with tabs[4]:
    concepts = concept_view("concepts")
    if not isinstance(concepts, Concepts) or not concepts.kingdoms:
        if not isinstance(concepts, Skipped) or concepts.reason not in ("no set chosen", "failed"):
            st.info(concepts.reason if isinstance(concepts, Skipped) else
                    "No parent concept has two categories the model can read.")
    else:
        kingdom = st.selectbox("Parent category", list(concepts.kingdoms), key="geo_kingdom")
        st.plotly_chart(hierarchy_figure(concepts.kingdoms[kingdom], kingdom), key="geo_hierarchy")
        st.caption("Hierarchy (Park et al. 2024, causal inner product = whitened unembedding): child-minus-parent is "
                   "orthogonal to the parent, |cos| near 0, well below the shuffled baselines.")
        siblings = [c for c, v in concepts.categories.items() if v.kingdom == kingdom]
        chosen = st.multiselect("Sibling categories for the simplex", siblings, default=siblings[:3], key="geo_siblings")
        if len(chosen) >= 2:
            cats = concepts.categories
            projection = simplex_projection(np.stack([cats[c].ell for c in chosen]),
                                            np.concatenate([cats[c].word_rows for c in chosen]))
            labels = [w for c in chosen for w in cats[c].words]
            members = [j for j, c in enumerate(chosen) for _ in cats[c].words]
            st.plotly_chart(simplex_figure(projection, chosen, labels, members), key="geo_simplex")
            st.caption("Categorical concepts form a simplex: each category's vector points at its own words, "
                       "siblings spread apart on the span of their vectors.")
        else:
            st.info("Choose at least two sibling categories.")

with tabs[5]:
    probes = concept_view("probes")
    found = {} if isinstance(probes, Skipped) else probes.attributes
    ok = {k: v for k, v in found.items() if not isinstance(v, Skipped)}
    reasons = [f"{k}: {v.reason}" for k, v in found.items() if isinstance(v, Skipped)]
    if isinstance(probes, Skipped) and probes.reason not in ("no set chosen", "failed"):
        reasons.append(probes.reason)
    if reasons:
        st.info("; ".join(reasons))
    if ok:
        st.plotly_chart(probe_figures_from_layers({k: v.probes for k, v in ok.items()}), key="geo_probe_layers")
        st.caption("Held-out R^2 of ridge probes from each layer's representation of the items (their mean over the "
                   "set's context templates), with whole items held out (Gurnee & Tegmark 2023). Expected: some "
                   f"layer recovers the map or the dates with high R^2. Large sets are read on a seeded sample of "
                   f"{MAX_PROBE_ITEMS} items.")
        attribute = st.radio("Target", list(ok), horizontal=True, key="geo_probe_target")
        p = ok[attribute].probes
        layer = st.selectbox("Layer", p.layers, index=p.layers.index(p.best_layer), key="geo_probe_layer")
        names = list(ok[attribute].item_names)
        st.plotly_chart(probe_map_figure(p.results[layer], names, title=f"Held-out items of {attribute}: true vs predicted",
                                         target_names=probe_columns_of(attribute)), key="geo_probe_map")
