"""Samplers: DDIM, DDPM and FOPPAS (DiffSHEG's outpainting-based partial autoregressive sampling for long audio).

Every sampler is a plain `@torch.no_grad()` function taking a *denoiser*: any callable `denoiser(x_t, t) -> eps`
with x_t (B, T, D) float32 and t a LongTensor (B,) of *original* diffusion indices (0..num_steps-1). Conditioning is
bound into the callable by its builder; samplers never see a network (docs/ARCHITECTURE.md, "Denoiser contract").

Progress goes through an optional `callback(info: dict)` called after every model call; raising from it aborts
sampling (this is how cancel works). `info` always has 'i' (model call index within the run/window), 'steps' (model
calls in the run/window), 't' (original timestep of the call), 'x' (the sample after the step) and 'x0' (the x0
prediction of the call); ddim_sample / ddpm_sample add 'noise' (the unit-variance noise z injected by the step, or
None) and 'shared' (the stabilizer's shared share sigma_a, or None); foppas_sample adds 'window', 'windows', 'calls',
'total_calls', 'start', 'stop'.
All noise comes from the given torch.Generator (drawn on its device), so a seed reproduces a result.

Diffusion Gesture Stabilizer (DiffGesture, Zhu et al. 2023): in the last `stabilizer_t0` steps the injected noise is
shared across frames, z = sigma_a z_shared + sqrt(1 - sigma_a^2) z_frame (z_shared one draw per item and feature,
broadcast over the T frames), so the final, nearly clean steps stop adding frame-to-frame jitter. With n the number
of sampler steps left including the current one (for DDPM n = t + 1, the official 1-based timestep), "smooth" uses
the official annealing sigma_a = ((n - t0) / t0)^2 for 1 < n < t0 and "hard" uses sigma_a = 1 there; n = 1 adds no
noise anyway. z keeps unit variance either way. For DDIM the same shaping applies to the eta > 0 noise, n counting
the visited steps (with 25 DDIM steps, t0 = 25 covers the whole chain: pass a smaller t0 for a shorter tail).
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from sheg.diffusion.gaussian import NoiseSchedule, ddim_timesteps, randn
from sheg.errors import BadInput

__all__ = [
    "Denoiser",
    "ddim_sample",
    "ddpm_sample",
    "jump_schedule",
    "window_model_calls",
    "window_spans",
    "count_model_calls",
    "foppas_window",
    "foppas_sample",
    "guided",
    "STABILIZERS",
    "stabilizer_share",
]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

STABILIZERS = (None, "smooth", "hard")

# Blend the overlap into the new generation once the remaining noise level sqrt(1 - abar_prev) drops below this
# (official `--addBlend`; with ddim25 that is the last three steps).
BLEND_NOISE_LEVEL = 0.2


def _predict(denoiser: Denoiser, x: torch.Tensor, t: int) -> torch.Tensor:
    """One model call at original timestep `t` for the whole batch; checks the returned shape."""
    t_batch = torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)
    eps = denoiser(x, t_batch)
    if eps.shape != x.shape:
        raise BadInput(f"the denoiser returned shape {tuple(eps.shape)} for input {tuple(x.shape)}; it must match")
    return eps


def _x0_from_eps(x: torch.Tensor, eps: torch.Tensor, abar: float) -> torch.Tensor:
    return math.sqrt(1.0 / abar) * x - math.sqrt(1.0 / abar - 1.0) * eps


def _ddim_update(x0, eps, abar, abar_prev, eta, generator, noise_fn=None) -> torch.Tensor:
    """DDIM eq. 12: x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - sigma^2) eps + sigma z.

    noise_fn(shape) draws z (default: i.i.d. standard normal from `generator`).
    """
    sigma = eta * math.sqrt((1.0 - abar_prev) / (1.0 - abar)) * math.sqrt(max(0.0, 1.0 - abar / abar_prev))
    x_prev = math.sqrt(abar_prev) * x0 + math.sqrt(max(0.0, 1.0 - abar_prev - sigma**2)) * eps
    if sigma > 0.0:  # eta = 0 draws nothing, so it stays deterministic whatever the generator state
        z = noise_fn(x0.shape) if noise_fn is not None else randn(x0.shape, generator, x0.device, x0.dtype)
        x_prev = x_prev + sigma * z
    return x_prev


def stabilizer_share(steps_left: int, t0: int = 25, mode: str | None = "smooth") -> float | None:
    """The stabilizer's shared-noise share sigma_a at a step with `steps_left` steps to go (this one included), or
    None where the noise stays i.i.d. (mode None, or outside 1 < steps_left < t0)."""
    if mode not in STABILIZERS:
        raise BadInput(f"unknown stabilizer {mode!r}: use none, 'smooth' (annealed) or 'hard'")
    if int(t0) < 2:
        raise BadInput(f"stabilizer_t0 must be at least 2 steps, got {t0}")
    n, t0 = int(steps_left), int(t0)
    if mode is None or not 1 < n < t0:
        return None
    return 1.0 if mode == "hard" else ((n - t0) / t0) ** 2


def _stabilized_noise(shape, share: float | None, generator, device, dtype) -> torch.Tensor:
    """Unit-variance noise (B, T, D): i.i.d. when share is None, else share * z_shared + sqrt(1 - share^2) * z_frame
    with z_shared (B, 1, D) common to all frames."""
    if share is None:
        return randn(shape, generator, device, dtype)
    batch, _, dim = shape
    z = share * randn((batch, 1, dim), generator, device, dtype)
    if share < 1.0:
        z = z + math.sqrt(1.0 - share * share) * randn(shape, generator, device, dtype)
    return z.expand(shape).contiguous()


def _check_x(x: torch.Tensor, name: str) -> None:
    if x.dim() != 3:
        raise BadInput(f"{name} must be (batch, frames, features), got shape {tuple(x.shape)}")


@torch.no_grad()
def ddim_sample(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule, timesteps,
                eta: float = 0.0, generator: torch.Generator | None = None, callback=None,
                stabilizer: str | None = None, stabilizer_t0: int = 25) -> torch.Tensor:
    """DDIM from x_T (B, T, D) over `timesteps` (original indices, visited descending) -> x_0 (B, T, D).

    abar_prev of the last visited timestep is 1 (guided-diffusion respacing), so the result is that step's x0
    prediction. eta = 0 is deterministic; eta = 1 matches DDPM-like stochasticity on the respaced chain.
    stabilizer None | "smooth" | "hard" shapes the eta > 0 noise over the last stabilizer_t0 visited steps (module
    docstring); it changes nothing at eta = 0.
    """
    _check_x(x_T, "x_T")
    stabilizer_share(0, stabilizer_t0, stabilizer)  # validates the options
    visit = sorted({int(t) for t in timesteps}, reverse=True)
    if not visit or visit[0] >= schedule.num_steps or visit[-1] < 0:
        raise BadInput(f"DDIM timesteps must be a non-empty list within 0..{schedule.num_steps - 1}")
    x = x_T
    for i, t in enumerate(visit):
        abar = float(schedule.alphas_cumprod[t])
        abar_prev = float(schedule.alphas_cumprod[visit[i + 1]]) if i + 1 < len(visit) else 1.0
        eps = _predict(denoiser, x, t)
        x0 = _x0_from_eps(x, eps, abar)
        share = stabilizer_share(len(visit) - i, stabilizer_t0, stabilizer)
        drawn = []

        def noise_fn(shape, share=share):
            drawn.append(_stabilized_noise(shape, share, generator, x0.device, x0.dtype))
            return drawn[-1]

        x = _ddim_update(x0, eps, abar, abar_prev, eta, generator, noise_fn)
        if callback is not None:
            callback({"i": i, "steps": len(visit), "t": t, "x": x, "x0": x0,
                      "noise": drawn[0] if drawn else None, "shared": share if drawn else None})
    return x


@torch.no_grad()
def ddpm_sample(denoiser: Denoiser, x_T: torch.Tensor, schedule: NoiseSchedule,
                generator: torch.Generator | None = None, callback=None,
                stabilizer: str | None = None, stabilizer_t0: int = 25) -> torch.Tensor:
    """Ancestral DDPM over every training step (num_steps model calls) -> x_0 (B, T, D).

    Uses the FIXED_SMALL posterior q(x_{t-1} | x_t, x̂0): mean = c1 x̂0 + c2 x_t,
    c1 = beta_t sqrt(abar_{t-1}) / (1 - abar_t), c2 = (1 - abar_{t-1}) sqrt(1 - beta_t) / (1 - abar_t),
    variance beta_t (1 - abar_{t-1}) / (1 - abar_t); no noise is added at t = 0. This is DiffGesture's sampler
    (flexibility 0) written with x̂0 instead of eps. stabilizer None | "smooth" | "hard" shares the noise of the last
    stabilizer_t0 steps across frames (module docstring; DiffGesture uses "smooth" with t0 = 25).
    """
    _check_x(x_T, "x_T")
    stabilizer_share(0, stabilizer_t0, stabilizer)  # validates the options
    x = x_T
    steps = schedule.num_steps
    for i, t in enumerate(range(steps - 1, -1, -1)):
        beta = float(schedule.betas[t])
        abar = float(schedule.alphas_cumprod[t])
        abar_prev = float(schedule.alphas_cumprod_prev[t])
        eps = _predict(denoiser, x, t)
        x0 = _x0_from_eps(x, eps, abar)
        coef_x0 = beta * math.sqrt(abar_prev) / (1.0 - abar)
        coef_xt = (1.0 - abar_prev) * math.sqrt(1.0 - beta) / (1.0 - abar)
        x = coef_x0 * x0 + coef_xt * x
        noise = share = None
        if t > 0:
            std = math.sqrt(float(schedule.posterior_variance[t]))
            share = stabilizer_share(t + 1, stabilizer_t0, stabilizer)
            noise = _stabilized_noise(x.shape, share, generator, x.device, x.dtype)
            x = x + std * noise
        if callback is not None:
            callback({"i": i, "steps": steps, "t": t, "x": x, "x0": x0, "noise": noise, "shared": share})
    return x


# -- FOPPAS ------------------------------------------------------------------------------------------------------

def _truncated_start(steps: int) -> int:
    """Respaced start t_T of later windows: 15 for 25 steps (orig t 560 is the first index *visited*: t_T - 1 = 14),
    int(0.6 * steps) otherwise (official `get_schedule_jump_cjm_ddim`), at least 1 so a window always denoises."""
    return 15 if steps == 25 else max(1, int(steps * 0.6))


def jump_schedule(steps: int = 25, jump_length: int = 3, jump_n_sample: int = 5, top: int | None = None) -> list[int]:
    """RePaint-style walk over respaced indices for windows after the first (DiffSHEG's ddim jump schedule).

    Starts at t_T - 1, ends with -1, moves by one per entry. A descending pair (t_last, t_cur) is one DDIM step at
    respaced index t_last; an ascending pair is a one-step re-noise ("jump back"). Jump points are
    j in range(0, t_T - jump_length, jump_length), each allowing jump_n_sample - 1 jumps of jump_length steps up.
    Ex.: steps 25 -> 15 / 27 / 63 descending pairs for jump_n_sample 1 / 2 / 5 (jump_length 3).
    top: start from this respaced index instead of t_T (`steps`: the whole chain, as a first window walks it).
    """
    if int(steps) < 1:
        raise BadInput(f"sampling steps must be at least 1, got {steps}")
    if int(jump_length) < 1 or int(jump_n_sample) < 1:
        raise BadInput(f"jump_length and jump_n_sample must be >= 1, got {jump_length} and {jump_n_sample}")
    t_top = _truncated_start(int(steps)) if top is None else int(top)
    jumps_left = {j: jump_n_sample - 1 for j in range(0, t_top - jump_length, jump_length)}
    times = []
    t = t_top
    while t >= 1:
        t -= 1
        times.append(t)
        if jumps_left.get(t, 0) > 0:
            jumps_left[t] -= 1
            for _ in range(jump_length):
                t += 1
                times.append(t)
    times.append(-1)
    return times


def window_model_calls(steps: int, has_known: bool, jump_length: int = 3, jump_n_sample: int = 5,
                       resample: bool = True) -> int:
    """Model calls one window makes: `steps` without a known overlap, else the denoising pairs of jump_schedule."""
    if not has_known:
        return int(steps)
    times = jump_schedule(steps, jump_length, jump_n_sample) if resample else jump_schedule(steps, 1, 1)
    return sum(1 for t_last, t_cur in zip(times[:-1], times[1:]) if t_cur < t_last)


def window_spans(total_frames: int, window: int, overlap: int) -> list[tuple[int, int]]:
    """Frame ranges [start, stop) of the FOPPAS windows (official `get_windows`).

    stride = window - overlap; full windows start at m * stride for m < floor((L - overlap) / stride); if that
    division is not exact one last, shorter window runs from floor(..) * stride to the end (>= overlap + 1 frames).
    L <= window gives a single window of length L.
    """
    total_frames, window, overlap = int(total_frames), int(window), int(overlap)
    if total_frames < 1:
        raise BadInput(f"need at least one frame to generate, got {total_frames}")
    if window < 1 or not 0 <= overlap < window:
        raise BadInput(f"window must be >= 1 and 0 <= overlap < window, got window {window}, overlap {overlap}")
    if total_frames <= window:
        return [(0, total_frames)]
    stride = window - overlap
    full, remainder = divmod(total_frames - overlap, stride)
    spans = [(m * stride, m * stride + window) for m in range(full)]
    if remainder:
        spans.append((full * stride, total_frames))
    return spans


def count_model_calls(total_frames: int, window: int, overlap: int, steps: int = 25, jump_length: int = 3,
                      jump_n_sample: int = 5, resample: bool = True) -> int:
    """Total denoiser calls foppas_sample makes for these settings (for progress totals and benchmarks)."""
    n_windows = len(window_spans(total_frames, window, overlap))
    later = window_model_calls(steps, overlap > 0, jump_length, jump_n_sample, resample)
    return int(steps) + (n_windows - 1) * later


@torch.no_grad()
def foppas_window(denoiser: Denoiser, x_init: torch.Tensor, schedule: NoiseSchedule, steps: int = 25,
                  known: torch.Tensor | None = None, known_len: int = 0, jump_length: int = 3,
                  jump_n_sample: int = 5, resample: bool = True, blend: bool = True,
                  generator: torch.Generator | None = None, callback=None, eta: float = 0.0,
                  stabilizer: str | None = None, stabilizer_t0: int = 25, keep: torch.Tensor | None = None,
                  keep_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Sample one window (B, T, D), outpainting after a known clean prefix, inpainting kept values.

    known=None (window 0): plain deterministic DDIM over ddim_timesteps(num_steps, steps) from x_init.
    Otherwise known (B, O', D) holds the previous window's clean tail; its first O = known_len frames (all of them
    when known_len is 0) constrain frames [0, O). x_init is pure Gaussian noise taken to be at respaced index
    t_T - 1 (orig t 560 for 25 steps), walked with jump_schedule (no jumps when resample=False). After every DDIM
    step to abar_prev, frames [0, O) are replaced by q(x_prev | known) = sqrt(abar_prev) known + sqrt(1-abar_prev) e
    with fresh e (exactly `known` at the last step); once sqrt(1 - abar_prev) < 0.2 (and blend) they become
    known_noised * (1 - w) + x * w, w = linspace(0, 1, O) along the overlap.

    The callback info additionally has 'respaced_t', 'x_update' (the DDIM output before replacement),
    'known_noised', 'overlap_noise', 'abar_prev' and 'blend_weight' ((1, O, 1) or None when not blending).
    eta > 0 (not official: DiffSHEG samples with eta 0) adds DDIM noise at every step, shaped by the stabilizer over
    the last stabilizer_t0 respaced steps as in ddim_sample.

    keep (B or 1, T, D) clean values and keep_mask (B or 1, T, D) bool (RePaint inpainting): after every step (and
    after the overlap replacement) the masked entries become q(x_prev | keep) with fresh noise, so the model
    generates the rest around them and the result holds exactly `keep` there. A window with a mask but no known
    prefix walks the plain DDIM chain (jump_schedule from the top, no jumps), one with both the jump schedule.
    """
    _check_x(x_init, "x_init")
    stabilizer_share(0, stabilizer_t0, stabilizer)  # validates the options
    no_prefix = known is None or (known_len == 0 and known.shape[1] == 0)
    if keep_mask is not None:
        if keep is None or keep.shape[1:] != x_init.shape[1:] or keep_mask.shape[1:] != x_init.shape[1:]:
            raise BadInput(f"keep and keep_mask must be (batch, {x_init.shape[1]}, {x_init.shape[2]}) like the "
                           f"window, got {None if keep is None else tuple(keep.shape)} and {tuple(keep_mask.shape)}")
        keep = keep.to(device=x_init.device, dtype=x_init.dtype)
        keep_mask = keep_mask.to(device=x_init.device, dtype=torch.bool)
        if not bool(keep_mask.any()):
            keep = keep_mask = None
    if no_prefix and keep_mask is None:
        return ddim_sample(denoiser, x_init, schedule, ddim_timesteps(schedule.num_steps, steps),
                           eta=eta, generator=generator, callback=callback, stabilizer=stabilizer,
                           stabilizer_t0=stabilizer_t0)
    n_known = 0
    if not no_prefix:
        _check_x(known, "known")
        n_known = int(known_len) if known_len else known.shape[1]
        if not 0 < n_known <= min(known.shape[1], x_init.shape[1]):
            raise BadInput(f"known_len {n_known} must be between 1 and the known frames ({known.shape[1]}) "
                           f"and the window length ({x_init.shape[1]})")
        if known.shape[0] != x_init.shape[0] or known.shape[2] != x_init.shape[2]:
            raise BadInput(f"known {tuple(known.shape)} does not match the window {tuple(x_init.shape)} in "
                           f"batch/features")
        known = known[:, :n_known].to(device=x_init.device, dtype=x_init.dtype)

    respaced = schedule.respaced(ddim_timesteps(schedule.num_steps, steps))
    if no_prefix:
        times = jump_schedule(steps, 1, 1, top=int(steps))
    else:
        times = jump_schedule(steps, jump_length, jump_n_sample) if resample else jump_schedule(steps, 1, 1)
    n_calls = sum(1 for a, b in zip(times[:-1], times[1:]) if b < a)
    weight = torch.linspace(0.0, 1.0, n_known, device=x_init.device, dtype=x_init.dtype).view(1, n_known, 1)

    x = x_init
    i = 0
    for t_last, t_cur in zip(times[:-1], times[1:]):
        if t_cur > t_last:
            # Jump back one respaced step: x <- sqrt(1 - beta) x + sqrt(beta) e. The official code takes beta at the
            # *lower* index t_last (t_shift = 0) rather than t_cur; kept for parity with the released model.
            beta = float(respaced.betas[t_last])
            x = math.sqrt(1.0 - beta) * x + math.sqrt(beta) * randn(x.shape, generator, x.device, x.dtype)
            continue
        # 1. one DDIM step at respaced index t_last (t_last + 1 steps to go, this one included)
        t_orig = int(respaced.timesteps[t_last])
        abar = float(respaced.alphas_cumprod[t_last])
        abar_prev = float(respaced.alphas_cumprod_prev[t_last])
        eps = _predict(denoiser, x, t_orig)
        x0 = _x0_from_eps(x, eps, abar)
        share = stabilizer_share(t_last + 1, stabilizer_t0, stabilizer)
        x_update = _ddim_update(x0, eps, abar, abar_prev, eta, generator,
                                lambda shape, share=share: _stabilized_noise(shape, share, generator, x.device,
                                                                             x.dtype))
        # 2. re-noise the known prefix to the new level with fresh noise (q(x_prev | known))
        noise_level = math.sqrt(1.0 - abar_prev)
        x = x_update
        known_noised = overlap_noise = None
        blending = False
        if n_known:
            overlap_noise = randn(known.shape, generator, x.device, x.dtype)
            known_noised = math.sqrt(abar_prev) * known + noise_level * overlap_noise
            # 3. in the last, nearly clean steps cross-fade from the known prefix into the new generation
            blending = blend and noise_level < BLEND_NOISE_LEVEL
            prefix = known_noised * (1.0 - weight) + x_update[:, :n_known] * weight if blending else known_noised
            x = torch.cat([prefix, x_update[:, n_known:]], dim=1)
        # 4. kept values at the new noise level (exactly `keep` after the last step, abar_prev = 1)
        if keep_mask is not None:
            kept = math.sqrt(abar_prev) * keep + noise_level * randn(x.shape, generator, x.device, x.dtype)
            x = torch.where(keep_mask, kept, x)
        if callback is not None:
            callback({"i": i, "steps": n_calls, "t": t_orig, "respaced_t": t_last, "x": x, "x0": x0,
                      "x_update": x_update, "known_noised": known_noised, "overlap_noise": overlap_noise,
                      "abar_prev": abar_prev, "blend_weight": weight if blending else None})
        i += 1
    return x


@torch.no_grad()
def foppas_sample(make_denoiser: Callable[[int, int], Denoiser], total_frames: int, dim: int,
                  schedule: NoiseSchedule, window: int, overlap: int, steps: int = 25, jump_length: int = 3,
                  jump_n_sample: int = 5, resample: bool = True, batch: int = 1,
                  generator: torch.Generator | None = None, callback=None, device="cpu",
                  blend: bool = True, known_to_denoiser: bool = False, eta: float = 0.0,
                  stabilizer: str | None = None, stabilizer_t0: int = 25, keep: torch.Tensor | None = None,
                  keep_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Generate (batch, total_frames, dim) float32 on `device` window by window (DiffSHEG FOPPAS).

    Windows come from window_spans; `make_denoiser(start, stop)` gives the denoiser for frames [start, stop) (it
    binds that slice of the audio features). Window 0 is plain DDIM from noise; window k > 0 is foppas_window with
    the previous window's final last `overlap` frames as `known`. Every window but the last contributes its first
    window - overlap frames, the last contributes all of its frames, so the output's overlap frames are the blended
    ones of the later window. Only the output and one window live at a time, so memory does not grow with the
    number of windows. The callback info also has 'window', 'windows', 'calls' (model calls so far, this one
    included), 'total_calls', 'start' and 'stop'.
    known_to_denoiser=True calls `make_denoiser(start, stop, known)` instead, with `known` the previous window's clean
    last `overlap` frames (batch, overlap, dim) or None for window 0, so a model that conditions on seed poses
    (DiffGesture) can bind them. eta, stabilizer, stabilizer_t0: as foppas_window (default: the official eta 0).
    keep (batch or 1, total_frames, dim) and keep_mask (same shape, bool): values to keep (constrained
    regeneration); each window inpaints its slice of them (foppas_window), so the output holds `keep` exactly where
    the mask is set and the rest is generated around it.
    """
    spans = window_spans(total_frames, window, overlap)
    if keep_mask is not None and (keep is None or keep.shape[1:] != (int(total_frames), int(dim))
                                  or keep_mask.shape != keep.shape):
        raise BadInput(f"keep and keep_mask must both be (batch, {total_frames}, {dim}), got "
                       f"{None if keep is None else tuple(keep.shape)} and {tuple(keep_mask.shape)}")
    if int(batch) < 1 or int(dim) < 1:
        raise BadInput(f"batch and dim must be >= 1, got batch {batch}, dim {dim}")
    total_calls = count_model_calls(total_frames, window, overlap, steps, jump_length, jump_n_sample, resample)
    stride = int(window) - int(overlap)
    out = torch.empty((int(batch), int(total_frames), int(dim)), dtype=torch.float32, device=device)
    calls = 0
    known = None
    for k, (start, stop) in enumerate(spans):

        def window_callback(info, k=k, start=start, stop=stop):
            nonlocal calls
            calls += 1
            if callback is not None:
                info.update(window=k, windows=len(spans), calls=calls, total_calls=total_calls,
                            start=start, stop=stop)
                callback(info)

        x_init = randn((int(batch), stop - start, int(dim)), generator, device)
        denoiser = make_denoiser(start, stop, known) if known_to_denoiser else make_denoiser(start, stop)
        x = foppas_window(denoiser, x_init, schedule, steps, known=known, known_len=int(overlap),
                          jump_length=jump_length, jump_n_sample=jump_n_sample, resample=resample, blend=blend,
                          generator=generator, callback=window_callback, eta=eta, stabilizer=stabilizer,
                          stabilizer_t0=stabilizer_t0,
                          keep=None if keep_mask is None else keep[:, start:stop],
                          keep_mask=None if keep_mask is None else keep_mask[:, start:stop])
        contributed = stop - start if k == len(spans) - 1 else stride
        out[:, start:start + contributed] = x[:, :contributed]
        known = x[:, x.shape[1] - int(overlap):].clone() if overlap > 0 else None
    return out


def guided(denoiser_cond: Denoiser, denoiser_uncond: Denoiser, scale: float) -> Denoiser:
    """Classifier-free guidance as a denoiser: uncond + scale * (cond - uncond).

    scale 1 returns exactly the conditional prediction without calling the unconditional denoiser.
    (UniEG does its own CFG inside the network; this is for denoisers without that, e.g. DiffGesture.)
    """
    scale = float(scale)
    if scale == 1.0:
        def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return denoiser_cond(x_t, t)
    else:
        def denoiser(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            cond = denoiser_cond(x_t, t)
            uncond = denoiser_uncond(x_t, t)
            return uncond + scale * (cond - uncond)
    return denoiser
