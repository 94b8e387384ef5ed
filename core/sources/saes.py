"""Sparse autoencoders from every source, with one face and a fit check.

Sources (SAESpec.source):
- "organism": the SAEs trained with the embedded organism, one per hook site
  (core.sources.organism.organism_sae_dirs); `hook_name` picks the layer, `path` another organism dir.
- "release": a SAELens pretrained release and SAE id from the registry that ships inside sae-lens
  (pretrained_saes.yaml), loaded with SAE.from_pretrained(release, sae_id) from the hub or its cache.
- "dir": a local SAELens directory (cfg.json + sae_weights.safetensors), SAE.load_from_disk.

LoadedSAE gives W_enc [d_in, d_sae], W_dec [d_sae, d_in], b_enc [d_sae], b_dec [d_in], encode and
decode the same way for Standard, TopK, JumpReLU and Gated SAEs. For a Gated SAE, b_enc is the gate
bias b_gate (the gate decides which features fire; the magnitude path rescales W_enc by exp(r_mag)).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

import torch

from core.errors import OfflineError, SAEMismatchError, UnknownSAEError
from core.sources.faces import SAESource

SOURCES = ("organism", "release", "dir")
SAE_FILES = ("cfg.json", "sae_weights.safetensors")


@dataclass(frozen=True)
class SAESpec:
    source: SAESource = "organism"
    release: str | None = None
    sae_id: str | None = None
    path: str | None = None  # "dir": the SAELens directory; "organism": another organism directory
    hook_name: str | None = None  # organism: which site's SAE


@dataclass
class LoadedSAE:
    """A SAELens SAE behind a uniform face (see the module docstring)."""

    spec: SAESpec
    sae: Any  # the SAELens SAE
    hook_name: str
    d_in: int
    d_sae: int
    architecture: str  # "standard" | "topk" | "jumprelu" | "gated" | ...
    model_name: str
    prepend_bos: bool | None = None  # from the SAE's training metadata, when it says
    context_size: int | None = None
    origin: str = ""
    fit_warnings: list[str] = field(default_factory=list)
    # None: not yet checked; True/False: the plain-torch encoder matched SAELens's on a first input
    _fast_verified: bool | None = field(default=None, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return self.sae.W_dec.device

    @cached_property
    def _kind(self) -> str | None:
        """`_fast_kind(self.sae)`, worked out once: the class, config and activation function of the
        wrapped SAE do not change after wrapping (hooks do, and are checked on every call)."""
        return _fast_kind(self.sae)

    @property
    def W_enc(self) -> torch.Tensor:
        return self.sae.W_enc.detach().float()

    @property
    def W_dec(self) -> torch.Tensor:
        return self.sae.W_dec.detach().float()

    @property
    def b_enc(self) -> torch.Tensor:
        bias = getattr(self.sae, "b_enc", None)
        if bias is None:  # Gated SAEs: the gate's bias decides which features fire
            bias = self.sae.b_gate
        return bias.detach().float()

    @property
    def b_dec(self) -> torch.Tensor:
        return self.sae.b_dec.detach().float()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations z [..., d_sae] (float32) of activations x [..., d_in].

        For Standard, TopK, JumpReLU and Gated SAEs without run-time normalisation, reshaping or hooks
        the encoder runs as plain torch (`_fast_encode`: the same operations as SAELens, without its
        hook points, casts and dense TopK scatter); otherwise, and whenever a hook is attached, through
        SAELens's own `encode`.
        """
        with torch.inference_mode():
            x = x.to(self.device, dtype=self.sae.W_dec.dtype)
            if self.fast_encode_available(x):
                values, indices = self._fast_encode(x.reshape(-1, self.d_in))
                if indices is not None:  # TopK
                    z = torch.zeros(values.shape[0], self.d_sae, dtype=values.dtype, device=values.device)
                    values = z.scatter_(-1, indices, values)
                return values.reshape(*x.shape[:-1], self.d_sae).float()
            return self.sae.encode(x).float()

    def encode_sparse(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The positive codes of activations x [n, d_in] as (rows [nnz], features [nnz], values [nnz] f32).

        Entries come in row-major order (rows ascending, features ascending within a row), exactly as
        `(z > 0).nonzero()` of `encode(x)` would list them. A TopK SAE never builds the dense
        [n, d_sae] code: its k (index, value) pairs per row are kept as they are.
        """
        with torch.inference_mode():
            x = x.to(self.device, dtype=self.sae.W_dec.dtype).reshape(-1, self.d_in)
            if self.fast_encode_available(x):
                values, indices = self._fast_encode(x)
                if indices is not None:  # TopK
                    indices, order = torch.sort(indices, dim=-1)
                    values = values.gather(-1, order)
                    rows = torch.arange(x.shape[0], device=x.device).repeat_interleave(indices.shape[1])
                    values, indices = values.reshape(-1), indices.reshape(-1)
                    fired = values > 0
                    return rows[fired], indices[fired], values[fired].float()
                z = values
            else:
                z = self.sae.encode(x).float()
            rows, feats = (z > 0).nonzero(as_tuple=True)
            return rows, feats, z[rows, feats].float()

    def fast_encode_available(self, sample: torch.Tensor | None = None) -> bool:
        """Whether `encode` may skip SAELens: a known architecture whose encoder is plain linear algebra,
        no run-time normalisation, no hook_z reshaping, no hook attached to the SAE's hook points, and
        (checked once, on `sample`) the plain-torch encoder matches SAELens's within float tolerance."""
        if self._fast_verified is False or self._kind is None:
            return False
        if any(_has_hooks(getattr(self.sae, name, None)) for name in _ENCODE_HOOKS):
            return False
        if self._fast_verified is None:
            if sample is None:
                return False
            self._fast_verified = self._verify_fast_encode(sample)
        return bool(self._fast_verified)

    def _verify_fast_encode(self, sample: torch.Tensor) -> bool:
        x = sample.reshape(-1, self.d_in)[:256]
        try:
            reference = self.sae.encode(x).float()
            values, indices = self._fast_encode(x)
            if indices is not None:  # TopK
                values = torch.zeros_like(reference).scatter_(-1, indices, values)
            scale = float(reference.abs().max()) + 1e-12 if reference.numel() else 1.0
            return values.shape == reference.shape and bool(
                torch.allclose(values.float(), reference, rtol=1e-5, atol=1e-6 * scale))
        except (AttributeError, RuntimeError, TypeError):
            return False

    def _fast_encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The encoder of `sae` written out (x: [n, d_in] in the SAE's dtype).

        Same operations, in the same order, as SAELens 6 (so the same floats):
            sae_in = x - b_dec * apply_b_dec_to_input
            standard: relu(sae_in @ W_enc + b_enc)                                   (Bricken et al. 2023)
            jumprelu: pre = sae_in @ W_enc + b_enc; relu(pre) * (pre > threshold)    (Rajamanoharan et al. 2024b)
            topk:     pre (* ||W_dec rows|| if rescale_acts_by_decoder_norm); the k largest, relu'd (Gao et al. 2024)
            gated:    (sae_in @ W_enc + b_gate > 0) * relu(sae_in @ (W_enc * exp(r_mag)) + b_mag)
                                                                                     (Rajamanoharan et al. 2024)
        Returns (values [n, k], indices [n, k]) for TopK, else (z [n, d_sae], None).
        """
        sae = self.sae
        kind = self._kind
        sae_in = x - sae.b_dec * sae.cfg.apply_b_dec_to_input
        if kind == "gated":
            active = (sae_in @ sae.W_enc + sae.b_gate > 0).to(x.dtype)
            magnitude = torch.relu(sae_in @ (sae.W_enc * sae.r_mag.exp()) + sae.b_mag)
            return active * magnitude, None
        pre = sae_in @ sae.W_enc + sae.b_enc
        if kind == "standard":
            return torch.relu(pre), None
        if kind == "jumprelu":
            return torch.relu(pre) * (pre > sae.threshold).to(pre.dtype), None
        if sae.cfg.rescale_acts_by_decoder_norm:
            pre = pre * sae.W_dec.norm(dim=-1)
        values, indices = torch.topk(pre, k=sae.activation_fn.k, dim=-1, sorted=False)
        return values.relu(), indices

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction x_hat [..., d_in] (float32) of feature activations z [..., d_sae]."""
        with torch.inference_mode():
            return self.sae.decode(z.to(self.device, dtype=self.sae.W_dec.dtype)).float()

    def describe(self) -> str:
        return f"{self.architecture} SAE, {self.d_sae} features on {self.hook_name} ({self.origin})"


_ENCODE_HOOKS = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post")
_PLAIN_NORMS = ("none", "expected_average_only_in")  # SAELens applies no run-time normalisation for these


def _has_hooks(hook_point: Any) -> bool:
    return hook_point is not None and bool(getattr(hook_point, "_forward_hooks", None))


def _fast_kind(sae: Any) -> str | None:
    """The architecture whose plain-torch encoder `LoadedSAE._fast_encode` reproduces, or None.

    Only SAELens's own inference classes qualify (a subclass may change encode), with no run-time
    normalisation, no hook_z reshaping, and the activation function SAELens gives each class.
    """
    try:
        from sae_lens import GatedSAE, JumpReLUSAE, StandardSAE, TopKSAE
        from sae_lens.saes.topk_sae import TopK
    except ImportError:  # pragma: no cover - sae-lens is a dependency
        return None
    cfg = getattr(sae, "cfg", None)
    if cfg is None or getattr(cfg, "normalize_activations", "none") not in _PLAIN_NORMS:
        return None
    if getattr(cfg, "reshape_activations", "none") != "none" or getattr(sae, "hook_z_reshaping_mode", False):
        return None
    kinds = {StandardSAE: "standard", JumpReLUSAE: "jumprelu", GatedSAE: "gated", TopKSAE: "topk"}
    kind = kinds.get(type(sae))
    activation = getattr(sae, "activation_fn", None)
    if kind == "topk":
        if not isinstance(activation, TopK) or activation.use_sparse_activations:
            return None
    elif kind is not None and not isinstance(activation, torch.nn.ReLU):
        return None
    return kind


# ---- loading ---------------------------------------------------------------------------------
def load_sae(spec: SAESpec, model: Any = None, device: str | torch.device | None = None) -> LoadedSAE:
    """Load the SAE `spec` describes, on the model's device; with a model, check the fit too.

    Raises UnknownSAEError (not found), OfflineError (needs the hub, none), SAEMismatchError (does
    not fit `model`). Warnings of the fit check (alias model names) land in `fit_warnings`.
    """
    if spec.source not in SOURCES:
        raise UnknownSAEError(f"Unknown SAE source {spec.source!r}; choose one of {', '.join(SOURCES)}.")
    if device is None:
        from core.device import pick_device

        device = model.device if model is not None else pick_device("auto")
    device = str(device)
    if spec.source == "organism":
        sae, origin = _load_organism_sae(spec, device)
    elif spec.source == "release":
        sae, origin = _load_release_sae(spec, device)
    else:
        sae, origin = _load_dir_sae(spec, device)
    loaded = wrap_sae(sae, spec, origin)
    if model is not None:
        loaded.fit_warnings = check_fit(loaded, model)
    return loaded


def wrap_sae(sae: Any, spec: SAESpec | None = None, origin: str = "in-memory") -> LoadedSAE:
    """Put an SAELens SAE behind the LoadedSAE face."""
    meta = sae.cfg.metadata
    hook_name = meta.hook_name or (spec.hook_name if spec else None)
    if not hook_name:
        raise UnknownSAEError("This SAE does not say which hook it reads (cfg.metadata.hook_name is empty).")
    sae = sae.float() if sae.W_dec.dtype != torch.float32 else sae
    prepend_bos = meta.prepend_bos
    context_size = meta.context_size
    return LoadedSAE(
        spec=spec or SAESpec(source="dir"),
        sae=sae.eval(),
        hook_name=str(hook_name),
        d_in=int(sae.cfg.d_in),
        d_sae=int(sae.cfg.d_sae),
        architecture=str(sae.cfg.architecture()),
        model_name=str(meta.model_name or ""),
        prepend_bos=None if prepend_bos is None else bool(prepend_bos),
        context_size=None if context_size is None else int(context_size),
        origin=origin,
    )


def _load_organism_sae(spec: SAESpec, device: str) -> tuple[Any, str]:
    from core.sources import organism

    directory = organism.resolve_dir(spec.path)
    dirs = organism.organism_sae_dirs(directory)
    if not dirs:
        raise UnknownSAEError(f"The organism at {str(directory)!r} has no SAEs.")
    hook = spec.hook_name or next(iter(dirs))
    if hook not in dirs:
        raise UnknownSAEError(f"The organism has no SAE on {hook!r}; it has SAEs on {', '.join(dirs)}.")
    from sae_lens import SAE

    return SAE.load_from_disk(str(dirs[hook]), device=device), f"organism:{hook}"


def _load_dir_sae(spec: SAESpec, device: str) -> tuple[Any, str]:
    if not spec.path:
        raise UnknownSAEError("Give the path of a SAELens directory (cfg.json + sae_weights.safetensors).")
    directory = Path(spec.path).expanduser()
    missing = [f for f in SAE_FILES if not (directory / f).is_file()]
    if missing:
        raise UnknownSAEError(
            f"{str(directory)!r} is not a SAELens SAE directory: {', '.join(missing)} missing. "
            "Save SAEs with sae.save_model(directory)."
        )
    from sae_lens import SAE

    try:
        return SAE.load_from_disk(str(directory), device=device), str(directory)
    except Exception as error:  # malformed cfg.json or weights: say which and why
        raise UnknownSAEError(
            f"SAELens could not read the SAE in {str(directory)!r}: {type(error).__name__}: {error}"
        ) from error


def _registry() -> dict[str, Any]:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    return get_pretrained_saes_directory()


def _load_release_sae(spec: SAESpec, device: str) -> tuple[Any, str]:
    if not spec.release or not spec.sae_id:
        raise UnknownSAEError("Choose a SAELens release and an SAE id.")
    registry = _registry()
    lookup = registry.get(spec.release)
    if lookup is None:
        close = difflib.get_close_matches(spec.release, list(registry), n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownSAEError(f"SAELens has no release called {spec.release!r}.{hint}")
    if spec.sae_id not in lookup.saes_map:
        close = difflib.get_close_matches(spec.sae_id, list(lookup.saes_map), n=5, cutoff=0.4)
        hint = f" Close ids: {', '.join(close)}." if close else f" It has {len(lookup.saes_map)} ids."
        raise UnknownSAEError(f"The release {spec.release!r} has no SAE id {spec.sae_id!r}.{hint}")
    from core.sources.hub import is_offline_failure, offline_message, require_cached

    folder = lookup.saes_map[spec.sae_id]
    what = f"The SAE {spec.release}/{spec.sae_id}"
    if lookup.conversion_func is None:  # the SAELens layout: <folder>/cfg.json + weights
        require_cached(lookup.repo_id, [f"{folder}/{f}" for f in SAE_FILES], what)
    from sae_lens import SAE

    try:
        sae = SAE.from_pretrained(spec.release, spec.sae_id, device=device)
    except Exception as error:
        if is_offline_failure(error):
            raise OfflineError(offline_message(what, lookup.repo_id, [f"files under {folder}/"])) from error
        raise
    return sae, f"release:{spec.release}/{spec.sae_id}"


# ---- the registry ------------------------------------------------------------------------------
def list_releases(model_name: str | None = None) -> list[str]:
    """SAELens releases (sorted); with a model name, those made for it or one of its aliases."""
    registry = _registry()
    if model_name is None:
        return sorted(registry)
    wanted = _name_variants(model_name)
    return sorted(r for r, lookup in registry.items() if _name_variants(lookup.model) & wanted)


def list_sae_ids(release: str) -> list[str]:
    """The SAE ids of a release, in the registry's order."""
    lookup = _registry().get(release)
    if lookup is None:
        raise UnknownSAEError(f"SAELens has no release called {release!r}.")
    return list(lookup.saes_map)


def release_info(release: str) -> dict[str, Any]:
    """What the registry says about a release: repo, model, and per-id L0 / variance explained."""
    lookup = _registry().get(release)
    if lookup is None:
        raise UnknownSAEError(f"SAELens has no release called {release!r}.")
    return {
        "release": release,
        "repo_id": lookup.repo_id,
        "model": lookup.model,
        "ids": list(lookup.saes_map),
        "paths": dict(lookup.saes_map),
        "l0": dict(lookup.expected_l0),
        "variance_explained": dict(lookup.expected_var_explained),
        "neuronpedia": dict(lookup.neuronpedia_id),
    }


def organism_sae_specs(directory: str | Path | None = None) -> list[SAESpec]:
    """One spec per organism SAE, in the organism's order of hook sites."""
    from core.sources import organism

    root = organism.resolve_dir(directory)
    path = str(directory) if directory else None
    return [SAESpec(source="organism", hook_name=h, path=path) for h in organism.organism_sae_dirs(root)]


# ---- fit ---------------------------------------------------------------------------------------
def _name_variants(name: str) -> frozenset[str]:
    """Lower-case names that mean the same model: TransformerLens aliases, with and without the org."""
    return _name_variants_of(name.strip().lower())


@lru_cache(maxsize=1024)
def _name_variants_of(base: str) -> frozenset[str]:
    # cached: tl_aliases rebuilds TransformerLens's alias table, and list_releases asks once per release
    from core.sources.models import tl_aliases

    variants = {base, base.rsplit("/", 1)[-1]}
    for v in list(variants):
        variants |= tl_aliases(v)
    return frozenset(variants)


def model_names(model: Any) -> set[str]:
    """The names a loaded model goes by: its spec name, its origin's name, its official TL name."""
    names = {model.spec.name}
    origin = str(getattr(model.card, "origin", ""))
    if origin.startswith("transformer_lens:"):
        names.add(origin.split(":", 1)[1])
    elif origin:
        names.add(Path(origin).name)
    return {n.strip().lower() for n in names if n}


def check_fit(sae: LoadedSAE, model: Any) -> list[str]:
    """Check that `sae` reads a site `model` has, with its width, made for the same model.

    Raises SAEMismatchError (hook missing, d_in differs, another model). Returns warnings: the
    model name differs only by an alias (e.g. "gpt2-small" vs "gpt2").
    """
    problems = []
    if not model.has_hook(sae.hook_name):
        problems.append(
            f"it reads the hook {sae.hook_name!r}, which the model does not have "
            f"(the model has {model.n_layers} layers; sites like {model.hook_names()[-1]!r})"
        )
    if sae.d_in != model.d_model:
        problems.append(f"it expects vectors of width {sae.d_in}, but the model's width is {model.d_model}")
    warnings: list[str] = []
    if sae.model_name and not (sae.spec.source == "organism" and model.spec.source == "organism"):
        loaded = model_names(model)
        sae_name = sae.model_name.strip().lower()
        if sae_name not in loaded:
            if _name_variants(sae_name) & set().union(*(_name_variants(n) for n in loaded)):
                warnings.append(
                    f"The SAE was trained on {sae.model_name!r}; the model is loaded as {model.spec.name!r}. "
                    "These are names of the same model."
                )
            else:
                problems.append(f"it was trained on {sae.model_name!r}, but the model is {model.spec.name!r}")
    if problems:
        raise SAEMismatchError(f"The SAE {sae.describe()} does not fit this model: " + "; ".join(problems) + ".")
    return warnings


__all__ = [
    "SAESpec",
    "LoadedSAE",
    "load_sae",
    "wrap_sae",
    "check_fit",
    "list_releases",
    "list_sae_ids",
    "release_info",
    "organism_sae_specs",
]
