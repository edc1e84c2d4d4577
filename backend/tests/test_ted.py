"""TED skeletons and the retarget onto SMPL-X, checked with the stand-in skeleton's own forward kinematics."""

import numpy as np
import pytest

from sheg.motion import skeleton
from sheg.errors import BadInput
from sheg.io.take import read_take, write_take
from sheg.motion.ted import (TED10, TED43, dir_vec_from_smplx, dir_vec_to_joints, generated_joints, get_ted_layout,
                      joints_to_dir_vec, normalize_dirs, retarget, rotation_to_axis_angle, take_arrays, to_smplx_axes)

# SMPL-X joints
SPINE1, SPINE2, SPINE3, NECK, L_COLLAR, R_COLLAR, HEAD = 3, 6, 9, 12, 13, 14, 15
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 16, 17, 18, 19, 20, 21
REST = np.asarray(getattr(skeleton, "STANDIN_REST_JOINTS", getattr(skeleton, "REST_JOINTS", None)), dtype=np.float64)
PARENTS = tuple(getattr(skeleton, "SMPLX_PARENTS", getattr(skeleton, "PARENTS", ())))


def unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def synthetic_dirs(layout, frames=40, spread=0.5, seed=0):
    """Unit bone directions scattered around the official mean pose (TED axes), (frames, B, 3)."""
    rng = np.random.default_rng(seed)
    mean = normalize_dirs(np.asarray(layout.mean_dir_vec), layout)
    return normalize_dirs(mean[None] + spread * rng.standard_normal((frames, layout.num_bones, 3)), layout)


def world_rotations(poses):
    """(T, 55, 3, 3) world rotations from axis-angle poses (T, 55, 3), composed along SMPL-X's parents."""
    local = skeleton.axis_angle_to_matrix(poses.astype(np.float64))
    world = np.empty_like(local)
    for j, parent in enumerate(PARENTS):
        world[:, j] = local[:, j] if parent < 0 else world[:, parent] @ local[:, j]
    return world


def fk_dir(positions, parent, child):
    return unit(positions[:, child] - positions[:, parent])


# -- layouts ---------------------------------------------------------------------------------------------------------

def test_layout_tables_match_the_official_skeletons():
    assert (TED10.num_joints, TED10.num_bones, TED10.dim) == (10, 9, 27)
    assert (TED43.num_joints, TED43.num_bones, TED43.dim) == (43, 42, 126)
    assert len(TED10.mean_dir_vec) == 27 and len(TED43.mean_dir_vec) == 126
    assert TED10.bones[4] == (4, 5, 0.36) and TED43.bones[5] == (6, 8, 0.137) and TED43.bones[37] == (1, 38, 0.18)
    # every joint but the root is the child of exactly one bone, and parents come first
    for layout in (TED10, TED43):
        children = sorted(c for _, c, _ in layout.bones)
        assert children == list(range(1, layout.num_joints))
        assert all(p < c for p, c, _ in layout.bones)
    assert get_ted_layout(27) is TED10 and get_ted_layout("ted43") is TED43
    with pytest.raises(BadInput, match="unknown TED layout"):
        get_ted_layout("ted12")


@pytest.mark.parametrize("layout", [TED10, TED43], ids=["ted10", "ted43"])
def test_dir_vec_and_joints_round_trip(layout):
    dirs = synthetic_dirs(layout, frames=5)
    joints = dir_vec_to_joints(dirs.reshape(5, -1), layout)
    assert joints.shape == (5, layout.num_joints, 3) and np.allclose(joints[:, 0], 0.0)
    np.testing.assert_allclose(joints_to_dir_vec(joints, layout), dirs, atol=1e-12)
    for b, (parent, child, length) in enumerate(layout.bones):
        np.testing.assert_allclose(np.linalg.norm(joints[:, child] - joints[:, parent], axis=-1), length)


@pytest.mark.parametrize("layout", [TED10, TED43], ids=["ted10", "ted43"])
def test_axis_change_puts_the_mean_pose_upright_and_facing_forward(layout):
    joints = to_smplx_axes(dir_vec_to_joints(np.asarray(layout.mean_dir_vec), layout, normalize=True), layout)
    name = layout.joint
    assert joints[name("neck"), 1] > joints[name("spine"), 1] + 0.2  # spine points up (+y)
    assert joints[name("left_shoulder"), 0] > 0.1 > -0.1 > joints[name("right_shoulder"), 0]  # body's left is +x
    assert joints[name("nose"), 2] > joints[name("neck"), 2] + 0.03  # the face is in front (+z)
    for wrist, elbow in (("left_wrist", "left_elbow"), ("right_wrist", "right_elbow")):
        assert joints[name(wrist), 2] > joints[name(elbow), 2] + 0.1  # forearms reach forward
    assert abs(np.linalg.det(np.asarray(layout.to_smplx, dtype=float)) - 1.0) < 1e-12  # a rotation, no mirror


# -- the retarget ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spine", ["chain", "spine3"])
@pytest.mark.parametrize("layout", [TED10, TED43], ids=["ted10", "ted43"])
def test_retarget_reproduces_the_ted_directions(layout, spine):
    dirs = synthetic_dirs(layout)
    poses = retarget(dirs.reshape(len(dirs), -1), layout, spine)
    assert poses.shape == (len(dirs), 55, 3) and poses.dtype == np.float32
    target = to_smplx_axes(dirs, layout)
    positions = skeleton.forward_kinematics(poses.reshape(len(poses), -1))
    world = world_rotations(poses)

    def by_bone(parent, child, bone):
        assert np.abs(fk_dir(positions, parent, child) - target[:, bone]).max() < 1e-4

    def by_rotation(joint, ref, bone):
        assert np.abs(np.einsum("tij,j->ti", world[:, joint], ref) - target[:, bone]).max() < 1e-4

    mean = to_smplx_axes(normalize_dirs(np.asarray(layout.mean_dir_vec), layout), layout)
    neck_to = {"ted10": (1, 3, 6), "ted43": (37, 1, 2)}[layout.name]
    by_bone(SPINE3, NECK, 0)
    by_rotation(NECK, unit(mean[neck_to[0]]), neck_to[0])  # neck -> nose, referenced to the mean
    by_rotation(L_COLLAR, unit(REST[L_SHOULDER] - REST[NECK]), neck_to[1])  # neck -> shoulder
    by_rotation(R_COLLAR, unit(REST[R_SHOULDER] - REST[NECK]), neck_to[2])
    arm_bones = {"ted10": (4, 5, 7, 8), "ted43": (3, 4, 20, 21)}[layout.name]
    by_bone(L_SHOULDER, L_ELBOW, arm_bones[0])
    by_bone(L_ELBOW, L_WRIST, arm_bones[1])
    by_bone(R_SHOULDER, R_ELBOW, arm_bones[2])
    by_bone(R_ELBOW, R_WRIST, arm_bones[3])
    if layout is TED10:
        by_rotation(HEAD, unit(mean[2]), 2)  # nose -> head top
        return
    # TED Expressive: every finger's two inner segments, the hand direction, the palm plane and the head
    for wrist, first_smplx, first_bone in ((L_WRIST, 25, 5), (R_WRIST, 40, 22)):
        by_bone(wrist, first_smplx + 3, first_bone + 3)  # wrist -> middle1
        for f in range(5):
            j, b = first_smplx + 3 * f, first_bone + 3 * f
            by_bone(j, j + 1, b + 1)
            by_bone(j + 1, j + 2, b + 2)
    ted_joints = to_smplx_axes(dir_vec_to_joints(dirs, layout), layout)
    for wrist, index1, pinky1, ted_index1, ted_pinky1, ted_middle in ((L_WRIST, 25, 31, 8, 14, 8),
                                                                      (R_WRIST, 40, 46, 23, 29, 25)):
        axis = target[:, ted_middle]
        across_smplx = positions[:, index1] - positions[:, pinky1]
        across_ted = ted_joints[:, ted_index1] - ted_joints[:, ted_pinky1]
        flat = [unit(v - np.sum(v * axis, -1, keepdims=True) * axis) for v in (across_smplx, across_ted)]
        assert np.abs(flat[0] - flat[1]).max() < 1e-4  # the palm is turned to TED's palm
    lateral = ted_joints[:, layout.joint("left_ear")] - ted_joints[:, layout.joint("right_ear")]
    mean_joints = to_smplx_axes(dir_vec_to_joints(np.asarray(layout.mean_dir_vec), layout, normalize=True), layout)
    ref = unit(mean_joints[layout.joint("left_ear")] - mean_joints[layout.joint("right_ear")])
    assert np.abs(np.einsum("tij,j->ti", world[:, HEAD], ref) - unit(lateral)).max() < 1e-4


@pytest.mark.parametrize("layout", [TED10, TED43], ids=["ted10", "ted43"])
def test_smplx_motion_becomes_directions_the_retarget_gives_back(layout):
    """dir_vec_from_smplx (how SMPL-X capture becomes DiffGesture training data) inverts the retarget."""
    rng = np.random.default_rng(3)
    poses = np.zeros((40, 55, 3))
    driven = generated_joints(layout)
    poses[:, driven] = rng.normal(0.0, 0.35, (40, int(driven.sum()), 3))
    poses[:, 0] = rng.normal(0.0, 0.5, (40, 3))  # the global orientation is dropped: TED poses are body-centred
    vec = dir_vec_from_smplx(poses.reshape(40, -1), layout)
    assert vec.shape == (40, layout.dim) and vec.dtype == np.float32
    assert np.allclose(np.linalg.norm(vec.reshape(40, -1, 3), axis=-1), 1.0, atol=1e-6)
    again = dir_vec_from_smplx(retarget(vec, layout), layout)
    assert np.abs(again - vec).max() < 1e-4
    # bones with an SMPL-X counterpart point where forward kinematics puts them (upper arm, in TED axes)
    poses[:, 0] = 0.0
    positions = skeleton.forward_kinematics(poses.reshape(40, -1))
    upper_arm = {"ted10": 4, "ted43": 3}[layout.name]
    got = to_smplx_axes(vec.reshape(40, -1, 3)[:, upper_arm], layout)
    assert np.abs(got - fk_dir(positions, L_SHOULDER, L_ELBOW)).max() < 1e-5


def test_spine_modes_split_the_bend():
    dirs = synthetic_dirs(TED10, frames=6)
    chain = retarget(dirs, TED10, "chain")
    single = retarget(dirs, TED10, "spine3")
    np.testing.assert_allclose(chain[:, SPINE1], chain[:, SPINE3], atol=1e-6)
    np.testing.assert_allclose(chain[:, SPINE2], chain[:, SPINE3], atol=1e-6)
    np.testing.assert_allclose(3 * chain[:, SPINE3], single[:, SPINE3], atol=1e-5)
    assert not single[:, [SPINE1, SPINE2]].any()
    assert generated_joints(TED10, "chain")[[SPINE1, SPINE2, SPINE3]].all()
    assert not generated_joints(TED10, "spine3")[[SPINE1, SPINE2]].any()
    with pytest.raises(BadInput, match="spine mode"):
        retarget(dirs, TED10, "pelvis")


def test_only_the_upper_body_is_driven():
    ted10, ted43 = generated_joints(TED10), generated_joints(TED43)
    upper = [SPINE1, SPINE2, SPINE3, NECK, L_COLLAR, R_COLLAR, HEAD, L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW]
    assert sorted(np.flatnonzero(ted10)) == sorted(upper)  # no hands in TED Gesture
    assert sorted(np.flatnonzero(ted43)) == sorted(upper + [L_WRIST, R_WRIST] + list(range(25, 55)))
    poses = retarget(synthetic_dirs(TED43, frames=4), TED43)
    assert not poses[:, ~ted43].any()  # pelvis, legs, jaw and eyes stay at rest
    assert np.abs(poses[:, ted43]).sum(axis=(0, 2)).min() > 0


@pytest.mark.parametrize("layout", [TED10, TED43], ids=["ted10", "ted43"])
def test_mean_pose_keeps_the_head_near_rest(layout):
    poses = retarget(np.asarray(layout.mean_dir_vec)[None], layout)
    angles = np.degrees(np.linalg.norm(poses[0], axis=-1))
    assert angles[HEAD] < 10 and angles[NECK] < 20 and angles[SPINE3] < 10
    assert 30 < angles[L_SHOULDER] < 100 and 30 < angles[R_SHOULDER] < 100  # arms lowered from the T-pose


def test_unnormalized_and_degenerate_vectors():
    dirs = synthetic_dirs(TED10, frames=3)
    np.testing.assert_allclose(retarget(2.5 * dirs, TED10), retarget(dirs, TED10), atol=1e-6)
    zero = dirs.copy()
    zero[:, 5] = 0.0  # a missing forearm leaves the elbow unbent, not NaN
    poses = retarget(zero, TED10)
    assert np.isfinite(poses).all() and not poses[:, L_ELBOW].any()
    with pytest.raises(BadInput, match="ted10 direction vectors"):
        retarget(np.zeros((3, 26)), TED10)


def test_axis_angle_conversion_is_stable_near_a_half_turn():
    rng = np.random.default_rng(1)
    axes = unit(rng.standard_normal((200, 3)))
    angles = np.concatenate([rng.uniform(0, np.pi, 190), np.pi - np.logspace(-9, -3, 5), [0.0, 1e-9, 1e-6, np.pi,
                                                                                           np.pi]])
    rotvec = axes * angles[:, None]
    back = rotation_to_axis_angle(skeleton.axis_angle_to_matrix(rotvec))
    np.testing.assert_allclose(skeleton.axis_angle_to_matrix(back), skeleton.axis_angle_to_matrix(rotvec), atol=1e-9)


def test_take_arrays_write_and_read(tmp_path):
    vec = synthetic_dirs(TED43, frames=7).reshape(7, -1) * 0.9
    arrays = take_arrays(vec, "ted43")
    assert arrays["poses"].shape == (7, 165) and arrays["expressions"].shape == (7, 100)
    assert not arrays["expressions"].any() and arrays["generated_expressions"] is False
    path = tmp_path / "take.npz"
    write_take(str(path), arrays, fps=15.0, meta={"model_id": "t"})
    take = read_take(str(path))
    assert take["fps"] == 15.0 and not bool(take["generated_expressions"])
    np.testing.assert_array_equal(take["generated_joints"], generated_joints(TED43))
    np.testing.assert_allclose(take["poses"], arrays["poses"])
