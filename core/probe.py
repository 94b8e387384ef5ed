"""Ad-hoc prompt probing: one forward pass, every SAE, the logit lens.

`probe_prompt(model, saes, text)` tokenizes a prompt (BOS first, cut to the context), runs the
model once with hooks at every SAE's site and at each block's `hook_resid_post`, encodes each
site with its SAE, and returns per token: the SAE feature activations, the top features, the
reconstruction error, and the logit lens (Nostalgebraist 2020: unembed the residual stream after
each block, `softmax(W_U ln_final(resid_L))`). The model's lock is held once for the whole call,
because hooks live on modules shared by every browser session.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.errors import PromptError
from core.hooks import layer_of, site_order
from core.text import check_unicode

MAX_PROMPT_CHARS = 20000


@dataclass
class LayerProbe:
    """One SAE's view of the prompt."""

    hook_name: str
    acts: np.ndarray          # [pos, d_sae] feature activations
    recon_error: np.ndarray   # [pos] relative error ||x - x_hat|| / ||x||
    resid_norm: np.ndarray    # [pos] ||x||
    top_ids: np.ndarray       # [pos, k] feature ids, largest activation first
    top_values: np.ndarray    # [pos, k]

    @property
    def l0(self) -> np.ndarray:
        """[pos] number of active features per token."""
        return (self.acts > 0).sum(axis=1)

    @property
    def l1(self) -> np.ndarray:
        """[pos] total activation of the features per token, sum_i z_i (z >= 0)."""
        return np.clip(self.acts, 0, None).sum(axis=1)


@dataclass
class ProbeResult:
    text: str
    tokens: np.ndarray                      # [pos] token ids, BOS first when the model has one
    str_tokens: list[str]
    n_truncated: int                        # tokens cut to fit the context
    truncated_text: str                     # the text that was cut ("" when nothing was)
    unknown_positions: list[int]            # positions of UNK tokens
    layers: list[LayerProbe]                # one per SAE, in layer order
    lens_hooks: list[str]                   # residual sites of the logit lens, in order
    lens_top_ids: np.ndarray                # [n_lens, pos, k]
    lens_top_probs: np.ndarray              # [n_lens, pos, k]
    extra: dict[str, Any] = field(default_factory=dict)

    def layer(self, hook_name: str) -> LayerProbe:
        for layer in self.layers:
            if layer.hook_name == hook_name:
                return layer
        raise KeyError(hook_name)

    @property
    def hook_names(self) -> list[str]:
        return [layer.hook_name for layer in self.layers]

    def active_features(self, hook_name: str) -> dict[int, float]:
        """Features that fire anywhere in the prompt (BOS excluded when present) -> their max activation."""
        acts = self.layer(hook_name).acts
        start = 1 if self.extra.get("has_bos") and acts.shape[0] > 1 else 0
        peak = acts[start:].max(axis=0) if acts.shape[0] > start else np.zeros(acts.shape[1])
        ids = np.flatnonzero(peak > 0)
        return {int(i): float(peak[i]) for i in ids[np.argsort(-peak[ids])]}

    def layer_matrix(self, quantity: str) -> np.ndarray:
        """[n_saes, pos] matrix for the tokens x layers heatmap.

        quantity: "recon_error" (relative reconstruction error), "l0" (active features), "l1" (total
        feature activation), "resid_norm".
        """
        if quantity == "recon_error":
            return np.stack([layer.recon_error for layer in self.layers])
        if quantity == "l0":
            return np.stack([layer.l0 for layer in self.layers]).astype(np.float32)
        if quantity == "l1":
            return np.stack([layer.l1 for layer in self.layers]).astype(np.float32)
        if quantity == "resid_norm":
            return np.stack([layer.resid_norm for layer in self.layers])
        raise ValueError(f"unknown quantity {quantity!r}")

    def constant_l0(self) -> int | None:
        """The number of active features when it is the same on every token of every layer (a TopK SAE
        fires exactly k features per token), else None: then an L0 heatmap would show one colour."""
        start = 1 if self.extra.get("has_bos") and len(self.tokens) > 1 else 0
        values = {int(v) for layer in self.layers for v in layer.l0[start:]}
        return values.pop() if len(values) == 1 else None

    def truncation_note(self, n_ctx: int, excerpt_chars: int = 80) -> str:
        """What was cut from a long prompt, in one line: how many tokens and characters, and the first
        `excerpt_chars` characters of the cut text (never all of it). "" when nothing was cut."""
        if not self.n_truncated:
            return ""
        cut = self.truncated_text
        excerpt = " ".join(cut.split())[:excerpt_chars].rstrip()
        more = "\u2026" if len(" ".join(cut.split())) > excerpt_chars else ""
        return (f"The prompt is longer than the model's context of {n_ctx:,} tokens: the last "
                f"{self.n_truncated:,} tokens ({len(cut):,} characters) were cut, from \u201c{excerpt}{more}\u201d.")


def probe_prompt(model: Any, saes: Sequence[Any], text: str, *, top_k: int = 8,
                 lens_k: int = 5, max_tokens: int | None = None) -> ProbeResult:
    """Probe `text` through `model` (core.sources.models.LoadedModel) and every SAE in `saes` (LoadedSAE).

    Raises PromptError for an empty or oversized prompt. The prompt is cut to the model's
    context (or `max_tokens`); `n_truncated` and `truncated_text` say what was cut.
    """
    # an empty prompt is refused by model.tokenize_prompt (PromptError); a lone surrogate here:
    check_unicode(text, "prompt", PromptError)
    if text is not None and len(text) > MAX_PROMPT_CHARS:
        raise PromptError(f"The prompt has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}.")
    prompt = model.tokenize_prompt(text, max_tokens)
    truncated_text = ""
    if prompt.n_truncated:
        ids = model.encode(text)
        truncated_text = model.to_string(ids[len(ids) - prompt.n_truncated:])
    saes = sorted(saes, key=lambda s: site_order(s.hook_name))
    lens_hooks = model.resid_post_hooks()
    sites = list(dict.fromkeys([s.hook_name for s in saes] + lens_hooks))
    layers: list[LayerProbe] = []
    with model.lock, torch.inference_mode():
        cache = model.run(prompt.tokens, sites, return_logits=False)
        for sae in saes:
            x = cache[sae.hook_name][0]
            z = sae.encode(x)
            x_hat = sae.decode(z)
            x_norm = x.norm(dim=-1)
            error = (x - x_hat).norm(dim=-1) / x_norm.clamp_min(1e-8)
            k = min(top_k, z.shape[-1])
            top = torch.topk(z, k, dim=-1)
            layers.append(LayerProbe(
                hook_name=sae.hook_name,
                acts=z.float().cpu().numpy(),
                recon_error=error.float().cpu().numpy(),
                resid_norm=x_norm.float().cpu().numpy(),
                top_ids=top.indices.cpu().numpy(),
                top_values=top.values.float().cpu().numpy(),
            ))
        resid = torch.stack([cache[h][0] for h in lens_hooks])          # [n_lens, pos, d]
        probs = torch.softmax(model.unembed(resid), dim=-1)
        lens = torch.topk(probs, min(lens_k, probs.shape[-1]), dim=-1)
    tokens = prompt.tokens.reshape(-1).cpu().numpy()
    return ProbeResult(
        text=text,
        tokens=tokens,
        str_tokens=list(prompt.str_tokens),
        n_truncated=int(prompt.n_truncated),
        truncated_text=truncated_text,
        unknown_positions=list(prompt.unknown_positions),
        layers=layers,
        lens_hooks=lens_hooks,
        lens_top_ids=lens.indices.cpu().numpy(),
        lens_top_probs=lens.values.float().cpu().numpy(),
        extra={"has_bos": getattr(model, "bos_token_id", None) is not None
               and len(tokens) > 0 and int(tokens[0]) == model.bos_token_id},
    )


@dataclass(frozen=True)
class FeatureOnText:
    """One feature's activation on each token of a text: str_tokens [pos] (BOS first), acts [pos]."""

    hook_name: str
    feature: int
    str_tokens: list[str]
    acts: np.ndarray
    unknown_positions: list[int]
    n_truncated: int


def feature_on_text(model: Any, sae: Any, text: str, feature: int) -> FeatureOnText:
    """Run `text` through the model to `sae`'s site and encode it: `feature`'s activation per token.

    The "test this feature" box. PromptError for an empty or oversized text; cut to the context.
    """
    if text is not None and len(text) > MAX_PROMPT_CHARS:
        raise PromptError(f"The text has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}.")
    if not 0 <= int(feature) < int(sae.d_sae):
        raise PromptError(f"Feature {feature} is not in this SAE (0-{int(sae.d_sae) - 1}).")
    prompt = model.tokenize_prompt(text)
    with torch.inference_mode():
        x = model.run(prompt.tokens, [sae.hook_name])[sae.hook_name][0]
        acts = sae.encode(x)[:, int(feature)].float().cpu().numpy()
    return FeatureOnText(sae.hook_name, int(feature), list(prompt.str_tokens), acts,
                         list(prompt.unknown_positions), int(prompt.n_truncated))


def token_features_frame(result: ProbeResult, position: int) -> pd.DataFrame:
    """Top SAE features at one token, for every layer: columns layer, hook, rank, feature, activation."""
    rows = []
    for layer in result.layers:
        for rank, (fid, value) in enumerate(zip(layer.top_ids[position], layer.top_values[position])):
            if value <= 0:
                continue
            rows.append({"layer": layer_of(layer.hook_name), "hook": layer.hook_name, "rank": rank + 1,
                         "feature": int(fid), "activation": float(value)})
    return pd.DataFrame(rows, columns=["layer", "hook", "rank", "feature", "activation"])


def logit_lens_frame(result: ProbeResult, position: int, decode) -> pd.DataFrame:
    """Logit lens at one position: one row per layer, the top tokens with their probabilities.

    `decode(ids) -> list[str]` turns token ids into strings (LoadedModel.to_str_tokens).
    """
    rows = []
    for i, hook in enumerate(result.lens_hooks):
        ids = result.lens_top_ids[i, position]
        words = decode(ids.tolist())
        rows.append({"layer": layer_of(hook),
                     **{f"top {r + 1}": f"{w!r} {p:.2f}" for r, (w, p) in
                        enumerate(zip(words, result.lens_top_probs[i, position]))}})
    return pd.DataFrame(rows)
