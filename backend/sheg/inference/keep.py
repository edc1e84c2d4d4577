"""Constrained regeneration: which values of an earlier take a new take keeps (frames x body parts), in the model's
motion vector.

A constraint is a take (its SMPL-X poses and expressions, at the model's frame rate), frame ranges and body parts
(motion.layouts.PARTS); the kept entries are the parts' channels on those frames (all frames when no range is given,
all channels when no part is). The sampler inpaints around them (diffusion.samplers.foppas_sample keep/keep_mask);
`restore` then writes the kept values back exactly, after any output filter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sheg.errors import BadInput
from sheg.io.take import read_take
from sheg.motion.layouts import PARTS, SHOW, Layout, show_part_channels, show_vector_from_take

# Generated frames over which the leftover offset at a seam fades out (0.27 s at 30 fps).
SEAM_BLEND_FRAMES = 8


@dataclass
class KeepConstraint:
    """values (T, D) float32: the earlier take as the model's (de-normalized) vector; mask (T, D) bool: kept."""

    values: np.ndarray
    mask: np.ndarray

    @property
    def frame_mask(self) -> np.ndarray:
        """(T,) frames with any kept channel."""
        return self.mask.any(axis=1)

    def restore(self, vector: np.ndarray, blend_frames: int = SEAM_BLEND_FRAMES) -> np.ndarray:
        """`vector` (T, D) with the kept entries set back exactly to the earlier take's values, and the generated
        frames next to them pulled along so the seam stays smooth: at each edge of a kept run the offset
        kept - generated (value and slope, from the run's edge) carries on into the generated side, faded out by a
        raised cosine over `blend_frames` frames (the sampler already made the two sides agree; what is left is the
        output filter's and the last step's mismatch)."""
        vector = np.asarray(vector, dtype=np.float64)
        offset = np.where(self.mask, self.values - vector, 0.0)
        out = vector.copy()
        patterns, columns = np.unique(self.mask.T, axis=0, return_inverse=True)
        for pattern, kept in enumerate(patterns):
            cols = np.flatnonzero(columns.reshape(-1) == pattern)
            if not kept.any() or kept.all():
                continue
            out[:, cols] += _seam_offsets(kept, offset[:, cols], int(blend_frames))
        return np.where(self.mask, self.values, out).astype(np.float32)


def _seam_offsets(kept: np.ndarray, offset: np.ndarray, width: int) -> np.ndarray:
    """(T, C) offsets for the generated frames around the kept runs of `kept` (T,) (0 on kept frames)."""
    frames = len(kept)
    out = np.zeros_like(offset)
    t = np.arange(frames)
    edges = np.flatnonzero(np.diff(kept.astype(np.int8)))  # a change between frame e and e + 1
    for e in edges:
        edge, step = (e, 1) if kept[e] else (e + 1, -1)    # the kept frame at the edge, direction into generated
        inner = edge - step
        slope = offset[edge] - offset[inner] if 0 <= inner < frames and kept[inner] else 0.0
        dist = (t - edge) * step                            # frames into the generated side
        near = (dist > 0) & (dist < width) & ~kept
        fade = 0.5 * (1.0 + np.cos(np.pi * dist[near] / width))
        out[near] += fade[:, None] * (offset[edge] + slope * dist[near, None])
    return out


def parse_frame_ranges(text: str) -> list[tuple[int, int]]:
    """'120:180' or '0:30,120:180' -> [(start, stop)] (take frames from 0, stop excluded, like a Python slice)."""
    ranges = []
    for piece in str(text).split(","):
        piece = piece.strip()
        start, sep, stop = piece.partition(":")
        try:
            if not sep:
                raise ValueError
            ranges.append((int(start), int(stop)))
        except ValueError:
            raise BadInput(f"frame range '{piece}' is not START:STOP (take frames from 0, STOP excluded), "
                           f"e.g. 120:180") from None
    return ranges


def parse_parts(text: str) -> list[str]:
    """'left_arm,face' -> ['left_arm', 'face'] (names checked against motion.layouts.PARTS)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise BadInput(f"unknown body part '{unknown[0]}' (use any of: {', '.join(PARTS)})")
    return parts


def _take_arrays(keep) -> tuple[dict, float]:
    """A take file path, a Take (inference.base) or a dict of take arrays with 'fps' -> (arrays, fps)."""
    if isinstance(keep, (str, os.PathLike)):
        data = read_take(os.fspath(keep))
        return data, data["fps"]
    if hasattr(keep, "arrays") and hasattr(keep, "fps"):
        return keep.arrays, float(keep.fps)
    if isinstance(keep, dict) and "poses" in keep and "fps" in keep:
        return keep, float(keep["fps"])
    raise BadInput("keep must be a take .npz path, a Take or a dict of take arrays with 'fps'")


def keep_constraint(layout: Layout, fps: float, frames: int, keep, keep_frames=None,
                    keep_parts=None) -> KeepConstraint:
    """The kept entries of a `frames`-long generation at `fps` for a model of `layout`.

    keep: the earlier take (see _take_arrays); keep_frames: [(start, stop)] take frames or a 'A:B,C:D' string,
    None for every frame; keep_parts: part names (or 'a,b'), None for every channel.
    """
    if layout.name != SHOW.name:
        raise BadInput(f"keeping frames or parts needs a model of the SMPL-X (show) layout; this one is "
                       f"'{layout.name}'")
    arrays, take_fps = _take_arrays(keep)
    if abs(take_fps - float(fps)) > 1e-6:
        raise BadInput(f"the take to keep is at {take_fps:g} fps but the model generates {float(fps):g} fps; "
                       f"export it at {float(fps):g} fps")
    poses = np.asarray(arrays["poses"], dtype=np.float32).reshape(len(arrays["poses"]), -1)
    expressions = arrays.get("expressions")
    if expressions is None or np.asarray(expressions).shape[1] < 100:
        expressions = np.zeros((len(poses), 100), dtype=np.float32)
    values = np.zeros((frames, layout.dim), dtype=np.float32)
    covered = min(frames, len(poses))
    values[:covered] = show_vector_from_take(poses[:covered], np.asarray(expressions)[:covered])

    frame_mask = np.zeros(frames, dtype=bool)
    if isinstance(keep_frames, str):
        keep_frames = parse_frame_ranges(keep_frames)
    for start, stop in (keep_frames if keep_frames is not None else [(0, covered)]):
        start, stop = int(start), int(stop)
        if not 0 <= start < stop <= frames:
            raise BadInput(f"frames {start}:{stop} are outside the new take's frames 0:{frames}")
        if stop > covered:
            raise BadInput(f"frames {start}:{stop} go past the take to keep ({len(poses)} frames)")
        frame_mask[start:stop] = True
    if isinstance(keep_parts, str):
        keep_parts = parse_parts(keep_parts)
    channel_mask = np.zeros(layout.dim, dtype=bool)
    if keep_parts is None:
        channel_mask[:] = True
    else:
        try:
            channel_mask[show_part_channels(keep_parts)] = True
        except ValueError as exc:
            raise BadInput(str(exc)) from None
    return KeepConstraint(values=values, mask=frame_mask[:, None] & channel_mask[None, :])
