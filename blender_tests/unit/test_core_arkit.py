"""ARKit weights from the jaw (addon/core/arkit.py) and their use by core.channels: pure, no bpy."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import arkit, channels, smplx  # noqa: E402
from core.takefile import Take  # noqa: E402

SHARED = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data"))
BEAT2 = os.path.join(SHARED, "beat2", "2_scott_0_1_1.npz")
BEAT_ARKIT_MEAN = os.path.join(SHARED, "diffsheg_stats", "BEAT", "json_mean.npy")


def test_opening_angle_is_the_chin_turned_down_about_the_left_axis():
    aa = np.array([[np.radians(5.0), 0, 0], [-np.radians(4.0), 0, 0], [0, np.radians(20.0), 0]])
    np.testing.assert_allclose(arkit.jaw_opening_degrees(aa), [5.0, -4.0, 0.0], atol=1e-9)
    names, weights = arkit.weights_from_jaw(aa)
    assert names == ("jawOpen",) and weights.shape == (3, 1)
    np.testing.assert_allclose(weights[:, 0], [5.0 * arkit.JAW_OPEN_PER_DEGREE, 0.0, 0.0], atol=1e-6)
    assert arkit.weights_from_jaw(np.array([[1.0, 0, 0]]))[1][0, 0] == 1.0  # wide open clips at 1


@pytest.mark.skipif(not (os.path.isfile(BEAT2) and os.path.isfile(BEAT_ARKIT_MEAN)), reason="shared data not here")
def test_jaw_open_scale_is_the_documented_moment_match():
    jaw = np.load(BEAT2)["poses"][:, 66:69].astype(np.float64)
    mean_open = np.load(BEAT_ARKIT_MEAN)[smplx.ARKIT_NAMES.index("jawOpen")]
    opening = np.maximum(arkit.jaw_opening_degrees(jaw), 0.0).mean()
    assert abs(mean_open / opening - arkit.JAW_OPEN_PER_DEGREE) < 5e-4


def test_show_layout_take_drives_jaw_open_on_arkit_keys():
    frames = 30
    poses = np.zeros((frames, 55, 3), dtype=np.float32)
    poses[:, smplx.JAW, 0] = np.radians(np.linspace(0.0, 5.0, frames))
    take = Take(poses=poses, fps=30.0, expressions=np.zeros((frames, 100), np.float32))
    plan = channels.build_channels(take, bone_names={}, arkit_keys={"jawOpen": "JawOpen", "mouthClose": "mouthClose"},
                                   parts="face", target_fps=30.0, start_frame=1)
    assert [c.data_path for c in plan.shape_channels] == ['key_blocks["JawOpen"].value']
    np.testing.assert_allclose(plan.shape_channels[0].values, np.linspace(0, 5, frames) * arkit.JAW_OPEN_PER_DEGREE,
                               atol=1e-5)
