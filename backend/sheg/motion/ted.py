"""TED skeletons (DiffGesture / Trimodal / HA2G direction vectors) and their retarget onto the SMPL-X upper body.

A TED pose is one unit direction vector per bone, parent joint -> child joint (`convert_pose_seq_to_dir_vec`):
"ted10" (TED Gesture, 10 joints / 9 bones, 27 values a frame) and "ted43" (TED Expressive, 43 joints / 42 bones with
fingers and face points, 126 values a frame). Joints are rebuilt from the root at the origin with fixed bone lengths.

Axes (worked out from the official data, DIFFGESTURE_FACTS §1):
- ted10 follows Trimodal's Human3.6M normalization (y and z swapped, y negated, the hips turned so that
  left hip - right hip points along -x): x = the body's RIGHT, y = DOWN, z = the body's FORWARD (right-handed).
  The official mean direction vectors agree: the left shoulder lies at -x, the nose and the forearms point to +z.
- ted43 is ExPose's camera frame with the speaker facing the camera: x = the body's LEFT (image right), y = DOWN,
  z = AWAY from the camera = the body's BACKWARD. The means agree: left shoulder at +x, forearms and nose to -z.
SMPL-X is x = the body's left, y = up, z = forward, so ted10 -> SMPL-X is (-x, -y, z) (180 deg about z) and
ted43 -> SMPL-X is (x, -y, -z) (180 deg about x); both are proper rotations.

Retarget (all in SMPL-X axes, float64, vectorized over frames). Every driven SMPL-X joint j gets a world rotation W_j
that carries a reference direction `ref` of the rest skeleton (skeleton.REST_JOINTS) onto the TED direction d, and
local_j = W_parent^-1 W_j:
- "swing" drives: W_j = S(W_parent ref -> d) W_parent, the smallest rotation after the parent's (no added twist).
  ref is the rest bone j -> child where SMPL-X has that bone (spine3 -> neck, shoulder -> elbow, elbow -> wrist,
  finger1 -> finger2, finger2 -> finger3); for the collars it is the rest neck -> shoulder direction, because TED's
  shoulder bones start at the neck (H36M thorax), not at a collar joint; for the face (ted10 neck -> nose and
  nose -> head top, ted43 neck -> nose) SMPL-X has no such points, so ref is the layout's mean direction and the
  dataset's average head maps onto the SMPL-X rest head.
- "frame" drives (ted43 wrists and head): W_j maps a primary ref exactly onto its target and turns about it so a
  secondary ref best matches its target (wrist: wrist -> middle1, then index1 - pinky1 across the palm; head: right
  ear -> left ear, then ear midpoint -> nose, refs from the mean pose). This gives palms and heads their twist.
- Spine: S = S(rest spine3 -> neck -> d) on the unrotated pelvis. spine="chain" spreads it evenly over spine1..3
  (each local = S^(1/3) about the same axis, so the spine3 world rotation is exactly S); spine="spine3" puts it all
  on spine3.
- The third finger segments (no TED bone beyond joint 3) copy 2/3 of the second segment's local rotation, the usual
  distal/proximal interphalangeal coupling. ted10 has no hand bones: wrists and fingers stay at rest.
The pelvis, legs, jaw and eyes are never driven (identity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sheg.motion import skeleton as _skeleton
from sheg.errors import BadInput

__all__ = ["TedLayout", "TED10", "TED43", "TED_LAYOUTS", "get_ted_layout", "dir_vec_to_joints", "joints_to_dir_vec",
           "to_smplx_axes", "normalize_dirs", "retarget", "generated_joints", "take_arrays", "SPINE_MODES",
           "rotation_to_axis_angle", "dir_vec_from_smplx"]

# The stand-in rest skeleton (another module; tolerate either naming of its tables).
REST_JOINTS = np.asarray(getattr(_skeleton, "STANDIN_REST_JOINTS", getattr(_skeleton, "REST_JOINTS", None)),
                         dtype=np.float64)
SMPLX_PARENTS = tuple(getattr(_skeleton, "SMPLX_PARENTS", getattr(_skeleton, "PARENTS", ())))
NUM_SMPLX_JOINTS = 55
NUM_EXPRESSIONS = 100
SPINE_MODES = ("chain", "spine3")

# SMPL-X joint indices used here.
SPINE1, SPINE2, SPINE3, NECK, L_COLLAR, R_COLLAR, HEAD = 3, 6, 9, 12, 13, 14, 15
L_SHOULDER, R_SHOULDER, L_ELBOW, R_ELBOW, L_WRIST, R_WRIST = 16, 17, 18, 19, 20, 21
L_HAND, R_HAND = 25, 40  # first finger joint of each hand: index1; order index, middle, pinky, ring, thumb


@dataclass(frozen=True)
class TedLayout:
    """A TED skeleton: joint names, bones (parent, child, length in metres), axis change and official mean."""

    name: str
    joint_names: tuple
    bones: tuple  # ((parent, child, length), ...) in direction-vector order
    to_smplx: tuple  # 3x3 rows: v_smplx = M @ v_ted
    mean_dir_vec: tuple  # official yml mean_dir_vec (len 3 * bones)

    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def num_bones(self) -> int:
        return len(self.bones)

    @property
    def dim(self) -> int:
        return 3 * len(self.bones)

    def joint(self, name: str) -> int:
        return self.joint_names.index(name)


_TED10_JOINTS = ("spine", "neck", "nose", "head", "left_shoulder", "left_elbow", "left_wrist", "right_shoulder",
                 "right_elbow", "right_wrist")
_TED10_BONES = ((0, 1, 0.26), (1, 2, 0.18), (2, 3, 0.14), (1, 4, 0.22), (4, 5, 0.36), (5, 6, 0.33), (1, 7, 0.22),
                (7, 8, 0.36), (8, 9, 0.33))
_TED10_MEAN = (0.0154009, -0.9690125, -0.0884354, -0.0022264, -0.8655276, 0.4342174, -0.0035145, -0.8755367,
               -0.4121039, -0.9236511, 0.3061306, -0.0012415, -0.5155854, 0.8129665, 0.0871897, 0.2348464, 0.1846561,
               0.8091402, 0.9271948, 0.2960011, -0.013189, 0.5233978, 0.8092403, 0.0725451, -0.2037076, 0.1924306,
               0.8196916)

_FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # TED Expressive and SMPL-X share this order
_FINGER_LENGTHS = ((0.137, 0.044, 0.031), (0.144, 0.042, 0.033), (0.127, 0.027, 0.026), (0.134, 0.039, 0.033),
                   (0.068, 0.042, 0.036))


def _ted43():
    names = ["spine", "neck", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
             "right_wrist"]
    for side in ("left", "right"):
        names += [f"{side}_{finger}{k}" for finger in _FINGERS for k in (1, 2, 3)]
    names += ["nose", "right_eye", "left_eye", "right_ear", "left_ear"]

    def hand(wrist, first):
        bones = []
        for f, lengths in enumerate(_FINGER_LENGTHS):
            j = first + 3 * f
            bones += [(wrist, j, lengths[0]), (j, j + 1, lengths[1]), (j + 1, j + 2, lengths[2])]
        return bones

    bones = [(0, 1, 0.26), (1, 2, 0.22), (1, 3, 0.22), (2, 4, 0.36), (4, 6, 0.33)] + hand(6, 8)
    bones += [(3, 5, 0.36), (5, 7, 0.33)] + hand(7, 23)
    bones += [(1, 38, 0.18), (38, 39, 0.14), (38, 40, 0.14), (39, 41, 0.15), (40, 42, 0.15)]
    return tuple(names), tuple(bones)


_TED43_MEAN = (
    -0.0737964, -0.9968923, -0.1082858, 0.9111595, 0.2399522, -0.102547, -0.8936886, 0.3131501, -0.1039348,
    0.2093927, 0.958293, 0.0824881, -0.1689021, -0.0353824, -0.7588258, -0.2794763, -0.2495191, -0.614666,
    -0.3877234, 0.005006, -0.5301695, -0.5098616, 0.2257808, 0.0053111, -0.2393621, -0.1022204, -0.6583039,
    -0.4992898, 0.1228059, -0.3292085, -0.4753748, 0.2132857, 0.1742853, -0.2062069, 0.2305175, -0.5897119,
    -0.5452555, 0.1303197, -0.2181693, -0.5221036, 0.1211322, 0.1337591, -0.2164441, 0.0743345, -0.6464546,
    -0.5284583, 0.0457585, -0.319634, -0.5074904, 0.1537192, 0.1365934, -0.4354402, -0.3836682, -0.3850554,
    -0.4927187, -0.2417618, -0.3054556, -0.3556116, -0.281753, -0.5164358, -0.3064435, 0.9284261, -0.067134,
    0.2764367, 0.006997, -0.7365526, 0.2421269, -0.225798, -0.6387642, 0.3788997, 0.0283412, -0.5451686,
    0.5753376, 0.1935219, 0.0632555, 0.2122412, -0.0624179, -0.6755542, 0.5212831, 0.1043523, -0.345288,
    0.5443628, 0.128029, 0.2073687, 0.2197118, 0.2821399, -0.580695, 0.573988, 0.0786667, -0.2133071,
    0.5532452, -0.0006157, 0.1598754, 0.2093099, 0.124119, -0.6504359, 0.5465003, 0.0114155, -0.3203954,
    0.5512083, 0.0489287, 0.1676814, 0.4190787, -0.4018607, -0.3912126, 0.4841548, -0.2668508, -0.3557675,
    0.3416916, -0.2419564, -0.5509825, 0.0485515, -0.6343101, -0.6817347, -0.4705639, -0.6380668, 0.4641643,
    0.4540192, -0.6486361, 0.4604001, -0.3256226, 0.1883097, 0.8057457, 0.3257385, 0.1292366, 0.815372)

_TED43_JOINTS, _TED43_BONES = _ted43()

TED10 = TedLayout("ted10", _TED10_JOINTS, _TED10_BONES, ((-1, 0, 0), (0, -1, 0), (0, 0, 1)), _TED10_MEAN)
TED43 = TedLayout("ted43", _TED43_JOINTS, _TED43_BONES, ((1, 0, 0), (0, -1, 0), (0, 0, -1)), _TED43_MEAN)
TED_LAYOUTS = {layout.name: layout for layout in (TED10, TED43)}


def get_ted_layout(name) -> TedLayout:
    """"ted10" / "ted43" (also accepts the pose dims 27 / 126)."""
    if isinstance(name, TedLayout):
        return name
    by_dim = {layout.dim: layout for layout in TED_LAYOUTS.values()}
    if isinstance(name, int) and name in by_dim:
        return by_dim[name]
    if name in TED_LAYOUTS:
        return TED_LAYOUTS[name]
    raise BadInput(f"unknown TED layout {name!r}: use 'ted10' (TED Gesture, 27 values) or 'ted43' (TED Expressive, "
                   f"126 values)")


# ----------------------------------------------------------------------------------------------------------------
# direction vectors <-> joints


def _as_bones(vec, layout: TedLayout) -> np.ndarray:
    vec = np.asarray(vec, dtype=np.float64)
    if vec.shape[-1] == layout.dim and (vec.ndim == 1 or vec.shape[-2:] != (layout.num_bones, 3)):
        vec = vec.reshape(vec.shape[:-1] + (layout.num_bones, 3))
    if vec.shape[-2:] != (layout.num_bones, 3):
        raise BadInput(f"{layout.name} direction vectors must end in ({layout.dim},) or ({layout.num_bones}, 3), "
                       f"got shape {vec.shape}")
    return vec


def normalize_dirs(vec, layout: TedLayout, eps: float = 1e-8) -> np.ndarray:
    """(..., dim) or (..., B, 3) -> (..., B, 3) unit vectors (a zero vector stays zero)."""
    vec = _as_bones(vec, layout)
    norm = np.linalg.norm(vec, axis=-1, keepdims=True)
    return np.where(norm > eps, vec / np.maximum(norm, eps), 0.0)


def dir_vec_to_joints(vec, layout: TedLayout, normalize: bool = False) -> np.ndarray:
    """(..., dim) or (..., B, 3) direction vectors -> (..., J, 3) joints, root at the origin, TED axes, metres.

    Like the official `convert_dir_vec_to_pose`, each vector is scaled by its bone length as given; normalize=True
    makes them unit first (model outputs plus the mean are not unit).
    """
    vec = normalize_dirs(vec, layout) if normalize else _as_bones(vec, layout)
    joints = np.zeros(vec.shape[:-2] + (layout.num_joints, 3))
    for b, (parent, child, length) in enumerate(layout.bones):
        joints[..., child, :] = joints[..., parent, :] + length * vec[..., b, :]
    return joints


def joints_to_dir_vec(joints, layout: TedLayout) -> np.ndarray:
    """(..., J, 3) joints -> (..., B, 3) unit parent -> child directions (official `convert_pose_seq_to_dir_vec`)."""
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-2:] != (layout.num_joints, 3):
        raise BadInput(f"{layout.name} joints must end in ({layout.num_joints}, 3), got shape {joints.shape}")
    parents = [p for p, _, _ in layout.bones]
    children = [c for _, c, _ in layout.bones]
    return normalize_dirs(joints[..., children, :] - joints[..., parents, :], layout)


def to_smplx_axes(vec, layout: TedLayout) -> np.ndarray:
    """(..., 3) vectors in the layout's TED axes -> SMPL-X axes (x left, y up, z forward)."""
    return np.asarray(vec, dtype=np.float64) @ np.asarray(layout.to_smplx, dtype=np.float64).T


# ----------------------------------------------------------------------------------------------------------------
# rotation helpers (numpy float64, batched over leading dims)


def _unit(v: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), eps)


def _skew(v: np.ndarray) -> np.ndarray:
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    zero = np.zeros_like(x)
    return np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(v.shape[:-1] + (3, 3))


def _swing(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Smallest rotations (..., 3, 3) taking unit a onto unit b; a zero b gives the identity."""
    a, b = _unit(a), _unit(b)
    cross = np.cross(a, b)
    cos = np.sum(a * b, axis=-1)
    k = _skew(cross)
    eye = np.broadcast_to(np.eye(3), k.shape)
    safe = np.where(cos > -1.0 + 1e-9, 1.0 + cos, 1.0)[..., None, None]
    rot = eye + k + (k @ k) / safe
    # antiparallel: a half turn about any axis perpendicular to a
    helper = np.where(np.abs(a[..., :1]) < 0.9, np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    axis = _unit(np.cross(a, helper))
    half_turn = 2.0 * axis[..., :, None] * axis[..., None, :] - eye
    rot = np.where((cos <= -1.0 + 1e-9)[..., None, None], half_turn, rot)
    missing = (np.linalg.norm(b, axis=-1) < 0.5)[..., None, None]
    return np.where(missing, eye, rot)


def _about_axis(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    return _skeleton.axis_angle_to_matrix(_unit(axis) * angle[..., None])


def _frame(ref_p, ref_s, p, s) -> np.ndarray:
    """Rotations mapping ref_p exactly onto p and turning about p so ref_s lies closest to s. (..., 3, 3)."""
    swing = _swing(ref_p, p)
    p = _unit(p)
    s_now = np.einsum("...ij,...j->...i", swing, ref_s)
    s_now = s_now - np.sum(s_now * p, -1, keepdims=True) * p  # both secondaries projected off the primary axis
    s_goal = s - np.sum(s * p, -1, keepdims=True) * p
    angle = np.arctan2(np.sum(p * np.cross(s_now, s_goal), -1), np.sum(s_now * s_goal, -1))
    return _about_axis(p, angle) @ swing


def rotation_to_axis_angle(rot: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> axis-angle (..., 3), angle in [0, pi] (via a quaternion, stable near pi)."""
    r = np.asarray(rot, dtype=np.float64)
    m00, m11, m22 = r[..., 0, 0], r[..., 1, 1], r[..., 2, 2]
    trace = m00 + m11 + m22
    # Shepperd: pick the largest of 4 w^2, 4 x^2, 4 y^2, 4 z^2 for the division
    cands = np.stack([1 + trace, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], axis=-1)
    pick = np.argmax(cands, axis=-1)
    root = np.sqrt(np.maximum(np.take_along_axis(cands, pick[..., None], -1)[..., 0], 1e-300))
    q = np.empty(r.shape[:-2] + (4,))
    d21, d02, d10 = r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]
    s21, s02, s10 = r[..., 2, 1] + r[..., 1, 2], r[..., 0, 2] + r[..., 2, 0], r[..., 1, 0] + r[..., 0, 1]
    options = (
        np.stack([root, d21 / root, d02 / root, d10 / root], -1),
        np.stack([d21 / root, root, s10 / root, s02 / root], -1),
        np.stack([d02 / root, s10 / root, root, s21 / root], -1),
        np.stack([d10 / root, s02 / root, s21 / root, root], -1),
    )
    for k, option in enumerate(options):
        q = np.where((pick == k)[..., None], option, q)
    q = q * np.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0: angle in [0, pi]
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    vec_norm = np.linalg.norm(q[..., 1:], axis=-1)
    angle = 2.0 * np.arctan2(vec_norm, q[..., 0])
    scale = np.where(vec_norm > 1e-12, angle / np.maximum(vec_norm, 1e-300), 2.0)  # small angles: 2 * vector part
    return q[..., 1:] * scale[..., None]


def _apply(rot: np.ndarray, v) -> np.ndarray:
    return np.einsum("...ij,...j->...i", rot, np.asarray(v, dtype=np.float64))


def _rest_dir(parent: int, child: int) -> np.ndarray:
    return _unit(REST_JOINTS[child] - REST_JOINTS[parent])


# ----------------------------------------------------------------------------------------------------------------
# retarget plans: (kind, smplx joint, ...) in SMPL-X order (parents before children)


def _mean_smplx(layout: TedLayout) -> tuple[np.ndarray, np.ndarray]:
    """The official mean pose in SMPL-X axes: unit bone directions (B, 3) and joints (J, 3)."""
    dirs = to_smplx_axes(normalize_dirs(np.asarray(layout.mean_dir_vec), layout), layout)
    return dirs, to_smplx_axes(dir_vec_to_joints(np.asarray(layout.mean_dir_vec), layout, normalize=True), layout)


def _plan(layout: TedLayout) -> list[tuple]:
    """Drives: ("swing", joint, ref, bone) | ("frame", joint, (ref_p, ref_s), (bone, (j_a, j_b))) | ("couple", ...)."""
    mean_dirs, mean_joints = _mean_smplx(layout)
    if layout.name == "ted10":
        return [
            ("swing", NECK, _unit(mean_dirs[1]), 1),  # neck -> nose
            ("swing", L_COLLAR, _rest_dir(NECK, L_SHOULDER), 3),
            ("swing", R_COLLAR, _rest_dir(NECK, R_SHOULDER), 6),
            ("swing", HEAD, _unit(mean_dirs[2]), 2),  # nose -> head top
            ("swing", L_SHOULDER, _rest_dir(L_SHOULDER, L_ELBOW), 4),
            ("swing", R_SHOULDER, _rest_dir(R_SHOULDER, R_ELBOW), 7),
            ("swing", L_ELBOW, _rest_dir(L_ELBOW, L_WRIST), 5),
            ("swing", R_ELBOW, _rest_dir(R_ELBOW, R_WRIST), 8),
        ]
    j = layout.joint
    lateral = mean_joints[j("left_ear")] - mean_joints[j("right_ear")]
    forward = mean_joints[j("nose")] - 0.5 * (mean_joints[j("left_ear")] + mean_joints[j("right_ear")])
    plan = [
        ("swing", NECK, _unit(mean_dirs[37]), 37),  # neck -> nose
        ("swing", L_COLLAR, _rest_dir(NECK, L_SHOULDER), 1),
        ("swing", R_COLLAR, _rest_dir(NECK, R_SHOULDER), 2),
        ("head", HEAD, (_unit(lateral), _unit(forward)), None),
        ("swing", L_SHOULDER, _rest_dir(L_SHOULDER, L_ELBOW), 3),
        ("swing", R_SHOULDER, _rest_dir(R_SHOULDER, R_ELBOW), 20),
        ("swing", L_ELBOW, _rest_dir(L_ELBOW, L_WRIST), 4),
        ("swing", R_ELBOW, _rest_dir(R_ELBOW, R_WRIST), 21),
    ]
    for side, wrist, first_smplx, first_bone, first_ted in (("left", L_WRIST, L_HAND, 5, 8),
                                                            ("right", R_WRIST, R_HAND, 22, 23)):
        middle1, index1, pinky1 = first_smplx + 3, first_smplx, first_smplx + 6
        refs = (_rest_dir(wrist, middle1), _unit(REST_JOINTS[index1] - REST_JOINTS[pinky1]))
        plan.append(("frame", wrist, refs, (first_bone + 3, (first_ted, first_ted + 6))))
        for f in range(len(_FINGERS)):
            base, bone = first_smplx + 3 * f, first_bone + 3 * f
            plan.append(("swing", base, _rest_dir(base, base + 1), bone + 1))
            plan.append(("swing", base + 1, _rest_dir(base + 1, base + 2), bone + 2))
            plan.append(("couple", base + 2, base + 1, 2.0 / 3.0))
    return plan


_PLANS: dict[str, list] = {}


def _get_plan(layout: TedLayout) -> list:
    if layout.name not in _PLANS:
        _PLANS[layout.name] = _plan(layout)
    return _PLANS[layout.name]


def _bone_drivers(layout: TedLayout) -> list[tuple[int, int, np.ndarray]]:
    """(bone, SMPL-X joint, ref) for every TED bone: the bone's direction is W_joint @ ref, the inverse of the plan.

    Plan drives give their own bone; the spine bone is spine3's rest spine3 -> neck; bones the plan reads only as
    secondaries (ted43: wrist -> finger bases other than middle1, the eye and ear bones) ride on their joint's
    rotation with the rest direction (fingers) or the mean pose's (face), so the head and wrist frames come back."""
    mean_dirs, _ = _mean_smplx(layout)
    drivers = {0: (SPINE3, _rest_dir(SPINE3, NECK))}
    for drive in _get_plan(layout):
        if drive[0] == "swing":
            _, joint, ref, bone = drive
            drivers[bone] = (joint, ref)
        elif drive[0] == "frame":
            _, wrist, _, (middle_bone, _) = drive
            first_bone, first_smplx = middle_bone - 3, (L_HAND if wrist == L_WRIST else R_HAND)
            for f in range(len(_FINGERS)):
                drivers[first_bone + 3 * f] = (wrist, _rest_dir(wrist, first_smplx + 3 * f))
    if layout.name == "ted43":
        for bone in range(38, 42):  # nose -> eyes -> ears
            drivers[bone] = (HEAD, _unit(mean_dirs[bone]))
    assert sorted(drivers) == list(range(layout.num_bones)), f"{layout.name}: undriven bones"
    return [(bone, joint, np.asarray(ref, dtype=np.float64)) for bone, (joint, ref) in sorted(drivers.items())]


def dir_vec_from_smplx(poses, layout) -> np.ndarray:
    """SMPL-X axis-angle poses (T, 165) or (T, 55, 3) -> TED unit direction vectors (T, dim) float32, TED axes.

    The inverse of `retarget` on the directions: the body's global orientation (joint 0) is dropped (TED poses are
    body-centred) and every bone is its driving joint's world rotation applied to the reference the retarget uses,
    so retarget(dir_vec_from_smplx(p)) reproduces p's directions. This is how SMPL-X motion capture becomes
    DiffGesture training data.
    """
    layout = get_ted_layout(layout)
    poses = np.asarray(poses, dtype=np.float64)
    if poses.ndim == 2 and poses.shape[1] == 3 * NUM_SMPLX_JOINTS:
        poses = poses.reshape(len(poses), NUM_SMPLX_JOINTS, 3)
    if poses.ndim != 3 or poses.shape[1:] != (NUM_SMPLX_JOINTS, 3):
        raise BadInput(f"SMPL-X poses must be (frames, 165) or (frames, 55, 3), got shape {poses.shape}")
    local = _skeleton.axis_angle_to_matrix(poses)
    world = np.empty_like(local)
    world[:, 0] = np.eye(3)
    for j in range(1, NUM_SMPLX_JOINTS):
        world[:, j] = world[:, SMPLX_PARENTS[j]] @ local[:, j]
    dirs = np.empty((len(poses), layout.num_bones, 3))
    for bone, joint, ref in _bone_drivers(layout):
        dirs[:, bone] = _apply(world[:, joint], ref)
    # back to TED axes: to_smplx is a rotation, so its transpose undoes it (row vectors: v_ted = v_smplx @ M)
    ted = dirs @ np.asarray(layout.to_smplx, dtype=np.float64)
    return ted.reshape(len(poses), layout.dim).astype(np.float32)


def generated_joints(layout, spine: str = "chain") -> np.ndarray:
    """(55,) bool: the SMPL-X joints the retarget drives."""
    layout = get_ted_layout(layout)
    mask = np.zeros(NUM_SMPLX_JOINTS, dtype=bool)
    mask[[SPINE1, SPINE2, SPINE3] if _spine_mode(spine) == "chain" else [SPINE3]] = True
    for drive in _get_plan(layout):
        mask[drive[1]] = True
    return mask


def _spine_mode(spine: str) -> str:
    if spine not in SPINE_MODES:
        raise BadInput(f"unknown spine mode {spine!r}: use 'chain' (spine1..3 share the bend) or 'spine3'")
    return spine


def retarget(vec, layout, spine: str = "chain") -> np.ndarray:
    """TED direction vectors (T, dim) or (T, B, 3), TED axes, any length -> SMPL-X axis-angle poses (T, 55, 3).

    Vectors are normalized per bone first (so pass model output + mean_dir_vec directly). float32 result; joints
    outside `generated_joints(layout, spine)` are zero (rest).
    """
    layout = get_ted_layout(layout)
    spine = _spine_mode(spine)
    dirs = normalize_dirs(vec, layout)
    if dirs.ndim != 3:
        raise BadInput(f"retarget needs a sequence (frames, {layout.dim}), got shape {np.shape(vec)}")
    frames = dirs.shape[0]
    target = to_smplx_axes(dirs, layout)  # (T, B, 3)
    joints = to_smplx_axes(dir_vec_to_joints(dirs, layout), layout)  # (T, J, 3)

    eye = np.broadcast_to(np.eye(3), (frames, 3, 3))
    world = [eye] * NUM_SMPLX_JOINTS
    local = np.zeros((frames, NUM_SMPLX_JOINTS, 3))
    drives = {drive[1]: drive for drive in _get_plan(layout)}

    # spine: one swing on the unrotated pelvis, spread over the chain or put on spine3
    spine_rot = _swing(np.broadcast_to(_rest_dir(SPINE3, NECK), (frames, 3)), target[:, 0])
    spine_vec = rotation_to_axis_angle(spine_rot)
    for j in ([SPINE1, SPINE2, SPINE3] if spine == "chain" else [SPINE3]):
        local[:, j] = spine_vec / 3.0 if spine == "chain" else spine_vec

    for j in range(1, NUM_SMPLX_JOINTS):
        parent_world = world[SMPLX_PARENTS[j]]
        drive = drives.get(j)
        if j in (SPINE1, SPINE2, SPINE3) or drive is None:
            world[j] = parent_world @ _skeleton.axis_angle_to_matrix(local[:, j])
            continue
        kind = drive[0]
        if kind == "swing":
            _, _, ref, bone = drive
            carried = _apply(parent_world, ref)
            world[j] = _swing(carried, target[:, bone]) @ parent_world
        elif kind == "frame":
            _, _, (ref_p, ref_s), (bone, (j_a, j_b)) = drive
            world[j] = _frame(np.broadcast_to(ref_p, (frames, 3)), np.broadcast_to(ref_s, (frames, 3)),
                              target[:, bone], joints[:, j_a] - joints[:, j_b])
        elif kind == "head":
            _, _, (ref_lat, ref_fwd), _ = drive
            jn = layout.joint
            ears_mid = 0.5 * (joints[:, jn("left_ear")] + joints[:, jn("right_ear")])
            world[j] = _frame(np.broadcast_to(ref_lat, (frames, 3)), np.broadcast_to(ref_fwd, (frames, 3)),
                              joints[:, jn("left_ear")] - joints[:, jn("right_ear")], joints[:, jn("nose")] - ears_mid)
        else:  # couple: a fraction of another joint's local rotation
            _, _, source, fraction = drive
            local[:, j] = fraction * local[:, source]
            world[j] = parent_world @ _skeleton.axis_angle_to_matrix(local[:, j])
            continue
        local[:, j] = rotation_to_axis_angle(np.swapaxes(parent_world, -1, -2) @ world[j])
    return local.astype(np.float32)


def take_arrays(vec, layout, spine: str = "chain") -> dict:
    """De-normalized TED direction vectors (T, dim) -> take arrays (see take.py): poses (T, 165), zero expressions
    (T, 100), generated_joints (55,), generated_expressions False."""
    layout = get_ted_layout(layout)
    poses = retarget(vec, layout, spine)
    frames = len(poses)
    return {
        "poses": poses.reshape(frames, 3 * NUM_SMPLX_JOINTS),
        "expressions": np.zeros((frames, NUM_EXPRESSIONS), dtype=np.float32),
        "generated_joints": generated_joints(layout, spine),
        "generated_expressions": False,
    }
