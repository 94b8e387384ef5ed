"""How the corpus is cut into chunks when several SAEs read it in one pass.

Each SAE states in its training metadata the context length (`context_size`) and BOS convention
(`prepend_bos`) of the activations it was trained on (core.sources.corpus.corpus_spec_for_sae applies them
for one SAE). One harvest runs every SAE on the same chunks, so when the SAEs disagree one value is chosen:

- chunk length: the shortest `context_size` any SAE states. No SAE then sees a position later than it was
  trained on (activations past the training context drift: the SAE reconstructs them worse), and an SAE
  trained on longer contexts still saw every earlier position in training. SAEs that state nothing do
  not vote; with no statement at all the base spec's length stays. The model's n_ctx caps it later
  (load_corpus).
- BOS: the SAEs' common `prepend_bos`; when they disagree, BOS first (TransformerLens's default, and
  what most SAELens releases were trained with).

`chunking_for_saes` returns the spec and, when the SAEs disagree, a sentence saying what was chosen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from core.sources.corpus import CorpusSpec


def chunking_for_saes(saes: Sequence[Any], base: CorpusSpec) -> tuple[CorpusSpec, str | None]:
    """`base` with the chunk length and BOS convention the SAEs call for, and a note when they disagree."""
    lengths = {int(sae.context_size) for sae in saes if getattr(sae, "context_size", None)}
    bos = {bool(sae.prepend_bos) for sae in saes if getattr(sae, "prepend_bos", None) is not None}
    context_size = min(lengths) if lengths else base.context_size
    prepend_bos = next(iter(bos)) if len(bos) == 1 else True if bos else base.prepend_bos
    notes = []
    if len(lengths) > 1:
        notes.append(f"The SAEs were trained on contexts of {_listed(sorted(lengths))} tokens: chunks use "
                     f"{context_size}, the shortest, so no SAE reads a position past its training context.")
    if len(bos) > 1:
        notes.append("The SAEs disagree about a BOS token at the start of each context: chunks start with BOS.")
    return replace(base, context_size=context_size, prepend_bos=prepend_bos), " ".join(notes) or None


def _listed(values: list[int]) -> str:
    return ", ".join(str(v) for v in values[:-1]) + f" and {values[-1]}" if len(values) > 1 else str(values[0])
