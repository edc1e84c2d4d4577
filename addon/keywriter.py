"""Bulk F-curve keys for takes: dense LINEAR keys, or error-bounded reduced Bezier keys (core.keyreduce), and fast
sampling of existing F-curves.

Reduced keys are written with explicit ALIGNED handles (keyframe_points.add + foreach_set of co, handle_left,
handle_right, handle types, interpolation BEZIER) and no handle recalculation, so Blender plays exactly the curve
whose error core.keyreduce measured. Blender only realigns ALIGNED handles (float rounding) when an artist edits the
curve.
"""

from __future__ import annotations

import numpy as np

from .core import channels, keyreduce

KEY_MODES = ("dense", "reduced")


def check_key_options(keys: str, rotation_tolerance_deg: float, location_tolerance: float,
                      shape_tolerance: float, smoothing: float) -> None:
    """ValueError with a one-line message for bad key-density options."""
    if keys not in KEY_MODES:
        raise ValueError(f"unknown keys '{keys}' (use one of: {', '.join(KEY_MODES)})")
    for name, value in (("rotation_tolerance_deg", rotation_tolerance_deg), ("location_tolerance", location_tolerance),
                        ("shape_tolerance", shape_tolerance)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number (got {value}); use keys='dense' for an exact copy")
    if not (0.0 <= smoothing <= 1.0):
        raise ValueError(f"smoothing must be between 0 (off) and 1 (got {smoothing})")


def write_dense(channelbag, frames: np.ndarray, channel_list) -> int:
    """One LINEAR key per frame and channel, all at once. Returns the number of keys written."""
    count = len(frames)
    co = np.empty(2 * count, dtype=np.float32)
    co[0::2] = frames
    interpolation = np.full(count, keyreduce.INTERPOLATION_LINEAR, dtype=np.int32)
    for ch in channel_list:
        fcurve = channelbag.fcurves.new(ch.data_path, index=ch.index, group_name=ch.group)
        fcurve.keyframe_points.add(count)
        co[1::2] = ch.values
        fcurve.keyframe_points.foreach_set("co", co)
        fcurve.keyframe_points.foreach_set("interpolation", interpolation)
        # what fcurve.update() does minus its sort: the keys are already in frame order (saves ~1/3 of the time)
        fcurve.keyframe_points.handles_recalc()
    return count * len(channel_list)


def set_reduced_keys(fcurve, keys: keyreduce.ReducedKeys, column: int) -> None:
    """Replace `fcurve`'s keys with column `column` of `keys` (Bezier, ALIGNED handles, no recalculation)."""
    points = fcurve.keyframe_points
    if len(points):
        points.clear()
    count = len(keys.frames)
    points.add(count)
    co, left, right = keys.channel(column)
    points.foreach_set("co", co)
    points.foreach_set("handle_left", left)
    points.foreach_set("handle_right", right)
    handle = np.full(count, keyreduce.HANDLE_ALIGNED, dtype=np.int32)
    points.foreach_set("handle_left_type", handle)
    points.foreach_set("handle_right_type", handle)
    points.foreach_set("interpolation", np.full(count, keyreduce.INTERPOLATION_BEZIER, dtype=np.int32))


def empty_stats() -> dict:
    return {"keys": 0, "dense_keys": 0, "max_rotation_error_deg": 0.0, "max_location_error": 0.0,
            "max_shape_error": 0.0}


def add_error(stats: dict, kind: str, path: str, error: float) -> None:
    if kind == "quaternion":
        field = "max_rotation_error_deg"
    elif kind == "vector":
        field = "max_location_error"
    elif "rotation_" in path:
        return  # a lone rotation component: its bound is in radians, not reported with the others
    else:
        field = "max_shape_error"
    stats[field] = max(stats[field], float(error))


def reduce_channel_groups(frames: np.ndarray, groups: list, tolerances: dict) -> list:
    """groups: (data_path, kind, members, values (N, C)) -> ReducedKeys per group (core.keyreduce.reduce_groups)."""
    requests = [(values, kind, channels.group_tolerance(kind, path, **tolerances))
                for path, kind, _, values in groups]
    return keyreduce.reduce_groups(frames, requests) if requests else []


def write_reduced(channelbag, frames: np.ndarray, channel_list, tolerances: dict) -> dict:
    """Reduced keys for channels (each data path's channels share key frames). tolerances: rotation_tolerance_deg,
    location_tolerance, shape_tolerance. Returns keys written, dense_keys, and the worst modelled errors."""
    stats = empty_stats()
    groups = [(path, kind, members, np.stack([c.values for c in members], axis=1))
              for path, kind, members in channels.channel_groups(channel_list)]
    for (path, kind, members, _), keys in zip(groups, reduce_channel_groups(frames, groups, tolerances)):
        for column, ch in enumerate(members):
            fcurve = channelbag.fcurves.new(ch.data_path, index=ch.index, group_name=ch.group)
            set_reduced_keys(fcurve, keys, column)
        stats["keys"] += len(keys.frames) * len(members)
        stats["dense_keys"] += len(frames) * len(members)
        add_error(stats, kind, path, keys.max_error)
    return stats


def write_channels(channelbag, frames: np.ndarray, channel_list, keys: str, tolerances: dict) -> dict:
    """Dense or reduced keys (see write_dense / write_reduced); returns the stats dict of write_reduced."""
    if keys == "reduced":
        return write_reduced(channelbag, frames, channel_list, tolerances)
    written = write_dense(channelbag, frames, channel_list)
    stats = empty_stats()
    stats["keys"] = stats["dense_keys"] = written
    return stats


# --- sampling -------------------------------------------------------------------------------------------------------

def _key_arrays(fcurve):
    points = fcurve.keyframe_points
    count = len(points)
    arrays = {}
    for name in ("co", "handle_left", "handle_right"):
        buf = np.empty(2 * count, dtype=np.float32)
        points.foreach_get(name, buf)
        arrays[name] = buf
    interp = np.empty(count, dtype=np.int32)
    points.foreach_get("interpolation", interp)
    return arrays, interp


def sample_fcurve(fcurve, frames: np.ndarray) -> np.ndarray:
    """(T,) float64 values of `fcurve` at scene frames, as Blender evaluates them: numpy (core.keyreduce) for
    CONSTANT/LINEAR/BEZIER keys with constant extrapolation and no modifiers, fcurve.evaluate otherwise."""
    frames = np.asarray(frames, dtype=np.float64)
    count = len(fcurve.keyframe_points)
    if count and len(fcurve.modifiers) == 0 and fcurve.extrapolation == "CONSTANT":
        arrays, interp = _key_arrays(fcurve)
        co = arrays["co"]
        if np.all(np.diff(co[0::2]) > 0) and np.all(np.isin(interp, (0, 1, 2))):
            left, right = arrays["handle_left"], arrays["handle_right"]
            return keyreduce.evaluate_fcurve(co[0::2], co[1::2], left[0::2], left[1::2], right[0::2], right[1::2],
                                             interp, frames).astype(np.float64)
    return np.array([fcurve.evaluate(float(f)) for f in frames], dtype=np.float64)


def key_range(fcurves) -> tuple:
    """(first, last) key frame over F-curves (whole frames, rounded outwards); None when none has keys."""
    lows, highs = [], []
    for fcurve in fcurves:
        if len(fcurve.keyframe_points):
            low, high = fcurve.range()
            lows.append(low)
            highs.append(high)
    if not lows:
        return None
    return int(np.floor(min(lows) + 1e-6)), int(np.ceil(max(highs) - 1e-6))
