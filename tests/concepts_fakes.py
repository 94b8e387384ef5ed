"""A fake model with the LoadedModel face whose activations are known in closed form, for the concept
readout and experiments: each token's state at site L is (L + 1) * E[token], whatever its context.

Its tokenizer splits words longer than `piece` characters into chunks (a stand-in for BPE: "Monday"
-> "Mon", "day"), knows only the words it was built with (others map to <unk>), and prepends nothing
(BOS is added by the caller, as LoadedModel.to_tokens does).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

SPECIALS = ("<bos>", "<unk>", "<pad>")


class FakeModel:
    def __init__(self, words: Sequence[str], *, d: int = 8, n_layers: int = 2, piece: int = 99, seed: int = 0,
                 embeddings: dict[str, np.ndarray] | None = None, n_ctx: int = 64):
        self.piece = piece
        self.vocab: dict[str, int] = {t: i for i, t in enumerate(SPECIALS)}
        for word in words:
            for chunk in self._chunks(word):
                self.vocab.setdefault(chunk, len(self.vocab))
        self.bos_token_id, self.unk_token_id, self.pad_token_id = 0, 1, 2
        self.n_layers, self.d_model, self.n_ctx = n_layers, d, n_ctx
        rng = np.random.default_rng(seed)
        self.E = rng.normal(size=(len(self.vocab), d))
        for token, vector in (embeddings or {}).items():
            self.E[self.vocab[token]] = vector
        self.runs = 0

    def _chunks(self, word: str) -> list[str]:
        return [word[i:i + self.piece] for i in range(0, len(word), self.piece)]

    def encode(self, text: str) -> list[int]:
        return [self.vocab.get(c, self.unk_token_id) for w in text.split() for c in self._chunks(w)]

    def to_str_tokens(self, ids) -> list[str]:
        inverse = {i: t for t, i in self.vocab.items()}
        return [inverse[int(i)] for i in ids]

    def resid_post_hooks(self) -> list[str]:
        return [f"blocks.{layer}.hook_resid_post" for layer in range(self.n_layers)]

    def run(self, tokens: torch.Tensor, hook_names) -> dict[str, torch.Tensor]:
        self.runs += 1
        assert tokens.shape[1] <= self.n_ctx
        states = torch.tensor(self.E[tokens.numpy()], dtype=torch.float32)
        return {name: states * (int(name.split(".")[1]) + 1) for name in hook_names}

    @property
    def W_U(self) -> torch.Tensor:
        return torch.tensor(self.E.T, dtype=torch.float32)

    def vector(self, token: str) -> np.ndarray:
        return self.E[self.vocab[token]]
