"""Fixtures: tiny models and SAEs (owned by the source layer).

Everything here is random and tiny (d_model 16, 2 layers), built in a second, and needs no network:
- `word_tokenizer_dir`: a word-level tokenizer saved as a Hugging Face tokenizer directory;
- `tiny_hooked`: a random HookedTransformer with that tokenizer attached;
- `tiny_model`: the same model behind core.sources.models.LoadedModel;
- `tiny_hf_dir`: a random GPT-2 saved with the tokenizer as a local Hugging Face directory;
- `bpe_gpt2_dir`: a random 2-layer GPT-2 with a byte-level BPE tokenizer trained on the concept library's
  words (common words one token, rarer ones split), as a local Hugging Face directory;
- `make_tiny_sae(architecture, d_in, hook_name, ...)`: a random SAELens SAE of any architecture.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_WORDS = (
    "the a cat dog bird sat ran on mat is was day monday tuesday wednesday thursday friday saturday sunday "
    "january february march one two three four five red green blue king queen man woman paris france "
    "city capital of and in to"
).split()
SPECIALS = ["<bos>", "<unk>", "<pad>"]
D_MODEL = 16
N_LAYERS = 2
N_CTX = 32


def tiny_vocab() -> dict[str, int]:
    return {tok: i for i, tok in enumerate(SPECIALS + TINY_WORDS)}


def build_word_tokenizer(directory: Path):
    """A whitespace word-level tokenizer with <bos>/<unk>/<pad>, saved to and reloaded from `directory`.

    HookedTransformer reloads a tokenizer by its name_or_path, so it must come from a directory.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(tiny_vocab(), unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<bos>", eos_token="<bos>", unk_token="<unk>", pad_token="<pad>"
    )
    directory.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(str(directory))
    return PreTrainedTokenizerFast.from_pretrained(str(directory))


def build_tiny_hooked(tokenizer, seed: int = 0, n_layers: int = N_LAYERS, d_model: int = D_MODEL):
    import torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        n_ctx=N_CTX,
        d_head=8,
        n_heads=d_model // 8,
        d_mlp=4 * d_model,
        d_vocab=len(tiny_vocab()),
        act_fn="gelu",
        normalization_type="LN",
        seed=seed,
        device="cpu",
    )
    return HookedTransformer(cfg, tokenizer=tokenizer)


def build_tiny_gpt2_dir(directory: Path, tokenizer_dir: Path, seed: int = 0) -> Path:
    """A random GPT-2 (transformers) with the word tokenizer, saved as a local HF model directory."""
    import shutil

    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    vocab = tiny_vocab()
    cfg = GPT2Config(
        n_embd=D_MODEL,
        n_layer=N_LAYERS,
        n_head=2,
        n_positions=N_CTX,
        n_ctx=N_CTX,  # transformers 5.x: TransformerLens's converter needs n_ctx given explicitly
        vocab_size=len(vocab),
        bos_token_id=vocab["<bos>"],
        eos_token_id=vocab["<bos>"],
    )
    directory.mkdir(parents=True, exist_ok=True)
    GPT2LMHeadModel(cfg).eval().save_pretrained(str(directory))
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, directory / f.name)
    return directory


def make_tiny_sae(
    architecture: str = "standard",
    d_in: int = D_MODEL,
    d_sae: int = 48,
    hook_name: str = "blocks.0.hook_resid_post",
    model_name: str = "tiny",
    seed: int = 0,
    **metadata,
):
    """A random SAELens SAE ("standard" | "topk" | "jumprelu" | "gated") with the given metadata.

    The weights are scaled so that a good share of the features fire on unit-scale inputs.
    """
    import torch
    from sae_lens import (
        GatedSAE,
        GatedSAEConfig,
        JumpReLUSAE,
        JumpReLUSAEConfig,
        StandardSAE,
        StandardSAEConfig,
        TopKSAE,
        TopKSAEConfig,
    )

    classes = {
        "standard": (StandardSAE, StandardSAEConfig, {}),
        "topk": (TopKSAE, TopKSAEConfig, {"k": 4}),
        "jumprelu": (JumpReLUSAE, JumpReLUSAEConfig, {}),
        "gated": (GatedSAE, GatedSAEConfig, {}),
    }
    sae_cls, cfg_cls, extra = classes[architecture]
    torch.manual_seed(seed)
    cfg = cfg_cls(d_in=d_in, d_sae=d_sae, device="cpu", **extra)
    cfg.metadata.hook_name = hook_name
    cfg.metadata.model_name = model_name
    for key, value in metadata.items():
        setattr(cfg.metadata, key, value)
    sae = sae_cls(cfg)
    with torch.no_grad():
        for name, param in sae.named_parameters():
            if name.startswith("W_"):
                param.copy_(torch.randn_like(param) / d_in**0.5)
            elif name == "threshold":
                param.fill_(0.05)
            elif name.startswith("b_") or name.endswith("_gate") or name.endswith("_mag"):
                param.copy_(0.01 * torch.randn_like(param))
    return sae


@pytest.fixture(scope="session")
def word_tokenizer_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("word_tokenizer")
    build_word_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_hooked(word_tokenizer_dir):
    from transformers import PreTrainedTokenizerFast

    return build_tiny_hooked(PreTrainedTokenizerFast.from_pretrained(str(word_tokenizer_dir)))


@pytest.fixture(scope="session")
def tiny_model(tiny_hooked):
    """A LoadedModel over the tiny random HookedTransformer (the organism path's stand-in)."""
    from core.sources.models import ModelSpec, from_hooked_transformer

    return from_hooked_transformer(
        tiny_hooked, ModelSpec(source="organism", name="tiny", device="cpu"), origin="tests"
    )


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory, word_tokenizer_dir) -> Path:
    return build_tiny_gpt2_dir(tmp_path_factory.mktemp("tiny_gpt2"), word_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_sae_factory():
    return make_tiny_sae


WORLD_TEXTS = [
    "monday is a day",
    "tuesday is a day",
    "paris is the capital of france",
    "the king and the queen",
    "one two three four five",
]


@pytest.fixture
def fake_organism(tmp_path, monkeypatch, tiny_hooked):
    """Stands in for core.sources.organism (the organism's own module) with the tiny model.

    Lets the "organism" source paths of models/saes/corpus run before and independently of the
    trained organism; the real module is exercised by the organism's tests.
    """
    import types
    from pathlib import Path

    import core.sources

    sae_dirs = {}
    for layer in range(N_LAYERS):
        hook = f"blocks.{layer}.hook_resid_post"
        directory = tmp_path / "saes" / hook
        make_tiny_sae("topk", hook_name=hook, model_name="atlas-organism", seed=layer,
                      prepend_bos=True, context_size=16).save_model(str(directory))
        sae_dirs[hook] = directory
    module = types.ModuleType("core.sources.organism")
    module.ORGANISM_DIR = tmp_path
    module.resolve_dir = lambda directory=None: Path(directory) if directory else tmp_path
    module.load_organism = lambda directory=tmp_path, checkpoint="final", device="cpu": tiny_hooked
    module.list_checkpoints = lambda directory=tmp_path: ["step_000000", "final"]
    module.organism_sae_dirs = lambda directory=tmp_path: dict(sae_dirs)
    module.world_corpus_texts = lambda directory=tmp_path, split="eval": list(WORLD_TEXTS) * 4
    monkeypatch.setitem(__import__("sys").modules, "core.sources.organism", module)
    monkeypatch.setattr(core.sources, "organism", module, raising=False)
    return module


def build_bpe_gpt2_dir(directory: Path, vocab_size: int = 4000) -> Path:
    """A random 2-layer GPT-2 with a byte-level BPE tokenizer trained on the library's words and templates
    (so common words are one token and rarer ones split), saved as a local Hugging Face directory."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from core.concepts.library import load_library

    texts = []
    for s in load_library().values():
        texts += [t.replace("{word}", w).replace("{pair}", i.pair or "") for t in s.context_templates[:2]
                  for i in s.items for w in (i.word,)]
        texts += [t.text for t in s.relation_templates]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>",
                                        eos_token="<|endoftext|>", unk_token="<|endoftext|>")
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(directory))
    torch.manual_seed(0)
    cfg = GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64, n_ctx=64, vocab_size=len(tokenizer),
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(cfg).eval().save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="session")
def bpe_gpt2_dir(tmp_path_factory) -> Path:
    return build_bpe_gpt2_dir(tmp_path_factory.mktemp("bpe_gpt2"))
