"""Zero-phase low-pass smoothing of take channels (addon/core/smoothing.py) and channel groups (core/channels.py)."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import channels as C  # noqa: E402
from core import quaternions as Q  # noqa: E402
from core import smoothing as S  # noqa: E402

FPS = 30.0


def test_strength_zero_is_off_and_ramps_survive_any_strength():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3))
    np.testing.assert_array_equal(S.lowpass(x, FPS, 0.0), x)
    ramp = np.stack([np.full(200, 0.7), 0.01 * np.arange(200) - 0.3], axis=1)  # constant and linear
    np.testing.assert_allclose(S.lowpass(ramp, FPS, 1.0), ramp, atol=1e-9)


def test_jitter_is_removed_without_phase_lag():
    t = np.arange(300) / FPS
    slow = np.sin(2 * np.pi * 0.5 * t)
    jitter = 0.05 * np.random.default_rng(1).normal(size=300)
    out = S.lowpass(slow + jitter, FPS, 0.5)  # cutoff ~3.7 Hz
    assert np.abs(out - slow)[20:-20].std() < 0.4 * jitter.std()
    assert np.abs(out - slow)[20:-20].max() < 0.06
    peak = int(np.argmax(slow[:60]))
    assert abs(int(np.argmax(out[:60])) - peak) <= 1  # zero phase: the peak stays on its frame


def test_cutoff_runs_from_near_nyquist_to_one_hertz():
    assert S.cutoff_hz(0.0, FPS) == pytest.approx(13.5)
    assert S.cutoff_hz(1.0, FPS) == pytest.approx(1.0)
    assert 3.0 < S.cutoff_hz(0.5, FPS) < 4.5


def test_quaternions_stay_unit_and_bad_strength_raises():
    rng = np.random.default_rng(2)
    q = Q.make_continuous(Q.axis_angle_to_quat(np.cumsum(rng.normal(scale=0.05, size=(120, 2, 3)), axis=0)))
    out = S.smooth_quaternions(q, FPS, 0.7)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="between 0 and 1"):
        S.lowpass(q, FPS, 1.5)


def test_channel_groups_and_smoothing_keep_each_channel_in_its_group():
    n = 60
    rng = np.random.default_rng(3)
    q = Q.axis_angle_to_quat(rng.normal(scale=0.1, size=(n, 3))).astype(np.float32)
    chans = [C.Channel(C.rotation_path("jaw"), i, "Jaw", q[:, i]) for i in (2, 0, 3, 1)]
    chans += [C.Channel(C.location_path("pelvis"), i, "Spine", rng.normal(size=n).astype(np.float32))
              for i in range(3)]
    chans += [C.Channel(C.shape_key_path("Exp001"), 0, "Expressions", rng.normal(size=n).astype(np.float32))]
    chans += [C.Channel(C.rotation_path("head"), 0, "Neck & Head", q[:, 0])]  # incomplete quaternion
    groups = C.channel_groups(chans)
    assert [(kind, [c.index for c in members]) for _, kind, members in groups] == [
        ("quaternion", [0, 1, 2, 3]), ("vector", [0, 1, 2]), ("scalar", [0]), ("scalar", [0])]
    smoothed = C.smooth_channels(chans, FPS, 0.5)
    assert sorted((c.data_path, c.index, c.group) for c in smoothed) == sorted(
        (c.data_path, c.index, c.group) for c in chans)
    jaw = np.stack([c.values for c in smoothed if c.data_path == C.rotation_path("jaw")], axis=1)
    np.testing.assert_allclose(np.linalg.norm(jaw, axis=1), 1.0, atol=1e-6)
    assert all(c.values.dtype == np.float32 for c in smoothed)
    assert C.smooth_channels(chans, FPS, 0.0) == chans
    tol = dict(rotation_tolerance_deg=1.0, location_tolerance=0.001, shape_tolerance=0.01)
    assert C.group_tolerance("quaternion", C.rotation_path("jaw"), **tol) == 1.0
    assert C.group_tolerance("scalar", C.shape_key_path("Exp001"), **tol) == 0.01
    assert C.group_tolerance("scalar", C.rotation_path("head"), **tol) == pytest.approx(np.radians(1.0) / 2)
