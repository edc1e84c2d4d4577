"""Take <-> F-curve channel values (addon/core/channels.py) and the SMPL-X facts it relies on: pure, no bpy."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import channels as C  # noqa: E402
from core import quaternions as Q  # noqa: E402
from core import smplx, standin  # noqa: E402
from core import takefile as TF  # noqa: E402

ALL_BONES = {n: n for n in smplx.JOINT_NAMES}


def _take(frames=31, fps=30.0, generated=None, arkit=False):
    rng = np.random.default_rng(0)
    data = {"poses": (rng.normal(size=(frames, 165)) * 0.3).astype(np.float32),
            "trans": np.cumsum(rng.normal(size=(frames, 3)) * 0.01, axis=0) + [0.2, 1.3, -0.4],
            "expressions": rng.normal(size=(frames, 100)), "mocap_frame_rate": np.array(fps)}
    if generated is not None:
        data["generated_joints"] = generated
    if arkit:
        data["arkit_weights"] = rng.uniform(size=(frames, 51))
    return TF.take_from_arrays(data)


def test_smplx_tables_are_consistent():
    assert len(smplx.JOINT_NAMES) == len(smplx.PARENTS) == len(smplx.BODY_PART) == 55
    assert all(p < j for j, p in enumerate(smplx.PARENTS))  # parents come first
    assert set(smplx.BODY_PART) <= set(smplx.GROUP_NAMES)
    assert smplx.BODY_PART[smplx.JOINT_INDEX["left_index2"]] == "Left Hand"
    assert smplx.BODY_PART[smplx.JOINT_INDEX["right_elbow"]] == "Right Arm"
    assert smplx.BODY_PART[smplx.JOINT_INDEX["left_knee"]] == "Legs"
    assert smplx.BODY_PART[smplx.JAW] == "Jaw"
    assert smplx.STANDIN_REST_JOINTS.shape == (55, 3)
    # a human: head above pelvis above feet, left joints at +x, arms out in a T-pose
    j = {n: smplx.STANDIN_REST_JOINTS[i] for i, n in enumerate(smplx.JOINT_NAMES)}
    assert j["head"][1] > j["neck"][1] > j["pelvis"][1] > j["left_knee"][1] > j["left_ankle"][1]
    assert j["left_wrist"][0] > j["left_elbow"][0] > j["left_shoulder"][0] > 0 > j["right_shoulder"][0]
    np.testing.assert_allclose(j["pelvis"], 0.0)
    assert 0.0 < j["left_foot"][1] + smplx.STANDIN_PELVIS_HEIGHT < 0.05  # soles just under the foot joints
    np.testing.assert_allclose(smplx.smplx_to_blender([[1.0, 2.0, 3.0]]), [[1.0, -3.0, 2.0]])


def test_standin_meshes_are_closed_weighted_and_expressive():
    body = standin.body_mesh()
    assert len(body.vertices) > 400 and max(max(f) for f in body.faces) < len(body.vertices)
    assert set(body.groups) == set(smplx.JOINT_NAMES) - {"jaw"}
    face = standin.face_mesh()
    assert face.shape_deltas.shape == (100, len(face.vertices), 3)
    head_w, jaw_w = face.groups["head"][1], face.groups["jaw"][1]
    np.testing.assert_allclose(head_w + jaw_w, 1.0)
    assert jaw_w.max() == pytest.approx(1.0) and (jaw_w > 0).sum() > 20
    reach = np.linalg.norm(face.shape_deltas, axis=-1).max(axis=1)  # (100,) largest displacement per key
    assert np.all(reach > 0.002) and np.all(reach <= standin.EXPRESSION_AMPLITUDE + 1e-12)
    flat = face.shape_deltas.reshape(100, -1)
    gaps = np.linalg.norm(flat[:, None] - flat[None], axis=-1) + np.eye(100)
    assert gaps.min() > 1e-3  # every key is its own deformation


def test_equal_rates_key_the_take_exactly():
    take = _take()
    plan = C.build_channels(take, bone_names=ALL_BONES, target_fps=30.0, start_frame=5,
                            expression_keys={i: f"Exp{i:03d}" for i in range(100)})
    np.testing.assert_array_equal(plan.frames, np.arange(5, 36))
    assert plan.joints == list(smplx.JOINT_NAMES)
    assert len(plan.bone_channels) == 55 * 4 + 3 and len(plan.shape_channels) == 100
    q = Q.make_continuous(Q.axis_angle_to_quat(take.poses.astype(np.float64)))
    got = np.stack([ch.values for ch in plan.bone_channels[:220]], axis=1).reshape(31, 55, 4)
    np.testing.assert_allclose(got, q, atol=1e-7)
    assert got.dtype == np.float32
    first = plan.bone_channels[0]
    assert (first.data_path, first.index, first.group) == ('pose.bones["pelvis"].rotation_quaternion', 0, "Spine")
    loc = np.stack([ch.values for ch in plan.bone_channels[220:]], axis=1)
    np.testing.assert_allclose(loc, take.trans - take.trans[0], atol=1e-6)  # relative to the first frame
    np.testing.assert_allclose(plan.trans_origin, take.trans[0])
    assert plan.shape_channels[3].data_path == 'key_blocks["Exp003"].value'


def test_only_generated_joints_of_the_chosen_part_are_keyed():
    upper = np.zeros(55, bool)
    upper[list(range(25, 55)) + [3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22]] = True
    take = _take(generated=upper)
    plan = C.build_channels(take, bone_names=ALL_BONES, target_fps=24.0, start_frame=1)
    assert set(plan.joints) == {smplx.JOINT_NAMES[j] for j in np.flatnonzero(upper)}
    assert plan.trans_origin is None  # pelvis not generated: trans left alone
    body = C.build_channels(take, bone_names=ALL_BONES, target_fps=24.0, start_frame=1, parts="body")
    assert "jaw" not in body.joints and not body.shape_channels
    face = C.build_channels(take, bone_names=ALL_BONES, target_fps=24.0, start_frame=1, parts="face",
                            expression_keys={i: f"Exp{i:03d}" for i in range(10)})
    assert face.joints == ["jaw"] and len(face.shape_channels) == 10
    with pytest.raises(ValueError, match="unknown parts"):
        C.build_channels(take, bone_names=ALL_BONES, target_fps=24.0, start_frame=1, parts="legs")


def test_joints_missing_on_the_rig_are_reported():
    bones = {n: n for n in smplx.JOINT_NAMES[:22]}
    plan = C.build_channels(_take(), bone_names=bones, target_fps=30.0, start_frame=1)
    assert len(plan.joints) == 22 and "left_index1" in plan.missing_joints and "jaw" in plan.missing_joints


def test_resampled_keys_land_at_scene_times():
    take = _take(frames=61)
    plan = C.build_channels(take, bone_names=ALL_BONES, target_fps=24.0, start_frame=1)
    assert len(plan.frames) == 49  # 2 s at 24 fps
    # scene key 5 lies at 5/24 s = take frame 6.25
    q = Q.make_continuous(Q.axis_angle_to_quat(take.poses.astype(np.float64)))
    expected = Q.slerp(q[6], q[7], np.full(55, 0.25))
    got = np.array([[plan.bone_channels[4 * j + a].values[5] for a in range(4)] for j in range(55)])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert not plan.shape_channels  # no shape keys were given: no expression channels


def test_bone_frames_conjugate_and_export_inverts_everything():
    take = _take()
    rolled = {n: Q.axis_angle_to_quat(np.array([0.0, 0.7, 0.0])) for n in ("pelvis", "left_elbow")}
    plan = C.build_channels(take, bone_names=ALL_BONES, bone_frames=rolled, target_fps=30.0, start_frame=1,
                            expression_keys={i: f"Exp{i:03d}" for i in range(100)})
    values = {}
    for ch in plan.bone_channels + plan.shape_channels:
        values.setdefault(ch.data_path, {})[ch.index] = ch.values
    rotations = {n: np.stack([values[C.rotation_path(n)][i] for i in range(4)], axis=1) for n in smplx.JOINT_NAMES}
    location = np.stack([values[C.location_path("pelvis")][i] for i in range(3)], axis=1)
    expressions = {i: values[C.shape_key_path(f"Exp{i:03d}")][0] for i in range(100)}
    back = C.take_from_channels(fps=30.0, frames=31, rotations=rotations, location=location,
                                expressions=expressions, bone_frames=rolled, trans_origin=plan.trans_origin,
                                model_id="m", seed=3)
    np.testing.assert_allclose(back.poses, take.poses, atol=2e-6)
    np.testing.assert_allclose(back.trans, take.trans, atol=1e-6)
    np.testing.assert_allclose(back.expressions, take.expressions, atol=1e-6)
    assert back.generated_joints.all() and back.seed == 3 and back.model_id == "m"
    # the rolled elbow really got different key values than the take's own quaternion
    raw = Q.axis_angle_to_quat(take.poses[0, smplx.JOINT_INDEX["left_elbow"]].astype(np.float64))
    assert np.abs(rotations["left_elbow"][0] - raw).max() > 1e-3


def test_arkit_weights_drive_arkit_keys_by_name():
    take = _take(arkit=True)
    keys = {"jawOpen": "JawOpen", "eyeBlinkLeft": "eyeBlinkLeft"}
    plan = C.build_channels(take, bone_names=ALL_BONES, arkit_keys=keys, target_fps=30.0, start_frame=1)
    paths = {ch.data_path: ch.values for ch in plan.shape_channels}
    assert set(paths) == {'key_blocks["JawOpen"].value', 'key_blocks["eyeBlinkLeft"].value'}
    column = smplx.ARKIT_NAMES.index("jawOpen")
    np.testing.assert_allclose(paths['key_blocks["JawOpen"].value'], take.arkit_weights[:, column], atol=1e-7)


def test_paths_quote_and_parse_back():
    path = C.rotation_path('odd "bone"')
    assert C.parse_path(path) == ("bone", 'odd "bone"', "rotation_quaternion")
    assert C.parse_path(C.shape_key_path("Exp007")) == ("key", "Exp007", "value")
    assert C.parse_path("location") is None
