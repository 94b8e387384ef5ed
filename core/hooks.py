"""Hook-site names: TransformerLens's vocabulary, the one Atlas speaks everywhere.

A site is a TransformerLens hook name ("blocks.3.hook_resid_post"). Sites outside the blocks
("hook_embed", "ln_final.hook_normalized") have no block index; they sort before every block.
"""

from __future__ import annotations

import re
from typing import Iterable

# Hook sites offered per block, in forward order; a model lists only those it really has.
BLOCK_SITES = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.")


def layer_of(hook_name: str) -> int | None:
    """The block index of a hook name ("blocks.3.hook_resid_post" -> 3); None outside the blocks."""
    match = _BLOCK_HOOK.match(hook_name)
    return int(match.group(1)) if match else None


def site_order(hook_name: str) -> tuple[int, str]:
    """Sort key of sites: by block (sites outside the blocks first), then by name."""
    layer = layer_of(hook_name)
    return (-1 if layer is None else layer, hook_name)


def sorted_sites(names: Iterable[str]) -> list[str]:
    """Sites in layer order (see `site_order`)."""
    return sorted(names, key=site_order)


def block_hook(layer: int, site: str = "hook_resid_post") -> str:
    """The hook name of `site` in block `layer` ("blocks.{layer}.{site}")."""
    return f"blocks.{int(layer)}.{site}"


def resid_post(layer: int) -> str:
    return block_hook(layer, "hook_resid_post")


def base_hook(label: str) -> str:
    """The hook of an SAE label: a second SAE on one hook is labelled "hook#2" (core.harvest)."""
    return label.split("#", 1)[0]
