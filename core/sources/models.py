"""One face for every language model Atlas can look into.

Sources (ModelSpec.source):
- "organism": the embedded model organism (core/sources/organism.py), or another organism
  directory given as `path`; `checkpoint` is "final" or a saved step such as "step_000123".
- "transformer_lens": an official TransformerLens name or alias ("gpt2", "pythia-70m-deduped", ...),
  loaded with HookedTransformer.from_pretrained. `checkpoint` selects a training checkpoint of the
  families that have them (Pythia, stanford-crfm): "12" or "index:12" is checkpoint_index,
  "value:143000" (or "step:143000") is checkpoint_value.
- "hf_dir": a local Hugging Face model directory, loaded with TransformerBridge.boot_transformers
  (no hub call). The bridge accepts the canonical TransformerLens hook names through its alias table.

LoadedModel hides which of HookedTransformer / TransformerBridge is underneath: tokenization, the
hook list, `run` (activations at named hooks), the logit lens (`unembed`) and the model card are the
same for both. Hook-using calls hold `lock`, because TransformerLens hooks live on shared modules and
Streamlit shares one cached model between all sessions.
"""

from __future__ import annotations

import difflib
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.device import pick_device
from core.errors import AtlasError, OfflineError, PromptError, UnknownHookError, UnknownModelError
from core.hooks import BLOCK_SITES, layer_of
from core.sources.faces import ModelSource
from core.sources.tokens import tokenize_batch

SOURCES = ("organism", "transformer_lens", "hf_dir")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelSpec:
    source: ModelSource = "organism"
    name: str = "atlas-organism"  # TL name, or the organism's name
    path: str | None = None  # hf_dir / alternative organism dir
    checkpoint: str | None = None  # organism: "final" | "step_000123"; TL: "12", "index:12", "value:143000"
    device: str = "auto"
    dtype: str = "float32"


@dataclass(frozen=True)
class ModelCard:
    """What the sidebar shows about the loaded model."""

    name: str
    source: str
    origin: str  # where it came from: a directory, or "transformer_lens:<official name>"
    revision: str  # checkpoint / revision, "final" or "main" when there is none
    n_params: int
    d_model: int
    n_layers: int
    d_vocab: int
    n_ctx: int
    device: str
    dtype: str


@dataclass(frozen=True)
class TokenizedPrompt:
    """A prompt ready for probing: one sequence, BOS first when the model has one."""

    tokens: torch.Tensor  # [1, pos], long, on CPU
    str_tokens: list[str]
    n_truncated: int  # tokens cut to fit n_ctx or max_tokens
    unknown_positions: list[int] = field(default_factory=list)  # positions whose token is UNK


class LoadedModel:
    """A model with the same face whatever its source (see the module docstring)."""

    def __init__(self, spec: ModelSpec, model: Any, tokenizer: Any, *, origin: str, revision: str, backend: str):
        if tokenizer is None:
            raise AtlasError(
                f"The model {spec.name!r} came without a tokenizer; Atlas needs one to read text. "
                "Put the tokenizer files (tokenizer.json / tokenizer_config.json) next to the model."
            )
        self.spec = spec
        self.model = model
        self.tokenizer = tokenizer
        self.backend = backend  # "hooked" (HookedTransformer) | "bridge" (TransformerBridge)
        self.lock = threading.RLock()  # re-entrant: a caller holding it may still call run()
        cfg = model.cfg
        self.n_layers: int = int(cfg.n_layers)
        self.d_model: int = int(cfg.d_model)
        self.d_vocab: int = int(cfg.d_vocab)
        self.n_ctx: int = int(cfg.n_ctx)
        self.bos_token_id: int | None = _token_id(tokenizer, "bos_token_id")
        self.unk_token_id: int | None = _token_id(tokenizer, "unk_token_id")
        self.pad_token_id: int = _pad_id(tokenizer)
        self.device: torch.device = _model_device(model)
        dtype = next(model.parameters()).dtype
        self._hook_names = self._available_hooks()
        self.card = ModelCard(
            name=spec.name,
            source=spec.source,
            origin=origin,
            revision=revision,
            n_params=sum(p.numel() for p in model.parameters()),
            d_model=self.d_model,
            n_layers=self.n_layers,
            d_vocab=self.d_vocab,
            n_ctx=self.n_ctx,
            device=str(self.device),
            dtype=str(dtype).removeprefix("torch."),
        )

    # ---- hook sites -------------------------------------------------------------------------
    def _available_hooks(self) -> list[str]:
        present = set(self.model.hook_dict)
        aliases: dict[str, str] = {}
        if self.backend == "bridge":
            from transformer_lens.model_bridge.bridge import build_alias_to_canonical_map

            aliases = build_alias_to_canonical_map(self.model.hook_dict)
        names = []
        for layer in range(self.n_layers):
            for site in BLOCK_SITES:
                name = f"blocks.{layer}.{site}"
                if name in present or name in aliases:
                    names.append(name)
        return names

    def hook_names(self) -> list[str]:
        """Canonical TransformerLens names of the sites `run` can return, in forward order."""
        return list(self._hook_names)

    def layers(self) -> list[int]:
        return list(range(self.n_layers))

    def resid_post_hooks(self) -> list[str]:
        """Every block's `hook_resid_post`, in forward order."""
        return [f"blocks.{layer}.hook_resid_post" for layer in range(self.n_layers)]

    def has_hook(self, name: str) -> bool:
        return name in self._hook_names

    # ---- tokens -----------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def to_tokens(self, texts: list[str] | str, prepend_bos: bool = True) -> torch.Tensor:
        """[batch, pos] long tensor on CPU, right-padded with the pad id, cut to n_ctx (core.sources.tokens)."""
        if isinstance(texts, str):
            texts = [texts]
        tokens, _ = tokenize_batch(self.tokenizer, texts, bos_token_id=self.bos_token_id,
                                   pad_token_id=self.pad_token_id, n_ctx=self.n_ctx, prepend_bos=prepend_bos)
        return tokens

    def _with_bos(self, ids: list[int], prepend_bos: bool) -> list[int]:
        if prepend_bos and self.bos_token_id is not None:
            return [self.bos_token_id, *ids]
        return ids

    def to_str_tokens(self, tokens: torch.Tensor | list[int]) -> list[str]:
        """One string per token of one sequence (each token decoded on its own)."""
        ids = tokens.reshape(-1).tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        return [self.tokenizer.decode([i], clean_up_tokenization_spaces=False) for i in ids]

    def to_string(self, tokens: torch.Tensor | list[int]) -> str:
        """Detokenize one sequence."""
        ids = tokens.reshape(-1).tolist() if isinstance(tokens, torch.Tensor) else list(tokens)
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def tokenize_prompt(self, text: str, max_tokens: int | None = None) -> TokenizedPrompt:
        """Tokenize a user prompt for probing: BOS first, cut to min(n_ctx, max_tokens) tokens."""
        if text is None or not str(text).strip():
            raise PromptError("The prompt is empty. Type some text to probe.")
        ids = self._with_bos(self.encode(str(text)), True)
        limit = self.n_ctx if max_tokens is None else max(1, min(self.n_ctx, int(max_tokens)))
        n_truncated = max(0, len(ids) - limit)
        ids = ids[:limit]
        start = 1 if self.bos_token_id is not None else 0
        unknown = (
            [i for i, t in enumerate(ids) if i >= start and t == self.unk_token_id]
            if self.unk_token_id is not None
            else []
        )
        tokens = torch.tensor([ids], dtype=torch.long)
        return TokenizedPrompt(tokens, self.to_str_tokens(tokens), n_truncated, unknown)

    # ---- running ----------------------------------------------------------------------------
    def run(
        self, tokens: torch.Tensor, hook_names: list[str] | tuple[str, ...], return_logits: bool = False
    ) -> dict[str, torch.Tensor]:
        """Activations at `hook_names` ([batch, pos, d], float32, on the model's device).

        Without logits the forward pass stops after the deepest block any name needs. With
        return_logits the dict also holds "logits" [batch, pos, d_vocab].
        """
        names = list(dict.fromkeys(hook_names))
        unknown = [n for n in names if n not in self._hook_names]
        if unknown:
            raise UnknownHookError(
                f"The model {self.spec.name!r} has no hook site {', '.join(map(repr, unknown))}. "
                f"Its sites are blocks.0..{self.n_layers - 1} with "
                f"{', '.join(sorted({n.split('.', 2)[2] for n in self._hook_names}))}."
            )
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.ndim == 1:
            tokens = tokens[None]
        if tokens.shape[1] > self.n_ctx:
            raise AtlasError(
                f"A batch of {tokens.shape[1]} positions is longer than the model's context of {self.n_ctx}."
            )
        tokens = tokens.to(self.device)
        stop = None
        if not return_logits:
            # every site `run` accepts sits in a block (see _available_hooks)
            deepest = max((layer for n in names if (layer := layer_of(n)) is not None), default=-1)
            if deepest + 1 < self.n_layers:
                stop = deepest + 1
        with self.lock, torch.inference_mode():
            output, cache = self.model.run_with_cache(
                tokens, names_filter=names, stop_at_layer=stop, return_cache_object=False
            )
        result = {n: cache[n].float() for n in names}
        if return_logits:
            result["logits"] = output.float()
        return result

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """[batch, pos, d_vocab] float32 logits."""
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.ndim == 1:
            tokens = tokens[None]
        with self.lock, torch.inference_mode():
            return self.model(tokens.to(self.device)).float()

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Logit lens: final layer norm, then the unembedding ([..., d_model] -> [..., d_vocab])."""
        with torch.inference_mode():
            x = resid.to(self.device, dtype=next(self.model.parameters()).dtype)
            squeeze = x.ndim == 2
            if squeeze:  # layer norms of TransformerLens want a position axis
                x = x[:, None]
            out = self.model.unembed(self.model.ln_final(x)).float()
            return out[:, 0] if squeeze else out

    @property
    def W_U(self) -> torch.Tensor:
        return self.model.W_U.detach().float()

    def __repr__(self) -> str:
        c = self.card
        return f"LoadedModel({c.name!r}, {c.source}, {c.n_layers} layers x {c.d_model}, {c.device})"


# ---- loading ---------------------------------------------------------------------------------
def load_model(spec: ModelSpec) -> LoadedModel:
    """Load the model `spec` describes; errors are AtlasError subclasses with UI messages."""
    if spec.source not in SOURCES:
        raise UnknownModelError(f"Unknown model source {spec.source!r}; choose one of {', '.join(SOURCES)}.")
    if spec.dtype not in DTYPES:
        raise AtlasError(f"Unknown dtype {spec.dtype!r}; choose one of {', '.join(DTYPES)}.")
    device = pick_device(spec.device)
    if spec.source == "organism":
        return _load_organism(spec, device)
    if spec.source == "transformer_lens":
        return _load_transformer_lens(spec, device)
    return _load_hf_dir(spec, device)


def from_hooked_transformer(model: Any, spec: ModelSpec, origin: str = "in-memory", revision: str = "final") -> LoadedModel:
    """Wrap an already built HookedTransformer (its tokenizer attached)."""
    return LoadedModel(spec, model, model.tokenizer, origin=origin, revision=revision, backend="hooked")


def _load_organism(spec: ModelSpec, device: torch.device) -> LoadedModel:
    from core.sources import organism

    directory = organism.resolve_dir(spec.path)
    if not (directory.is_dir()):
        raise UnknownModelError(f"No model organism at {str(directory)!r}: the directory does not exist.")
    checkpoint = spec.checkpoint or "final"
    available = organism.list_checkpoints(directory)
    if checkpoint not in available:
        raise UnknownModelError(
            f"The organism has no checkpoint {checkpoint!r}. Available: {_short_list(available)}."
        )
    model = organism.load_organism(directory, checkpoint, str(device))
    model = model.to(DTYPES[spec.dtype], print_details=False) if spec.dtype != "float32" else model
    return LoadedModel(spec, model, model.tokenizer, origin=str(directory), revision=checkpoint, backend="hooked")


def official_tl_name(name: str) -> str:
    """The official TransformerLens name for `name` or one of its aliases; UnknownModelError otherwise."""
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    alias_map = make_model_alias_map()
    official = alias_map.get(name.strip().lower())
    if official is None:
        close = difflib.get_close_matches(name.strip().lower(), list(alias_map), n=6, cutoff=0.5)
        hint = f" Did you mean {', '.join(sorted({alias_map[c] for c in close}))}?" if close else ""
        raise UnknownModelError(
            f"TransformerLens does not know a model called {name!r}.{hint} "
            "For a model of your own, choose 'local Hugging Face directory' instead."
        )
    return official


def tl_aliases(name: str) -> set[str]:
    """Every name (lower case) TransformerLens accepts for the same model as `name`; {name} when unknown."""
    from transformer_lens.loading_from_pretrained import make_model_alias_map

    alias_map = make_model_alias_map()
    official = alias_map.get(name.strip().lower())
    if official is None:
        return {name.strip().lower()}
    return {a for a, o in alias_map.items() if o == official}


def parse_tl_checkpoint(checkpoint: str | None) -> dict[str, int]:
    """"12"/"index:12" -> {"checkpoint_index": 12}; "value:1000"/"step:1000" -> {"checkpoint_value": 1000}."""
    if checkpoint in (None, "", "final", "main"):
        return {}
    text = str(checkpoint).strip().lower()
    match = re.fullmatch(r"(?:(index|value|step)\s*[:=]\s*)?(\d+)", text)
    if not match:
        raise UnknownModelError(
            f"Checkpoint {checkpoint!r} is not understood: give an index like '12' or a training step like 'value:143000'."
        )
    kind, number = match.group(1) or "index", int(match.group(2))
    return {"checkpoint_index": number} if kind == "index" else {"checkpoint_value": number}


def _load_transformer_lens(spec: ModelSpec, device: torch.device) -> LoadedModel:
    official = official_tl_name(spec.name)
    ckpt = parse_tl_checkpoint(spec.checkpoint)
    revision = "main"
    if ckpt:
        revision = _checkpoint_revision(official, ckpt)
    from transformer_lens.loading_from_pretrained import NON_HF_HOSTED_MODEL_NAMES

    from core.sources.hub import is_offline_failure, offline_message, require_cached

    what = f"The model {spec.name!r}"
    if official not in NON_HF_HOSTED_MODEL_NAMES:
        require_cached(official, ["config.json"], what, revision=None if revision == "main" else revision)
    from transformer_lens import HookedTransformer

    try:
        model = HookedTransformer.from_pretrained(
            official, device=str(device), dtype=DTYPES[spec.dtype],
            checkpoint_index=ckpt.get("checkpoint_index"), checkpoint_value=ckpt.get("checkpoint_value"))
    except Exception as error:  # the hub stack raises many types; sort out "no network"
        if is_offline_failure(error):
            raise OfflineError(offline_message(what, official, ["its weights or tokenizer"], None)) from error
        raise
    return LoadedModel(
        spec, model, model.tokenizer, origin=f"transformer_lens:{official}", revision=revision, backend="hooked"
    )


def _checkpoint_revision(official: str, ckpt: dict[str, int]) -> str:
    from transformer_lens.loading_from_pretrained import get_checkpoint_labels

    try:
        labels, label_type = get_checkpoint_labels(official)
    except ValueError as error:
        raise UnknownModelError(f"{official!r} has no training checkpoints; leave the checkpoint empty.") from error
    if "checkpoint_index" in ckpt:
        index = ckpt["checkpoint_index"]
        if not 0 <= index < len(labels):
            raise UnknownModelError(
                f"{official!r} has {len(labels)} checkpoints (index 0..{len(labels) - 1}); {index} is out of range."
            )
        value = labels[index]
    else:
        value = ckpt["checkpoint_value"]
        if value not in labels:
            near = sorted(labels, key=lambda v: abs(v - value))[:3]
            raise UnknownModelError(
                f"{official!r} has no checkpoint at {label_type} {value}; the nearest are {sorted(near)}."
            )
    return f"{label_type}{value}"


def _load_hf_dir(spec: ModelSpec, device: torch.device) -> LoadedModel:
    if not spec.path:
        raise UnknownModelError("Give the path of a local Hugging Face model directory.")
    directory = Path(spec.path).expanduser()
    if not (directory / "config.json").is_file():
        raise UnknownModelError(
            f"{str(directory)!r} is not a Hugging Face model directory (no config.json there)."
        )
    from transformer_lens.model_bridge import TransformerBridge

    tokenizer = None
    if any((directory / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(directory))
    else:
        raise AtlasError(
            f"The model directory {str(directory)!r} has no tokenizer files (tokenizer.json or "
            "tokenizer_config.json); save the tokenizer next to the model."
        )
    try:
        bridge = TransformerBridge.boot_transformers(
            str(directory), device=str(device), dtype=DTYPES[spec.dtype], tokenizer=tokenizer
        )
    except Exception as error:
        raise UnknownModelError(
            f"TransformerLens could not load the model in {str(directory)!r}: {type(error).__name__}: {error}"
        ) from error
    name = spec.name if spec.name and spec.name != ModelSpec.name else directory.name
    spec = ModelSpec(**{**spec.__dict__, "name": name})
    return LoadedModel(spec, bridge, bridge.tokenizer, origin=str(directory), revision="local", backend="bridge")


# ---- small helpers ---------------------------------------------------------------------------
def _token_id(tokenizer: Any, attr: str) -> int | None:
    value = getattr(tokenizer, attr, None)
    return int(value) if isinstance(value, int) else None


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "bos_token_id"):
        value = _token_id(tokenizer, attr)
        if value is not None:
            return value
    return 0


def _model_device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover
        return torch.device("cpu")


def _short_list(items: list[str], n: int = 8) -> str:
    if len(items) <= n:
        return ", ".join(items)
    return ", ".join(items[: n // 2] + ["..."] + items[-n // 2 :])
