""""What does this feature do?": one widget for the Features page (the open feature, on its top context) and
the Probe page (the chosen feature, on the probed prompt).

It zero-ablates the feature on the prompt (next-token probabilities that rose and fell, KL) and runs a small
steering sweep from the prompt (core.interventions.requests.feature_effect_requests), and shows both
compactly. "Open on the Steer page" fills that page's inputs with the same two requests, so the page opens
on these very results (stored under the requests' keys) and the user can go on from there.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.intervention_runs import harvest_stats, stored_or_run, stored_result
from app.widgets import escape_markdown, guarded
from core.figures.interventions import completions_frame
from core.interventions.requests import AblationRequest, SteerRequest, feature_effect_requests

STEER_PAGE = "../pages/steer.py"   # relative to app/main.py


def _requests(model: Any, sae: Any, feature: int, prompt: str, peak: float | None) -> tuple[AblationRequest, SteerRequest]:
    stats, _ = harvest_stats(sae.hook_name)
    if stats is not None and float(stats.max_act[feature]) > 0:
        return feature_effect_requests(model, sae, feature, prompt, relative=True)
    # No harvest at hand: strengths in the feature's own units, its activation on this prompt.
    strength = float(peak) if peak is not None and peak > 0 else 1.0
    return feature_effect_requests(model, sae, feature, prompt, relative=False, strength=round(strength, 3))


def prefill_steer_page(ablation: AblationRequest, steering: SteerRequest) -> None:
    """The Steer page's inputs (registry keys) set to these requests."""
    state = st.session_state
    state["steer_layer"] = steering.hook_name
    state["steer_prompt"] = steering.prompt
    state["steer_features"] = ", ".join(f"{f}:{s:g}" for f, s in steering.features)
    state["steer_scales"] = ", ".join(f"{s:g}" for s in steering.scales)
    state["steer_mode"] = steering.mode
    state["steer_relative"] = steering.relative
    state["steer_from"] = steering.from_position
    state["steer_tokens"] = steering.max_new_tokens
    state["steer_temperature"] = steering.temperature
    state["steer_seed"] = steering.seed
    state["ablate_prompt"] = ablation.prompt
    state["ablate_features"] = ", ".join(str(f) for f in ablation.features)
    state["ablate_mode"] = ablation.mode
    state["ablate_target"] = ablation.target


def feature_action(model: Any, sae: Any, feature: int, prompt: str, *, key: str, peak: float | None = None,
                   where: str = "this prompt") -> None:
    """The action for `feature` of `sae` on `prompt` (`peak`: its activation there, the steering strength
    when no harvest gives its max activation). Results computed before (same requests) show at once."""
    requests = guarded(lambda: _requests(model, sae, int(feature), prompt, peak))
    if requests is None:
        return
    ablation, steering = requests
    stored = guarded(lambda: (stored_result(ablation, model, sae), stored_result(steering, model, sae)))
    ready = stored is not None and all(r is not None for r in stored)
    c1, c2 = st.columns([2, 3])
    clicked = c1.button("What does this feature do?", key=f"{key}_run", disabled=ready,
                        help=f"Zero-ablate feature {feature} on {where} and steer with it (a sweep of strengths).")
    if c2.button("Open on the Steer page", key=f"{key}_steer"):
        prefill_steer_page(ablation, steering)
        st.switch_page(STEER_PAGE)
    if not (ready or clicked):
        st.caption(f"Runs on {where}: {escape_markdown(prompt[:120])}")
        return
    ablated = guarded(lambda: stored_or_run(ablation, model, sae, run_now=True, purpose=f"{key}:ablation"))
    steered = guarded(lambda: stored_or_run(steering, model, sae, run_now=True, purpose=f"{key}:steering"))
    left, right = st.columns([2, 3])
    if ablated is not None:
        with left:
            rose = ", ".join(f"{t.token!r} {t.prob_change:+.2g}" for t in ablated.rose[:4]) or "none"
            fell = ", ".join(f"{t.token!r} {t.prob_change:+.2g}" for t in ablated.fell[:4]) or "none"
            st.markdown(f"**Zero-ablated** on {escape_markdown(where)} (activation there "
                        f"{ablated.activations[0]:.3f}): KL **{ablated.kl_divergence:.4f}** nats  \n"
                        f"next-token probability rose: {escape_markdown(rose)}  \nfell: {escape_markdown(fell)}")
    if steered is not None:
        with right:
            unit = "x its max activation" if steered.scaled_by_max_activation else "(its activation on the prompt)"
            st.markdown(f"**Steered** with strength {steered.features[0].strength:g} {unit}, swept")
            st.dataframe(completions_frame(steered), hide_index=True, width="stretch",
                         column_config={"completion": st.column_config.TextColumn(width="large")})
