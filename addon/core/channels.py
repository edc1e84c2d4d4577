"""A take <-> the F-curve channels of one Action, without bpy.

`build_channels` turns a Take (its own fps) into per-channel key values at the scene's frames: quaternion w,x,y,z
for every generated joint the rig has, pelvis location for trans, shape-key values for expressions. `take_from_channels`
is the inverse used by export (channel values sampled at the take's own frames -> Take).

Conventions:
  * rotations: SMPL-X local axis-angle -> quaternion, hemisphere-continuous, resampled by time (core.resample),
    then re-expressed in the bone's rest frame when that differs from the SMPL-X joint frame (identity for the
    stand-in rig and the official SMPL-X add-on's rigs): q_bone = c^-1 q c, c = the bone rest frame in SMPL-X axes;
  * trans: keyed on the pelvis bone's location, relative to the take's first frame (the rig's rest pose stands on the
    floor where the user put it); the first frame's absolute trans is kept as `trans_origin` so export writes the
    file's trans back;
  * jaw and eyes belong to the face part, every other joint and trans to the body part; expressions to the face.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import arkit, quaternions, resample, smplx
from .takefile import Take


@dataclass
class Channel:
    data_path: str
    index: int
    group: str
    values: np.ndarray  # (N,) float32, one per key


@dataclass
class ChannelPlan:
    frames: np.ndarray                      # (N,) scene frames of the keys (float64, integers for whole frames)
    bone_channels: list = field(default_factory=list)   # Channel on the armature object
    shape_channels: list = field(default_factory=list)  # Channel on the face mesh's Key datablock
    joints: list = field(default_factory=list)          # SMPL-X joint names whose rotation is keyed
    missing_joints: list = field(default_factory=list)  # generated joints the rig has no bone for
    trans_origin: np.ndarray | None = None  # (3,) SMPL-X trans of the take's first frame, when trans is keyed
    expression_count: int = 0

    @property
    def key_count(self) -> int:
        return len(self.frames) * (len(self.bone_channels) + len(self.shape_channels))


def _quoted(name: str) -> str:
    return name.replace("\\", "\\\\").replace('"', '\\"')


def rotation_path(bone: str) -> str:
    return f'pose.bones["{_quoted(bone)}"].rotation_quaternion'


def location_path(bone: str) -> str:
    return f'pose.bones["{_quoted(bone)}"].location'


def shape_key_path(key_name: str) -> str:
    return f'key_blocks["{_quoted(key_name)}"].value'


def parse_path(data_path: str):
    """'pose.bones["x"].rotation_quaternion' -> ("bone", "x", "rotation_quaternion");
    'key_blocks["Exp000"].value' -> ("key", "Exp000", "value"); anything else -> None."""
    for prefix, kind in (('pose.bones["', "bone"), ('key_blocks["', "key")):
        if data_path.startswith(prefix):
            end = data_path.rfind('"].')
            if end > len(prefix):
                name = data_path[len(prefix):end].replace('\\"', '"').replace("\\\\", "\\")
                return kind, name, data_path[end + 3:]
    return None


_IDENTITY = np.array([1.0, 0.0, 0.0, 0.0])


def build_channels(take: Take, *, bone_names: dict, bone_frames: dict | None = None,
                   expression_keys: dict | None = None, arkit_keys: dict | None = None,
                   parts: str = "both", target_fps: float, start_frame: int) -> ChannelPlan:
    """Key values for a Y-up take on a rig.

    bone_names: SMPL-X joint name -> bone name (joints the rig has). bone_frames: joint name -> (4,) quaternion c of
    the bone rest frame in SMPL-X axes (missing = identity). expression_keys: expression index -> shape key name;
    arkit_keys: ARKit name -> shape key name. Returns a ChannelPlan with N = resample.frame_count(...) keys.
    """
    if take.up_axis != "Y":
        raise ValueError("convert Z-up takes with takefile.y_up before building channels")
    bone_frames = bone_frames or {}
    part_mask = smplx.joints_for_parts(parts)
    wanted = [j for j in range(smplx.NUM_JOINTS) if take.generated_joints[j] and part_mask[j]]
    joints = [j for j in wanted if smplx.JOINT_NAMES[j] in bone_names]
    positions = resample.source_positions(take.frames, take.fps, target_fps)
    plan = ChannelPlan(frames=start_frame + np.arange(len(positions), dtype=np.float64))
    plan.missing_joints = [smplx.JOINT_NAMES[j] for j in wanted if j not in joints]

    if joints:
        quats = quaternions.axis_angle_to_quat(take.poses[:, joints])          # (T, J, 4)
        quats = resample.resample_quats(quaternions.make_continuous(quats), positions)  # (N, J, 4)
        for column, j in enumerate(joints):
            name = smplx.JOINT_NAMES[j]
            q = quats[:, column]
            frame = bone_frames.get(name)
            if frame is not None and not np.allclose(frame, _IDENTITY, atol=1e-9):
                q = quaternions.conjugate_by(q, frame)  # orthogonal map: keeps the continuity
            q = q.astype(np.float32)
            path = rotation_path(bone_names[name])
            for axis in range(4):
                plan.bone_channels.append(Channel(path, axis, smplx.BODY_PART[j], q[:, axis]))
            plan.joints.append(name)

    if take.trans is not None and smplx.PELVIS in joints:
        trans = take.trans.astype(np.float64)
        plan.trans_origin = trans[0].copy()
        offset = resample.resample_linear(trans - trans[0], positions)       # (N, 3) SMPL-X axes
        frame = bone_frames.get("pelvis")
        if frame is not None:
            offset = quaternions.rotate_vectors(quaternions.quat_conjugate(frame), offset)
        path = location_path(bone_names["pelvis"])
        for axis in range(3):
            plan.bone_channels.append(Channel(path, axis, smplx.BODY_PART[smplx.PELVIS],
                                              offset[:, axis].astype(np.float32)))

    if parts != "body" and take.generated_expressions:
        if take.expressions is not None and expression_keys:
            columns = sorted(i for i in expression_keys if i < take.expressions.shape[1])
            values = resample.resample_linear(take.expressions[:, columns], positions).astype(np.float32)
            for c, i in enumerate(columns):
                plan.shape_channels.append(Channel(shape_key_path(expression_keys[i]), 0, smplx.EXPRESSIONS_GROUP,
                                                   values[:, c]))
        arkit_names, arkit_weights = take.arkit_names, take.arkit_weights
        if arkit_weights is None and arkit_keys and take.generated_joints[smplx.JAW]:
            arkit_names, arkit_weights = arkit.weights_from_jaw(take.poses[:, smplx.JAW])  # SHOW-layout takes
        if arkit_weights is not None and arkit_keys:
            columns = [c for c, n in enumerate(arkit_names) if n in arkit_keys]
            values = resample.resample_linear(arkit_weights[:, columns], positions).astype(np.float32)
            for out, c in enumerate(columns):
                plan.shape_channels.append(Channel(shape_key_path(arkit_keys[arkit_names[c]]), 0,
                                                   smplx.EXPRESSIONS_GROUP, values[:, out]))
        plan.expression_count = len(plan.shape_channels)
    return plan


def take_from_channels(*, fps: float, frames: int, rotations: dict, location: np.ndarray | None = None,
                       expressions: dict | None = None, arkit: dict | None = None, bone_frames: dict | None = None,
                       trans_origin=None, **meta) -> Take:
    """Inverse of build_channels, at the take's own frames.

    rotations: joint name -> (T, 4) bone quaternion w,x,y,z sampled at the take's frames; location: (T, 3) pelvis
    location or None; expressions: expression index -> (T,); arkit: ARKit name -> (T,). meta: Take fields (model_id,
    seed, audio_file, betas, gender, ...). Joints without rotations come back at rest and not generated.
    """
    bone_frames = bone_frames or {}
    poses = np.zeros((frames, smplx.NUM_JOINTS, 3), dtype=np.float64)
    generated = np.zeros(smplx.NUM_JOINTS, dtype=bool)
    for name, q in rotations.items():
        j = smplx.JOINT_INDEX[name]
        q = np.asarray(q, dtype=np.float64)
        frame = bone_frames.get(name)
        if frame is not None:
            q = quaternions.conjugate_by(q, quaternions.quat_conjugate(frame))
        poses[:, j] = quaternions.quat_to_axis_angle(q)
        generated[j] = True
    trans = None
    if location is not None:
        offset = np.asarray(location, dtype=np.float64)
        frame = bone_frames.get("pelvis")
        if frame is not None:
            offset = quaternions.rotate_vectors(frame, offset)
        origin = np.zeros(3) if trans_origin is None else np.asarray(trans_origin, dtype=np.float64)
        trans = (offset + origin).astype(np.float32)
    expr = None
    if expressions:
        expr = np.zeros((frames, max(smplx.NUM_EXPRESSIONS, max(expressions) + 1)), dtype=np.float32)
        for i, values in expressions.items():
            expr[:, i] = values
    arkit_weights, arkit_names = None, ()
    if arkit:
        arkit_names = tuple(n for n in smplx.ARKIT_NAMES if n in arkit) + tuple(
            n for n in arkit if n not in smplx.ARKIT_NAMES)
        arkit_weights = np.stack([np.asarray(arkit[n], dtype=np.float32) for n in arkit_names], axis=1)
    return Take(poses=poses.astype(np.float32), fps=float(fps), trans=trans, expressions=expr,
                generated_joints=generated, generated_expressions=bool(expressions or arkit),
                arkit_weights=arkit_weights, arkit_names=arkit_names, **meta)


# --- channel groups: the unit of key reduction and smoothing ------------------------------------------------------

def group_kind(data_path: str) -> str:
    """Key-reduction kind of an F-curve's data path: "quaternion" (rotation_quaternion), "vector" (location), or
    "scalar" (shape-key values and anything else)."""
    if data_path.endswith("rotation_quaternion"):
        return "quaternion"
    if data_path.endswith("].location") or data_path == "location":
        return "vector"
    return "scalar"


def group_tolerance(kind: str, data_path: str, *, rotation_tolerance_deg: float, location_tolerance: float,
                    shape_tolerance: float) -> float:
    """The error bound of a channel group: degrees for quaternions, metres for locations, value units otherwise
    (Euler/axis-angle rotation channels reduced one by one get the rotation tolerance in radians)."""
    if kind == "quaternion":
        return float(rotation_tolerance_deg)
    if kind == "vector":
        return float(location_tolerance)
    if "rotation_" in data_path:
        # one rotation component alone: a quaternion component error e turns the bone by about 2e radians
        factor = 0.5 if data_path.endswith("rotation_quaternion") else 1.0
        return float(np.radians(rotation_tolerance_deg)) * factor
    return float(shape_tolerance)


def channel_groups(channel_list) -> list:
    """Channels sharing a data path, in first-seen order: list of (data_path, kind, [Channel] by index).

    A quaternion group needs its 4 components (w, x, y, z); an incomplete one is split into scalar groups."""
    by_path: dict = {}
    for ch in channel_list:
        by_path.setdefault(ch.data_path, []).append(ch)
    out = []
    for path, members in by_path.items():
        members = sorted(members, key=lambda c: c.index)
        kind = group_kind(path)
        if kind == "quaternion" and [c.index for c in members] != [0, 1, 2, 3]:
            out.extend((path, "scalar", [c]) for c in members)
        else:
            out.append((path, kind, members))
    return out


def smooth_channels(channel_list, fps: float, strength: float) -> list:
    """Channels with zero-phase low-passed values (core.smoothing), all filtered in one pass; quaternions are
    re-normalized per bone. strength 0 returns the list unchanged. Values stay float32."""
    from . import smoothing  # local: most callers never smooth

    if not (0.0 <= strength <= 1.0):
        raise ValueError(f"smoothing strength must be between 0 and 1 (got {strength})")
    if strength == 0.0 or not channel_list:
        return list(channel_list)
    groups = channel_groups(channel_list)
    members = [c for _, _, group in groups for c in group]
    smoothed = smoothing.lowpass(np.stack([c.values for c in members], axis=1), fps, strength)  # (N, channels)
    column = 0
    for _, kind, group in groups:
        if kind == "quaternion":
            q = smoothed[:, column:column + 4]
            q /= np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        column += len(group)
    return [Channel(c.data_path, c.index, c.group, smoothed[:, i].astype(np.float32)) for i, c in enumerate(members)]
