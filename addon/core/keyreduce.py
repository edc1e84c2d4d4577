"""Error-bounded key reduction, and the curve Blender evaluates from Bezier keys. numpy only, no bpy.

Blender model (blenkernel/intern/fcurve.cc, Blender 5.0): keys and handles are float32 (x = frame, y = value). Between
two keys whose left key is BEZIER, Blender solves x(u) = frame for the cubic Bezier parameter u (its `findzero` +
`solve_cubic`: float32 coefficients, double Cardano, float32 root, first root in [-1e-10, 1.000001]) and returns y(u)
computed in float32 (`berekeny`). A frame within 1e-4 of a key returns the key's value; outside the keys the value is
the end key's (CONSTANT extrapolation). `evaluate_segments` / `evaluate_fcurve` replicate exactly that, so a reduced
curve's error is measured on what Blender will play, not on an idealised spline.

Keys written here are cubic Hermite: each key gets one slope m (the dense take's derivative there, central
difference), its handles lie on that tangent at a third of the neighbouring key intervals (left handle
x - dx_left/3, right handle x + dx_right/3), so x(u) is linear and the handles are ALIGNED (a smooth curve that an
artist edits like any Bezier). A segment's curve depends only on its two end keys, which makes the greedy insertion
local: insert the worst frame of every segment over tolerance until none is, then remove every key whose two
neighbouring segments merge within tolerance (non-adjacent keys at a time, a few passes). Vectorised over all
segments of all channel groups at once.

Error of a channel group (all its channels share key frames):
  "quaternion" (N, 4): rotation angle in degrees between the normalized evaluated quaternion and the dense one;
  "vector"     (N, C): Euclidean distance (pelvis location, metres);
  "scalar"     (N, 1): absolute difference (shape-key value).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("quaternion", "vector", "scalar")
# Keyframe.interpolation enum values (BEZT_IPO_*) and handle types (HD_*) as foreach_set wants them.
INTERPOLATION_CONSTANT, INTERPOLATION_LINEAR, INTERPOLATION_BEZIER = 0, 1, 2
HANDLE_FREE, HANDLE_AUTO, HANDLE_VECTOR, HANDLE_ALIGNED, HANDLE_AUTO_CLAMPED = 0, 1, 2, 3, 4

_F32 = np.float32
_FLT_EPSILON = np.finfo(np.float32).eps
_ROOT_MIN = _F32(-1.0e-10)   # solve_cubic's SMALL
_ROOT_MAX = _F32(1.000001)
_KEY_SNAP = 1e-4             # BKE_fcurve_bezt_binarysearch_index_ex threshold used by evaluation
# The reduction aims a hair under the tolerance: numpy's float32 maths and Blender's compiled float32 maths may
# differ in the last bit (FMA contraction), ~1e-7; this margin keeps such differences from crossing the tolerance.
_TOLERANCE_MARGIN = 1.0 - 1e-4


# --- Blender's Bezier evaluation ------------------------------------------------------------------------------------

def _cube_root(d: np.ndarray) -> np.ndarray:
    """sqrt3d: real cube root as Blender computes it (exp(log(|d|)/3) with the sign)."""
    out = np.zeros_like(d)
    pos, neg = d > 0.0, d < 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out[pos] = np.exp(np.log(d[pos]) / 3.0)
        out[neg] = -np.exp(np.log(-d[neg]) / 3.0)
    return out


def _first_root(candidates: list, usable: list):
    """Pick, per element, the first candidate root in Blender's accepted range. Returns (root float32, found)."""
    shape = candidates[0].shape
    root = np.zeros(shape, dtype=_F32)
    found = np.zeros(shape, dtype=bool)
    for values, ok in zip(candidates, usable):
        v = values.astype(_F32)
        take = ok & ~found & (v >= _ROOT_MIN) & (v <= _ROOT_MAX)
        root[take] = v[take]
        found |= take
    return root, found


def _solve_cubic(c0, c1, c2, c3):
    """First root in [-1e-10, 1.000001] of c0 + c1 u + c2 u^2 + c3 u^3 (doubles), Blender's branch by branch."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.float64) for c in (c0, c1, c2, c3))
    nan = np.full(c0.shape, np.nan)
    cubic = c3 != 0.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        safe3 = np.where(cubic, c3, 1.0)
        a = c2 / safe3 / 3.0
        b = c1 / safe3
        c = c0 / safe3
        p = b / 3.0 - a * a
        q = (2.0 * a * a * a - a * b + c) / 2.0
        d = q * q + p * p * p
        # d > 0: one real root
        t = np.sqrt(np.where(d > 0.0, d, 0.0))
        one = _cube_root(-q + t) + _cube_root(-q - t) - a
        # d == 0: two roots
        t0 = _cube_root(-q)
        two_a, two_b = 2.0 * t0 - a, -t0 - a
        # d < 0: three roots (trigonometric form)
        neg = d < 0.0
        phi = np.arccos(np.where(neg, -q / np.sqrt(np.where(neg, -(p * p * p), 1.0)), 0.0))
        tt = np.sqrt(np.where(neg, -p, 0.0))
        pc = np.cos(phi / 3.0)
        qs = np.sqrt(3.0 - 3.0 * pc * pc)
        three = (2.0 * tt * pc - a, -tt * (pc + qs) - a, -tt * (pc - qs) - a)
        # c3 == 0: quadratic, linear or constant
        quad = ~cubic & (c2 != 0.0)
        disc = c1 * c1 - 4.0 * c2 * c0
        sq = np.sqrt(np.where(disc > 0.0, disc, 0.0))
        safe2 = np.where(quad, 2.0 * c2, 1.0)
        quad_a, quad_b = (-c1 - sq) / safe2, (-c1 + sq) / safe2
        quad_one = -c1 / safe2
        lin = ~cubic & ~quad & (c1 != 0.0)
        lin_root = -c0 / np.where(lin, c1, 1.0)
        const_zero = ~cubic & ~quad & ~lin & (c0 == 0.0)

    cand = [np.where(cubic & (d > 0.0), one, nan), np.where(cubic & (d == 0.0), two_a, nan),
            np.where(cubic & (d == 0.0), two_b, nan), np.where(cubic & neg, three[0], nan),
            np.where(cubic & neg, three[1], nan), np.where(cubic & neg, three[2], nan),
            np.where(quad & (disc > 0.0), quad_a, nan), np.where(quad & (disc > 0.0), quad_b, nan),
            np.where(quad & (disc == 0.0), quad_one, nan), np.where(lin, lin_root, nan),
            np.where(const_zero, 0.0, nan)]
    return _first_root(cand, [np.isfinite(v) for v in cand])


def _correct_bezpart(x0, y0, x1, y1, x2, y2, x3, y3):
    """BKE_fcurve_correct_bezpart: shorten handles that reach past the other key in time (float32). x's (S,),
    y's (S,) or (S, C)."""
    h1x, h1y = x0 - x1, y0 - y1
    h2x, h2y = x3 - x2, y3 - y2
    span = x3 - x0
    len1, len2 = np.abs(h1x), np.abs(h2x)
    fix1 = (len1 + len2 != 0) & (len1 > span)
    fix2 = (len1 + len2 != 0) & (len2 > span)
    if not (np.any(fix1) or np.any(fix2)):
        return x1, y1, x2, y2

    def column(a):  # (S,) -> broadcastable against the y's
        return a[:, None] if y1.ndim > a.ndim else a

    f1 = (span / np.where(fix1, len1, _F32(1))).astype(_F32)
    f2 = (span / np.where(fix2, len2, _F32(1))).astype(_F32)
    x1 = np.where(fix1, x0 - f1 * h1x, x1)
    y1 = np.where(column(fix1), y0 - column(f1) * h1y, y1)
    x2 = np.where(fix2, x3 - f2 * h2x, x2)
    y2 = np.where(column(fix2), y3 - column(f2) * h2y, y2)
    return x1, y1, x2, y2


def evaluate_segments(times, x0, y0, x1, y1, x2, y2, x3, y3) -> np.ndarray:
    """Values Blender computes inside BEZIER segments, element-wise.

    times, x0 (left key), x1 (its right handle), x2 (right key's left handle), x3 (right key): (S,) frames.
    y0, y1, y2, y3: (S,) or (S, C) values (channels sharing the segment's frames and handle times).
    Returns float32 values of y's shape; 0 where Blender's root finder fails (as Blender does).
    """
    t = np.asarray(times, dtype=_F32)
    x0, x1, x2, x3 = (np.asarray(v, dtype=_F32) for v in (x0, x1, x2, x3))
    y0, y1, y2, y3 = (np.asarray(v, dtype=_F32) for v in (y0, y1, y2, y3))
    x1, y1, x2, y2 = _correct_bezpart(x0, y0, x1, y1, x2, y2, x3, y3)
    two, three = _F32(2.0), _F32(3.0)
    c0 = (x0 - t).astype(np.float64)
    c1 = (three * (x1 - x0)).astype(np.float64)
    c2 = (three * ((x0 - two * x1) + x2)).astype(np.float64)
    c3 = ((x3 - x0) + three * (x1 - x2)).astype(np.float64)
    u, found = _solve_cubic(c0, c1, c2, c3)
    if y0.ndim > u.ndim:
        u, found = u[:, None], found[:, None]
    b0 = y0
    b1 = three * (y1 - y0)
    b2 = three * ((y0 - two * y1) + y2)
    b3 = (y3 - y0) + three * (y1 - y2)
    uu = u * u
    value = ((b0 + u * b1) + uu * b2) + (uu * u) * b3
    flat = (np.abs(y0 - y3) < _FLT_EPSILON) & (np.abs(y1 - y2) < _FLT_EPSILON) & (np.abs(y2 - y3) < _FLT_EPSILON)
    value = np.where(flat, y0, np.where(found, value, _F32(0.0)))
    return value.astype(_F32)


def evaluate_fcurve(key_x, key_y, left_x, left_y, right_x, right_y, interpolation, times) -> np.ndarray:
    """What FCurve.evaluate returns at `times` for keys sorted by frame, CONSTANT extrapolation, no modifiers.

    key_x/key_y/left_*/right_*: (K,) keyframe co and handles; interpolation: (K,) enum values (CONSTANT, LINEAR,
    BEZIER; each key's value applies to the segment after it). Other interpolation modes (easing) raise ValueError.
    Returns (T,) float32.
    """
    kx = np.asarray(key_x, dtype=_F32)
    ky = np.asarray(key_y, dtype=_F32)
    ipo = np.asarray(interpolation)
    t = np.asarray(times, dtype=_F32)
    if len(kx) == 0:
        return np.zeros(t.shape, dtype=_F32)
    if np.any(~np.isin(ipo, (INTERPOLATION_CONSTANT, INTERPOLATION_LINEAR, INTERPOLATION_BEZIER))):
        raise ValueError("evaluate_fcurve handles CONSTANT, LINEAR and BEZIER keys only; use FCurve.evaluate")
    out = np.empty(t.shape, dtype=_F32)
    before, after = t <= kx[0], t >= kx[-1]
    out[before], out[after] = ky[0], ky[-1]
    inside = ~(before | after)
    ti = t[inside]
    nxt = np.searchsorted(kx, ti, side="left")  # first key >= t: 1..K-1
    prv = nxt - 1
    # a key within the binary search threshold gives its own value
    snap_next = np.abs(kx[nxt] - ti) <= _KEY_SNAP
    snap_prev = np.abs(ti - kx[prv]) <= _KEY_SNAP
    value = np.empty(ti.shape, dtype=_F32)
    kind = ipo[prv]
    const = kind == INTERPOLATION_CONSTANT
    value[const] = ky[prv[const]]
    lin = kind == INTERPOLATION_LINEAR
    if np.any(lin):
        p, n = prv[lin], nxt[lin]
        change, duration, elapsed = ky[n] - ky[p], kx[n] - kx[p], ti[lin] - kx[p]
        value[lin] = change * elapsed / duration + ky[p]  # BLI_easing_linear_ease, float32
    bez = kind == INTERPOLATION_BEZIER
    if np.any(bez):
        p, n = prv[bez], nxt[bez]
        value[bez] = evaluate_segments(ti[bez], kx[p], ky[p], np.asarray(right_x, _F32)[p],
                                       np.asarray(right_y, _F32)[p], np.asarray(left_x, _F32)[n],
                                       np.asarray(left_y, _F32)[n], kx[n], ky[n])
    value = np.where(snap_prev, ky[prv], value)
    value = np.where(snap_next, ky[nxt], value)
    out[inside] = value
    return out


# --- Hermite keys ---------------------------------------------------------------------------------------------------

def dense_slopes(frames: np.ndarray, values: np.ndarray) -> np.ndarray:
    """(N,) frames, (N, ...) values -> (N, ...) derivative per frame: central differences, one-sided at the ends."""
    x = np.asarray(frames, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return np.zeros_like(v)
    shape = (-1,) + (1,) * (v.ndim - 1)
    out = np.empty_like(v)
    out[1:-1] = (v[2:] - v[:-2]) / (x[2:] - x[:-2]).reshape(shape)
    out[0] = (v[1] - v[0]) / (x[1] - x[0])
    out[-1] = (v[-1] - v[-2]) / (x[-1] - x[-2])
    return out


def hermite_handles(key_x: np.ndarray, key_y: np.ndarray, slopes: np.ndarray):
    """Handles of Hermite keys: (K,) frames, (K, ...) values and slopes -> float32 (left_x (K,), left_y (K, ...),
    right_x (K,), right_y (K, ...)); each handle a third of its neighbouring key interval along the slope (an end
    key mirrors its only interval, which extrapolation never uses)."""
    x = np.asarray(key_x, dtype=np.float64)
    y = np.asarray(key_y, dtype=np.float64)
    m = np.asarray(slopes, dtype=np.float64)
    if len(x) == 1:
        gap = np.ones(1)
        left_gap = right_gap = gap
    else:
        gaps = np.diff(x)
        left_gap = np.concatenate([gaps[:1], gaps]) / 3.0
        right_gap = np.concatenate([gaps, gaps[-1:]]) / 3.0
    shape = (-1,) + (1,) * (y.ndim - 1)
    left_x = (x - left_gap).astype(_F32)
    right_x = (x + right_gap).astype(_F32)
    left_y = (y - m * left_gap.reshape(shape)).astype(_F32)
    right_y = (y + m * right_gap.reshape(shape)).astype(_F32)
    return left_x, left_y, right_x, right_y


@dataclass
class ReducedKeys:
    """Keys of one channel group: K keys shared by its C channels, ready for foreach_set (all float32)."""

    indices: np.ndarray   # (K,) int, into the dense frames
    frames: np.ndarray    # (K,) key frames
    values: np.ndarray    # (K, C)
    left_x: np.ndarray    # (K,)
    left_y: np.ndarray    # (K, C)
    right_x: np.ndarray   # (K,)
    right_y: np.ndarray   # (K, C)
    max_error: float      # worst modelled error over the dense frames (degrees / metres / value)

    def channel(self, c: int):
        """(co, handle_left, handle_right) flat float32 arrays of channel c for foreach_set."""
        def pairs(xs, ys):
            out = np.empty(2 * len(xs), dtype=_F32)
            out[0::2], out[1::2] = xs, ys
            return out
        return (pairs(self.frames, self.values[:, c]), pairs(self.left_x, self.left_y[:, c]),
                pairs(self.right_x, self.right_y[:, c]))


def group_error(kind: str, approx: np.ndarray, dense: np.ndarray) -> np.ndarray:
    """(S, C) evaluated and dense values -> (S,) error (degrees for quaternions, distance, absolute value)."""
    a = np.asarray(approx, dtype=np.float64)
    d = np.asarray(dense, dtype=np.float64)
    if kind == "quaternion":
        a = a / np.maximum(np.linalg.norm(a, axis=-1, keepdims=True), 1e-30)
        d = d / np.maximum(np.linalg.norm(d, axis=-1, keepdims=True), 1e-30)
        dot = np.clip(np.abs(np.sum(a * d, axis=-1)), 0.0, 1.0)
        return np.degrees(2.0 * np.arccos(dot))
    if kind == "vector":
        return np.linalg.norm(a - d, axis=-1)
    if kind == "scalar":
        return np.abs(a - d).max(axis=-1)
    raise ValueError(f"unknown channel group kind '{kind}' (use one of: {', '.join(KINDS)})")


# --- reduction ------------------------------------------------------------------------------------------------------

class _Batch:
    """Channel groups of one kind and width, reduced together: values (G, N, C)."""

    def __init__(self, frames, dense, kind, tolerance):
        self.x = np.asarray(frames, dtype=np.float64)
        self.dense = np.asarray(dense, dtype=np.float64)                    # (G, N, C) what the error compares to
        self.keys = self.dense.astype(_F32)                                  # what a key stores
        self.slopes = np.moveaxis(dense_slopes(self.x, np.moveaxis(self.dense, 1, 0)), 0, 1)  # (G, N, C)
        self.kind = kind
        self.tolerance = np.asarray(tolerance, dtype=np.float64)            # (G,)

    def segment_errors(self, g, a, b):
        """Max error and its frame index over the interior of segments (g, a, b) (all int arrays, b > a + 1).
        Returns (max_error (S,), worst index (S,))."""
        count = b - a - 1
        seg = np.repeat(np.arange(len(a)), count)
        starts = np.cumsum(count) - count
        idx = a[seg] + 1 + (np.arange(len(seg)) - starts[seg])
        gs, ia, ib = g[seg], a[seg], b[seg]
        x0, x3 = self.x[ia], self.x[ib]
        third = (x3 - x0) / 3.0
        err = group_error(self.kind, evaluate_segments(
            self.x[idx], x0, self.keys[gs, ia], x0 + third, self.dense[gs, ia] + self.slopes[gs, ia] * third[:, None],
            x3 - third, self.dense[gs, ib] - self.slopes[gs, ib] * third[:, None], x3, self.keys[gs, ib]),
            self.dense[gs, idx])
        worst = np.maximum.reduceat(err, starts)
        at_worst = err == worst[seg]
        first = np.flatnonzero(at_worst)
        seg_first, pick = np.unique(seg[first], return_index=True)
        worst_idx = np.empty(len(a), dtype=np.int64)
        worst_idx[seg_first] = idx[first[pick]]
        return worst, worst_idx

    def reduce(self, removal_passes: int = 6) -> np.ndarray:
        """(G, N) bool mask of the kept keys."""
        groups, n = self.dense.shape[:2]
        keep = np.zeros((groups, n), dtype=bool)
        keep[:, 0] = keep[:, -1] = True
        limit = self.tolerance * _TOLERANCE_MARGIN
        g = np.arange(groups)
        a = np.zeros(groups, dtype=np.int64)
        b = np.full(groups, n - 1, dtype=np.int64)
        while len(a):  # subdivide at the worst frame until every segment is within tolerance
            inner = b - a > 1
            g, a, b = g[inner], a[inner], b[inner]
            if not len(a):
                break
            worst, at = self.segment_errors(g, a, b)
            bad = worst > limit[g]
            g, a, b, at = g[bad], a[bad], b[bad], at[bad]
            keep[g, at] = True
            g, a, b = np.concatenate([g, g]), np.concatenate([a, at]), np.concatenate([at, b])
        for _ in range(removal_passes):  # drop keys whose neighbours' merged segment is within tolerance
            kg, ki = np.nonzero(keep)
            interior = np.flatnonzero((ki != 0) & (ki != n - 1))
            if not len(interior):
                break
            prev_i, next_i = ki[interior - 1], ki[interior + 1]
            worst, _ = self.segment_errors(kg[interior], prev_i, next_i)
            removable = worst <= limit[kg[interior]]
            if not np.any(removable):
                break
            # non-adjacent keys only: every other key of each run of removable neighbours
            run_start = removable & ~np.concatenate([[False], removable[:-1] & (np.diff(interior) == 1)])
            run_id = np.cumsum(run_start)
            position = np.arange(len(removable)) - np.flatnonzero(run_start)[np.maximum(run_id - 1, 0)]
            chosen = removable & (position % 2 == 0)
            if not np.any(chosen):
                break
            keep[kg[interior[chosen]], ki[interior[chosen]]] = False
        return keep

    def keys_of(self, keep: np.ndarray) -> list:
        out = []
        for gi in range(len(keep)):
            idx = np.flatnonzero(keep[gi])
            kx = self.x[idx]
            lx, ly, rx, ry = hermite_handles(kx, self.dense[gi, idx], self.slopes[gi, idx])
            out.append(ReducedKeys(indices=idx, frames=kx.astype(_F32), values=self.keys[gi, idx], left_x=lx,
                                   left_y=ly, right_x=rx, right_y=ry, max_error=0.0))
        return out


def reduce_groups(frames: np.ndarray, groups: list) -> list:
    """Fewest keys per channel group so that Blender's curve stays within tolerance at every dense frame.

    frames: (N,) increasing key frames of the dense take. groups: list of (values (N, C), kind, tolerance) with kind
    in KINDS and tolerance in degrees (quaternion), metres (vector) or value units (scalar). Groups of the same kind
    and width are reduced together in one vectorised batch. Returns one ReducedKeys per group, in order, with
    max_error the worst error of the written curve (evaluate_segments) over all dense frames.
    """
    x = np.asarray(frames, dtype=np.float64)
    if x.ndim != 1 or len(x) == 0 or np.any(np.diff(x) <= 0):
        raise ValueError("reduce_groups needs increasing frames (N,)")
    results = [None] * len(groups)
    batches = {}
    for i, (values, kind, tolerance) in enumerate(groups):
        v = np.asarray(values, dtype=np.float64)
        v = v[:, None] if v.ndim == 1 else v
        if v.shape[0] != len(x):
            raise ValueError(f"channel group {i} has {v.shape[0]} samples for {len(x)} frames")
        if kind not in KINDS:
            raise ValueError(f"unknown channel group kind '{kind}' (use one of: {', '.join(KINDS)})")
        if not tolerance > 0:
            raise ValueError(f"tolerance must be positive (got {tolerance}); use dense keys for an exact copy")
        batches.setdefault((kind, v.shape[1]), []).append((i, v, float(tolerance)))
    for (kind, _), members in batches.items():
        batch = _Batch(x, np.stack([v for _, v, _ in members]), kind, [t for _, _, t in members])
        keep = batch.reduce() if len(x) > 2 else np.ones((len(members), len(x)), dtype=bool)
        for (i, v, _), keys in zip(members, batch.keys_of(keep)):
            keys.max_error = float(curve_error(x, v, keys, kind).max(initial=0.0))
            results[i] = keys
    return results


def curve_values(frames: np.ndarray, keys: ReducedKeys) -> np.ndarray:
    """(N, C) float32 values Blender evaluates from `keys` at `frames` (all BEZIER, CONSTANT extrapolation)."""
    channels = keys.values.shape[1]
    ipo = np.full(len(keys.frames), INTERPOLATION_BEZIER)
    return np.stack([evaluate_fcurve(keys.frames, keys.values[:, c], keys.left_x, keys.left_y[:, c], keys.right_x,
                                     keys.right_y[:, c], ipo, frames) for c in range(channels)], axis=1)


def curve_error(frames: np.ndarray, dense: np.ndarray, keys: ReducedKeys, kind: str) -> np.ndarray:
    """(N,) error of the evaluated reduced curve against the dense values at every dense frame."""
    d = np.asarray(dense, dtype=np.float64)
    d = d[:, None] if d.ndim == 1 else d
    return group_error(kind, curve_values(frames, keys), d)
