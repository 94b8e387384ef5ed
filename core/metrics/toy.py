"""The toy model of superposition: a lab where the ground truth is known.

Paper: Elhage et al. 2022, "Toy Models of Superposition" (model, D*, D_i, feature geometry);
the SAE check of effective features: Bereska et al. 2025, "Superposition as Lossy Compression"
(20 features in 5 neurons, importance 0.7**i, SAE dictionary 40, L1 0.1, r = 0.94 +/- 0.02).
Formulas as in METHODS.md sections 1 and 3.

Many toy models (one per sparsity) train at once as independent "instances" of one batched
model, as in the paper's code; a sweep of a dozen sparsities costs about as much as one model.
Plain torch, CPU; a few seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.device import single_thread
from core.jsonable import FloatArray, IntArray, Result
from core.metrics.spectral import MetricInputError, _finite_array
from core.metrics.superposition import effective_features_from_mass

# Reference values of D_i (Elhage et al. 2022, METHODS.md section 3): one feature per dimension,
# tetrahedron, triangle, antipodal pair, pentagon, square antiprism.
DIMENSIONALITY_REFERENCES = (1.0, 3 / 4, 2 / 3, 1 / 2, 2 / 5, 3 / 8)


# --------------------------------------------------------------------------- the toy model


@dataclass(frozen=True, eq=False)
class ToyModel(Result):
    """A trained toy model x -> h = W x -> relu(W.T h + b)."""

    W: FloatArray  # [m, n]: column i is feature i's direction in the hidden space
    b: FloatArray  # [n]
    importance: FloatArray  # [n]
    sparsity: float  # S: probability that a feature is 0
    final_loss: float

    @property
    def n_features(self) -> int:
        return int(self.W.shape[1])

    @property
    def n_hidden(self) -> int:
        return int(self.W.shape[0])


def _check_sizes(n: int, m: int, steps: int, batch_size: int) -> None:
    if n < 1 or m < 1:
        raise MetricInputError("The toy model needs at least one feature and one hidden dimension.")
    if steps < 1 or batch_size < 1:
        raise MetricInputError("steps and batch_size must be positive.")


def _sparsities(sparsity) -> np.ndarray:
    s = _finite_array(np.atleast_1d(sparsity), "sparsity", ndim=1)
    if np.any(s < 0) or np.any(s >= 1):
        raise MetricInputError("Sparsity S must lie in [0, 1): S = 1 would mean features never occur.")
    return s


def sample_features(n_samples: int, sparsities, n: int, generator: torch.Generator) -> torch.Tensor:
    """Toy feature vectors x [n_samples, n_instances, n]: x_i = 0 with probability S, else U[0, 1]."""
    s = torch.as_tensor(np.asarray(sparsities, dtype=np.float32))
    shape = (n_samples, s.numel(), n)
    values = torch.rand(shape, generator=generator)
    present = torch.rand(shape, generator=generator) >= s[None, :, None]
    return values * present


def train_toy_models(sparsities, n: int = 20, m: int = 5, importance_decay: float = 0.7,
                     steps: int = 4000, batch_size: int = 1024, lr: float = 1e-3,
                     seed: int = 0) -> list[ToyModel]:
    """Train one toy model per sparsity, all at once (Elhage et al. 2022; METHODS.md section 3).

        x_i = 0 with prob S else U[0, 1];  h = W x  (W: m x n);  x_hat = relu(W.T W x + b)
        loss = mean over the batch of sum_i I_i (x_i - x_hat_i)**2,   I_i = importance_decay**i
    Adam at a constant learning rate; W starts Xavier-normal, b at 0, as in the paper's code.
    importance_decay = 1 gives equal importance (the pentagon setting).
    """
    s = _sparsities(sparsities)
    _check_sizes(n, m, steps, batch_size)
    if importance_decay <= 0:
        raise MetricInputError("importance_decay must be positive.")
    generator = torch.Generator().manual_seed(int(seed))
    n_inst = s.size
    W = torch.empty(n_inst, m, n)
    for k in range(n_inst):
        torch.nn.init.xavier_normal_(W[k], generator=generator)
    W.requires_grad_(True)
    b = torch.zeros(n_inst, n, requires_grad=True)
    importance = torch.tensor(importance_decay ** np.arange(n), dtype=torch.float32)
    optimiser = torch.optim.Adam([W, b], lr=lr)
    loss_per_instance = torch.zeros(n_inst)
    with single_thread():   # tiny tensors: threads only add hand-off cost (core.device.single_thread)
        for _ in range(int(steps)):
            x = sample_features(batch_size, s, n, generator)
            h = torch.einsum("imn,bin->bim", W, x)
            x_hat = torch.relu(torch.einsum("imn,bim->bin", W, h) + b)
            loss_per_instance = (importance * (x - x_hat) ** 2).sum(-1).mean(0)
            optimiser.zero_grad()
            loss_per_instance.sum().backward()
            optimiser.step()
    W_np, b_np = W.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)
    losses = loss_per_instance.detach().numpy()
    return [ToyModel(W_np[k], b_np[k], importance.numpy().astype(np.float64), float(s[k]), float(losses[k]))
            for k in range(n_inst)]


def train_toy_model(n: int = 20, m: int = 5, sparsity: float = 0.9, importance_decay: float = 0.7,
                    steps: int = 4000, batch_size: int = 1024, lr: float = 1e-3,
                    seed: int = 0) -> ToyModel:
    """One toy model of superposition; see `train_toy_models` (Elhage et al. 2022)."""
    return train_toy_models([sparsity], n, m, importance_decay, steps, batch_size, lr, seed)[0]


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True, eq=False)
class ToyGeometry(Result):
    """How a toy model stores its features (Elhage et al. 2022, METHODS.md section 3)."""

    D_star: float  # m / ||W||_F**2: hidden dimensions per feature
    D_i: FloatArray  # [n]: dimensions taken by each feature (0 = not learned)
    represented: FloatArray  # [n]: ||W[:, i]||
    superposition: FloatArray  # [n]: sum_{j != i} (W_hat[:, i] . W[:, j])**2


def toy_geometry(W, norm_floor: float = 1e-2) -> ToyGeometry:
    """D*, D_i, representation and superposition of each feature of a toy weight W [m, n].

        represented_i = ||W[:, i]||;  W_hat[:, i] = W[:, i] / ||W[:, i]||
        superposition_i = sum_{j != i} (W_hat[:, i] . W[:, j])**2
        D_star = m / ||W||_F**2
        D_i = ||W[:, i]||**2 / sum_j (W_hat[:, i] . W[:, j])**2     (sum over all j, i included)
    A feature with ||W[:, i]|| < norm_floor is not learned: D_i = 0 and superposition_i = 0
    (its direction is noise). An all-zero W stores no feature and has no D* (m / 0): MetricInputError.
    (Elhage et al. 2022; METHODS.md section 3.)
    """
    w = _finite_array(W, "W", ndim=2)
    if not np.any(w):
        raise MetricInputError("The toy model's weights are all zero: it stores no feature, so D* = m / ||W||_F^2 "
                               "is undefined. Train it (more steps, or a lower sparsity) first.")
    with np.errstate(over="ignore", under="ignore"):
        frob = float((w**2).sum())
    if not 0 < frob < np.inf:
        raise MetricInputError(f"The toy model's weights (largest |w| = {np.abs(w).max():.3g}) are too small or too "
                               "large to square in float64; toy weights are of order 1.")
    m = w.shape[0]
    norms = np.linalg.norm(w, axis=0)
    learned = norms >= norm_floor
    w_hat = np.where(learned[None, :], w / np.where(learned, norms, 1.0)[None, :], 0.0)
    overlaps = (w_hat.T @ w) ** 2  # [i, j] = (W_hat_i . W_j)**2
    total = overlaps.sum(axis=1)
    superposition = total - np.diag(overlaps)
    d_i = np.where(learned, norms**2 / np.where(total > 0, total, 1.0), 0.0)
    d_star = float(m / frob)
    return ToyGeometry(d_star, d_i, norms, np.where(learned, superposition, 0.0))


# --------------------------------------------------------------------------- SAE on the toy


@dataclass(frozen=True, eq=False)
class ToySAE:
    """The reference's tied ReLU SAE on the toy hidden layer: z = relu(h W.T + b), h_hat = z W."""

    W: np.ndarray  # [d_dict, m]: one dictionary direction per row (encoder and decoder, tied)
    b: np.ndarray  # [d_dict]

    def encode(self, h: np.ndarray) -> np.ndarray:
        return np.maximum(h @ self.W.T + self.b, 0.0)


def _train_saes(models: list[ToyModel], d_dict: int, l1_coefficient: float, steps: int,
                batch_size: int, lr: float, generator: torch.Generator) -> list[ToySAE]:
    """Tied SAEs on the hidden layers of several toy models at once (one SAE per model).

    As the reference code of Bereska et al. 2025 (`TiedSparseAutoencoder`, `compute_loss`):
        z = relu(h W.T + b);  h_hat = z W  (tied weights, no decoder bias, Xavier-uniform init)
        loss = mean((h - h_hat)**2) + l1_coefficient * mean(|z|)   (means over batch and units)
    Adam; fresh toy samples every step. Tied weights leave no free scale for L1 to exploit.
    """
    n_inst, m, n = len(models), models[0].n_hidden, models[0].n_features
    W_toy = torch.tensor(np.stack([mod.W for mod in models]), dtype=torch.float32)
    s = np.array([mod.sparsity for mod in models])
    W = torch.empty(n_inst, d_dict, m)
    for k in range(n_inst):
        torch.nn.init.xavier_uniform_(W[k], generator=generator)
    W.requires_grad_(True)
    b = torch.zeros(n_inst, d_dict, requires_grad=True)
    optimiser = torch.optim.Adam([W, b], lr=lr)
    with single_thread():
        for _ in range(int(steps)):
            with torch.no_grad():
                h = torch.einsum("imn,bin->bim", W_toy, sample_features(batch_size, s, n, generator))
            z = torch.relu(torch.einsum("bim,idm->bid", h, W) + b)
            h_hat = torch.einsum("bid,idm->bim", z, W)
            loss = ((h - h_hat) ** 2).mean(-1).mean(0) + l1_coefficient * z.abs().mean(-1).mean(0)
            optimiser.zero_grad()
            loss.sum().backward()
            optimiser.step()
    W_np, b_np = W.detach().numpy().astype(np.float64), b.detach().numpy().astype(np.float64)
    return [ToySAE(W_np[k], b_np[k]) for k in range(n_inst)]


def ground_truth_mass(model: ToyModel, x: np.ndarray, represented_threshold: float = 0.5) -> np.ndarray:
    """L1 mass of the true feature activations, restricted to the features the toy represents:
    mass_i = sum_b |x_bi| if ||W[:, i]|| >= represented_threshold, else 0.

    Ground-truth choice (METHODS.md section 1 leaves it open): the SAE can only find features
    that reach the hidden layer, so features the toy drops are not part of the truth. A learned
    feature has ||W_i|| ~ 1 and a dropped one ~ 0 (Elhage et al. 2022); 0.5 splits them. Weighting
    by ||W_i|| instead was tried and rejected: the dozen residual norms of 0.03-0.2 that a dense
    toy keeps after a short training add up to a few phantom features (F 8.4 where 5 are stored).
    """
    norms = np.linalg.norm(model.W, axis=0)
    return np.abs(x).sum(0) * (norms >= represented_threshold)


@dataclass(frozen=True, eq=False)
class SparsitySweep(Result):
    """Effective features of toy models across sparsity: ground truth against SAE-measured."""

    sparsity: FloatArray
    F_true: FloatArray
    F_sae: FloatArray
    D_star: FloatArray
    psi_true: FloatArray  # F_true / m
    psi_sae: FloatArray  # F_sae / m
    pearson_r: float
    n_features: int
    n_hidden: int
    sae_dictionary: int
    n_represented: IntArray | None = None  # features with ||W_i|| >= 0.5, per sparsity
    # The toy models the sweep trained, one instance per sparsity, so a caller can show the very model
    # whose F it reports instead of training another:
    W: FloatArray | None = None  # [n_sparsities, m, n]
    b: FloatArray | None = None  # [n_sparsities, n]
    final_loss: FloatArray | None = None  # [n_sparsities]
    importance: FloatArray | None = None  # [n]

    def model(self, k: int) -> ToyModel:
        """Instance k of the sweep (sparsity[k]) as a ToyModel."""
        if self.W is None or self.b is None or self.final_loss is None or self.importance is None:
            raise MetricInputError("This sweep carries no trained weights.")
        return ToyModel(self.W[k], self.b[k], self.importance, float(self.sparsity[k]), float(self.final_loss[k]))


def sweep_sparsity(sparsities=(0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99), n: int = 20, m: int = 5,
                   importance_decay: float = 0.7, toy_steps: int = 3000, sae_dictionary: int = 40,
                   l1_coefficient: float = 0.1, sae_steps: int = 3000, batch_size: int = 1024,
                   eval_samples: int = 20000, seed: int = 0, toy_lr: float = 1e-3,
                   sae_lr: float = 1e-3) -> SparsitySweep:
    """Does F measured through an SAE track the toy's ground truth? (Bereska et al. 2025.)

    For each sparsity S: train a toy model (Elhage et al. 2022), train the reference's tied SAE
    (dictionary 40, L1 0.1; see `_train_saes`) on its hidden layer, then on `eval_samples` fresh inputs
        F_sae  = exp(H(p)),  p ~ sum_b |z_b|               (the SAE's L1 mass)
        F_true = exp(H(p)),  p ~ sum_b |x_bi| over features with ||W_i|| >= 0.5   (see `ground_truth_mass`)
    and report their Pearson r across S (paper: r = 0.94 +/- 0.02). Measured with the defaults:
    r = 0.997, 0.955, 0.978 for seeds 0, 1, 2; about 30 s on one CPU core.
    """
    s = _sparsities(sparsities)
    if s.size < 2:
        raise MetricInputError("A sparsity sweep needs at least two sparsities.")
    if sae_dictionary < 1 or l1_coefficient < 0 or eval_samples < 1:
        raise MetricInputError("sae_dictionary and eval_samples must be positive, l1_coefficient >= 0.")
    models = train_toy_models(s, n, m, importance_decay, toy_steps, batch_size, toy_lr, seed)
    generator = torch.Generator().manual_seed(int(seed) + 1)
    saes = _train_saes(models, sae_dictionary, l1_coefficient, sae_steps, batch_size, sae_lr, generator)
    x = sample_features(eval_samples, s, n, generator).numpy().astype(np.float64)
    f_true: list[float] = []
    f_sae: list[float] = []
    d_star: list[float] = []
    n_rep: list[int] = []
    for k, (model, sae) in enumerate(zip(models, saes)):
        xk = x[:, k, :]
        h = xk @ model.W.T
        f_true.append(effective_features_from_mass(ground_truth_mass(model, xk)))
        f_sae.append(effective_features_from_mass(np.abs(sae.encode(h)).sum(0)))
        d_star.append(toy_geometry(model.W).D_star)
        n_rep.append(int((np.linalg.norm(model.W, axis=0) >= 0.5).sum()))
    F_true, F_sae = np.array(f_true), np.array(f_sae)
    r = float(np.corrcoef(F_true, F_sae)[0, 1]) if F_true.std() > 0 and F_sae.std() > 0 else float("nan")
    return SparsitySweep(s, F_true, F_sae, np.array(d_star), F_true / m, F_sae / m, r, n, m, sae_dictionary,
                         np.array(n_rep), W=np.stack([mod.W for mod in models]),
                         b=np.stack([mod.b for mod in models]),
                         final_loss=np.array([mod.final_loss for mod in models]), importance=models[0].importance)
