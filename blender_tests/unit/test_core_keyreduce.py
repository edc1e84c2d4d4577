"""Error-bounded key reduction and Blender's Bezier evaluation model (addon/core/keyreduce.py): pure numpy.

That the model equals Blender's FCurve.evaluate is checked inside Blender in blender_tests/test_take_cleanup.py.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import keyreduce as K  # noqa: E402
from core import quaternions as Q  # noqa: E402


def _hermite(t, y0, y1, m0, m1, h):
    """Textbook cubic Hermite on [0, 1] with slopes per frame over an interval of h frames."""
    return ((2 * t**3 - 3 * t**2 + 1) * y0 + (t**3 - 2 * t**2 + t) * h * m0 + (-2 * t**3 + 3 * t**2) * y1
            + (t**3 - t**2) * h * m1)


def test_third_handles_evaluate_as_cubic_hermite():
    rng = np.random.default_rng(0)
    x0, h = 12.0, 9.0
    y0, y1, m0, m1 = rng.normal(size=4)
    times = x0 + np.linspace(0.1, h - 0.1, 37)
    got = K.evaluate_segments(times, np.full(37, x0), np.full(37, y0), np.full(37, x0 + h / 3),
                              np.full(37, y0 + m0 * h / 3), np.full(37, x0 + 2 * h / 3),
                              np.full(37, y1 - m1 * h / 3), np.full(37, x0 + h), np.full(37, y1))
    np.testing.assert_allclose(got, _hermite((times - x0) / h, y0, y1, m0, m1, h), atol=2e-6)


def test_solve_cubic_finds_the_root_in_unit_range_like_numpy():
    rng = np.random.default_rng(1)
    roots = rng.uniform(0.0, 1.0, size=200)
    others = rng.uniform(1.5, 4.0, size=(200, 2)) * rng.choice([-1, 1], size=(200, 2))
    coeffs = np.array([np.poly(np.concatenate([[r], o]))[::-1] for r, o in zip(roots, others)])  # c0..c3
    found_root, found = K._solve_cubic(*coeffs.T)
    assert found.all()
    np.testing.assert_allclose(found_root, roots, atol=1e-5)
    # quadratic, linear and constant branches
    root, ok = K._solve_cubic(np.array([-0.25, -0.5, 0.0, 1.0]), np.array([0.0, 1.0, 0.0, 0.0]),
                              np.array([1.0, 0.0, 0.0, 0.0]), np.zeros(4))
    np.testing.assert_allclose(root[:3], [0.5, 0.5, 0.0])
    assert ok.tolist() == [True, True, True, False]


def test_evaluate_fcurve_extrapolates_snaps_and_interpolates():
    kx = np.array([0.0, 10.0, 20.0, 30.0], dtype=np.float32)
    ky = np.array([1.0, 3.0, -1.0, 2.0], dtype=np.float32)
    ipo = np.array([K.INTERPOLATION_LINEAR, K.INTERPOLATION_CONSTANT, K.INTERPOLATION_BEZIER, K.INTERPOLATION_BEZIER])
    lx, ly, rx, ry = K.hermite_handles(kx, ky, np.zeros(4))
    t = np.array([-5.0, 0.0, 5.0, 10.00005, 15.0, 20.0, 25.0, 30.0, 99.0])
    got = K.evaluate_fcurve(kx, ky, lx, ly, rx, ry, ipo, t)
    assert got[0] == 1.0 and got[-1] == 2.0          # constant extrapolation
    assert got[2] == pytest.approx(2.0)              # linear half way
    assert got[3] == 3.0 and got[4] == 3.0           # within 1e-4 of a key: its value; then constant
    assert got[6] == pytest.approx(0.5, abs=1e-6)    # flat-tangent Hermite half way: the mean
    with pytest.raises(ValueError, match="CONSTANT, LINEAR and BEZIER"):
        K.evaluate_fcurve(kx, ky, lx, ly, rx, ry, np.array([1, 1, 5, 2]), t)


def test_overlong_handles_are_shortened_as_blender_does():
    # right handle of the first key reaches past the second key: Blender scales it back to the key interval
    got = K.evaluate_segments(np.array([5.0]), np.array([0.0]), np.array([0.0]), np.array([30.0]), np.array([3.0]),
                              np.array([8.0]), np.array([1.0]), np.array([10.0]), np.array([1.0]))
    fixed = K.evaluate_segments(np.array([5.0]), np.array([0.0]), np.array([0.0]), np.array([10.0]), np.array([1.0]),
                                np.array([8.0]), np.array([1.0]), np.array([10.0]), np.array([1.0]))
    assert got[0] == fixed[0]


def _smooth_quats(frames, rng):
    t = np.arange(frames)[:, None] / 30.0
    aa = 0.6 * np.sin(2 * np.pi * rng.uniform(0.2, 1.2, size=(1, 3)) * t + rng.uniform(0, 6, size=(1, 3)))
    return Q.make_continuous(Q.axis_angle_to_quat(aa + rng.normal(scale=0.002, size=aa.shape)))


def test_reduction_stays_within_tolerance_on_every_frame():
    rng = np.random.default_rng(2)
    frames = np.arange(1, 601, dtype=np.float64)
    quat = _smooth_quats(600, rng).astype(np.float32)
    scalar = (np.sin(frames / 13.0) + rng.normal(scale=0.003, size=600)).astype(np.float32)
    vector = (0.2 * np.sin(frames[:, None] / [20.0, 31.0, 47.0]) + rng.normal(scale=1e-4, size=(600, 3)))
    vector = vector.astype(np.float32)
    results = K.reduce_groups(frames, [(quat, "quaternion", 1.0), (scalar, "scalar", 0.01),
                                       (vector, "vector", 0.001)])
    for keys, dense, kind, tol in zip(results, (quat, scalar, vector), ("quaternion", "scalar", "vector"),
                                      (1.0, 0.01, 0.001)):
        assert keys.frames[0] == 1 and keys.frames[-1] == 600  # the take's ends are keys
        assert len(keys.frames) < 600 / 3
        error = K.curve_error(frames, dense, keys, kind)
        assert error.max() <= tol and keys.max_error == pytest.approx(error.max())
        # key values are fitted, not copied: a key may sit off the dense sample, within tolerance
        assert K.group_error(kind, keys.values, np.asarray(dense).reshape(600, -1)[keys.indices]).max() <= tol


def test_a_cubic_needs_only_its_two_end_keys_and_noise_keeps_every_key():
    frames = np.arange(0, 50, dtype=np.float64)
    cubic = 0.001 * (frames - 20.0) ** 3 / 50.0 + 0.3 * frames
    keys = K.reduce_groups(frames, [(cubic, "scalar", 0.01)])[0]
    assert len(keys.frames) <= 3
    noise = np.random.default_rng(3).normal(size=50)
    keys = K.reduce_groups(frames, [(noise, "scalar", 1e-4)])[0]
    # white noise cannot be compressed: a key carries two numbers (value, slope), so at least half the frames stay
    assert 2 * len(keys.frames) >= 45 and keys.max_error <= 1e-4


def test_quaternion_error_is_the_rotation_angle():
    q = Q.axis_angle_to_quat(np.array([[0.0, 0.0, 0.0]]))
    r = Q.axis_angle_to_quat(np.array([[0.0, np.radians(3.0), 0.0]]))
    assert K.group_error("quaternion", r * 2.0, q)[0] == pytest.approx(3.0)  # normalized first, sign-free
    assert K.group_error("quaternion", -r, q)[0] == pytest.approx(3.0)


def test_bad_input_raises_one_line_errors():
    frames = np.arange(10.0)
    with pytest.raises(ValueError, match="increasing frames"):
        K.reduce_groups(frames[::-1], [(np.zeros(10), "scalar", 0.1)])
    with pytest.raises(ValueError, match="unknown channel group kind"):
        K.reduce_groups(frames, [(np.zeros(10), "euler", 0.1)])
    with pytest.raises(ValueError, match="tolerance must be positive"):
        K.reduce_groups(frames, [(np.zeros(10), "scalar", 0.0)])
    with pytest.raises(ValueError, match="9 samples for 10 frames"):
        K.reduce_groups(frames, [(np.zeros(9), "scalar", 0.1)])


def test_fast_hermite_path_matches_the_exact_replica_at_large_frames():
    rng = np.random.default_rng(4)
    x0 = 17000.0 + rng.integers(0, 500, size=50).astype(np.float64)
    x3 = x0 + rng.integers(2, 40, size=50)
    y0, y3, m0, m3 = (rng.normal(size=(50, 4)) for _ in range(4))
    seg = np.repeat(np.arange(50), 7)
    times = x0[seg] + np.floor(rng.uniform(1, 1, size=len(seg)) * (x3 - x0)[seg] * np.tile(np.arange(1, 8) / 8, 50))
    fast = K.hermite_sample_values(times, seg, *K.hermite_coefficients(x0, y0, m0, x3, y3, m3))
    third = ((x3 - x0) / 3.0)[seg]
    exact = K.evaluate_segments(times, x0[seg], y0[seg], x0[seg] + third, y0[seg] + m0[seg] * third[:, None],
                                x3[seg] - third, y3[seg] - m3[seg] * third[:, None], x3[seg], y3[seg])
    np.testing.assert_allclose(fast, exact, atol=2e-6)


def test_fitted_key_values_need_fewer_keys_than_keys_on_the_samples():
    # a smooth curve with noise well inside the tolerance: keys through the samples waste the band, fitted keys use it
    rng = np.random.default_rng(5)
    frames = np.arange(900, dtype=np.float64)
    values = (np.sin(frames / 9.0) + 0.5 * np.sin(frames / 4.0) + rng.normal(scale=0.002, size=900))[None, :, None]
    on_samples = K._Batch(frames, values, "scalar", [0.01]).reduce(rounds=0).sum()
    batch = K._Batch(frames, values, "scalar", [0.01])
    keep = batch.reduce()
    assert keep.sum() < 0.8 * on_samples
    keys = batch.keys_of(keep)[0]
    assert K.curve_error(frames, values[0], keys, "scalar").max() <= 0.01
