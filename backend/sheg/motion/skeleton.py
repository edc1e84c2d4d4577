"""The SMPL-X skeleton: 55 joint names, the kinematic tree, stand-in rest joints, and forward kinematics.

The rest joints are NOT the licensed SMPL-X model's joint regressor output: they are a hand-made stand-in of the
neutral body's joint locations (metres, SMPL-X axes: +Y up, +Z forward, +X to the body's left), close enough for
kinematic metrics (speeds, jerk, beat consistency) but not for anything that compares with published absolute
positions. The Blender add-on holds the same table in addon/core/smplx.py; tests/test_metrics.py checks the copies
are identical.
"""

from __future__ import annotations

import numpy as np

NUM_JOINTS = 55

JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "jaw", "left_eye_smplhf",
    "right_eye_smplhf",
    "left_index1", "left_index2", "left_index3", "left_middle1", "left_middle2", "left_middle3",
    "left_pinky1", "left_pinky2", "left_pinky3", "left_ring1", "left_ring2", "left_ring3",
    "left_thumb1", "left_thumb2", "left_thumb3",
    "right_index1", "right_index2", "right_index3", "right_middle1", "right_middle2", "right_middle3",
    "right_pinky1", "right_pinky2", "right_pinky3", "right_ring1", "right_ring2", "right_ring3",
    "right_thumb1", "right_thumb2", "right_thumb3",
)

# Parent of each joint (-1 for the root), the SMPL-X kinematic tree.
PARENTS = (
    -1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
    20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
    21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53,
)

# Stand-in rest joints (metres, pelvis at the origin, T-pose). Values are the add-on's (addon/core/smplx.py
# STANDIN_REST_JOINTS); the left side is listed, the right side mirrors x.
_CENTER_JOINTS = {
    "pelvis": (0.0, 0.0, 0.0), "spine1": (0.0, 0.110, -0.030), "spine2": (0.0, 0.240, -0.020),
    "spine3": (0.0, 0.300, 0.000), "neck": (0.0, 0.510, -0.030), "head": (0.0, 0.600, 0.005),
    "jaw": (0.0, 0.620, 0.030),
}
_LEFT_JOINTS = {
    "hip": (0.060, -0.090, -0.010), "knee": (0.105, -0.480, 0.000), "ankle": (0.090, -0.880, -0.040),
    "foot": (0.115, -0.940, 0.100), "collar": (0.070, 0.430, -0.010), "shoulder": (0.170, 0.450, -0.020),
    "elbow": (0.430, 0.440, -0.035), "wrist": (0.680, 0.440, -0.030), "eye_smplhf": (0.032, 0.675, 0.085),
}
# Fingers in SMPL-X order (index, middle, pinky, ring): knuckle distance from the wrist along the arm, offset across
# the palm (z), and the two phalanx lengths; all 5 mm below the wrist.
_FINGERS = ((0.090, 0.025, (0.038, 0.024)), (0.095, 0.003, (0.042, 0.027)),
            (0.075, -0.042, (0.026, 0.020)), (0.090, -0.020, (0.036, 0.025)))
# Thumb joints as (along the arm, down, forward) offsets from the wrist.
_THUMB = ((0.028, 0.015, 0.035), (0.058, 0.022, 0.055), (0.083, 0.027, 0.070))


def _hand_joints(side: float, wrist) -> list:
    wx, wy, wz = wrist
    joints = []
    for along, across, lengths in _FINGERS:
        for x in np.cumsum((along,) + lengths):
            joints.append((wx + side * x, wy - 0.005, wz + across))
    joints += [(wx + side * a, wy - down, wz + fwd) for a, down, fwd in _THUMB]
    return joints


def _rest_joints() -> np.ndarray:
    rows = []
    for name in JOINT_NAMES[:25]:
        if name in _CENTER_JOINTS:
            rows.append(_CENTER_JOINTS[name])
        else:
            side, part = name.split("_", 1)
            x, y, z = _LEFT_JOINTS[part]
            rows.append((x if side == "left" else -x, y, z))
    rows += _hand_joints(1.0, rows[JOINT_NAMES.index("left_wrist")])
    rows += _hand_joints(-1.0, rows[JOINT_NAMES.index("right_wrist")])
    return np.array(rows, dtype=np.float64)


# (55, 3) rest-pose joint locations in metres, pelvis at the origin.
REST_JOINTS = _rest_joints()

# The left/right counterpart of every joint (itself for the centre line).
MIRROR_JOINTS = tuple(JOINT_NAMES.index(n.replace("left_", "right_") if n.startswith("left_") else
                                        n.replace("right_", "left_")) for n in JOINT_NAMES)


def mirror_poses(poses: np.ndarray) -> np.ndarray:
    """SMPL-X axis-angle poses (T, 165) or (T, 55, 3) reflected left <-> right (x -> -x): each joint takes its
    counterpart's rotation with the axis reflected, (x, y, z) -> (x, -y, -z). Same shape as given."""
    poses = np.asarray(poses, dtype=np.float64)
    shaped = poses.reshape(len(poses), NUM_JOINTS, 3)
    return (shaped[:, MIRROR_JOINTS] * np.array([1.0, -1.0, -1.0])).reshape(poses.shape)


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Batched Rodrigues: axis-angle (..., 3) radians -> rotation matrices (..., 3, 3) float64.

    Angles below 1e-8 use the first-order form I + [r]x, which is exact to float precision there.
    """
    r = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(r, axis=-1, keepdims=True)  # (..., 1)
    small = angle < 1e-8
    safe = np.where(small, 1.0, angle)
    axis = r / safe
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zeros = np.zeros_like(x)
    skew = np.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], axis=-1).reshape(r.shape[:-1] + (3, 3))
    sin = np.sin(angle)[..., None]
    one_minus_cos = (1.0 - np.cos(angle))[..., None]
    eye = np.eye(3)
    rot = eye + sin * skew + one_minus_cos * (skew @ skew)
    # Tiny angles: R = I + [r]x (r itself, not the normalized axis).
    rx, ry, rz = r[..., 0], r[..., 1], r[..., 2]
    skew_r = np.stack([zeros, -rz, ry, rz, zeros, -rx, -ry, rx, zeros], axis=-1).reshape(r.shape[:-1] + (3, 3))
    return np.where(small[..., None], eye + skew_r, rot)


def forward_kinematics(poses: np.ndarray, rest_joints: np.ndarray = REST_JOINTS,
                       parents=PARENTS) -> np.ndarray:
    """Joint positions of posed SMPL-X skeletons.

    Args:
        poses: (T, 55, 3) or (T, 165) axis-angle rotations in radians, SMPL-X joint order; joint 0 is the global
            orientation (kept), translation is taken as zero.
        rest_joints: (55, 3) rest joint locations in metres.
    Returns:
        (T, 55, 3) float64 joint positions in metres, the pelvis at the origin.
    """
    poses = np.asarray(poses, dtype=np.float64)
    num = len(parents)
    if poses.ndim == 2 and poses.shape[1] == 3 * num:
        poses = poses.reshape(len(poses), num, 3)
    if poses.ndim != 3 or poses.shape[1:] != (num, 3):
        raise ValueError(f"poses must be (T, {num}, 3) or (T, {3 * num}) axis-angle, got shape {poses.shape}")
    rest = np.asarray(rest_joints, dtype=np.float64)
    rots = axis_angle_to_matrix(poses)  # (T, J, 3, 3) local rotations
    world_rot = np.empty_like(rots)
    positions = np.empty(poses.shape, dtype=np.float64)
    for j, parent in enumerate(parents):  # parents precede children in the SMPL-X order
        if parent < 0:
            world_rot[:, j] = rots[:, j]
            positions[:, j] = rest[j]
        else:
            world_rot[:, j] = world_rot[:, parent] @ rots[:, j]
            bone = np.einsum("tab,b->ta", world_rot[:, parent], rest[j] - rest[parent])  # (T, 3)
            positions[:, j] = positions[:, parent] + bone
    return positions
