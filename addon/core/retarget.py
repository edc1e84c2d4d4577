"""Rotation transfer from an SMPL-X take onto any humanoid armature, numpy only, vectorised over frames.

Conventions. The source is the SMPL-X rig: every joint's rest frame has the SMPL-X axes (identity), so a take's
global joint rotation is plain forward kinematics of its local axis-angles, G_j = G_parent(j) * R_j, and the posed
direction of a bone is G_j applied to its rest direction d_j (joint -> its main child, in the source rig's rest).
The target is described by its bones' rest matrices B_b (armature space, Y along the bone, roll included) and parents.

Transfer, per mapped bone b following joint j:
  * body frames: C turns SMPL-X axes (X left, Y up, Z front) into the target's armature axes, found from each rig's
    rest (left = left minus right upper arm / hip, up = pelvis -> neck), so a Y-up FBX rig or a rotated object works;
  * rest compensation: A_b is the smallest rotation taking the target bone's rest direction onto C d_j; at the
    source's rest the target is bent into the source's rest pose (a T-pose take on an A-pose rig lifts its arms);
  * world orientation W_b(t) = (C G_j(t) C^-1) A_b B_b: the target bone points where the source bone points, its
    roll turning with the source;
  * local pose quaternion L_b = B_b^-1 B_p W_p^-1 W_b, with p the nearest mapped ancestor of b in the target
    hierarchy (bones between them stay at rest); a bone with no mapped ancestor (the root, or a rig control whose
    parents are constraint-driven helpers) is taken relative to the mapped bone of its nearest mapped SMPL-X
    ancestor, else to the armature (L_b = B_b^-1 W_b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import quaternions, smplx

ROOT_POLICIES = ("in_place", "translation")

# Where a joint's rest direction points: towards this child joint; else along these SMPL-X axes (end joints).
_MAIN_CHILD = {"pelvis": "spine1", "spine3": "neck", "left_wrist": "left_middle1", "right_wrist": "right_middle1",
               "head": None, "jaw": None, "left_eye_smplhf": None, "right_eye_smplhf": None,
               "left_foot": None, "right_foot": None}
_END_DIRECTION = {"head": (0.0, 1.0, 0.0), "jaw": (0.0, 0.0, 1.0), "left_eye_smplhf": (0.0, 0.0, 1.0),
                  "right_eye_smplhf": (0.0, 0.0, 1.0), "left_foot": (0.0, 0.0, 1.0), "right_foot": (0.0, 0.0, 1.0)}


@dataclass
class TargetRig:
    """A target armature's rest, armature space: names, parents (index, -1 none), rest (B, 3, 3) rotations with
    columns X, Y (along the bone), Z, heads (B, 3)."""
    names: tuple
    parents: tuple
    rest: np.ndarray
    heads: np.ndarray


@dataclass
class RetargetPlan:
    joints: list                 # SMPL-X joint index per mapped bone (M,)
    bones: list                  # target bone name per mapped bone (M,)
    world_offset: np.ndarray     # (M, 4) quaternion A_b B_b
    parent_column: list          # column of the mapped parent p in this plan, -1 for the armature
    parent_offset: np.ndarray    # (M, 4) quaternion B_b^-1 B_p (B_b^-1 alone without p)
    body_frame: np.ndarray       # (4,) quaternion of C
    root_column: int = -1        # column of the pelvis bone, -1 when unmapped
    root_scale: float = 1.0      # target pelvis height / source pelvis height (translation policy)
    unmapped: list = field(default_factory=list)  # SMPL-X joint names with no bone


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, 1e-12)


def _body_axes(left: np.ndarray, up: np.ndarray) -> np.ndarray:
    """(3, 3) columns left, up, front (right-handed) from a left vector and a rough up vector."""
    x = _unit(left)
    y = _unit(up - np.dot(up, x) * x)
    return np.stack([x, y, np.cross(x, y)], axis=1)


def _arrow_quat(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotation (4,) taking unit vector a onto unit vector b (a half-turn about a perpendicular if opposite)."""
    d = float(np.dot(a, b))
    if d < -1.0 + 1e-9:
        axis = np.cross(a, (1.0, 0.0, 0.0))
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, (0.0, 1.0, 0.0))
        axis = _unit(axis)
        return np.array([0.0, *axis])
    q = np.array([1.0 + d, *np.cross(a, b)])
    return q / np.linalg.norm(q)


def source_directions(rest_joints: np.ndarray) -> np.ndarray:
    """(55, 3) unit rest direction of every SMPL-X joint's bone, SMPL-X axes."""
    dirs = np.zeros((smplx.NUM_JOINTS, 3))
    for j, name in enumerate(smplx.JOINT_NAMES):
        child = _MAIN_CHILD.get(name, "")
        if child == "":
            kids = smplx.children_of(j)
            child = smplx.JOINT_NAMES[kids[0]] if kids else None
        if child is not None:
            dirs[j] = rest_joints[smplx.JOINT_INDEX[child]] - rest_joints[j]
        elif name in _END_DIRECTION:
            dirs[j] = _END_DIRECTION[name]
        else:  # finger tips continue their parent's direction
            dirs[j] = rest_joints[j] - rest_joints[smplx.PARENTS[j]]
    return _unit(dirs)


def _source_body_axes(rest_joints: np.ndarray) -> np.ndarray:
    at = {n: rest_joints[smplx.JOINT_INDEX[n]] for n in ("pelvis", "neck", "left_shoulder", "right_shoulder")}
    return _body_axes(at["left_shoulder"] - at["right_shoulder"], at["neck"] - at["pelvis"])


def _target_body_axes(bone_map: dict, target: TargetRig) -> np.ndarray:
    index = {n: i for i, n in enumerate(target.names)}

    def head(*joints):
        for joint in joints:
            if joint in bone_map:
                return target.heads[index[bone_map[joint]]]
        return None

    left, right = head("left_shoulder", "left_collar", "left_hip"), head("right_shoulder", "right_collar", "right_hip")
    low, high = head("pelvis", "spine1", "spine2"), head("neck", "head", "spine3")
    if left is None or right is None or low is None or high is None:
        raise ValueError("the bone map needs both arms (or hips), the pelvis or spine and the neck or head to "
                         "tell which way the character faces; map them")
    return _body_axes(left - right, high - low)


def _matrix_quats(m: np.ndarray) -> np.ndarray:
    return np.array([quaternions.matrix_to_quat(r) for r in m.reshape(-1, 3, 3)]).reshape(m.shape[:-2] + (4,))


def plan_retarget(bone_map: dict, target: TargetRig, source_rest_joints: np.ndarray = smplx.STANDIN_REST_JOINTS,
                  joints=None) -> RetargetPlan:
    """The constant part of a retarget. bone_map: SMPL-X joint -> target bone name (checked by the caller);
    source_rest_joints: (55, 3) SMPL-X rest joints of the source rig; joints: the SMPL-X joints to transfer (names;
    default every mapped one). Joints asked for but not mapped are listed in plan.unmapped."""
    index = {n: i for i, n in enumerate(target.names)}
    wanted = list(smplx.JOINT_NAMES) if joints is None else [j for j in smplx.JOINT_NAMES if j in set(joints)]
    used = [j for j in wanted if j in bone_map]
    rest = np.asarray(target.rest, dtype=np.float64)
    rest = rest / np.linalg.norm(rest, axis=1, keepdims=True)  # columns of unit length (a scaled armature)
    rest_q = _matrix_quats(rest)
    c = _target_body_axes(bone_map, target) @ _source_body_axes(source_rest_joints).T
    c_q = quaternions.matrix_to_quat(c)
    src_dirs = source_directions(np.asarray(source_rest_joints, dtype=np.float64)) @ c.T  # target axes

    bone_of = {j: index[bone_map[j]] for j in used}
    column_of_bone = {bone_of[j]: col for col, j in enumerate(used)}
    world_offset, parent_column, parent_offset = [], [], []
    for j in used:
        b = bone_of[j]
        along = rest[b][:, 1]
        a_q = _arrow_quat(_unit(along), src_dirs[smplx.JOINT_INDEX[j]])
        world_offset.append(quaternions.quat_multiply(a_q, rest_q[b]))
        p = _mapped_ancestor(b, target.parents, column_of_bone)
        if p < 0:  # no mapped bone above it in the hierarchy: follow the SMPL-X parent's bone
            p = _mapped_smplx_ancestor(j, bone_of)
        if p < 0:
            parent_column.append(-1)
            parent_offset.append(quaternions.quat_conjugate(rest_q[b]))
        else:
            parent_column.append(column_of_bone[p])
            parent_offset.append(quaternions.quat_multiply(quaternions.quat_conjugate(rest_q[b]), rest_q[p]))
    plan = RetargetPlan(joints=[smplx.JOINT_INDEX[j] for j in used], bones=[bone_map[j] for j in used],
                        world_offset=np.array(world_offset).reshape(-1, 4), parent_column=parent_column,
                        parent_offset=np.array(parent_offset).reshape(-1, 4), body_frame=c_q,
                        unmapped=[j for j in wanted if j not in bone_map])
    _check_parents_first(plan)
    if "pelvis" in used:
        plan.root_column = used.index("pelvis")
        plan.root_scale = _pelvis_height_ratio(bone_map, target, index, source_rest_joints, c)
    return plan


def _mapped_ancestor(b: int, parents, column_of_bone: dict) -> int:
    p = parents[b]
    while p >= 0 and p not in column_of_bone:
        p = parents[p]
    return p


def _mapped_smplx_ancestor(joint: str, bone_of: dict) -> int:
    j = smplx.PARENTS[smplx.JOINT_INDEX[joint]]
    while j >= 0 and smplx.JOINT_NAMES[j] not in bone_of:
        j = smplx.PARENTS[j]
    return -1 if j < 0 else bone_of[smplx.JOINT_NAMES[j]]


def _check_parents_first(plan: RetargetPlan) -> None:
    """A bone's parent column may come after it (a rig whose hierarchy disagrees with SMPL-X's): fine for the maths
    (every W is known before locals are formed); a cycle is not, since it cannot be evaluated."""
    for start in range(len(plan.parent_column)):
        seen, col = set(), start
        while col >= 0:
            if col in seen:
                raise ValueError(f"bone map makes '{plan.bones[start]}' its own ancestor; fix the map")
            seen.add(col)
            col = plan.parent_column[col]


def _pelvis_height_ratio(bone_map, target, index, source_rest_joints, c) -> float:
    """Target pelvis height over its ankles / the source's, along the up axis (scales the take's translation)."""
    up_target = c[:, 1]
    feet = [bone_map.get(n) for n in ("left_ankle", "right_ankle")]
    src = source_rest_joints
    source = src[smplx.PELVIS, 1] - 0.5 * (src[smplx.JOINT_INDEX["left_ankle"], 1]
                                          + src[smplx.JOINT_INDEX["right_ankle"], 1])
    if any(f is None for f in feet):
        return 1.0
    pelvis = target.heads[index[bone_map["pelvis"]]]
    ankles = 0.5 * (target.heads[index[feet[0]]] + target.heads[index[feet[1]]])
    height = float(np.dot(pelvis - ankles, up_target))
    return height / source if height > 0 and source > 0 else 1.0


def global_rotations(poses: np.ndarray, needed=None) -> np.ndarray:
    """(T, 55, 3) SMPL-X local axis-angles -> (T, 55, 4) global quaternions by forward kinematics (joints not in
    `needed` nor ancestors of it are left identity)."""
    poses = np.asarray(poses, dtype=np.float64).reshape(len(poses), smplx.NUM_JOINTS, 3)
    keep = np.zeros(smplx.NUM_JOINTS, dtype=bool)
    for j in (range(smplx.NUM_JOINTS) if needed is None else needed):
        while j >= 0 and not keep[j]:
            keep[j] = True
            j = smplx.PARENTS[j]
    out = np.zeros(poses.shape[:2] + (4,))
    out[..., 0] = 1.0
    kept = np.flatnonzero(keep)
    local = quaternions.axis_angle_to_quat(poses[:, kept])  # only the chains that matter
    for column, j in enumerate(kept):  # parents come before children in the SMPL-X order
        p = smplx.PARENTS[j]
        out[:, j] = local[:, column] if p < 0 else quaternions.quat_multiply(out[:, p], local[:, column])
    return out


def retarget_rotations(plan: RetargetPlan, poses: np.ndarray) -> np.ndarray:
    """(T, 165) or (T, 55, 3) SMPL-X axis-angles -> (T, M, 4) local pose quaternions of the plan's bones, w >= 0 on
    the first frame and hemisphere-continuous over frames."""
    if not plan.joints:
        return np.zeros((len(poses), 0, 4))
    world = retarget_world(plan, poses)
    parents = np.array(plan.parent_column)
    has_parent = parents >= 0
    parent_world = np.where(has_parent[None, :, None], world[:, np.maximum(parents, 0)],
                            np.array([1.0, 0.0, 0.0, 0.0]))
    local = quaternions.quat_multiply(plan.parent_offset,
                                      quaternions.quat_multiply(quaternions.quat_conjugate(parent_world), world))
    local = np.where(local[:1, :, :1] < 0.0, -local, local)
    return quaternions.make_continuous(local)


def root_locations(plan: RetargetPlan, trans: np.ndarray, poses: np.ndarray) -> np.ndarray:
    """(T, 3) pose-bone location of the pelvis bone for the take's translation relative to its first frame
    (SMPL-X metres -> target units by the pelvis height ratio, in the bone's rest axes)."""
    if plan.root_column < 0:
        raise ValueError("the bone map has no pelvis bone, so the take's translation has nowhere to go; map the "
                         "pelvis or keep the root in place")
    offset = (np.asarray(trans, dtype=np.float64) - trans[0]) * plan.root_scale
    offset = quaternions.rotate_vectors(plan.body_frame, offset)                      # target armature axes
    col = plan.root_column
    p = plan.parent_column[col]
    if p >= 0:
        parent_world = retarget_world(plan, poses)[:, p]
        offset = quaternions.rotate_vectors(quaternions.quat_conjugate(parent_world), offset)
    # B_b^-1 (B_p) applied to the armature-space offset: the location channel is in the bone's rest axes
    return quaternions.rotate_vectors(plan.parent_offset[col], offset)


def retarget_world(plan: RetargetPlan, poses: np.ndarray) -> np.ndarray:
    """(T, M, 4) armature-space orientations W_b of the plan's bones (for checks and the root's parent)."""
    g = global_rotations(poses, plan.joints)[:, plan.joints]              # (T, M, 4) SMPL-X axes
    c = plan.body_frame
    g = quaternions.quat_multiply(quaternions.quat_multiply(c, g), quaternions.quat_conjugate(c))
    return quaternions.quat_multiply(g, plan.world_offset)
