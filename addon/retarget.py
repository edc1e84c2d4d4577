"""Retarget a take onto the artist's own armature (Rigify, Mixamo, Auto-Rig Pro, CC, MetaHuman-style): the bpy side.

The take is read from its action as it plays now (generated, imported or edited: takes.take_from_action), its
rotations are transferred by core.retarget with the bone map of core.bonemap, and the result is written as a new take
Action on a new NLA track of the target (takes.write_take_action), earlier actions kept. The bone map the user
corrected is kept on the target armature (JSON in `sheg_bone_map`), so the next retarget and the panel use it.
Rigify rigs are driven through their FK controls, so their arm and leg IK/FK switches are set to FK.
"""

from __future__ import annotations

import json

import bpy
import numpy as np

from . import keywriter, rig, takes
from .core import bonemap, channels, resample, retarget, smplx

MAP_PROP = "sheg_bone_map"          # on the target armature: {"preset", "bones"} JSON of the map to use
RETARGET_PROP = "sheg_retarget_of"  # on a retargeted take's action: the source take's action name
_RIGIFY_FK_SWITCHES = ("upper_arm_parent", "thigh_parent")  # pose bones carrying Rigify's IK_FK property


def _check_armature(obj, what: str) -> None:
    if obj is None or getattr(obj, "type", None) != "ARMATURE":
        label = getattr(obj, "name", "nothing")
        raise ValueError(f"{what} '{label}' is not an armature; pick an armature object")


def target_rig(armature) -> retarget.TargetRig:
    """The armature's rest in armature space (core.retarget.TargetRig)."""
    bones = armature.data.bones
    index = {b.name: i for i, b in enumerate(bones)}
    rest = np.array([np.array(b.matrix_local.to_3x3(), dtype=np.float64) for b in bones]).reshape(-1, 3, 3)
    heads = np.array([tuple(b.head_local) for b in bones], dtype=np.float64).reshape(-1, 3)
    parents = tuple(index[b.parent.name] if b.parent is not None else -1 for b in bones)
    return retarget.TargetRig(names=tuple(index), parents=parents, rest=rest, heads=heads)


def stored_bone_map(armature) -> dict | None:
    """The map kept on the armature ({"preset", "bones"}), or None."""
    text = armature.get(MAP_PROP)
    if not text:
        return None
    try:
        data = json.loads(str(text))
        return {"preset": str(data.get("preset", "")), "bones": bonemap.check_bone_map(dict(data["bones"]))}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def store_bone_map(armature, bone_map: dict, preset: str = "") -> None:
    bones = bonemap.check_bone_map(bone_map, [b.name for b in armature.data.bones])
    armature[MAP_PROP] = json.dumps({"preset": preset, "bones": bones})


def find_bone_map(armature) -> tuple:
    """(preset, {joint: bone}) for the armature: the map kept on it, else the best preset by bone names."""
    _check_armature(armature, "target")
    stored = stored_bone_map(armature)
    names = [b.name for b in armature.data.bones]
    if stored is not None and all(b in names for b in stored["bones"].values()):
        return stored["preset"] or "custom", stored["bones"]
    return bonemap.find_bone_map(names)


def save_bone_map(armature, path: str, name: str = "") -> dict:
    preset, bones = find_bone_map(armature)
    bonemap.save_bone_map(path, bones, name=name or armature.name, preset=preset)
    return {"path": path, "joints": len(bones), "preset": preset}


def load_bone_map(armature, path: str) -> dict:
    """Read a preset file and keep its map on the armature (every bone it names must exist)."""
    _check_armature(armature, "target")
    data = bonemap.load_bone_map(path)
    store_bone_map(armature, data["bones"], data["preset"])
    return {"path": path, "joints": len(data["bones"]), "preset": data["preset"]}


def source_rest_joints(source) -> np.ndarray:
    """(55, 3) SMPL-X rest joints of the source SMPL-X rig (its bone heads), stand-in joints where it lacks one."""
    joints = smplx.STANDIN_REST_JOINTS.copy()
    names = rig.find_smplx_bones(source)
    heads = {j: np.array(tuple(source.data.bones[b].head_local)) @ smplx.SMPLX_TO_BLENDER for j, b in names.items()}
    pelvis = heads.get("pelvis")
    for j, name in enumerate(smplx.JOINT_NAMES):
        if name in heads:
            joints[j] = heads[name] - pelvis
    return joints


def _use_rigify_fk(target) -> dict:
    """Set Rigify's arm/leg IK_FK switches to FK (1.0); returns {bone: value before} of those changed."""
    changed = {}
    for base in _RIGIFY_FK_SWITCHES:
        for side in (".L", ".R"):
            bone = target.pose.bones.get(base + side)
            if bone is not None and "IK_FK" in bone.keys() and bone["IK_FK"] != 1.0:
                changed[bone.name] = bone["IK_FK"]
                bone["IK_FK"] = 1.0
    return changed


def retarget_take(context, source, take_name: str, target, *, bone_map: dict | None = None, root: str = "in_place",
                  face_mesh=None, name: str | None = None, keys: str = "dense", rotation_tolerance_deg: float = 1.0,
                  location_tolerance: float = 0.001, shape_tolerance: float = 0.01) -> dict:
    """Write the take `take_name` of the SMPL-X armature `source` onto `target` as a new take (new Action, new NLA
    track, at the take's start frame). bone_map: SMPL-X joint -> target bone (default: find_bone_map). root:
    "in_place" (rotations only) or "translation" (the pelvis bone also follows the take's translation, scaled to the
    target's pelvis height). face_mesh: a mesh whose Exp### or ARKit shape keys follow the take's face. Returns
    action, track, frames, start_frame, end_frame, joints, preset, bone_map, unmapped (joint names), unmapped_line
    (one line for the user), keys, fcurves, fk_switched (Rigify bones set to FK). Nothing changes on failure."""
    _check_armature(source, "source")
    _check_armature(target, "target")
    if target == source:
        raise ValueError("the target armature is the take's own SMPL-X armature; pick the character's armature")
    if root not in retarget.ROOT_POLICIES:
        raise ValueError(f"unknown root policy '{root}' (use one of: {', '.join(retarget.ROOT_POLICIES)})")
    takes._check_editable(target, f"armature '{target.name}'")
    preset = "custom"
    if bone_map is None:
        preset, bone_map = find_bone_map(target)
    bone_map = bonemap.check_bone_map(bone_map, [b.name for b in target.data.bones])
    missing = bonemap.missing_required(bone_map)
    if missing:
        raise ValueError(f"the bone map of '{target.name}' lacks {', '.join(missing[:4])}"
                         f"{'...' if len(missing) > 4 else ''}; map them in the panel (Retarget > Bone Map) "
                         f"or load a preset")
    keys_options = {"rotation_tolerance_deg": rotation_tolerance_deg, "location_tolerance": location_tolerance,
                    "shape_tolerance": shape_tolerance}
    keywriter.check_key_options(keys, rotation_tolerance_deg, location_tolerance, shape_tolerance, 0.0)
    take_action = takes._find_take_action(source, take_name)
    take = takes.take_from_action(context, source, take_name)
    start_frame = int(take_action.get("sheg_start_frame", context.scene.frame_current))
    generated = [smplx.JOINT_NAMES[j] for j in range(smplx.NUM_JOINTS) if take.generated_joints[j]]
    plan = retarget.plan_retarget(bone_map, target_rig(target), source_rest_joints(source), joints=generated)
    if root == "translation" and (plan.root_column < 0 or take.trans is None):
        raise ValueError("root 'translation' needs a mapped pelvis bone and a take with translation; "
                         "map the pelvis or keep the root in place")

    scene_fps = takes._scene_fps(context.scene)
    positions = resample.source_positions(take.frames, take.fps, scene_fps)
    local = resample.resample_quats(retarget.retarget_rotations(plan, take.poses), positions).astype(np.float32)
    out = channels.ChannelPlan(frames=start_frame + np.arange(len(positions), dtype=np.float64))
    for column, (j, bone) in enumerate(zip(plan.joints, plan.bones)):
        path = channels.rotation_path(bone)
        for axis in range(4):
            out.bone_channels.append(channels.Channel(path, axis, smplx.BODY_PART[j], local[:, column, axis]))
    if root == "translation":
        loc = retarget.root_locations(plan, take.trans, take.poses)
        loc = resample.resample_linear(loc, positions).astype(np.float32)
        path = channels.location_path(plan.bones[plan.root_column])
        out.bone_channels += [channels.Channel(path, axis, smplx.BODY_PART[smplx.PELVIS], loc[:, axis])
                              for axis in range(3)]
    key = None
    if face_mesh is not None:
        exp_keys, arkit_keys = takes._face_keys(face_mesh, take)
        face = channels.build_channels(take, bone_names={}, expression_keys=exp_keys, arkit_keys=arkit_keys,
                                       parts="face", target_fps=scene_fps, start_frame=start_frame)
        out.shape_channels = face.shape_channels
        if out.shape_channels:
            key = face_mesh.data.shape_keys
            takes._check_editable(key, f"the shape keys of '{face_mesh.name}'")

    def store(action):
        for prop, value in take_action.items():
            if prop.startswith("sheg_") and prop not in (takes.TWEAK_PROP, "sheg_baked_from"):
                action[prop] = value
        action[RETARGET_PROP] = take_action.name
        action["sheg_generated_joints"] = ",".join(smplx.JOINT_NAMES[j] for j in plan.joints)
        action["sheg_bone_map"] = json.dumps(dict(zip((smplx.JOINT_NAMES[j] for j in plan.joints), plan.bones)))
        action["sheg_root"] = root
        action["sheg_face"] = key is not None
        action["sheg_expressions"] = len(out.shape_channels)
        action["sheg_start_frame"] = start_frame
        action["sheg_scene_fps"] = float(scene_fps)
        takes._store_key_options(action, keys, keys_options, 0.0)

    fk_switched = _use_rigify_fk(target) if preset == "rigify" else {}
    try:
        action, track, stats = takes.write_take_action(
            target, key, out, name=name or f"{take_action.name} on {target.name}", start_frame=start_frame,
            keys=keys, tolerances=keys_options, store=store)
    except BaseException:
        for bone_name, value in fk_switched.items():
            target.pose.bones[bone_name]["IK_FK"] = value
        raise
    for bone in plan.bones:
        target.pose.bones[bone].rotation_mode = "QUATERNION"
    return {"action": action.name, "track": track.name, "frames": len(out.frames), "start_frame": start_frame,
            "end_frame": start_frame + len(out.frames) - 1, "joints": len(plan.joints), "preset": preset,
            "bone_map": dict(bone_map), "unmapped": plan.unmapped,
            "unmapped_line": bonemap.describe_unmapped(plan.unmapped), "keys": stats["keys"],
            "fcurves": len(out.bone_channels) + len(out.shape_channels), "expressions": len(out.shape_channels),
            "fk_switched": sorted(fk_switched)}
