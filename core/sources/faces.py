"""The faces of a model and of an SAE: what the library (harvest, analysis, probe) may use of them.

`core.sources.models.LoadedModel` and `core.sources.saes.LoadedSAE` implement these whatever the
source (the organism, TransformerLens, a Hugging Face directory, SAELens releases and directories);
code that takes a model or an SAE types it with `ModelFace` / `SAEFace`, so a test double or a new
source only has to provide these members. The source kinds are Literals: a spec names one of them.

This module imports nothing from the sources (they import it for the Literals).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol, runtime_checkable

import torch

ModelSource = Literal["organism", "transformer_lens", "hf_dir"]
SAESource = Literal["organism", "release", "dir"]
CorpusSource = Literal["world", "file", "hf_dataset"]


class ModelSpecFace(Protocol):
    """What a model was loaded from (core.sources.models.ModelSpec)."""

    @property
    def source(self) -> ModelSource: ...
    @property
    def name(self) -> str: ...
    @property
    def path(self) -> str | None: ...
    @property
    def checkpoint(self) -> str | None: ...
    @property
    def device(self) -> str: ...
    @property
    def dtype(self) -> str: ...


class ModelCardFace(Protocol):
    """What identifies the loaded weights (core.sources.models.ModelCard)."""

    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def origin(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def dtype(self) -> str: ...


@runtime_checkable
class ModelFace(Protocol):
    """A language model with TransformerLens hook names as its sites."""

    n_layers: int
    d_model: int
    d_vocab: int
    n_ctx: int
    bos_token_id: int | None
    unk_token_id: int | None
    pad_token_id: int
    device: torch.device

    # read-only members are properties: an implementer may hold a subtype (a ModelSpec is a ModelSpecFace)
    @property
    def spec(self) -> ModelSpecFace: ...
    @property
    def card(self) -> ModelCardFace: ...
    @property
    def lock(self) -> AbstractContextManager[Any]: ...  # held around every forward pass (re-entrant)
    @property
    def W_U(self) -> torch.Tensor: ...  # [d_model, d_vocab]

    def layers(self) -> list[int]: ...
    def hook_names(self) -> list[str]: ...
    def resid_post_hooks(self) -> list[str]: ...
    def has_hook(self, name: str) -> bool: ...
    def encode(self, text: str) -> list[int]: ...  # token ids, no special tokens
    def to_tokens(self, texts: list[str] | str, prepend_bos: bool = True) -> torch.Tensor: ...
    def to_str_tokens(self, tokens: torch.Tensor | list[int]) -> list[str]: ...
    def to_string(self, tokens: torch.Tensor | list[int]) -> str: ...
    def run(self, tokens: torch.Tensor, hook_names: list[str] | tuple[str, ...],
            return_logits: bool = False) -> dict[str, torch.Tensor]: ...
    def unembed(self, resid: torch.Tensor) -> torch.Tensor: ...


class SAESpecFace(Protocol):
    """What an SAE was loaded from (core.sources.saes.SAESpec)."""

    @property
    def source(self) -> SAESource: ...
    @property
    def release(self) -> str | None: ...
    @property
    def sae_id(self) -> str | None: ...
    @property
    def path(self) -> str | None: ...
    @property
    def hook_name(self) -> str | None: ...


@runtime_checkable
class SAEFace(Protocol):
    """A sparse autoencoder on one hook site: z = encode(x) [.., d_sae], x_hat = decode(z) [.., d_in]."""

    hook_name: str
    d_in: int
    d_sae: int
    architecture: str

    @property
    def spec(self) -> SAESpecFace: ...
    @property
    def W_enc(self) -> torch.Tensor: ...  # [d_in, d_sae]
    @property
    def W_dec(self) -> torch.Tensor: ...  # [d_sae, d_in]
    @property
    def b_enc(self) -> torch.Tensor: ...
    @property
    def b_dec(self) -> torch.Tensor: ...

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...
    def decode(self, z: torch.Tensor) -> torch.Tensor: ...

