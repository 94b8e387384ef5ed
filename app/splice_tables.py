"""SAE splice-in quality, read from the harvest (core.harvest.splice.SpliceQuality): one compact table per
SAE on the Overview page, and the loss-recovered columns beside the effective-feature counts on the
Superposition page.

    render_splice_tables(harvest)                  # Overview (harvest from app.resources.peek_harvest)
    splice_columns(harvest, hook_name) -> dict     # Superposition's table
"""

from __future__ import annotations

import math
from typing import Any

import streamlit as st

SPLICE_CAPTION = (
    "Splice-in quality, measured by the harvest on its first tokens (the count is in each table): the model's "
    "mean next-token cross-entropy (nats) as it is (**CE clean**), with the SAE's reconstruction "
    "decode(encode(x)) put in place of the activation at its hook (**CE spliced**), and with the site set to "
    "zero (**CE zero-ablated**) or to its mean (**CE mean-ablated**). **Loss recovered** = (CE zero - CE spliced) "
    "/ (CE zero - CE clean): 1 = the SAE loses nothing the model uses, 0 = as bad as deleting the site. "
    "This is SAELens's ce_loss_score (evals.get_recons_loss) and SAEBench's core \"loss recovered\"; against "
    "mean-ablation the same ratio uses CE mean. **KL spliced** = KL(clean || spliced), the mean over tokens "
    "of how far the next-token distribution moves (SAELens's kl_div_with_sae). Good residual-stream SAEs "
    "recover 0.9-0.99 of the loss (SAEBench). Replacements act at every position except BOS.")


def _num(x: float, digits: int = 3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def splice_table(quality: Any) -> list[dict[str, str]]:
    """The rows of one SAE's table (measure | value), from a SpliceQuality."""
    q = quality
    return [{"measure": "CE clean", "value": _num(q.ce_clean)},
            {"measure": "CE spliced", "value": _num(q.ce_spliced)},
            {"measure": "CE zero-ablated", "value": _num(q.ce_zero_ablated)},
            {"measure": "CE mean-ablated", "value": _num(q.ce_mean_ablated)},
            {"measure": "loss recovered (zero)", "value": _num(q.loss_recovered_zero)},
            {"measure": "loss recovered (mean)", "value": _num(q.loss_recovered_mean)},
            {"measure": "KL spliced", "value": _num(q.kl_spliced, 4)},
            {"measure": "tokens", "value": f"{q.tokens:,}"}]


def render_splice_tables(harvest: Any) -> None:
    """One compact table per SAE of the harvest (four to a row), then the caption saying what each means."""
    entries = list(harvest.saes.items())
    per_row = 4
    for first in range(0, len(entries), per_row):
        cols = st.columns(per_row)
        for col, (label, sae) in zip(cols, entries[first:first + per_row]):
            col.markdown(f"**{label}**")
            if sae.splice is None:
                col.caption("Not measured (this harvest's splice_tokens is 0).")
            else:
                col.dataframe(splice_table(sae.splice), hide_index=True, key=f"splice_{label}")
    st.caption(SPLICE_CAPTION)


def splice_columns(harvest: Any, hook_name: str) -> dict[str, float | None]:
    """Loss recovered and KL of the SAE on `hook_name` for a table row (None when not measured)."""
    sae = harvest.saes.get(hook_name) if harvest is not None else None
    q = getattr(sae, "splice", None)
    if q is None:
        return {"loss recovered (zero-abl.)": None, "loss recovered (mean-abl.)": None, "KL spliced": None}
    return {"loss recovered (zero-abl.)": q.loss_recovered_zero, "loss recovered (mean-abl.)": q.loss_recovered_mean,
            "KL spliced": q.kl_spliced}
