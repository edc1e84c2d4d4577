"""Resampling a take to the scene frame rate by time (addon/core/resample.py): pure, no bpy."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import quaternions as Q  # noqa: E402
from core import resample as R  # noqa: E402

RATES = [(24, 1.0), (25, 1.0), (30, 1.0), (60, 1.0), (30000, 1001.0)]
RATE_IDS = ["24", "25", "30", "60", "29.97"]
# a 30 fps take of 1906 frames (63.5 s, the BEAT2 example): expected keys = floor(63.5 * fps) + 1
EXPECTED_COUNTS = {"24": 1525, "25": 1588, "30": 1906, "60": 3811, "29.97": 1904}


def test_scene_fps_divides_by_base():
    assert R.scene_fps(30000, 1001) == pytest.approx(29.97002997)
    assert R.scene_fps(30, 1.001) == pytest.approx(29.97002997)
    with pytest.raises(ValueError, match="positive"):
        R.scene_fps(0, 1.0)


@pytest.mark.parametrize("fps,base", RATES, ids=RATE_IDS)
def test_key_count_follows_the_documented_rule(fps, base):
    rate = R.scene_fps(fps, base)
    count = R.frame_count(1906, 30.0, rate)
    assert count == EXPECTED_COUNTS[RATE_IDS[RATES.index((fps, base))]]
    times = R.key_times(count, rate)
    assert times[-1] <= 63.5 + 1e-9  # no key after the take's last frame
    assert times[-1] > 63.5 - 1.0 / rate  # ...and the last key is within one scene frame of it


@pytest.mark.parametrize("fps,base", RATES, ids=RATE_IDS)
def test_positions_are_the_key_times_in_take_frames(fps, base):
    rate = R.scene_fps(fps, base)
    pos = R.source_positions(1906, 30.0, rate)
    np.testing.assert_allclose(pos, R.key_times(len(pos), rate) * 30.0, atol=1e-9)
    assert pos[0] == 0.0 and pos[-1] <= 1905.0
    assert np.all(np.diff(pos) > 0)


def test_equal_rates_copy_values_exactly():
    rng = np.random.default_rng(0)
    q = Q.make_continuous(Q.axis_angle_to_quat(rng.normal(size=(300, 5, 3))))
    pos = R.source_positions(300, 30.0, 30.0)
    np.testing.assert_array_equal(pos, np.arange(300))
    np.testing.assert_array_equal(R.resample_quats(q, pos), q)
    v = rng.normal(size=(300, 100))
    np.testing.assert_array_equal(R.resample_linear(v, pos), v)


def test_exact_multiples_keep_their_last_key():
    # 2 s at 25 fps in a 24 fps scene: 48 scene frames after the first -> 49 keys
    assert R.frame_count(51, 25.0, 24.0) == 49
    # 10 s take at 30 fps in a 29.97 scene: 299.7 frames -> 300 keys
    assert R.frame_count(301, 30.0, 30000 / 1001) == 300


def test_linear_resampling_of_a_ramp_is_exact():
    take = np.arange(91, dtype=np.float64)[:, None] * [1.0, -2.0]  # value = take frame index
    for rate in (24.0, 25.0, 60.0, 30000 / 1001):
        pos = R.source_positions(91, 30.0, rate)
        out = R.resample_linear(take, pos)
        np.testing.assert_allclose(out[:, 0], R.key_times(len(pos), rate) * 30.0, atol=1e-9)
        np.testing.assert_allclose(out[:, 1], -2.0 * out[:, 0], atol=1e-9)


def test_rotation_resampling_is_slerp_at_the_key_time():
    # constant angular speed about one axis: slerp must give the exact angle at any time
    speed = 2.0  # rad/s
    angles = np.arange(31) / 30.0 * speed
    q = Q.axis_angle_to_quat(np.outer(angles, [0.0, 0.0, 1.0]))[:, None, :]
    pos = R.source_positions(31, 30.0, 24.0)
    out = R.resample_quats(q, pos)[:, 0]
    expected = Q.axis_angle_to_quat(np.outer(R.key_times(len(pos), 24.0) * speed, [0.0, 0.0, 1.0]))
    np.testing.assert_allclose(out, expected, atol=1e-14)


def test_a_one_frame_take_gives_one_key():
    assert R.frame_count(1, 30.0, 24.0) == 1
    np.testing.assert_array_equal(R.source_positions(1, 30.0, 24.0), [0.0])


def test_take_frames_in_scene_inverts_the_mapping():
    frames = R.take_frames_in_scene(4, 30.0, 24.0, start_frame=10)
    np.testing.assert_allclose(frames, [10.0, 10.8, 11.6, 12.4])


def test_bad_rates_are_rejected():
    with pytest.raises(ValueError, match="positive"):
        R.frame_count(10, 0.0, 24.0)
    with pytest.raises(ValueError, match="no frames"):
        R.frame_count(0, 30.0, 24.0)
