"""Optional zero-phase low-pass smoothing of a take's channels before they are written. numpy only (no scipy).

A 2nd-order Butterworth low-pass (bilinear transform) run forward then backward over time, so the result has no
phase lag (a gesture's peak stays on its frame) and a 4th-order magnitude roll-off. The ends are padded with an odd
reflection and the filter starts in its steady state, so the first and last frames keep their values and slopes
instead of ringing towards zero.

One slider, strength in [0, 1]: 0 is off (values returned unchanged), 1 the strongest. The cutoff frequency moves
geometrically from 0.45 x fps (just under Nyquist: a light de-jitter) down to 1 Hz:
    cutoff_hz = f_hi * (1 / f_hi) ** strength,  f_hi = 0.45 * fps   (30 fps: 0.25 -> 7.3 Hz, 0.5 -> 3.7 Hz, 1 -> 1 Hz)
Quaternions are smoothed component-wise after hemisphere continuity, then re-normalized (for the small angles between
neighbouring frames this equals smoothing in the log/tangent space).
"""

from __future__ import annotations

import math

import numpy as np

MIN_CUTOFF_HZ = 1.0
MAX_CUTOFF_FRACTION = 0.45  # of the frame rate


def cutoff_hz(strength: float, fps: float) -> float:
    """Cutoff frequency (Hz) of `strength` in (0, 1] at `fps` frames per second."""
    high = MAX_CUTOFF_FRACTION * fps
    low = min(MIN_CUTOFF_HZ, high)
    return float(high * (low / high) ** strength)


def _check(strength: float, fps: float) -> None:
    if not (0.0 <= strength <= 1.0):
        raise ValueError(f"smoothing strength must be between 0 and 1 (got {strength})")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"frame rate must be a positive number (got {fps})")


def butterworth_coefficients(cutoff: float, fps: float):
    """(b (3,), a (3,)) of a 2nd-order Butterworth low-pass, a[0] = 1, unity gain at 0 Hz."""
    warped = math.tan(math.pi * min(cutoff / fps, 0.499))  # pre-warped analogue cutoff
    k2, root2k = warped * warped, math.sqrt(2.0) * warped
    norm = 1.0 + root2k + k2
    b = np.array([k2, 2.0 * k2, k2]) / norm
    a = np.array([1.0, 2.0 * (k2 - 1.0) / norm, (1.0 - root2k + k2) / norm])
    return b, a


def _filter(x: np.ndarray, b: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Causal biquad over axis 0 (transposed direct form II), starting in steady state for x[0]."""
    y = np.empty_like(x)
    z1 = (b[1] - a[1] + b[2] - a[2]) * x[0]
    z2 = (b[2] - a[2]) * x[0]
    for t in range(len(x)):
        xt = x[t]
        yt = b[0] * xt + z1
        z1 = b[1] * xt - a[1] * yt + z2
        z2 = b[2] * xt - a[2] * yt
        y[t] = yt
    return y


def lowpass(values: np.ndarray, fps: float, strength: float) -> np.ndarray:
    """(T, ...) samples at `fps` -> zero-phase low-passed (T, ...) float64; strength 0 returns a float64 copy."""
    _check(strength, fps)
    x = np.asarray(values, dtype=np.float64)
    if strength == 0.0 or len(x) < 3:
        return x.copy()
    b, a = butterworth_coefficients(cutoff_hz(strength, fps), fps)
    # pad a few time constants with an odd reflection (keeps value and slope at the ends)
    pad = min(len(x) - 1, int(3 * fps / cutoff_hz(strength, fps)) + 6)
    head = 2.0 * x[0] - x[pad:0:-1]
    tail = 2.0 * x[-1] - x[-2:-pad - 2:-1]
    padded = np.concatenate([head, x, tail])
    forward = _filter(padded, b, a)
    both = _filter(forward[::-1], b, a)[::-1]
    return both[pad:pad + len(x)]


def smooth_quaternions(quats: np.ndarray, fps: float, strength: float) -> np.ndarray:
    """(T, ..., 4) hemisphere-continuous unit quaternions -> smoothed, re-normalized (T, ..., 4) float64."""
    q = lowpass(quats, fps, strength)
    return q / np.maximum(np.linalg.norm(q, axis=-1, keepdims=True), 1e-12)
