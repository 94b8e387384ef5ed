"""Steer: change a forward pass and compare. Steering with features (or clamping them), ablating them, and
activation patching between a clean and a corrupted prompt (core.interventions; docs/INTERVENTIONS.md)."""

from functools import partial

import pandas as pd
import streamlit as st

from app.feature_labels import label_book, label_texts
from app.feature_links import feature_link_list
from app.intervention_runs import harvest_stats, stored_or_run
from app.page import load_model_inputs
from app.registry import options
from app.state import set_page
from app.widgets import guarded
from core.figures.interventions import ablation_figure, completions_frame, patching_figure
from core.interventions.requests import ablation_request, patch_request, patching_note, steering_request

set_page("steer")
st.title("Steer")
st.caption("Change one forward pass and compare it with the unchanged one. Every hook is removed when a run "
           "ends, also on error. Results are stored under their inputs: the same inputs show them again at once.")

model, saes = load_model_inputs(no_saes="Steering and ablation need an SAE: choose SAEs in "
                                     "the sidebar under Sources.")
hooks = [s.hook_name for s in saes]
if st.session_state.get("steer_layer") not in hooks:
    st.session_state["steer_layer"] = hooks[0]
hook = st.selectbox("SAE (its site)", hooks, key="steer_layer",
                    help="Steering, clamping and ablation use this SAE's features at its own site.")
sae = next(s for s in saes if s.hook_name == hook)
stats, _ = harvest_stats(hook)
labels = label_texts(label_book(sae))


def feature_links(features) -> None:
    feature_link_list([(hook, int(f), labels.get(int(f), "")) for f in features])


steering_tab, ablation_tab, patching_tab = st.tabs(["Steering", "Ablation", "Activation patching"])

with steering_tab:
    st.text_area("Prompt", key="steer_prompt", height=68)
    c1, c2, c3 = st.columns([3, 2, 2])
    c1.text_input("Features and strengths", key="steer_features", placeholder="e.g. 12:4, 87:-2",
                  help=f"feature:strength pairs, features 0-{sae.d_sae - 1}; a bare id steers at strength 1.")
    c2.text_input("Sweep (scales)", key="steer_scales", help="One steered completion per scale: each strength "
                  "times the scale (e.g. -2, 1, 4).")
    c3.radio("Mode", options("steer_mode"), key="steer_mode", horizontal=True,
             format_func={"add": "add decoder direction", "clamp": "clamp through the SAE"}.get,
             help="add: x + strength x W_dec[i]. clamp: encode, set the feature to the strength, decode, and add "
                  "back the SAE's error term, so only that feature changes.")
    c1, c2, c3, c4 = st.columns(4)
    if not 0 <= st.session_state["steer_from"] <= model.n_ctx:   # a session saved on a model with a longer context
        st.session_state["steer_from"] = 0
    c1.number_input("From position (0 = all)", min_value=0, max_value=model.n_ctx, step=1, key="steer_from",
                    help="First position edited; BOS is position 0.")
    c2.number_input("New tokens", min_value=1, max_value=64, step=1, key="steer_tokens")
    c3.number_input("Temperature (0 = greedy)", min_value=0.0, max_value=5.0, step=0.1, key="steer_temperature")
    c4.number_input("Seed", min_value=0, max_value=2**31 - 1, step=1, key="steer_seed")
    st.checkbox("Strengths are multiples of each feature's max activation in the harvest", key="steer_relative",
                disabled=stats is None and not st.session_state["steer_relative"],
                help="Needs the harvest (open the Features page once). 1 = as strongly as the feature ever fires.")
    s = st.session_state
    steering = None if not s["steer_features"].strip() else guarded(lambda: steering_request(
        model, sae, prompt=s["steer_prompt"], features=s["steer_features"], scales=s["steer_scales"],
        mode=s["steer_mode"], relative=s["steer_relative"], from_position=int(s["steer_from"]),
        max_new_tokens=int(s["steer_tokens"]), temperature=float(s["steer_temperature"]), seed=int(s["steer_seed"])))
    clicked = st.button("Steer", key="steer_run", type="primary", disabled=steering is None)
    result = None if steering is None else guarded(partial(stored_or_run, steering, model, sae, run_now=clicked,
                                                       purpose="steer:steering"))
    if result is not None:
        feature_links([f.feature for f in result.features])
        st.dataframe(completions_frame(result), hide_index=True, width="stretch",
                     column_config={"completion": st.column_config.TextColumn(width="large")})
        st.caption(f"{'Greedy' if result.temperature == 0 else f'Sampled at temperature {result.temperature:g}, seed {result.seed} (the same noise for every row)'}; "
                   f"{result.max_new_tokens} new tokens; edited from position {result.from_position} on at "
                   f"{result.site}. 'differs from token': the first generated token that is not the unsteered one.")
    elif steering is not None:
        st.caption("Press Steer to generate the unsteered and the steered completions side by side.")
    elif not s["steer_features"].strip():
        st.info("Name one or more features to steer with (feature:strength, e.g. 12:4, 87:-2); the Features "
                "page's \u201cOpen on the Steer page\u201d fills this in for its feature.")

with ablation_tab:
    st.text_area("Prompt", key="ablate_prompt", height=68)
    c1, c2, c3 = st.columns([3, 2, 2])
    c1.text_input("Features to ablate", key="ablate_features", placeholder="e.g. 12, 87")
    c2.radio("Set them to", options("ablate_mode"), key="ablate_mode", horizontal=True,
             format_func={"zero": "zero", "mean": "their mean (harvest)"}.get)
    c3.text_input("Token to follow (optional)", key="ablate_target", placeholder="e.g. paris",
                  help="Exactly one token of the vocabulary; its logit change is reported.")
    ablation = None if not st.session_state["ablate_features"].strip() else guarded(lambda: ablation_request(model, sae, prompt=st.session_state["ablate_prompt"],
                                               features=st.session_state["ablate_features"],
                                               mode=st.session_state["ablate_mode"],
                                               target=st.session_state["ablate_target"]))
    clicked = st.button("Ablate", key="ablate_run", type="primary", disabled=ablation is None)
    result = None if ablation is None else guarded(partial(stored_or_run, ablation, model, sae, run_now=clicked,
                                                       purpose="steer:ablation"))
    if result is not None:
        feature_links(result.features)
        m = st.columns(3)
        m[0].metric("KL(clean || ablated)", f"{result.kl_divergence:.4f} nats")
        m[1].metric("activation before (last token)", ", ".join(f"{a:.3f}" for a in result.activations))
        if result.target is not None:
            m[2].metric(f"logit of {result.target.token!r}", f"{result.target.logit_after:.3f}",
                        f"{result.target.logit_change:+.3f} (p {result.target.prob_before:.4f} -> "
                        f"{result.target.prob_after:.4f})")
        if result.rose or result.fell:
            st.plotly_chart(ablation_figure(result), key="ablation_figure")
        else:
            st.info("The next-token distribution did not change: these features do not fire on this prompt "
                    "(their activation is 0 at every ablated position).")
        st.dataframe(pd.DataFrame([{"clean top token": t.token, "p before": t.prob_before, "p after": t.prob_after}
                                   for t in result.top_clean]), hide_index=True)
    elif ablation is not None:
        st.caption("Press Ablate to compare the next-token distribution with and without these features.")
    elif not st.session_state["ablate_features"].strip():
        st.info("Name the features to ablate (e.g. 12, 87).")

with patching_tab:
    c1, c2 = st.columns(2)
    c1.text_input("Clean prompt", key="patch_clean")
    c2.text_input("Corrupted prompt (same number of tokens)", key="patch_corrupted")
    c1.text_input("Correct answer (one token)", key="patch_correct")
    c2.text_input("Wrong answer (one token)", key="patch_wrong")
    s = st.session_state
    patching = guarded(lambda: patch_request(model, clean_prompt=s["patch_clean"], corrupted_prompt=s["patch_corrupted"],
                                            correct=s["patch_correct"], wrong=s["patch_wrong"]))
    clicked = st.button("Patch", key="patch_run", type="primary", disabled=patching is None)
    result = None if patching is None else guarded(partial(stored_or_run, patching, model, run_now=clicked,
                                                       purpose="steer:patching"))
    if result is not None:
        if note := patching_note(result):
            st.warning(note)
        st.plotly_chart(patching_figure(result), key="patching_figure")
        st.caption("Each cell: the clean activation patched into the corrupted run at that layer and position; "
                   "(LD_patched - LD_corrupted) / (LD_clean - LD_corrupted), LD = logit(correct) - logit(wrong) at "
                   "the last position. 1: the clean answer's preference recovered; 0: nothing.")
    elif patching is not None:
        st.caption("Press Patch to patch every layer and position (resid_pre, attn_out, mlp_out).")
