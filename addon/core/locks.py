"""What a regeneration keeps of a take: locked scene frames -> take frame ranges, and the body-part names the
backend knows (sheg.motion.layouts.PARTS; the add-on may not import the backend, a test keeps the copies equal).
numpy only, no bpy."""

from __future__ import annotations

import numpy as np

# Part names of the worker's generate `keep.parts` (docs/ARCHITECTURE.md, worker protocol), with panel labels.
LOCK_PARTS = {
    "torso": "Torso", "head": "Head", "left_arm": "Left Arm", "right_arm": "Right Arm", "left_hand": "Left Hand",
    "right_hand": "Right Hand", "jaw": "Jaw", "expression": "Expression", "face": "Face (jaw + expression)",
    "body": "Body (all joints)",
}


def take_frame_ranges(scene_frames: np.ndarray, first: float, last: float) -> list:
    """[[start, stop]] take frames (from 0, stop excluded) whose scene frame lies in [first, last] (inclusive, as
    Blender frame ranges are). scene_frames: (T,) scene frame of each take frame (core.resample.take_frames_in_scene).
    ValueError (one line) when no take frame falls in the range."""
    at = np.asarray(scene_frames, dtype=np.float64)
    inside = (at >= float(first) - 1e-6) & (at <= float(last) + 1e-6)
    if not inside.any():
        raise ValueError(f"frames {first:g}-{last:g} lie outside the take (scene frames {at[0]:g}-{at[-1]:g}); "
                         f"lock a range within it")
    edges = np.flatnonzero(np.diff(np.concatenate([[0], inside.astype(np.int8), [0]])))
    return [[int(a), int(b)] for a, b in zip(edges[0::2], edges[1::2])]


def check_parts(parts) -> list:
    """The part names, checked (ValueError with one line for an unknown one)."""
    out = [str(p) for p in parts]
    unknown = [p for p in out if p not in LOCK_PARTS]
    if unknown:
        raise ValueError(f"unknown body part '{unknown[0]}' (use any of: {', '.join(LOCK_PARTS)})")
    return out
