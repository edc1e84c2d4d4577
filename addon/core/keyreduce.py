"""Error-bounded key reduction, and the curve Blender evaluates from Bezier keys. numpy only, no bpy.

Blender model (blenkernel/intern/fcurve.cc, Blender 5.0): keys and handles are float32 (x = frame, y = value). Between
two keys whose left key is BEZIER, Blender solves x(u) = frame for the cubic Bezier parameter u (its `findzero` +
`solve_cubic`: float32 coefficients, double Cardano, float32 root, first root in [-1e-10, 1.000001]) and returns y(u)
computed in float32 (`berekeny`). A frame within 1e-4 of a key returns the key's value; outside the keys the value is
the end key's (CONSTANT extrapolation). `evaluate_segments` / `evaluate_fcurve` replicate exactly that, so a reduced
curve's error is measured on what Blender will play, not on an idealised spline.

Keys written here are cubic Hermite: a key stores a value and one slope m; its handles lie on that tangent at a third
of the neighbouring key intervals (left handle x - dx_left/3, right handle x + dx_right/3), so x(u) is linear and the
handles are ALIGNED (a smooth curve that an artist edits like any Bezier). A segment's curve depends only on its two
end keys, which keeps every step local:
  1. subdivide: starting from the end frames, insert the worst frame of every segment over tolerance (new keys take
     the dense value and the dense derivative, central differences, as slope) until no segment is over;
  2. remove: drop every key whose two neighbouring segments merge within tolerance (non-adjacent keys at a time);
  3. remove with refit (rounds until a round drops almost nothing): for each key, fit the VALUES and slopes of its
     two neighbours by least squares over the three segments around them (outer keys fixed, so nothing else moves)
     and drop the key where the refitted curve stays within tolerance at every frame, the refitted keys included;
     the removals made are the locally cheapest ones, four keys apart so they never interact.
Fitted key values (not the dense samples) are what lengthens segments: a curve through the samples wastes the
tolerance band, a fitted one uses all of it (on a generated 65 s take: 5.3x fewer keys instead of 3.9x).
Vectorised over all segments of all channel groups at once. The search evaluates segments with a fast replica
(hermite_sample_values: Newton instead of Cardano for the time solve, equal to float32 rounding); the result is then
checked with the exact replica, and a reduction aims 1e-4 (relative) under the tolerance, so the written curve is
within tolerance as Blender evaluates it.

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


def hermite_coefficients(x0, y0, m0, x3, y3, m3):
    """Per segment of Hermite keys (handles at a third of the interval along the slopes m0, m3): the float32 cubic
    coefficients Blender forms, x(u) (c1, c2, c3; (S,) float64 of float32 values) and y(u) (b0..b3; (S, C) float32),
    plus the flat-segment flag (S, C)."""
    third = (x3 - x0) / 3.0
    x0f, x3f = x0.astype(_F32), x3.astype(_F32)
    x1f, x2f = (x0 + third).astype(_F32), (x3 - third).astype(_F32)
    y0f, y3f = y0.astype(_F32), y3.astype(_F32)
    y1f = (y0 + m0 * third[:, None]).astype(_F32)
    y2f = (y3 - m3 * third[:, None]).astype(_F32)
    two, three = _F32(2.0), _F32(3.0)
    cx = [(three * (x1f - x0f)).astype(np.float64), (three * ((x0f - two * x1f) + x2f)).astype(np.float64),
          ((x3f - x0f) + three * (x1f - x2f)).astype(np.float64)]
    by = [y0f, three * (y1f - y0f), three * ((y0f - two * y1f) + y2f), (y3f - y0f) + three * (y1f - y2f)]
    flat = (np.abs(y0f - y3f) < _FLT_EPSILON) & (np.abs(y1f - y2f) < _FLT_EPSILON) & (np.abs(y2f - y3f) < _FLT_EPSILON)
    return x0f, cx, by, flat


def hermite_sample_values(times, seg, x0f, cx, by, flat) -> np.ndarray:
    """Values at `times` (S,) in segments `seg` (S,) of hermite_coefficients' output, as Blender evaluates them up to
    float32 rounding (~1e-7): the cubic x(u) = time is solved by Newton's method in double from the linear guess
    instead of Cardano's formula (same root: x(u) is a straight line up to float32 rounding of the handle times, so
    two steps reach double precision)."""
    c0 = (np.take(x0f, seg) - np.asarray(times, dtype=_F32)).astype(np.float64)
    c1, c2, c3 = np.take(cx[0], seg), np.take(cx[1], seg), np.take(cx[2], seg)
    u = -c0 / (c1 + c2 + c3)
    for _ in range(2):
        u -= (((c3 * u + c2) * u + c1) * u + c0) / ((3.0 * c3 * u + 2.0 * c2) * u + c1)
    u = u.astype(_F32)[:, None]
    b = np.take(np.stack(by, axis=1), seg, axis=0)  # (S, 4, C)
    uu = u * u
    value = ((b[:, 0] + u * b[:, 1]) + uu * b[:, 2]) + (uu * u) * b[:, 3]
    if np.any(flat):
        value = np.where(np.take(flat, seg, axis=0), b[:, 0], value)
    return value


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
        norms = np.sqrt(np.einsum("...i,...i->...", a, a) * np.einsum("...i,...i->...", d, d))
        dot = np.clip(np.abs(np.einsum("...i,...i->...", a, d)) / np.maximum(norms, 1e-30), 0.0, 1.0)
        return np.degrees(2.0 * np.arccos(dot))
    if kind == "vector":
        diff = a - d
        return np.sqrt(np.einsum("...i,...i->...", diff, diff))
    if kind == "scalar":
        return np.abs(a - d).max(axis=-1)
    raise ValueError(f"unknown channel group kind '{kind}' (use one of: {', '.join(KINDS)})")


# --- reduction ------------------------------------------------------------------------------------------------------

def _expand(a: np.ndarray, b: np.ndarray):
    """Interior frames of segments (a, b): (segment of each sample, frame index of each sample, first sample of each
    segment, samples per segment)."""
    count = np.maximum(b - a - 1, 0)  # a == b (no segment) has no frames
    seg = np.repeat(np.arange(len(a)), count)
    starts = np.cumsum(count) - count
    return seg, a[seg] + 1 + (np.arange(len(seg)) - starts[seg]), starts, count


class _Batch:
    """Channel groups of one kind and width, reduced together: values (G, N, C).

    `values` and `slopes` hold the value and slope each frame has, or would get, as a key: the dense value and
    derivative until a refit moves them (values are then fitted, not the dense samples).
    """

    def __init__(self, frames, dense, kind, tolerance):
        self.x = np.asarray(frames, dtype=np.float64)
        self.dense = np.asarray(dense, dtype=np.float64)                    # (G, N, C) what the error compares to
        self.values = self.dense.copy()
        self.dense_slopes = np.moveaxis(dense_slopes(self.x, np.moveaxis(self.dense, 1, 0)), 0, 1)  # (G, N, C)
        self.slopes = self.dense_slopes.copy()
        self.width = self.dense.shape[2]
        self.flat_dense = self.dense.reshape(-1, self.width)
        self.kind = kind
        self.exact = False  # True: evaluate_segments (Cardano, Blender's branches) instead of the Newton fast path
        self.limit = np.asarray(tolerance, dtype=np.float64) * _TOLERANCE_MARGIN  # (G,)

    def _rows(self, array, g, i):
        return array.reshape(-1, self.width).take(g * len(self.x) + i, axis=0)

    def curve_errors(self, g, a, b, y0, m0, y3, m3):
        """Max error and its frame index over the interior of segments (g, a, b) (int arrays) whose end keys have
        values y0, y3 and slopes m0, m3 ((S, C)), as Blender evaluates them (Newton fast path, or the exact
        replica when self.exact). A segment without interior frames has error 0 at index a."""
        seg, idx, starts, count = _expand(a, b)
        worst = np.zeros(len(a))
        worst_idx = a.copy()
        if not len(seg):
            return worst, worst_idx
        x0, x3 = self.x[a], self.x[b]
        if self.exact:  # per sample
            x0, x3, y0, y3, m0, m3 = x0[seg], x3[seg], y0[seg], y3[seg], m0[seg], m3[seg]
            third = ((x3 - x0) / 3.0)[:, None]
            values = evaluate_segments(self.x[idx], x0, y0, x0 + third[:, 0], y0 + m0 * third, x3 - third[:, 0],
                                       y3 - m3 * third, x3, y3)
        else:
            values = hermite_sample_values(self.x[idx], seg, *hermite_coefficients(x0, y0, m0, x3, y3, m3))
        err = group_error(self.kind, values, self.flat_dense.take(g[seg] * len(self.x) + idx, axis=0))
        has = count > 0
        seg_worst = np.maximum.reduceat(err, starts[has])
        worst[has] = seg_worst
        at = np.where(err == np.repeat(seg_worst, count[has]), np.arange(len(err)), len(err))
        worst_idx[has] = idx[np.minimum.reduceat(at, starts[has])]
        return worst, worst_idx

    def segment_errors(self, g, a, b):
        """curve_errors of segments (g, a, b) with the keys' current values and slopes."""
        return self.curve_errors(g, a, b, self._rows(self.values, g, a), self._rows(self.slopes, g, a),
                                 self._rows(self.values, g, b), self._rows(self.slopes, g, b))

    def key_errors(self, g, i, y):
        """Error at key frames (g, i) of keys storing values y (S, C) (Blender returns a key's own float32 value)."""
        return group_error(self.kind, y.astype(_F32), self._rows(self.dense, g, i))

    def _segments(self, keep):
        """(g, a, b) of every segment between neighbouring kept keys."""
        kg, ki = np.nonzero(keep)
        same = kg[1:] == kg[:-1]
        return kg[:-1][same], ki[:-1][same], ki[1:][same]

    def _subdivide(self, keep) -> None:
        """Insert the worst frame of every segment over tolerance until none is (new keys take the dense value and
        slope)."""
        g, a, b = self._segments(keep)
        while len(a):
            inner = b - a > 1
            g, a, b = g[inner], a[inner], b[inner]
            if not len(a):
                break
            worst, at = self.segment_errors(g, a, b)
            bad = worst > self.limit[g]
            g, a, b, at = g[bad], a[bad], b[bad], at[bad]
            keep[g, at] = True
            self.values[g, at] = self.dense[g, at]
            self.slopes[g, at] = self.dense_slopes[g, at]
            g, a, b = np.concatenate([g, g]), np.concatenate([a, at]), np.concatenate([at, b])

    def _remove(self, keep, passes: int = 8) -> None:
        """Drop keys whose neighbours' merged segment is within tolerance, non-adjacent keys at a time."""
        n = keep.shape[1]
        for _ in range(passes):
            kg, ki = np.nonzero(keep)
            interior = np.flatnonzero((ki != 0) & (ki != n - 1))
            if not len(interior):
                return
            worst, _ = self.segment_errors(kg[interior], ki[interior - 1], ki[interior + 1])
            removable = worst <= self.limit[kg[interior]]
            if not np.any(removable):
                return
            # every other key of each run of removable neighbours
            run_start = removable & ~np.concatenate([[False], removable[:-1] & (np.diff(interior) == 1)])
            run_id = np.cumsum(run_start)
            position = np.arange(len(removable)) - np.flatnonzero(run_start)[np.maximum(run_id - 1, 0)]
            chosen = interior[removable & (position % 2 == 0)]
            keep[kg[chosen], ki[chosen]] = False

    def _refit_removal(self, keep) -> int:
        """One round of removals with refitted neighbours: for every interior key, refit the value and slope of its
        neighbours p, n by least squares over the three segments pp-p, p-n, n-nn (the outer keys fixed, so nothing
        outside changes); the removal is possible where all three segments and both refitted keys stay within
        tolerance. Of the possible removals, those whose worst error is the smallest within three keys either side
        are made (keys four apart never share a refitted key or a segment). Returns the number of keys dropped."""
        kg, ki = np.nonzero(keep)
        counts = keep.sum(axis=1)
        pos = np.arange(len(kg)) - (np.cumsum(counts) - counts)[kg]
        cand = np.flatnonzero((pos > 0) & (pos < counts[kg] - 1))
        if not len(cand):
            return 0
        g, p, n = kg[cand], ki[cand - 1], ki[cand + 1]
        pp = np.where(pos[cand] > 1, ki[np.maximum(cand - 2, 0)], p)                   # pp == p: no left segment
        nn = np.where(pos[cand] < counts[g] - 2, ki[np.minimum(cand + 2, len(ki) - 1)], n)
        unknowns = np.stack([self._rows(self.values, g, p), self._rows(self.slopes, g, p),
                             self._rows(self.values, g, n), self._rows(self.slopes, g, n)], axis=1)  # (K, 4, C)
        # samples: interior frames of the three segments and the frames of p and n; design rows over the unknowns
        # (y_p, m_p, y_n, m_n) and the fixed part from the outer keys (cubic Hermite: x(u) is linear, u = t)
        rows, cands, idxs, fixed = [], [], [], []
        for kind_, (a, b) in enumerate(((pp, p), (p, n), (n, nn))):
            seg, idx, _, _ = _expand(a, b)
            h = self.x[b[seg]] - self.x[a[seg]]
            t = (self.x[idx] - self.x[a[seg]]) / h
            t2, t3 = t * t, t * t * t
            h00, h10, h01, h11 = 2 * t3 - 3 * t2 + 1, (t3 - 2 * t2 + t) * h, 3 * t2 - 2 * t3, (t3 - t2) * h
            zero = np.zeros_like(t)
            gs = g[seg]
            if kind_ == 0:
                rows.append(np.stack([h01, h11, zero, zero], axis=1))
                fixed.append(h00[:, None] * self._rows(self.values, gs, a[seg])
                             + h10[:, None] * self._rows(self.slopes, gs, a[seg]))
            elif kind_ == 1:
                rows.append(np.stack([h00, h10, h01, h11], axis=1))
                fixed.append(np.zeros((len(t), self.width)))
            else:
                rows.append(np.stack([zero, zero, h00, h10], axis=1))
                fixed.append(h01[:, None] * self._rows(self.values, gs, b[seg])
                             + h11[:, None] * self._rows(self.slopes, gs, b[seg]))
            cands.append(seg)
            idxs.append(idx)
        k = np.arange(len(cand))
        for i, column in ((p, 0), (n, 2)):
            row = np.zeros((len(cand), 4))
            row[:, column] = 1.0
            rows.append(row)
            fixed.append(np.zeros((len(cand), self.width)))
            cands.append(k)
            idxs.append(i)
        A, c, idx = np.concatenate(rows), np.concatenate(cands), np.concatenate(idxs)
        r = self.flat_dense.take(g[c] * len(self.x) + idx, axis=0) - np.concatenate(fixed)
        normal = np.zeros((len(cand), 4, 4))
        rhs = np.zeros((len(cand), 4, self.width))
        for i in range(4):
            for j in range(i, 4):
                normal[:, i, j] = normal[:, j, i] = np.bincount(c, A[:, i] * A[:, j], minlength=len(cand))
            for ch in range(self.width):
                rhs[:, i, ch] = np.bincount(c, A[:, i] * r[:, ch], minlength=len(cand))
        # a small pull towards the current keys keeps systems with few samples well posed
        ridge = 1e-6 * np.einsum("kii->ki", normal) + 1e-12
        normal[:, np.arange(4), np.arange(4)] += ridge
        fit = np.linalg.solve(normal, rhs + ridge[..., None] * unknowns)
        yp, mp, yn, mn = fit[:, 0], fit[:, 1], fit[:, 2], fit[:, 3]
        left, _ = self.curve_errors(g, pp, p, self._rows(self.values, g, pp), self._rows(self.slopes, g, pp), yp, mp)
        middle, _ = self.curve_errors(g, p, n, yp, mp, yn, mn)
        right, _ = self.curve_errors(g, n, nn, yn, mn, self._rows(self.values, g, nn), self._rows(self.slopes, g, nn))
        worst = np.maximum.reduce([left, middle, right, self.key_errors(g, p, yp), self.key_errors(g, n, yn)])
        score = np.full(len(kg), np.inf)
        score[cand] = np.where(worst <= self.limit[g], worst / self.limit[g], np.inf)
        ok = np.isfinite(score[cand])
        for shift in (1, 2, 3):  # a local minimum within three keys (same group; ties go to the left key)
            left = np.concatenate([np.full(shift, np.inf), score[:-shift]])
            right = np.concatenate([score[shift:], np.full(shift, np.inf)])
            left_same = np.concatenate([np.zeros(shift, bool), kg[shift:] == kg[:-shift]])
            right_same = np.concatenate([kg[:-shift] == kg[shift:], np.zeros(shift, bool)])
            ok &= ~(left_same & (left <= score))[cand] & ~(right_same & (right < score))[cand]
        g, p, n = g[ok], p[ok], n[ok]
        keep[g, ki[cand[ok]]] = False
        self.values[g, p], self.slopes[g, p] = yp[ok], mp[ok]
        self.values[g, n], self.slopes[g, n] = yn[ok], mn[ok]
        return int(ok.sum())

    def reduce(self, rounds: int = 40) -> np.ndarray:
        """(G, N) bool mask of the kept keys: subdivide, remove, then rounds of removal with refitted neighbours
        until a round drops (almost) nothing."""
        groups, n = self.dense.shape[:2]
        keep = np.zeros((groups, n), dtype=bool)
        keep[:, 0] = keep[:, -1] = True
        self._subdivide(keep)
        self._remove(keep)
        for _ in range(rounds):
            if self._refit_removal(keep) <= 0.0005 * keep.sum():
                break
        return keep

    def keys_of(self, keep: np.ndarray) -> list:
        out = []
        for gi in range(len(keep)):
            idx = np.flatnonzero(keep[gi])
            kx = self.x[idx]
            lx, ly, rx, ry = hermite_handles(kx, self.values[gi, idx], self.slopes[gi, idx])
            out.append(ReducedKeys(indices=idx, frames=kx.astype(_F32), values=self.values[gi, idx].astype(_F32),
                                   left_x=lx, left_y=ly, right_x=rx, right_y=ry, max_error=0.0))
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
        keys = batch.keys_of(keep)
        errors = [float(curve_error(x, v, k, kind).max(initial=0.0)) for (_, v, _), k in zip(members, keys)]
        if any(e > t for e, (_, _, t) in zip(errors, members)):
            # never seen: the fast path and Blender's exact replica differ by float rounding only
            batch.exact = True
            batch._subdivide(keep)
            keys = batch.keys_of(keep)
            errors = [float(curve_error(x, v, k, kind).max(initial=0.0)) for (_, v, _), k in zip(members, keys)]
        for (i, _, _), k, error in zip(members, keys, errors):
            k.max_error = error
            results[i] = k
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
