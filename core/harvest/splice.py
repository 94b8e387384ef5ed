"""SAE splice-in quality, measured inside the harvest: the model's next-token loss with each SAE's
reconstruction spliced in at its hook, against the clean loss and the site zero- or mean-ablated.

Definitions (SAELens's `evals.get_recons_loss` / `get_downstream_reconstruction_metrics`; SAEBench core):
    CE_clean, CE_spliced, CE_zero, CE_mean   mean next-token cross-entropy (nats) of the model as is, with
                                             the site replaced by sae.decode(sae.encode(x)), by 0, and by
                                             the mean activation of the site
    loss recovered (zero) = (CE_zero - CE_spliced) / (CE_zero - CE_clean)     SAELens's ce_loss_score
    loss recovered (mean) = (CE_mean - CE_spliced) / (CE_mean - CE_clean)
    KL(clean || spliced)  = mean over tokens of sum_v p_clean(v) (log p_clean(v) - log p_spliced(v))
                            (SAELens's kl_div_with_sae; kl for the ablations likewise)

Token budget and positions (documented choices):
- The evaluation covers the first `splice_tokens` tokens of the harvested corpus, as whole sequences:
  corpus sequences [0, ceil(splice_tokens / context)), at most the sequences harvested.
- Replacements act at the positions the harvest reads: every position except BOS when `exclude_bos`
  (SAELens excludes BOS/EOS/pad the same way through its ignore_tokens). Zero- and mean-ablation act at
  those same positions (SAELens zeroes BOS too); so an SAE whose decoder is zero equals zero-ablation.
- The mean of mean-ablation is the site's mean over the kept tokens of the evaluation sequences.
- Cross-entropy counts positions 0..ctx-2 whose token is kept (their next token is the target); KL counts
  every kept position, as SAELens does.

Exact under shard merges: the shard whose range starts at sequence 0 evaluates the whole block (running
the sequences past its own end through the model for this alone); other shards add nothing. The block
runs in fixed sub-batches from sequence 0 whatever the sharding, so a sharded harvest gives the same numbers.
Sharing the forward pass: the site activations of the block come from the harvest's own forward pass;
only the continuations after the hook (the clean logits and the three replacements) are run here, from
the hook's layer on when the site is a residual stream of a HookedTransformer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from core.hooks import layer_of
from core.jsonable import Result

_SUMS = ("ce_clean", "ce_spliced", "ce_zero", "ce_mean", "kl_spliced", "kl_zero", "kl_mean")


@dataclass(frozen=True, eq=False)
class SpliceQuality(Result):
    """Splice-in quality of one SAE (means over `tokens` next-token predictions; nats)."""

    tokens: int  # next-token predictions in the cross-entropy means
    ce_clean: float
    ce_spliced: float
    ce_zero_ablated: float
    ce_mean_ablated: float
    loss_recovered_zero: float  # (CE_zero - CE_spliced) / (CE_zero - CE_clean)
    loss_recovered_mean: float  # (CE_mean - CE_spliced) / (CE_mean - CE_clean)
    kl_spliced: float  # KL(clean || spliced), per token
    kl_zero_ablated: float
    kl_mean_ablated: float


class SpliceStats:
    """Sums over the evaluation tokens of one SAE (float64); merged by addition."""

    def __init__(self) -> None:
        self.n_ce = 0
        self.n_kl = 0
        self.sums = dict.fromkeys(_SUMS, 0.0)

    def merge(self, other: "SpliceStats") -> "SpliceStats":
        self.n_ce += other.n_ce
        self.n_kl += other.n_kl
        for name in _SUMS:
            self.sums[name] += other.sums[name]
        return self

    def result(self) -> SpliceQuality | None:
        if self.n_ce == 0:
            return None
        ce = {name: self.sums[name] / self.n_ce for name in _SUMS if name.startswith("ce_")}
        kl = {name: self.sums[name] / max(self.n_kl, 1) for name in _SUMS if name.startswith("kl_")}

        def recovered(ablated: float) -> float:
            gap = ablated - ce["ce_clean"]
            return (ablated - ce["ce_spliced"]) / gap if gap != 0 else float("nan")

        return SpliceQuality(tokens=self.n_ce, ce_clean=ce["ce_clean"], ce_spliced=ce["ce_spliced"],
                             ce_zero_ablated=ce["ce_zero"], ce_mean_ablated=ce["ce_mean"],
                             loss_recovered_zero=recovered(ce["ce_zero"]), loss_recovered_mean=recovered(ce["ce_mean"]),
                             kl_spliced=kl["kl_spliced"], kl_zero_ablated=kl["kl_zero"], kl_mean_ablated=kl["kl_mean"])


def n_eval_sequences(splice_tokens: int, context: int, n_harvested: int) -> int:
    return min(n_harvested, -(-splice_tokens // context)) if splice_tokens > 0 else 0


class SpliceEvaluator:
    """Collects the evaluation block's site activations from the harvest's batches, then evaluates every SAE.

    collect(first, tokens, acts) with a batch of sequences starting at corpus row `first`; finish(corpus_tokens)
    runs whatever part of the block the shard did not read, then the evaluation, and returns {label: SpliceStats}.
    """

    def __init__(self, model: Any, saes: Sequence[Any], labels: Sequence[str], sae_hooks: Sequence[str],
                 n_sequences: int, bos_token_id: int | None, exclude_bos: bool, batch_size: int):
        self.model, self.saes, self.labels, self.sae_hooks = model, list(saes), list(labels), list(sae_hooks)
        self.hooks = list(dict.fromkeys(sae_hooks))
        self.n = n_sequences
        self.bos, self.exclude_bos, self.batch_size = bos_token_id, exclude_bos, batch_size
        self.tokens: dict[int, torch.Tensor] = {}  # corpus row -> tokens [ctx]
        self.acts: dict[str, dict[int, torch.Tensor]] = {h: {} for h in self.hooks}

    def collect(self, first: int, tokens: torch.Tensor, acts: dict[str, torch.Tensor]) -> None:
        take = min(tokens.shape[0], self.n - first)
        for i in range(max(0, take)):
            self.tokens[first + i] = tokens[i]
            for hook in self.hooks:
                self.acts[hook][first + i] = acts[hook][i].to(torch.float32)

    def finish(self, corpus_tokens: torch.Tensor) -> dict[str, SpliceStats]:
        missing = [row for row in range(self.n) if row not in self.tokens]
        device = _device(self.model)
        for start in range(0, len(missing), self.batch_size):
            rows = missing[start:start + self.batch_size]
            batch = corpus_tokens[rows].to(device)
            acts = self.model.run(batch, self.hooks)
            for i, row in enumerate(rows):
                self.tokens[row] = batch[i]
                for hook in self.hooks:
                    self.acts[hook][row] = acts[hook][i].to(torch.float32)
        stats = {label: SpliceStats() for label in self.labels}
        if self.n == 0:
            return stats
        tokens = torch.stack([self.tokens[r] for r in range(self.n)])
        acts = {h: torch.stack([self.acts[h][r] for r in range(self.n)]) for h in self.hooks}
        kept = tokens != self.bos if (self.exclude_bos and self.bos is not None) else torch.ones_like(tokens, dtype=torch.bool)
        means = {h: a[kept].mean(0) for h, a in acts.items()}
        step = max(1, min(self.batch_size, 2**24 // max(1, tokens.shape[1] * _vocab(self.model))))
        lock = getattr(self.model, "lock", None)
        with (lock if lock is not None else _nothing()), torch.no_grad():
            for lo in range(0, self.n, step):
                self._evaluate(tokens[lo:lo + step], {h: a[lo:lo + step] for h, a in acts.items()},
                               kept[lo:lo + step], means, stats)
        self.tokens.clear()
        self.acts = {h: {} for h in self.hooks}
        return stats

    def _evaluate(self, tokens, acts, kept, means, stats) -> None:
        clean = torch.log_softmax(self.model.logits(tokens).to(torch.float32), -1)
        ce_mask = kept[:, :-1]
        targets = tokens[:, 1:]
        ce_clean = _ce(clean, targets, ce_mask)
        for sae, label, hook in zip(self.saes, self.labels, self.sae_hooks):
            x = acts[hook]
            mask = kept[..., None]
            spliced = torch.where(mask, sae.decode(sae.encode(x)).to(x.dtype), x)
            zero = torch.where(mask, torch.zeros_like(x), x)
            mean = torch.where(mask, means[hook].to(x.dtype).expand_as(x), x)
            s = stats[label]
            s.n_ce += int(ce_mask.sum())
            s.n_kl += int(kept.sum())
            s.sums["ce_clean"] += ce_clean
            for name, replacement in (("spliced", spliced), ("zero", zero), ("mean", mean)):
                logp = torch.log_softmax(_continue(self.model, hook, tokens, replacement).to(torch.float32), -1)
                s.sums[f"ce_{name}"] += _ce(logp, targets, ce_mask)
                kl = (clean.exp() * (clean - logp)).sum(-1)
                s.sums[f"kl_{name}"] += float(kl[kept].to(torch.float64).sum())


def _ce(logp: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> float:
    """Sum of -log p(next token) over the masked positions."""
    picked = logp[:, :-1].gather(-1, targets[..., None].to(logp.device))[..., 0]
    return float(-picked[mask].to(torch.float64).sum())


def _continue(model: Any, hook: str, tokens: torch.Tensor, replacement: torch.Tensor) -> torch.Tensor:
    """Logits of the model with the activation at `hook` replaced by `replacement` [b, ctx, d] at every position.

    Residual-stream sites of a HookedTransformer start the forward pass at the next block from the
    replacement (the same arithmetic as a hooked full pass, without recomputing the layers before);
    any other site runs the whole model with a replacing forward hook."""
    hooked = model
    while not hasattr(hooked, "run_with_hooks") and hasattr(hooked, "model"):  # LoadedModel (or a wrapper of it)
        hooked = hooked.model
    layer = layer_of(hook)
    cfg = getattr(hooked, "cfg", None)
    residual = hook in (f"blocks.{layer}.hook_resid_post", f"blocks.{layer}.hook_resid_pre")
    if (layer is not None and residual and getattr(model, "backend", "hooked") == "hooked" and cfg is not None
            and getattr(cfg, "positional_embedding_type", "standard") != "shortformer"):
        start = layer + 1 if hook.endswith("resid_post") else layer
        return hooked(replacement.to(_dtype(hooked)), start_at_layer=start, return_type="logits")

    def replace(activation: torch.Tensor, hook: Any = None) -> torch.Tensor:  # noqa: ARG001
        return replacement.to(activation.dtype)

    return hooked.run_with_hooks(tokens, return_type="logits", fwd_hooks=[(hook, replace)])


def _vocab(model: Any) -> int:
    return int(getattr(model, "d_vocab", 0) or getattr(getattr(model, "model", None), "cfg").d_vocab)


def _dtype(hooked: Any) -> torch.dtype:
    cfg = getattr(hooked, "cfg", None)
    return getattr(cfg, "dtype", torch.float32) or torch.float32


def _device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    return torch.device(device) if device is not None else torch.device("cpu")


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None

