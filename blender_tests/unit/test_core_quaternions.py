"""Quaternion maths (addon/core/quaternions.py): pure, no bpy."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import quaternions as Q  # noqa: E402


def _rodrigues(aa):
    """Rotation matrix of one axis-angle vector, written out independently of the module."""
    angle = np.linalg.norm(aa)
    if angle == 0.0:
        return np.eye(3)
    k = aa / angle
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _quat_matrix(q):
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def test_axis_angle_to_quat_matches_rodrigues_matrix():
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(200, 3)) * 1.2
    q = Q.axis_angle_to_quat(aa)
    assert q.dtype == np.float64 and q.shape == (200, 4)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-15)
    for a, qi in zip(aa, q):
        np.testing.assert_allclose(_quat_matrix(qi), _rodrigues(a), atol=1e-14)


@pytest.mark.parametrize("scale", [0.0, 1e-12, 1e-7, 1e-5, 1e-3, 0.5, 2.0, np.pi - 1e-9],
                         ids=["zero", "1e-12", "1e-7", "1e-5", "1e-3", "0.5", "2", "almost-pi"])
def test_round_trip_is_exact_at_every_angle(scale):
    rng = np.random.default_rng(1)
    axes = rng.normal(size=(50, 4, 3))
    axes /= np.linalg.norm(axes, axis=-1, keepdims=True)
    aa = axes * scale
    back = Q.quat_to_axis_angle(Q.axis_angle_to_quat(aa))
    np.testing.assert_allclose(back, aa, rtol=1e-12, atol=1e-15 + 1e-9 * (scale > 3))


def test_quat_to_axis_angle_ignores_sign_and_norm():
    aa = np.array([0.3, -1.1, 0.4])
    q = Q.axis_angle_to_quat(aa)
    np.testing.assert_allclose(Q.quat_to_axis_angle(-3.0 * q), aa, atol=1e-15)


def test_float32_storage_keeps_1e6_precision():
    rng = np.random.default_rng(2)
    aa = rng.normal(size=(1000, 3))
    aa = (aa / np.linalg.norm(aa, axis=1, keepdims=True) * rng.uniform(0, 3.0, size=(1000, 1))).astype(np.float32)
    q32 = Q.axis_angle_to_quat(aa).astype(np.float32)
    np.testing.assert_allclose(Q.quat_to_axis_angle(q32), aa, atol=2e-6)


def test_make_continuous_flips_only_to_stay_in_one_hemisphere():
    rng = np.random.default_rng(3)
    # a smooth rotation about a fixed axis through more than 2 pi, with random sign flips
    angles = np.linspace(0, 5 * np.pi, 400)
    q = Q.axis_angle_to_quat(np.outer(angles, [0.0, 1.0, 0.0])[:, None, :].repeat(2, axis=1))
    flips = rng.choice([-1.0, 1.0], size=(400, 2, 1))
    noisy = q * flips
    fixed = Q.make_continuous(noisy)
    dots = np.sum(fixed[1:] * fixed[:-1], axis=-1)
    assert np.all(dots > 0.99)
    np.testing.assert_allclose(np.abs(fixed), np.abs(noisy))  # same rotations, only signs changed
    np.testing.assert_array_equal(fixed[0], noisy[0])


def test_slerp_endpoints_midpoint_and_constant_speed():
    q0 = Q.axis_angle_to_quat(np.array([0.0, 0.0, 0.2]))
    q1 = Q.axis_angle_to_quat(np.array([0.0, 0.0, 1.4]))
    np.testing.assert_allclose(Q.slerp(q0, q1, 0.0), q0, atol=1e-15)
    np.testing.assert_allclose(Q.slerp(q0, q1, 1.0), q1, atol=1e-15)
    for t in (0.1, 0.25, 0.5, 0.9):
        np.testing.assert_allclose(Q.slerp(q0, q1, t), Q.axis_angle_to_quat(np.array([0, 0, 0.2 + 1.2 * t])),
                                   atol=1e-14)


def test_slerp_takes_the_short_arc_and_handles_equal_inputs():
    q0 = Q.axis_angle_to_quat(np.array([0.1, 0.0, 0.0]))
    q1 = -Q.axis_angle_to_quat(np.array([0.3, 0.0, 0.0]))  # same rotation as +q, opposite hemisphere
    mid = Q.slerp(q0, q1, 0.5)
    np.testing.assert_allclose(Q.quat_to_axis_angle(mid), [0.2, 0, 0], atol=1e-14)
    np.testing.assert_allclose(Q.slerp(q0, q0, 0.3), q0, atol=1e-15)


def test_slerp_and_nlerp_broadcast_over_joints():
    rng = np.random.default_rng(4)
    a = Q.axis_angle_to_quat(rng.normal(size=(7, 55, 3)) * 0.3)
    b = Q.axis_angle_to_quat(rng.normal(size=(7, 55, 3)) * 0.3)
    t = rng.uniform(size=(7, 55))
    s, n = Q.slerp(a, b, t), Q.nlerp(a, b, t)
    assert s.shape == n.shape == (7, 55, 4)
    np.testing.assert_allclose(np.linalg.norm(s, axis=-1), 1.0, atol=1e-14)
    # for nearby rotations slerp and nlerp nearly agree
    assert np.max(np.abs(np.abs(np.sum(s * n, axis=-1)) - 1.0)) < 1e-3


def test_matrix_to_quat_inverts_the_rotation_matrix():
    rng = np.random.default_rng(5)
    for aa in rng.normal(size=(100, 3)) * 1.5:
        q = Q.matrix_to_quat(_rodrigues(aa))
        np.testing.assert_allclose(_quat_matrix(q), _rodrigues(aa), atol=1e-13)
        assert q[0] >= 0.0


def test_conjugate_by_and_rotate_vectors_are_consistent():
    rng = np.random.default_rng(6)
    c = Q.axis_angle_to_quat(np.array([np.pi / 2, 0.0, 0.0]))
    q = Q.axis_angle_to_quat(rng.normal(size=(10, 3)))
    r = Q.conjugate_by(q, c)  # same rotation expressed in the frame c: C^-1 R C
    C = _quat_matrix(c)
    for qi, ri in zip(q, r):
        np.testing.assert_allclose(_quat_matrix(ri), C.T @ _quat_matrix(qi) @ C, atol=1e-14)
    v = rng.normal(size=(10, 3))
    np.testing.assert_allclose(Q.rotate_vectors(c, v), v @ C.T, atol=1e-14)
