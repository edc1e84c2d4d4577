"""Gaussian diffusion core: the linear noise schedule, q(x_t | x_0), x0 <-> eps, DDIM spacing and the training loss.

Notation follows DDPM / guided-diffusion: beta_t is the per-step noise variance, abar_t = prod_{s<=t} (1 - beta_s)
("alphas_cumprod"), and x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps. Timesteps are *original* indices
0..num_steps-1 (0 = least noisy). Nothing here knows about a network: the loss takes any `denoise_fn(x_t, t) -> eps`.
Motion tensors are (B, T, D) float32 (batch, frames, features).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from sheg.errors import BadInput

__all__ = [
    "NoiseSchedule",
    "RespacedSchedule",
    "LossWeights",
    "ddim_timesteps",
    "diffusion_loss",
    "randn",
]


def randn(shape, generator: torch.Generator | None = None, device="cpu", dtype=torch.float32) -> torch.Tensor:
    """Standard normal noise of `shape` on `device`.

    The noise is drawn on the generator's own device and then moved, so one seeded CPU generator gives the same
    numbers whether the model runs on CPU or GPU (a CUDA tensor cannot be filled from a CPU generator directly).
    """
    if generator is None:
        return torch.randn(shape, device=device, dtype=dtype)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return noise.to(device)


@dataclass(frozen=True)
class RespacedSchedule:
    """The schedule restricted to a subset of original timesteps (guided-diffusion's `SpacedDiffusion`).

    Index i (the "respaced" index) stands for original timestep `timesteps[i]`, ascending.
    `betas[i] = 1 - abar_i / abar_{i-1}` with abar_{-1} = 1, so the cumulative product of (1 - betas) reproduces the
    original abar at those timesteps. All arrays are float64 numpy of length len(timesteps).
    """

    timesteps: np.ndarray  # (S,) int64, ascending original indices
    alphas_cumprod: np.ndarray  # (S,) abar at those timesteps
    alphas_cumprod_prev: np.ndarray  # (S,) abar at the previous kept timestep, 1.0 before the first
    betas: np.ndarray  # (S,) respaced per-step variances

    def __len__(self) -> int:
        return len(self.timesteps)


class NoiseSchedule:
    """Linear beta schedule (Ho et al.; DiffSHEG: 1e-4 -> 0.02 over 1000 steps), float64 throughout.

    Attributes (numpy float64, length num_steps): `betas`, `alphas_cumprod`, `alphas_cumprod_prev`,
    `posterior_variance` (the FIXED_SMALL DDPM variance beta_t (1 - abar_{t-1}) / (1 - abar_t)).
    """

    def __init__(self, num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02):
        if int(num_steps) < 2:
            raise BadInput(f"diffusion needs at least 2 training steps, got {num_steps}; use the default 1000")
        if not 0.0 < beta_start <= beta_end < 1.0:
            raise BadInput(f"betas must satisfy 0 < beta_start <= beta_end < 1, got {beta_start}..{beta_end}")
        self.num_steps = int(num_steps)
        self.beta_start = float(beta_start)
        self.beta_end = float(beta_end)
        self.betas = np.linspace(beta_start, beta_end, self.num_steps, dtype=np.float64)
        self.alphas_cumprod = np.cumprod(1.0 - self.betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.posterior_variance = self.betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self._torch_cache: dict[str, torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"NoiseSchedule(num_steps={self.num_steps}, beta_start={self.beta_start}, beta_end={self.beta_end})"

    # -- lookups -------------------------------------------------------------------------------------------------
    def _abar_table(self, device) -> torch.Tensor:
        key = str(device)
        table = self._torch_cache.get(key)
        if table is None:
            table = torch.as_tensor(self.alphas_cumprod, dtype=torch.float64, device=device)
            self._torch_cache[key] = table
        return table

    def _check_t(self, t: torch.Tensor) -> None:
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_steps):
            raise BadInput(f"timesteps must lie in 0..{self.num_steps - 1}, got {int(t.min())}..{int(t.max())}")

    def abar(self, t):
        """abar_t. `t` int -> float; LongTensor of any shape -> float64 tensor of that shape on t's device."""
        if isinstance(t, torch.Tensor):
            t = t.long()
            self._check_t(t)
            return self._abar_table(t.device)[t]
        t = int(t)
        if not 0 <= t < self.num_steps:
            raise BadInput(f"timestep must lie in 0..{self.num_steps - 1}, got {t}")
        return float(self.alphas_cumprod[t])

    def _coeff(self, t, like: torch.Tensor) -> torch.Tensor:
        """abar_t broadcastable against `like` (B, ...): (B, 1, ..., 1) float64 on like's device."""
        if not isinstance(t, torch.Tensor):
            t = torch.full((like.shape[0],), int(t), dtype=torch.long)
        t = t.to(like.device).long().reshape(-1)
        if t.numel() == 1 and like.shape[0] != 1:
            t = t.expand(like.shape[0])
        if t.shape[0] != like.shape[0]:
            raise BadInput(f"got {t.shape[0]} timesteps for a batch of {like.shape[0]}; pass one timestep per item")
        return self.abar(t).reshape(-1, *([1] * (like.dim() - 1)))

    # -- forward process and reparametrisations -------------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise. x0, noise: (B, T, D); t: int or LongTensor (B,)."""
        abar = self._coeff(t, x0)
        return (abar.sqrt().to(x0.dtype) * x0 + (1.0 - abar).sqrt().to(x0.dtype) * noise)

    def predict_x0(self, x_t: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """x0 = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps (inverse of q_sample for a known eps)."""
        abar = self._coeff(t, x_t)
        return (1.0 / abar).sqrt().to(x_t.dtype) * x_t - (1.0 / abar - 1.0).sqrt().to(x_t.dtype) * eps

    def predict_eps(self, x_t: torch.Tensor, t, x0: torch.Tensor) -> torch.Tensor:
        """eps = (sqrt(1/abar_t) x_t - x0) / sqrt(1/abar_t - 1) (the eps that maps x0 to x_t)."""
        abar = self._coeff(t, x_t)
        return ((1.0 / abar).sqrt().to(x_t.dtype) * x_t - x0) / (1.0 / abar - 1.0).sqrt().to(x_t.dtype)

    def x0_coeffs(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sqrt(1/abar_t), sqrt(1/abar_t - 1)), each (B, 1, 1) float32 on t's device, for t a LongTensor (B,).

        The UniEG network forms the detached x̂0 = a * x_t - b * epŝ from these without knowing the schedule.
        """
        t = torch.as_tensor(t).long().reshape(-1)
        abar = self.abar(t).reshape(-1, 1, 1)
        return (1.0 / abar).sqrt().float(), (1.0 / abar - 1.0).sqrt().float()

    def respaced(self, timesteps) -> RespacedSchedule:
        """The schedule restricted to `timesteps` (original indices, any order, no duplicates)."""
        kept = np.asarray(sorted(int(t) for t in timesteps), dtype=np.int64)
        if kept.size == 0:
            raise BadInput("respacing needs at least one timestep")
        if np.any(np.diff(kept) == 0):
            raise BadInput("respacing timesteps must not repeat")
        if kept[0] < 0 or kept[-1] >= self.num_steps:
            raise BadInput(f"respacing timesteps must lie in 0..{self.num_steps - 1}")
        abar = self.alphas_cumprod[kept]
        abar_prev = np.append(1.0, abar[:-1])
        return RespacedSchedule(
            timesteps=kept, alphas_cumprod=abar, alphas_cumprod_prev=abar_prev, betas=1.0 - abar / abar_prev
        )


def ddim_timesteps(num_steps: int, steps: int) -> list[int]:
    """The `steps` original timesteps a DDIM sampler visits, descending (guided-diffusion `space_timesteps("ddimN")`).

    The smallest integer stride s with len(range(0, num_steps, s)) == steps wins, so 25 of 1000 gives
    [960, 920, ..., 40, 0]. When no integer stride fits (e.g. 999 of 1000), falls back to guided-diffusion's
    evenly rounded spacing over 0..num_steps-1.
    """
    num_steps, steps = int(num_steps), int(steps)
    if not 1 <= steps <= num_steps:
        raise BadInput(f"sampling steps must be between 1 and {num_steps}, got {steps}")
    for stride in range(1, num_steps + 1):
        if len(range(0, num_steps, stride)) == steps:
            return list(range(0, num_steps, stride))[::-1]
    if steps == 1:
        return [0]
    frac_stride = (num_steps - 1) / (steps - 1)
    return sorted({round(i * frac_stride) for i in range(steps)}, reverse=True)


@dataclass(frozen=True)
class LossWeights:
    """Weights of the official SHOW/BEAT training loss (trainers/ddpm_show_trainer.py)."""

    eps: float = 1000.0  # MSE between predicted and true noise
    velocity: float = 1.0  # MSE of frame differences of x̂0 vs x0 (logged x100 upstream, added x1)
    huber_x0: float = 100.0  # Huber (smooth L1 at scale 0.1) between x̂0 and x0


def _huber_values(pred: torch.Tensor, target: torch.Tensor, scale: float = 0.1) -> torch.Tensor:
    """smooth_l1(pred/scale, target/scale) * scale per element (quadratic below |d| = scale); its mean is the
    official Huber term."""
    return F.smooth_l1_loss(pred / scale, target / scale, reduction="none") * scale


def diffusion_loss(
    denoise_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    schedule: NoiseSchedule,
    t: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    weights: LossWeights = LossWeights(),
    generator: torch.Generator | None = None,
    frame_weight: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The official DiffSHEG training loss for an eps-predicting denoiser.

    L = w.eps * MSE(epŝ, eps) + w.velocity * MSE(Δx̂0, Δx0) + w.huber_x0 * Huber(x̂0, x0), with x̂0 recovered
    from epŝ, Δ the frame difference along T, and t drawn uniformly from 0..num_steps-1 unless given.

    Args:
        denoise_fn: `denoise_fn(x_t, t) -> epŝ`, x_t (B, T, D) float32, t LongTensor (B,) of original indices.
        x0: clean (normalized) motion (B, T, D).
        t: optional LongTensor (B,); noise: optional (B, T, D).
        frame_weight: optional (B, T) multiplier applied to both x̂0 and x0 inside the Huber term (BEAT uses the
            per-frame semantic relevance score + 1).
        known: optional 1/0 weights broadcastable to x0 (e.g. (B, 1, D)): values a training file does not hold
            (a SHOW fit's hands) are left out of every term, each term averaging over the known values only.
    Returns:
        dict of scalar tensors: `loss` (weighted sum, differentiable) and the unweighted terms `eps_mse`,
        `velocity`, `huber`.
    """
    if x0.dim() != 3:
        raise BadInput(f"x0 must be (batch, frames, features), got shape {tuple(x0.shape)}")
    batch = x0.shape[0]
    if t is None:
        t = torch.randint(0, schedule.num_steps, (batch,), generator=generator,
                          device=generator.device if generator is not None else "cpu")
    t = t.to(x0.device).long()
    if noise is None:
        noise = randn(x0.shape, generator, x0.device, x0.dtype)
    x_t = schedule.q_sample(x0, t, noise)
    eps_pred = denoise_fn(x_t, t)
    if eps_pred.shape != x0.shape:
        raise BadInput(f"denoiser returned shape {tuple(eps_pred.shape)}, expected {tuple(x0.shape)}")
    weight = None if known is None else torch.broadcast_to(known.to(x0), x0.shape)

    def mean(values: torch.Tensor, w: torch.Tensor | None) -> torch.Tensor:
        return values.mean() if w is None else (values * w).sum() / w.sum().clamp_min(1.0)

    eps_mse = mean((eps_pred - noise) ** 2, weight)
    x0_pred = schedule.predict_x0(x_t, t, eps_pred)
    if x0.shape[1] > 1:
        velocity = mean(((x0_pred[:, 1:] - x0_pred[:, :-1]) - (x0[:, 1:] - x0[:, :-1])) ** 2,
                        None if weight is None else weight[:, 1:])
    else:  # a single frame has no velocity; keep the term defined (zero) rather than NaN
        velocity = x0_pred.sum() * 0.0
    scale = 1.0 if frame_weight is None else frame_weight.to(x0).reshape(batch, -1, 1)
    huber = mean(_huber_values(x0_pred * scale, x0 * scale), weight)
    loss = weights.eps * eps_mse + weights.velocity * velocity + weights.huber_x0 * huber
    return {"loss": loss, "eps_mse": eps_mse, "velocity": velocity, "huber": huber}
