"""Resample a take from its own frame rate to the scene's, by time.

Timing rule (one rule everywhere, import and export):
  * take frame k lies at time k / take_fps seconds; scene frame start_frame + i lies at time i / scene_fps, where
    scene_fps = render.fps / render.fps_base (29.97 is fps=30000, fps_base=1001 or fps=30, fps_base=1.001);
  * the scene gets N = floor(duration * scene_fps) + 1 keys, duration = (T - 1) / take_fps: the first key is the take's
    first frame, no key lies after the take's last frame time (the last key may fall up to one scene frame before it);
    a tolerance of 1e-6 frame keeps an exact multiple (e.g. 63.5 s at 24 fps -> 1525 keys) from losing its last key
    to rounding;
  * scene key i samples the take at fractional take frame u = i * take_fps / scene_fps: slerp between take frames
    floor(u) and floor(u)+1 for rotations, linear interpolation for translation and expression weights. When the two
    rates are equal u is an exact integer and the values are copied unchanged.
"""

from __future__ import annotations

import math

import numpy as np

from . import quaternions

_SNAP = 1e-6  # in take frames: positions this close to an integer are that integer


def scene_fps(fps: float, fps_base: float = 1.0) -> float:
    """Frames per second of a Blender scene (render.fps / render.fps_base)."""
    if fps <= 0 or fps_base <= 0:
        raise ValueError(f"scene frame rate must be positive (fps={fps}, fps_base={fps_base})")
    return float(fps) / float(fps_base)


def _check_rates(take_frames: int, take_fps: float, target_fps: float) -> None:
    if take_frames < 1:
        raise ValueError("the take has no frames")
    if not (math.isfinite(take_fps) and take_fps > 0 and math.isfinite(target_fps) and target_fps > 0):
        raise ValueError(f"frame rates must be positive numbers (take {take_fps}, scene {target_fps})")


def frame_count(take_frames: int, take_fps: float, target_fps: float) -> int:
    """Number of scene keys N for a take of `take_frames` frames at `take_fps` (see the module rule)."""
    _check_rates(take_frames, take_fps, target_fps)
    span = (take_frames - 1) * target_fps / take_fps  # take duration in scene frames
    return int(math.floor(span + _SNAP)) + 1


def source_positions(take_frames: int, take_fps: float, target_fps: float) -> np.ndarray:
    """(N,) fractional take-frame position of each scene key, in [0, take_frames - 1]."""
    count = frame_count(take_frames, take_fps, target_fps)
    positions = np.arange(count, dtype=np.float64) * take_fps / target_fps
    nearest = np.round(positions)
    positions = np.where(np.abs(positions - nearest) < _SNAP, nearest, positions)
    return np.minimum(positions, take_frames - 1)


def key_times(count: int, target_fps: float) -> np.ndarray:
    """(N,) seconds from the take's start of each scene key."""
    return np.arange(count, dtype=np.float64) / target_fps


def _split(positions: np.ndarray, take_frames: int):
    lo = np.floor(positions).astype(np.int64)
    lo = np.clip(lo, 0, take_frames - 1)
    hi = np.minimum(lo + 1, take_frames - 1)
    frac = positions - lo
    return lo, hi, frac


def resample_linear(values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(T, ...) values sampled at (N,) fractional take frames -> (N, ...) float64, linear between neighbours."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi, frac = _split(np.asarray(positions, dtype=np.float64), len(v))
    frac = frac.reshape((-1,) + (1,) * (v.ndim - 1))
    return v[lo] * (1.0 - frac) + v[hi] * frac


def resample_quats(quats: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(T, ..., 4) unit quaternions sampled at (N,) fractional take frames -> (N, ..., 4), slerp between neighbours.

    Integer positions return the source quaternion unchanged (same sign), so equal rates copy the take exactly.
    The result keeps hemisphere continuity when the input has it.
    """
    q = np.asarray(quats, dtype=np.float64)
    lo, hi, frac = _split(np.asarray(positions, dtype=np.float64), len(q))
    out = q[lo]  # a copy; keys that fall on a take frame are that frame's quaternion exactly
    between = frac != 0.0
    if np.any(between):
        f = frac[between]
        f = np.broadcast_to(f.reshape((-1,) + (1,) * (q.ndim - 2)), (len(f),) + q.shape[1:-1])
        out[between] = quaternions.slerp(q[lo[between]], q[hi[between]], f)
    return out


def take_frames_in_scene(take_frames: int, take_fps: float, target_fps: float, start_frame: float) -> np.ndarray:
    """(T,) scene frame (fractional) at which each take frame lies: start_frame + k * scene_fps / take_fps."""
    _check_rates(take_frames, take_fps, target_fps)
    return start_frame + np.arange(take_frames, dtype=np.float64) * target_fps / take_fps
