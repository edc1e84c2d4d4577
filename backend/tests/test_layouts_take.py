import os

import numpy as np
import pytest

from sheg.errors import BadInput
from sheg.motion.layouts import (ARKIT_NAMES, BEAT, BEAT_JOINT_NAMES, SHOW, SHOW_GESTURE_JOINTS, show_vector_from_take,
                          take_from_beat_vector, take_from_show_vector)
from sheg.io.take import read_take, write_take

BEAT2 = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "beat2", "2_scott_0_1_1.npz")


def test_layout_sizes_match_the_official_models():
    assert (SHOW.gesture_dim, SHOW.expression_dim, SHOW.dim) == (129, 103, 232)
    assert (BEAT.gesture_dim, BEAT.expression_dim, BEAT.dim) == (141, 51, 192)
    assert len(BEAT_JOINT_NAMES) == 47 and len(set(BEAT_JOINT_NAMES)) == 47
    assert len(ARKIT_NAMES) == 51 and "tongueOut" not in ARKIT_NAMES
    assert list(ARKIT_NAMES) == sorted(ARKIT_NAMES, key=str.lower)


def test_show_vector_round_trip_on_real_motion():
    if not os.path.exists(BEAT2):
        pytest.skip("shared BEAT2 take not present")
    data = np.load(BEAT2)
    poses, expr = data["poses"][:100], data["expressions"][:100]
    vec = show_vector_from_take(poses, expr)
    assert vec.shape == (100, 232)
    # spine1 is SMPL-X joint 3 at columns 9:12 of the take; jaw joint 22 at 66:69.
    np.testing.assert_allclose(vec[:, 0:3], poses[:, 9:12], rtol=1e-6)
    np.testing.assert_allclose(vec[:, 129:132], poses[:, 66:69], rtol=1e-6)
    back = take_from_show_vector(vec)
    gen = back["generated_joints"]
    assert gen.sum() == len(SHOW_GESTURE_JOINTS) + 1
    assert not gen[0] and not gen[1] and not gen[23]  # pelvis, left hip, left eye stay rest
    joints = back["poses"].reshape(100, 55, 3)
    np.testing.assert_allclose(joints[:, gen], poses.reshape(100, 55, 3)[:, gen], rtol=1e-6)
    assert np.all(joints[:, ~gen] == 0)
    np.testing.assert_allclose(back["expressions"], expr, rtol=1e-6)


def test_beat_vector_keeps_joints_and_arkit_apart():
    vec = np.random.default_rng(0).standard_normal((10, 192)).astype(np.float32)
    out = take_from_beat_vector(vec)
    assert out["beat_poses"].shape == (10, 47, 3) and out["arkit_weights"].shape == (10, 51)
    assert not out["generated_joints"].any()


def test_take_write_read_round_trip(tmp_path):
    vec = np.random.default_rng(1).standard_normal((40, 232)).astype(np.float32)
    arrays = take_from_show_vector(vec)
    path = tmp_path / "take.npz"
    write_take(str(path), arrays, fps=30.0, meta={"model_id": "m", "seed": 3})
    take = read_take(str(path))
    assert take["fps"] == 30.0 and take["poses"].shape == (40, 165) and take["expressions"].shape == (40, 100)
    assert take["trans"].shape == (40, 3) and str(take["gender"]) == "neutral" and int(take["seed"]) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["take.npz"]  # no temporary left behind


def test_take_write_failure_leaves_nothing(tmp_path):
    path = tmp_path / "take.npz"
    with pytest.raises(KeyError):
        write_take(str(path), {"poses": np.zeros((3, 165))}, fps=30.0, meta={})
    assert list(tmp_path.iterdir()) == []


def test_read_take_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, poses=np.zeros((5, 99)), mocap_frame_rate=30)
    with pytest.raises(BadInput, match="165"):
        read_take(str(bad))
    nofps = tmp_path / "nofps.npz"
    np.savez(nofps, poses=np.zeros((5, 165)))
    with pytest.raises(BadInput, match="frame_rate"):
        read_take(str(nofps))
    if os.path.exists(BEAT2):
        assert read_take(BEAT2)["fps"] == 30.0
