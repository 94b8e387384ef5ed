"""The circle dial on the Geometry page's Circles tab (issue 14 item 6): pick a cyclic concept, a prompt
and a number of steps; the answer position is turned that far along the concept's fitted circle
(core.interventions.dial.circle_dial) and the model's answer is shown before and after, beside the
control (the same norm rotated in a random plane).

    from app.circle_dial import render_circle_dial
    render_circle_dial(model, truth)        # truth: the organism's ground truth (dict)

Keys (in app/registry.py, saved with a session, so a reopened session turns the same circle): geo_dial_concept,
geo_dial_site, geo_dial_prompt, geo_dial_own, geo_dial_steps. A saved value this model cannot offer (another
organism's concept or site, a step count past this circle's range) falls back to the default here.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from app.registry import MAX_DIAL_PROMPT
from app.widgets import escape_markdown, guarded
from core.figures.circle_dial import dial_item_figure, dial_top_tokens_figure
from core.interventions.dial import CYCLE_FAMILIES, circle_dial, cycle_facts, cycle_fits_from_ground_truth


@st.cache_resource(show_spinner=False, max_entries=8)
def _fits(model_key: tuple, concept: str, _model: Any, _truth: dict) -> list:
    """The concept's circle at every resid_post, fitted once per (organism, concept) and process."""
    return cycle_fits_from_ground_truth(_model, _truth, concept)


def _model_key(model: Any) -> tuple:
    from core.sources.organism import resolve_dir

    return (model.spec, str(resolve_dir(getattr(model.spec, "path", None))))


def render_circle_dial(model: Any, truth: dict) -> None:
    st.markdown("**Circle dial** (Engels et al. 2024's intervention): turn the answer position of an arithmetic "
                "prompt along the concept's circle and watch the model's answer move.")
    concepts = [c for c in CYCLE_FAMILIES if (truth.get("cyclic") or {}).get(c) and cycle_facts(truth, c, "train")]
    if not concepts:
        st.info("The dial needs a cyclic concept with arithmetic facts to fit its circle on (the organism's months "
                "and weekdays); this ground truth has none.")
        return
    c1, c2, c3 = st.columns([1, 1, 2])
    if st.session_state.get("geo_dial_concept") not in concepts:
        st.session_state["geo_dial_concept"] = concepts[0]
    concept = c1.selectbox("Concept", concepts, key="geo_dial_concept")
    fits = guarded(lambda: _fits(_model_key(model), concept, model, truth))
    if not fits:
        return
    by_site = {f.site: f for f in fits}
    strongest = max(fits, key=lambda f: f.best_share).site
    sites = list(by_site)
    if st.session_state.get("geo_dial_site") not in sites:
        st.session_state["geo_dial_site"] = strongest
    site = c2.selectbox("Site", sites, key="geo_dial_site",
                        format_func=lambda s: f"{s} (f = {by_site[s].best_frequency}, share {by_site[s].best_share:.2f})"
                        + (" strongest" if s == strongest else ""))
    fit = by_site[site]
    k = fit.k
    held = st.session_state.get("geo_dial_steps")
    held = float(held) if isinstance(held, (int, float)) and not isinstance(held, bool) else 1.0
    # months -> weekdays (or a session from elsewhere): keep the dial on this circle's range and its half steps
    st.session_state["geo_dial_steps"] = float(max(-(k - 1), min(k - 1, round(held * 2) / 2)))
    steps = c3.slider("Steps along the circle", min_value=-float(k - 1), max_value=float(k - 1), step=0.5,
                      key="geo_dial_steps", help=f"One step = 360/{k} degrees x f. Half steps turn part of the way.")
    facts = cycle_facts(truth, concept, "held_out") or cycle_facts(truth, concept, "train")
    labels = [f"{p} -> {a}" for p, a in facts]
    if st.session_state.get("geo_dial_prompt") not in range(len(facts)):
        st.session_state["geo_dial_prompt"] = 0
    chosen = st.selectbox("Prompt (held-out facts: prompt -> correct answer)", range(len(facts)), key="geo_dial_prompt",
                          format_func=lambda i: labels[i])
    own = st.text_input("Or your own prompt", key="geo_dial_own", max_chars=MAX_DIAL_PROMPT,
                        placeholder="e.g. two months after march is")
    prompt = own.strip() or facts[chosen][0]
    dial = guarded(lambda: circle_dial(model, fit, prompt, steps))
    if dial is None:
        return
    turn = dial.turn
    cols = st.columns(3)
    cols[0].metric("Answer before", turn.answer_before)
    cols[1].metric(f"After turning {steps:g} step(s)", turn.answer_after,
                   delta=("as expected" if dial.moved_as_expected else f"expected {dial.expected_answer}")
                   if dial.expected_answer else None,
                   delta_color="normal" if dial.moved_as_expected else "off")
    cols[2].metric("Control (random plane)", dial.control_answer)
    left, right = st.columns(2)
    left.plotly_chart(dial_item_figure(dial), key="geo_dial_items")
    right.plotly_chart(dial_top_tokens_figure(dial), key="geo_dial_top")
    st.caption(escape_markdown(
        f"Prompt: {prompt}. At {site}, the last position's coordinates in the plane of frequency f = "
        f"{fit.best_frequency} (fitted from the item means of the training facts) are rotated by "
        f"{steps:g} x 360 x {fit.best_frequency} / {k} degrees; everything off the plane is untouched. "
        f"Change norm {dial.change_norm:.3f} (the residual's norm there: {dial.resid_norm:.3f}). Control: the same "
        f"norm in a random 2-D plane (seed {dial.seed}). Measured over held-out prompts "
        "(docs/INTERVENTIONS.md): turning moves the answer by exactly s far more often than the control, "
        "but not always: the rest of the representation still carries the old answer."))
