"""Per-site statistics: activation moments (mean, covariance) and a uniform reservoir of token activations."""

from __future__ import annotations

import numpy as np
import torch

from core.harvest.sampling import hash_keys, to_numpy


class ActivationMoments:
    """Count, mean and covariance of activation vectors, accumulated in float64.

    Update and merge use the pairwise formula of Chan, Golub & LeVeque (1979):
        delta = mean_b - mean_a; n = n_a + n_b
        mean = mean_a + delta * n_b / n
        M2 = M2_a + M2_b + outer(delta, delta) * n_a * n_b / n
    where M2 = sum (x - mean)(x - mean)^T; each batch's M2 is computed around the batch mean
    (numerically stable, no catastrophic cancellation of raw second moments).
    """

    def __init__(self, d: int, device: torch.device | str = "cpu"):
        self.d = d
        self.n = 0
        self.mean = torch.zeros(d, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(d, d, dtype=torch.float64, device=device)

    def update(self, x: torch.Tensor) -> None:
        """x: [n, d] activations of the kept (non-BOS) tokens."""
        if x.shape[0] == 0:
            return
        xb = x.to(torch.float64)
        mean_b = xb.mean(0)
        centred = xb - mean_b
        self._combine(xb.shape[0], mean_b, centred.T @ centred)

    def _combine(self, n_b: int, mean_b: torch.Tensor, m2_b: torch.Tensor) -> None:
        n_a = self.n
        n = n_a + n_b
        delta = mean_b.to(self.mean.device) - self.mean
        self.mean = self.mean + delta * (n_b / n)
        self.m2 = self.m2 + m2_b.to(self.m2.device) + torch.outer(delta, delta) * (n_a * n_b / n)
        self.n = n

    def merge(self, other: "ActivationMoments") -> "ActivationMoments":
        if other.n:
            self._combine(other.n, other.mean, other.m2)
        return self

    def result(self) -> dict[str, np.ndarray | np.int64]:
        """{"n": int, "mean": [d] f64, "cov": [d, d] f64 (population covariance, / n)}."""
        cov = self.m2 / self.n if self.n else torch.full_like(self.m2, float("nan"))
        return {"n": np.int64(self.n), "mean": to_numpy(self.mean), "cov": to_numpy(cov)}


class Reservoir:
    """A uniform sample without replacement of `size` token activations.

    Each token gets the key hash(seed, chunk, position) and the reservoir keeps the `size` smallest
    keys (bottom-k sampling, equivalent to reservoir sampling). Keys depend only on the token's
    place in the corpus, so all sites sample the same tokens and merges are exact.
    """

    def __init__(self, d: int, size: int, seed: int = 0, device: torch.device | str = "cpu"):
        self.d, self.size, self.seed = d, size, seed
        self.keys = torch.empty(0, dtype=torch.int64, device=device)
        self.data = torch.empty(0, d, dtype=torch.float32, device=device)
        self.chunk = torch.empty(0, dtype=torch.int64, device=device)
        self.pos = torch.empty(0, dtype=torch.int64, device=device)
        self.token = torch.empty(0, dtype=torch.int64, device=device)

    def update(self, x: torch.Tensor, chunk: torch.Tensor, pos: torch.Tensor, token: torch.Tensor,
               keys: torch.Tensor | None = None) -> None:
        if self.size == 0 or x.shape[0] == 0:
            return
        if keys is None:
            keys = hash_keys(self.seed, chunk, pos)
        self._absorb(keys, x.to(torch.float32), chunk, pos, token)

    def _absorb(self, keys, data, chunk, pos, token) -> None:
        keys = torch.cat([self.keys, keys.to(self.keys.device)])
        data = torch.cat([self.data, data.to(self.data.device)])
        chunk = torch.cat([self.chunk, chunk.to(self.chunk.device)])
        pos = torch.cat([self.pos, pos.to(self.pos.device)])
        token = torch.cat([self.token, token.to(self.token.device)])
        if keys.numel() > self.size:
            # ties (32-bit keys) broken by corpus place, so the choice is order-independent
            composite = (keys << 24) | ((chunk * 4099 + pos) & 0xFFFFFF)
            keep = torch.topk(composite, self.size, largest=False, sorted=False).indices
            keys, data, chunk, pos, token = keys[keep], data[keep], chunk[keep], pos[keep], token[keep]
        self.keys, self.data, self.chunk, self.pos, self.token = keys, data, chunk, pos, token

    def merge(self, other: "Reservoir") -> "Reservoir":
        if other.keys.numel():
            self._absorb(other.keys, other.data, other.chunk, other.pos, other.token)
        return self

    def result(self) -> dict[str, np.ndarray]:
        """Samples sorted by corpus place: data [k, d] f32, chunk/pos/token [k] int64."""
        order = torch.argsort(self.chunk * (1 << 20) + self.pos)
        return {
            "reservoir": to_numpy(self.data[order]),
            "reservoir_chunk": to_numpy(self.chunk[order]),
            "reservoir_pos": to_numpy(self.pos[order]),
            "reservoir_token": to_numpy(self.token[order]),
        }
