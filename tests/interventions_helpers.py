"""Planted models for the intervention tests: a one-block HookedTransformer whose blocks do nothing
(attention and MLP weights zero, no layer norm), so resid_post at a position is the token's embedding
and the next-token logits are resid . W_U: every answer is a known linear readout."""

from __future__ import annotations

import numpy as np
import torch

from tests.fixtures_models import N_CTX, tiny_vocab


def planted_model(tokenizer, embed: dict[str, np.ndarray], unembed: dict[str, np.ndarray], d_model: int = 16):
    """A LoadedModel: W_E[word] = embed[word] (others 0), W_U[:, word] = unembed[word] (others 0)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from core.sources.models import ModelSpec, from_hooked_transformer

    vocab = tiny_vocab()
    cfg = HookedTransformerConfig(n_layers=1, d_model=d_model, n_ctx=N_CTX, d_head=8, n_heads=d_model // 8,
                                  d_mlp=4 * d_model, d_vocab=len(vocab), act_fn="relu", normalization_type=None,
                                  device="cpu", seed=0)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for word, vector in embed.items():
            model.W_E[vocab[word]] = torch.as_tensor(vector, dtype=torch.float32)
        for word, vector in unembed.items():
            model.W_U[:, vocab[word]] = torch.as_tensor(vector, dtype=torch.float32)
    model.eval()
    return from_hooked_transformer(model, ModelSpec(source="organism", name="planted", device="cpu"), origin="tests")


def circle_vectors(k: int, frequency: int, d_model: int = 16, radius: float = 3.0, seed: int = 0) -> np.ndarray:
    """k points on a circle of the given Fourier frequency in a random plane of R^d ([k, d])."""
    rng = np.random.default_rng(seed)
    plane, _ = np.linalg.qr(rng.standard_normal((d_model, 2)))
    angles = 2 * np.pi * frequency * np.arange(k) / k
    return radius * (np.cos(angles)[:, None] * plane[:, 0] + np.sin(angles)[:, None] * plane[:, 1])
