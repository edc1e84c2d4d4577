"""Retarget maths and bone maps (addon/core/retarget.py, bonemap.py): pure numpy, no bpy.

The target rigs here are built from the SMPL-X stand-in skeleton with another rest pose (A-pose arms), random bone
rolls, other axes (Blender Z-up or an FBX-style Y-up armature) and extra unmapped bones; a small forward-kinematics
routine written here (Blender's rule: posed = parent posed * parent rest^-1 * rest * local) checks that the
retargeted bones point where the source bones point.
"""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import bonemap, quaternions as Q, retarget, smplx  # noqa: E402

MIXAMO = {"pelvis": "Hips", "spine1": "Spine", "spine2": "Spine1", "spine3": "Spine2", "neck": "Neck",
          "head": "Head", "left_collar": "LeftShoulder", "left_shoulder": "LeftArm", "left_elbow": "LeftForeArm",
          "left_wrist": "LeftHand", "right_collar": "RightShoulder", "right_shoulder": "RightArm",
          "right_elbow": "RightForeArm", "right_wrist": "RightHand", "left_hip": "LeftUpLeg", "left_knee": "LeftLeg",
          "right_hip": "RightUpLeg", "right_knee": "RightLeg", "left_middle1": "LeftHandMiddle1",
          "left_middle2": "LeftHandMiddle2", "right_middle1": "RightHandMiddle1"}


def _rodrigues(axis, angle):
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _quat_matrix(q):
    w, x, y, z = np.moveaxis(q, -1, 0)
    return np.stack([np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
                     np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
                     np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1)], -2)


def _a_pose_joints(degrees=45.0):
    """Stand-in joints with both arms lowered by `degrees` about the front axis at the shoulder (SMPL-X axes)."""
    joints = smplx.STANDIN_REST_JOINTS.copy()
    for side, sign in (("left", -1.0), ("right", 1.0)):
        pivot = joints[smplx.JOINT_INDEX[f"{side}_shoulder"]]
        turn = _rodrigues((0, 0, 1), sign * np.radians(degrees))
        arm = [j for j, n in enumerate(smplx.JOINT_NAMES) if n.startswith(side) and
               any(p in n for p in ("elbow", "wrist", "index", "middle", "ring", "pinky", "thumb"))]
        joints[arm] = (joints[arm] - pivot) @ turn.T + pivot
    return joints


def _target(axes, prefix="mixamorig:", seed=0):
    """A TargetRig with the MIXAMO bones (+ 'HeadTop_End' and an unmapped 'Spine3' between Spine2 and Neck)."""
    rng = np.random.default_rng(seed)
    joints = _a_pose_joints() @ axes.T
    names, parents, rests, heads = [], [], [], []
    order = [j for j in smplx.JOINT_NAMES if j in MIXAMO]
    tails = {"head": None, "left_wrist": "left_middle1", "right_wrist": "right_middle1", "pelvis": "spine1",
             "spine3": "neck", "left_middle2": None, "right_middle1": "right_middle2"}
    extra_parent = {"neck": "Spine3"}
    for joint in order:
        j = smplx.JOINT_INDEX[joint]
        name = MIXAMO[joint]
        head = joints[j]
        kids = [k for k in smplx.children_of(j)]
        child = tails.get(joint, smplx.JOINT_NAMES[kids[0]] if kids else None)
        if joint == "right_middle1":
            tail = joints[smplx.JOINT_INDEX["right_middle2"]]
        elif child is None:
            tail = head + (axes @ (0, 0.1, 0) if joint == "head" else
                           joints[j] - joints[smplx.PARENTS[j]])
        else:
            tail = joints[smplx.JOINT_INDEX[child]]
        y = (tail - head) / np.linalg.norm(tail - head)
        x = np.cross(y, rng.normal(size=3))  # a random roll
        x /= np.linalg.norm(x)
        rest = np.stack([x, y, np.cross(x, y)], axis=1)
        parent_joint = smplx.PARENTS[j]
        while parent_joint >= 0 and smplx.JOINT_NAMES[parent_joint] not in MIXAMO:
            parent_joint = smplx.PARENTS[parent_joint]
        parent = extra_parent.get(joint, MIXAMO.get(smplx.JOINT_NAMES[parent_joint]) if parent_joint >= 0 else None)
        names.append(name), parents.append(parent), rests.append(rest), heads.append(head)
        if joint == "spine3":  # an unmapped bone between the chest and the neck
            names.append("Spine3"), parents.append(name), heads.append(joints[smplx.JOINT_INDEX["neck"]] - 0.02)
            rests.append(_rodrigues(rng.normal(size=3), 0.3) @ rest)
        if joint == "head":
            names.append("HeadTop_End"), parents.append(name), heads.append(tail), rests.append(rest)
    index = {n: i for i, n in enumerate(names)}
    return retarget.TargetRig(names=tuple(prefix + n for n in names),
                              parents=tuple(-1 if p is None else index[p] for p in parents),
                              rest=np.array(rests), heads=np.array(heads))


def _fk(target, plan, local):
    """(T, B, 3, 3) posed armature-space bone matrices of the target: unmapped bones at rest."""
    frames = len(local)
    column = {target.names.index(b): c for c, b in enumerate(plan.bones)}
    posed = np.zeros((frames, len(target.names), 3, 3))
    local_m = _quat_matrix(local)
    for b, parent in enumerate(target.parents):  # parents come first in _target
        basis = local_m[:, column[b]] if b in column else np.eye(3)
        if parent < 0:
            posed[:, b] = target.rest[b] @ basis
        else:
            posed[:, b] = posed[:, parent] @ (target.rest[parent].T @ target.rest[b]) @ basis
    return posed


def _random_poses(frames=40, seed=1):
    rng = np.random.default_rng(seed)
    poses = rng.normal(scale=0.35, size=(frames, smplx.NUM_JOINTS, 3))
    poses[:, 0] = rng.normal(scale=1.0, size=(frames, 3))  # any global orientation
    return poses


@pytest.mark.parametrize("axes_name", ["blender", "fbx_y_up"])
def test_bones_point_where_the_source_bones_point(axes_name):
    axes = smplx.SMPLX_TO_BLENDER if axes_name == "blender" else np.eye(3)
    target = _target(axes)
    preset, bone_map = bonemap.find_bone_map(target.names)
    assert preset == "mixamo" and bone_map["left_wrist"] == "mixamorig:LeftHand"
    plan = retarget.plan_retarget(bone_map, target)
    np.testing.assert_allclose(_quat_matrix(plan.body_frame), axes, atol=1e-9)  # faces found from the rest
    poses = _random_poses()
    local = retarget.retarget_rotations(plan, poses)
    assert local.shape == (len(poses), len(bone_map), 4)
    posed = _fk(target, plan, local)
    g = _quat_matrix(retarget.global_rotations(poses))
    rest_dirs = retarget.source_directions(smplx.STANDIN_REST_JOINTS)
    for column, (j, bone) in enumerate(zip(plan.joints, plan.bones)):
        source = axes @ np.einsum("tij,j->ti", g[:, j], rest_dirs[j]).T  # (3, T)
        got = posed[:, target.names.index(bone), :, 1].T
        cos = np.sum(source * got, axis=0)
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))).max() < 1e-4, bone


def test_rest_pose_take_lifts_an_a_pose_rig_into_the_t_pose():
    target = _target(smplx.SMPLX_TO_BLENDER)
    plan = retarget.plan_retarget(bonemap.find_bone_map(target.names)[1], target)
    local = retarget.retarget_rotations(plan, np.zeros((1, 55, 3)))
    arm = plan.bones.index("mixamorig:LeftArm")
    posed = _fk(target, plan, local)[0, target.names.index("mixamorig:LeftArm")]
    np.testing.assert_allclose(posed[:, 1], smplx.smplx_to_blender(retarget.source_directions(
        smplx.STANDIN_REST_JOINTS)[smplx.JOINT_INDEX["left_shoulder"]]), atol=1e-9)
    angle = np.degrees(2 * np.arccos(min(1.0, abs(local[0, arm, 0]))))
    a_pose = _a_pose_joints()
    shoulder, elbow = (smplx.JOINT_INDEX[n] for n in ("left_shoulder", "left_elbow"))
    lowered = [(j[elbow] - j[shoulder]) / np.linalg.norm(j[elbow] - j[shoulder])
               for j in (a_pose, smplx.STANDIN_REST_JOINTS)]
    # the A-pose rig's upper arm turns up by exactly the angle it was lowered by (45 degrees about the front axis)
    assert abs(angle - np.degrees(np.arccos(np.dot(*lowered)))) < 1e-6 and angle > 40.0


def test_root_translation_follows_the_take_scaled_to_the_rig():
    target = _target(smplx.SMPLX_TO_BLENDER)
    target.heads = target.heads * 2.0  # a rig twice as tall
    plan = retarget.plan_retarget(bonemap.find_bone_map(target.names)[1], target)
    assert abs(plan.root_scale - 2.0) < 1e-9 or "left_ankle" not in MIXAMO  # no ankles mapped: unit scale
    trans = np.array([[0.0, 0.9, 0.0], [0.1, 0.9, 0.0], [0.1, 1.0, 0.3]])
    loc = retarget.root_locations(plan, trans, np.zeros((3, 55, 3)))
    hips = target.rest[target.names.index("mixamorig:Hips")]
    moved = loc @ hips.T / plan.root_scale  # back to armature axes
    np.testing.assert_allclose(moved, smplx.smplx_to_blender(trans - trans[0]), atol=1e-12)


PRESET_RIGS = {
    "rigify": ["root", "torso", "hips", "chest", "spine_fk", "spine_fk.001", "spine_fk.002", "spine_fk.003", "neck",
               "head", "shoulder.L", "shoulder.R", "upper_arm_fk.L", "upper_arm_fk.R", "forearm_fk.L", "forearm_fk.R",
               "hand_fk.L", "hand_fk.R", "DEF-spine", "DEF-spine.001", "ORG-spine", "DEF-upper_arm.L"],
    "rigify_metarig": ["spine", "spine.001", "spine.002", "spine.003", "spine.004", "spine.005", "spine.006",
                       "shoulder.L", "shoulder.R", "upper_arm.L", "upper_arm.R", "forearm.L", "forearm.R", "hand.L",
                       "hand.R", "f_index.01.L", "thumb.01.R"],
    "mixamo": ["mixamorig1:" + n for n in MIXAMO.values()],
    "cc": ["CC_Base_BoneRoot", "CC_Base_Hip", "CC_Base_Pelvis", "CC_Base_Waist", "CC_Base_Spine01",
           "CC_Base_Spine02", "CC_Base_NeckTwist01", "CC_Base_NeckTwist02", "CC_Base_Head", "CC_Base_L_Clavicle",
           "CC_Base_R_Clavicle", "CC_Base_L_Upperarm", "CC_Base_R_Upperarm", "CC_Base_L_Forearm",
           "CC_Base_R_Forearm", "CC_Base_L_Hand", "CC_Base_R_Hand", "CC_Base_L_Mid1", "CC_Base_JawRoot"],
    "metahuman": ["root", "pelvis", "spine_01", "spine_02", "spine_03", "spine_04", "spine_05", "neck_01", "neck_02",
                  "head", "clavicle_l", "clavicle_r", "upperarm_l", "upperarm_r", "lowerarm_l", "lowerarm_r",
                  "hand_l", "hand_r", "index_01_l"],
    "auto_rig_pro": ["c_traj", "c_root_master.x", "c_root.x", "c_spine_01.x", "c_spine_02.x", "c_spine_03.x",
                     "c_neck.x", "c_head.x", "c_shoulder.l", "c_shoulder.r", "c_arm_fk.l", "c_arm_fk.r",
                     "c_forearm_fk.l", "c_forearm_fk.r", "c_hand_fk.l", "c_hand_fk.r", "c_index1.l"],
}


@pytest.mark.parametrize("preset", list(PRESET_RIGS))
def test_presets_are_found_by_name_and_cover_the_upper_body(preset):
    found, bone_map = bonemap.find_bone_map(PRESET_RIGS[preset])
    assert found == preset
    assert bonemap.missing_required(bone_map) == []
    assert len(set(bone_map.values())) == len(bone_map)


def test_rigify_deform_prefix_and_case_are_matched():
    names = ["DEF-" + n for n in PRESET_RIGS["rigify_metarig"]] + ["ORG-spine"]
    found, bone_map = bonemap.find_bone_map([n.upper() for n in names])
    assert found == "rigify_metarig"
    assert bone_map["head"] == "DEF-SPINE.006" and bone_map["left_index1"] == "DEF-F_INDEX.01.L"


def test_bone_map_json_round_trip(tmp_path):
    _, bone_map = bonemap.find_bone_map(PRESET_RIGS["cc"])
    path = str(tmp_path / "cc.json")
    bonemap.save_bone_map(path, bone_map, name="my CC", preset="cc")
    loaded = bonemap.load_bone_map(path)
    assert loaded["bones"] == bone_map and loaded["name"] == "my CC" and loaded["preset"] == "cc"
    assert list(loaded["bones"]) == [j for j in smplx.JOINT_NAMES if j in bone_map]


def test_bad_bone_maps_get_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown SMPL-X joints"):
        bonemap.check_bone_map({"left_arm": "x"})
    with pytest.raises(ValueError, match="more than one joint"):
        bonemap.check_bone_map({"neck": "a", "head": "a"})
    with pytest.raises(ValueError, match="has no bone 'b'"):
        bonemap.check_bone_map({"neck": "b"}, ["a"])
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the bone map") as info:
        bonemap.load_bone_map(str(bad))
    assert "\n" not in str(info.value)
    bad.write_text('{"bones": {}}')
    with pytest.raises(ValueError, match="is not a SHEG bone map"):
        bonemap.load_bone_map(str(bad))


def test_unmapped_joints_are_reported_in_one_line():
    line = bonemap.describe_unmapped(["jaw"] + [n for n in smplx.JOINT_NAMES if n.startswith("left_") and
                                                smplx.BODY_PART[smplx.JOINT_INDEX[n]] == "Left Hand"])
    assert line == "not mapped (16): jaw; Left Hand (15)"
    assert bonemap.describe_unmapped([]) == "every joint of the take is mapped"
