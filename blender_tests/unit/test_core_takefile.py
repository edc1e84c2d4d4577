"""Take .npz reading, validation and writing (addon/core/takefile.py): pure, no bpy."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import quaternions as Q  # noqa: E402
from core import takefile as TF  # noqa: E402

BEAT2 = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "beat2", "2_scott_0_1_1.npz")


def _arrays(frames=12, **overrides):
    rng = np.random.default_rng(0)
    data = {"poses": rng.normal(size=(frames, 165)).astype(np.float32) * 0.2,
            "trans": rng.normal(size=(frames, 3)), "expressions": rng.normal(size=(frames, 100)),
            "betas": np.zeros(10), "gender": np.array("neutral"), "mocap_frame_rate": np.array(30)}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def _save(tmp_path, name="take.npz", **arrays):
    path = str(tmp_path / name)
    np.savez(path, **arrays)
    return path


def test_reads_the_beat2_example():
    if not os.path.isfile(BEAT2):
        pytest.skip("shared BEAT2 data not found")
    take = TF.read_take(BEAT2)
    assert take.frames == 1906 and take.fps == 30.0
    assert take.poses.shape == (1906, 55, 3) and take.poses.dtype == np.float32
    assert take.expressions.shape == (1906, 100) and take.trans.shape == (1906, 3)
    assert take.generated_joints.all() and take.up_axis == "Y"
    assert take.duration == pytest.approx(63.5)


def test_accepts_the_other_frame_rate_key_and_joint_shaped_poses(tmp_path):
    data = _arrays(mocap_frame_rate=None, mocap_framerate=np.array(25.0))
    data["poses"] = data["poses"].reshape(12, 55, 3)
    take = TF.read_take(_save(tmp_path, **data))
    assert take.fps == 25.0 and take.poses.shape == (12, 55, 3)
    assert take.up_axis == "Z"  # mocap_framerate is AMASS's spelling; AMASS is Z-up


def test_smplh_poses_are_widened_without_jaw_and_eyes(tmp_path):
    data = _arrays(frames=5, poses=np.full((5, 156), 0.1, np.float32))
    take = TF.read_take(_save(tmp_path, **data))
    assert take.poses.shape == (5, 55, 3)
    assert not take.generated_joints[[22, 23, 24]].any() and take.generated_joints.sum() == 52
    assert np.all(take.poses[:, 22] == 0) and np.all(take.poses[:, 25] == np.float32(0.1))


def test_generated_joints_marks_the_driven_bones(tmp_path):
    mask = np.zeros(55, bool)
    mask[[3, 6, 9]] = True
    take = TF.read_take(_save(tmp_path, **_arrays(generated_joints=mask)))
    np.testing.assert_array_equal(take.generated_joints, mask)


@pytest.mark.parametrize("change,message", [
    (dict(poses=None), "no 'poses'"),
    (dict(poses=np.zeros((12, 160))), "160 values a frame"),
    (dict(poses=np.zeros((12, 5, 3))), "shape"),
    (dict(poses=np.zeros((0, 165))), "no frames"),
    (dict(mocap_frame_rate=None), "no frame rate"),
    (dict(mocap_frame_rate=np.array(0.0)), "positive"),
    (dict(mocap_frame_rate=np.array(np.nan)), "positive"),
    (dict(trans=np.zeros((11, 3))), "trans has shape"),
    (dict(expressions=np.zeros((12,))), "expressions has shape"),
    (dict(generated_joints=np.ones(52, bool)), "generated_joints"),
], ids=["missing-poses", "wrong-width", "wrong-joints", "empty", "no-fps", "zero-fps", "nan-fps", "trans-length",
        "expressions-1d", "mask-length"])
def test_bad_files_raise_one_line_value_errors(tmp_path, change, message):
    path = _save(tmp_path, **_arrays(**change))
    with pytest.raises(ValueError, match=message) as info:
        TF.read_take(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("key", ["poses", "trans", "expressions"])
def test_nan_values_are_reported_with_their_frame(tmp_path, key):
    data = _arrays()
    data[key] = np.array(data[key], dtype=np.float32)
    data[key][7, 1] = np.nan
    with pytest.raises(ValueError, match=f"{key} has NaN.*frame 7"):
        TF.read_take(_save(tmp_path, **data))


def test_missing_file_and_non_npz_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        TF.read_take(str(tmp_path / "nope.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip")
    with pytest.raises(ValueError, match="cannot read take junk.npz"):
        TF.read_take(str(junk))
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz"):
        TF.read_take(str(single))


def test_pickled_object_arrays_are_never_loaded(tmp_path):
    data = _arrays()
    data["poses"] = np.array([data["poses"]], dtype=object)
    with pytest.raises(ValueError, match="cannot read"):
        TF.read_take(_save(tmp_path, **data))


def test_write_then_read_round_trips_every_field(tmp_path):
    source = TF.take_from_arrays(_arrays(generated_joints=np.arange(55) % 2 == 0, model_id=np.array("show-tiny"),
                                         seed=np.array(7), audio_file=np.array("/x/a.wav")))
    path = str(tmp_path / "out.npz")
    TF.write_take(path, source)
    back = TF.read_take(path)
    np.testing.assert_array_equal(back.poses, source.poses)
    np.testing.assert_array_equal(back.trans, source.trans)
    np.testing.assert_array_equal(back.expressions, source.expressions)
    np.testing.assert_array_equal(back.generated_joints, source.generated_joints)
    assert (back.fps, back.model_id, back.seed, back.audio_file) == (30.0, "show-tiny", 7, "/x/a.wav")
    with np.load(path) as z:  # readable by AMASS/BEAT2 tools: flat (T, 165) float32 poses
        assert z["poses"].shape == (12, 165) and z["poses"].dtype == np.float32
        assert float(z["mocap_frame_rate"]) == 30.0


def test_write_leaves_nothing_behind_on_failure(tmp_path):
    take = TF.take_from_arrays(_arrays())
    with pytest.raises(ValueError, match="does not exist"):
        TF.write_take(str(tmp_path / "missing" / "x.npz"), take)
    assert os.listdir(tmp_path) == []
    (tmp_path / "a folder").mkdir()
    with pytest.raises(ValueError, match="cannot write take"):  # the target name is taken by a folder
        TF.write_take(str(tmp_path / "a folder"), take)
    (tmp_path / "a folder").rmdir()
    take.poses = take.poses[:, :, :2]  # a take that cannot be flattened to (T, 165): no temporary file left
    with pytest.raises(ValueError):
        TF.write_take(str(tmp_path / "x.npz"), take)
    np.savez(str(tmp_path / "probe.npz"), a=np.zeros(1))
    assert sorted(os.listdir(tmp_path)) == ["probe.npz"]


def test_z_up_takes_turn_into_y_up():
    data = _arrays(frames=3, up_axis=np.array("Z"))
    data["poses"] = np.zeros((3, 165), np.float32)
    data["trans"] = np.array([[0, 0, 1.0], [0, 1.0, 1.0], [1.0, 0, 1.0]])
    take = TF.y_up(TF.take_from_arrays(data))
    assert take.up_axis == "Y"
    np.testing.assert_allclose(take.trans, [[0, 1, 0], [0, 1, -1], [1, 1, 0]], atol=1e-7)  # Z up -> Y up
    np.testing.assert_allclose(take.poses[:, 0], [[-np.pi / 2, 0, 0]] * 3, atol=1e-6)
    # other joints untouched
    assert np.all(take.poses[:, 1:] == 0)
    y = TF.take_from_arrays(_arrays())
    assert TF.y_up(y) is y
    np.testing.assert_allclose(Q.quat_to_axis_angle(Q.axis_angle_to_quat(take.poses[0, 0])), take.poses[0, 0],
                               atol=1e-6)
