"""Quaternion maths for takes, numpy only, float64 inside. Quaternions are (..., 4) in w, x, y, z order (Blender's).

Axis-angle vectors (..., 3) are SMPL-X's: direction = axis, length = angle in radians (Rodrigues).
"""

from __future__ import annotations

import numpy as np

_SMALL = 1e-4  # below this angle (radians) the series expansions are exact to float64 rounding


def axis_angle_to_quat(axis_angle: np.ndarray) -> np.ndarray:
    """(..., 3) axis-angle -> (..., 4) unit quaternions wxyz, float64, w >= 0 for angles <= pi."""
    aa = np.asarray(axis_angle, dtype=np.float64)
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    half = 0.5 * angle
    small = angle < _SMALL
    safe = np.where(small, 1.0, angle)
    # sin(a/2)/a, with its Taylor series near 0 so tiny rotations keep full precision
    scale = np.where(small, 0.5 - angle * angle / 48.0, np.sin(half) / safe)
    return np.concatenate([np.cos(half), aa * scale], axis=-1)


def quat_to_axis_angle(quat: np.ndarray) -> np.ndarray:
    """(..., 4) wxyz (any norm, any sign) -> (..., 3) axis-angle with angle in [0, pi]."""
    q = np.asarray(quat, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    q = np.where(q[..., :1] < 0.0, -q, q)  # same rotation, angle <= pi
    w, v = q[..., :1], q[..., 1:]
    s = np.linalg.norm(v, axis=-1, keepdims=True)
    small = s < _SMALL
    # angle / sin(angle/2) = 2*atan2(s, w)/s, series 2/w * (1 - s^2/(3 w^2)) near the identity
    w_near = np.where(small, w, 1.0)  # w ~ 1 where the series is used; avoids 1/0 in the unused branch
    series = 2.0 / w_near * (1.0 - s * s / (3.0 * w_near * w_near))
    factor = np.where(small, series, 2.0 * np.arctan2(s, w) / np.where(small, 1.0, s))
    return v * factor


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a*b of (..., 4) wxyz quaternions (broadcasting)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack([aw * bw - ax * bx - ay * by - az * bz,
                     aw * bx + ax * bw + ay * bz - az * by,
                     aw * by - ax * bz + ay * bw + az * bx,
                     aw * bz + ax * by - ay * bx + az * bw], axis=-1)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def matrix_to_quat(matrix: np.ndarray) -> np.ndarray:
    """(3, 3) rotation matrix -> (4,) wxyz with w >= 0 (Shepperd's method, stable for every rotation)."""
    m = np.asarray(matrix, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * np.sqrt(1.0 + trace)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0.0 else q


def make_continuous(quats: np.ndarray) -> np.ndarray:
    """(T, ..., 4) -> same, each q[t] sign-flipped so dot(q[t], q[t-1]) >= 0 (F-curves interpolate per component).

    Flips accumulate: the sign of frame t is the product of the neighbour-dot signs up to t, so this is exact and
    vectorized. Frame 0 keeps its sign.
    """
    q = np.asarray(quats, dtype=np.float64)
    if len(q) < 2:
        return q.copy()
    dots = np.sum(q[1:] * q[:-1], axis=-1)  # (T-1, ...)
    step_sign = np.where(dots < 0.0, -1.0, 1.0)
    sign = np.concatenate([np.ones_like(step_sign[:1]), np.cumprod(step_sign, axis=0)], axis=0)
    return q * sign[..., None]


def nlerp(q0: np.ndarray, q1: np.ndarray, t) -> np.ndarray:
    """Normalized linear interpolation along the shorter arc. q0, q1 (..., 4); t broadcast to (...,) or scalar."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[..., None]
    q1 = np.where(np.sum(q0 * q1, axis=-1, keepdims=True) < 0.0, -q1, q1)
    q = (1.0 - t) * q0 + t * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def slerp(q0: np.ndarray, q1: np.ndarray, t) -> np.ndarray:
    """Spherical linear interpolation along the shorter arc; q0, q1 (..., 4) unit, t (...,) or scalar in [0, 1].

    Returns q0 exactly at t == 0 and q1 (or -q1, same rotation) at t == 1; falls back to nlerp when the two are
    almost equal (angle < 1e-6 rad), where both agree to float64 rounding.
    """
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)[..., None]
    dot = np.sum(q0 * q1, axis=-1, keepdims=True)
    q1 = np.where(dot < 0.0, -q1, q1)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    close = sin_theta < 1e-6
    safe = np.where(close, 1.0, sin_theta)
    w0 = np.where(close, 1.0 - t, np.sin((1.0 - t) * theta) / safe)
    w1 = np.where(close, t, np.sin(t * theta) / safe)
    q = w0 * q0 + w1 * q1
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def conjugate_by(quats: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """c^-1 * q * c for (..., 4) quats and one (4,) unit quaternion c: a rotation re-expressed in the frame c.

    Used when a rig's bone rest frame differs from the SMPL-X joint frame by c (identity for the stand-in rig).
    """
    c = np.asarray(frame, dtype=np.float64)
    return quat_multiply(quat_multiply(quat_conjugate(c), quats), c)


def rotate_vectors(quat: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Rotate (..., 3) vectors by unit quaternion(s) (..., 4) or (4,): q * v * q^-1."""
    q = np.asarray(quat, dtype=np.float64)
    v = np.asarray(vectors, dtype=np.float64)
    pure = np.concatenate([np.zeros(v.shape[:-1] + (1,)), v], axis=-1)
    return quat_multiply(quat_multiply(q, pure), quat_conjugate(q))[..., 1:]
