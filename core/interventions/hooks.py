"""The one hook mechanism of the interventions: `intervene(model, hooks)`.

A context manager that adds TransformerLens forward hooks to a LoadedModel's network (a
HookedTransformer, or a TransformerBridge for local Hugging Face directories; both offer
`hooks(fwd_hooks=...)`, which tags each hook with a context level and removes exactly those on exit)
while holding the model's re-entrant lock, and removes them on every way out: a normal exit, an
exception inside a hook or inside the block, KeyboardInterrupt, a generator closed early
(GeneratorExit). The lock makes interventions from two threads (two browser sessions sharing one
cached model) run one after the other: hooks live on modules every session shares, so without it a
forward pass of one session would run through the other's hooks.

After TransformerLens's own clean-up a last check runs: every hook point touched must hold exactly
as many hooks as before the block (extra handles are removed and reported as an error), so a hook can
never outlive its intervention even if a future TransformerLens changes its bookkeeping.

Hook functions receive (activation, hook) and return the new activation (TransformerLens's
convention); names are canonical TransformerLens hook names ("blocks.3.hook_resid_post"), checked
against the model before anything is attached (the bridge's `hooks()` would skip an unknown name
silently).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from core.errors import UnknownHookError

HookFn = Callable[[torch.Tensor, Any], torch.Tensor | None]


def _hook_points(model: Any) -> dict[str, Any]:
    """Canonical name -> HookPoint of the network under a LoadedModel (bridge aliases resolved)."""
    net = model.model
    points = dict(net.hook_dict)
    if getattr(model, "backend", "hooked") == "bridge":
        from transformer_lens.model_bridge.bridge import build_alias_to_canonical_map

        for alias, canonical in build_alias_to_canonical_map(net.hook_dict).items():
            if canonical in net.hook_dict:
                points.setdefault(alias, net.hook_dict[canonical])
    return points


def check_hook_names(model: Any, names: Sequence[str]) -> None:
    """UnknownHookError unless every name is a hook site of the model."""
    points = _hook_points(model)
    unknown = [n for n in names if not isinstance(n, str) or n not in points]
    if unknown:
        sites = sorted({n.split(".", 2)[2] for n in model.hook_names()}) if model.hook_names() else []
        raise UnknownHookError(
            f"The model {model.spec.name!r} has no hook site {', '.join(map(repr, unknown))}. "
            f"Its block sites are blocks.0..{model.n_layers - 1} with {', '.join(sites)}.")


def active_hook_count(model: Any) -> int:
    """Forward and backward hooks attached anywhere in the model (0 when no intervention is running)."""
    seen, total = set(), 0
    for point in _hook_points(model).values():
        if id(point) in seen:
            continue
        seen.add(id(point))
        total += len(getattr(point, "fwd_hooks", [])) + len(getattr(point, "bwd_hooks", []))
    return total


@contextmanager
def intervene(model: Any, hooks: Sequence[tuple[str, HookFn]]) -> Iterator[Any]:
    """Run the block with `hooks` [(hook name, fn)] attached to `model` (a LoadedModel), under its lock.

    Yields the LoadedModel; call `model.logits(tokens)` / `model.run(...)` inside (both take the same
    re-entrant lock). Every hook is gone when the block is left, however it is left.
    """
    hooks = list(hooks)
    check_hook_names(model, [name for name, _ in hooks])
    points = _hook_points(model)
    with model.lock:
        touched = {id(points[name]): points[name] for name, _ in hooks}
        before = {key: len(point.fwd_hooks) for key, point in touched.items()}
        try:
            with model.model.hooks(fwd_hooks=hooks):
                yield model
        finally:
            leaked = 0
            for key, point in touched.items():
                extra = point.fwd_hooks[before[key]:]
                for handle in extra:
                    handle.hook.remove()
                point.fwd_hooks = point.fwd_hooks[: before[key]]
                leaked += len(extra)
            if leaked:  # pragma: no cover - TransformerLens removed its hooks in every version tested
                raise RuntimeError(f"{leaked} intervention hook(s) were still attached after the block; removed them.")


def forward_logits(model: Any, tokens: torch.Tensor, hooks: Sequence[tuple[str, HookFn]] = ()) -> torch.Tensor:
    """[batch, pos, d_vocab] float32 logits of `tokens` with `hooks` attached for this one pass."""
    with intervene(model, hooks), torch.inference_mode():
        return model.logits(tokens)
