"""Takes in Blender: one Action per take (slotted actions, Blender 4.4+/5.0) on its own NLA track(s).

A take's Action has an OBJECT slot for the armature (bone quaternions, pelvis location) and, when the face is
animated, a KEY slot for the face mesh's shape keys. It is pushed to a new NLA track on the armature (and one on the
Key), so earlier takes and the active actions stay as they were. Keys are written in bulk (keyframe_points.add +
foreach_set), resampled by time to the scene fps (core.resample): dense (one LINEAR key per frame) or reduced (the
fewest Bezier keys within a tolerance, core.keyreduce), optionally low-passed first (core.smoothing). The action's
custom properties (`sheg_*`) say what the take is, so the panel can list takes and export can rebuild the take file.
Tweak layers and baking live in take_layers.py.
"""

from __future__ import annotations

import os

import bpy
import numpy as np

from . import keywriter, rig
from .core import channels, resample, smplx, takefile

TAKE_PROP = "sheg_take"  # marks an action as a take (value: format version)
TWEAK_PROP = "sheg_tweak_of"  # marks a tweak-layer action (value: the take action's name)
MAX_FRAME = 1048574  # Blender's last scene frame (Scene.frame_end hard maximum)


def _scene_fps(scene) -> float:
    return resample.scene_fps(scene.render.fps, scene.render.fps_base)


def _check_editable(block, what: str) -> None:
    if getattr(block, "library", None) is not None:
        raise ValueError(f"{what} is linked from the library {block.library.filepath}; "
                         f"make a library override (Object > Library Override) before adding takes")


def _face_keys(face_mesh, take: takefile.Take):
    """(expression index -> key, ARKit name -> key) of the face mesh; ValueError if it has neither."""
    maps = {}
    for kind in ("exp", "arkit"):
        try:
            maps[kind] = rig.find_expression_keys(face_mesh, kind)
        except ValueError:
            maps[kind] = {}
    if not maps["exp"] and not maps["arkit"]:
        rig.find_expression_keys(face_mesh)  # raises the one-line message
    return maps["exp"], maps["arkit"]


def _write_fcurves(channelbag, frames: np.ndarray, channel_list, keys: str = "dense",
                   tolerances: dict | None = None) -> dict:
    """Bulk write (keywriter): dense LINEAR keys or reduced Bezier keys. Returns keywriter's stats."""
    return keywriter.write_channels(channelbag, frames, channel_list, keys, tolerances or {})


def _push_to_nla(owner, action, slot, start_frame: int):
    """New NLA track on `owner` (armature object or Key) playing `action` through `slot`. Returns (track, created
    animation data?). The owner's active action is left alone."""
    created = owner.animation_data is None
    anim = owner.animation_data_create() if created else owner.animation_data
    track = anim.nla_tracks.new()
    track.name = action.name
    strip = track.strips.new(action.name, int(start_frame), action)
    strip.action_slot = slot
    strip.extrapolation = "NOTHING"  # outside its range a take leaves lower tracks (earlier takes) visible
    strip.blend_type = "REPLACE"
    return track, created


def _store_properties(action, take: takefile.Take, plan, *, parts, start_frame, target_fps, face_used) -> None:
    action[TAKE_PROP] = 1
    action["sheg_model_id"] = take.model_id
    if take.seed is not None:
        action["sheg_seed"] = int(take.seed)
    action["sheg_audio_file"] = take.audio_file
    action["sheg_audio_sha256"] = take.audio_sha256
    action["sheg_source"] = take.source
    action["sheg_take_fps"] = float(take.fps)
    action["sheg_take_frames"] = int(take.frames)
    action["sheg_scene_fps"] = float(target_fps)
    action["sheg_start_frame"] = int(start_frame)
    action["sheg_parts"] = parts
    action["sheg_generated_joints"] = ",".join(plan.joints)
    action["sheg_expressions"] = int(plan.expression_count)
    action["sheg_face"] = bool(face_used)
    action["sheg_gender"] = take.gender
    if take.betas is not None:
        action["sheg_betas"] = [float(b) for b in take.betas]
    if plan.trans_origin is not None:
        action["sheg_trans_origin"] = [float(v) for v in plan.trans_origin]
    for key, value in take.extra.items():
        action[key if key.startswith("sheg_") else f"sheg_{key}"] = str(value)


def apply_take(context, take: takefile.Take, *, armature, face_mesh=None, start_frame: int, name: str,
               parts: str = "both", keys: str = "dense", rotation_tolerance_deg: float = 1.0,
               location_tolerance: float = 0.001, shape_tolerance: float = 0.01, smoothing: float = 0.0) -> dict:
    """Write `take` as a new Action on new NLA track(s); keys start at `start_frame`, at the scene's fps.

    Only generated joints the rig has are keyed (rotation_quaternion w,x,y,z; pelvis location for trans), plus the
    face mesh's Exp###/ARKit shape keys when `parts` covers the face. keys="dense": one LINEAR key per scene frame;
    keys="reduced": the fewest Bezier keys whose curve stays within rotation_tolerance_deg (degrees of rotation
    between the evaluated and the dense bone rotation), location_tolerance (metres, pelvis) and shape_tolerance
    (shape-key value) at every frame. smoothing in [0, 1] low-passes the take first (0 = off). Nothing is changed on
    failure. Returns counts and frames for reporting: action, track, frames, start_frame, end_frame, joints,
    expressions, fcurves, keys (written), dense_keys, keys_mode, max_rotation_error_deg, max_location_error,
    max_shape_error (worst reduction errors, 0 for dense), missing_joints, scene_fps, take_fps.
    """
    scene = context.scene
    target_fps = _scene_fps(scene)
    if parts not in smplx.PARTS:
        raise ValueError(f"unknown parts '{parts}' (use one of: {', '.join(smplx.PARTS)})")
    keywriter.check_key_options(keys, rotation_tolerance_deg, location_tolerance, shape_tolerance, smoothing)
    tolerances = {"rotation_tolerance_deg": rotation_tolerance_deg, "location_tolerance": location_tolerance,
                  "shape_tolerance": shape_tolerance}
    take = takefile.y_up(take)
    bone_names = rig.find_smplx_bones(armature)
    _check_editable(armature, f"armature '{armature.name}'")
    exp_keys, arkit_keys = {}, {}
    has_face_data = take.expressions is not None or take.arkit_weights is not None
    use_face = face_mesh is not None and parts != "body" and has_face_data and take.generated_expressions
    if use_face:
        exp_keys, arkit_keys = _face_keys(face_mesh, take)
    plan = channels.build_channels(take, bone_names=bone_names, bone_frames=rig.bone_frames(armature, bone_names),
                                   expression_keys=exp_keys, arkit_keys=arkit_keys, parts=parts,
                                   target_fps=target_fps, start_frame=int(start_frame))
    if not plan.bone_channels and not plan.shape_channels:
        raise ValueError(f"take '{name}' drives nothing on '{armature.name}' with parts '{parts}' "
                         f"(no generated joint or expression matches the rig); pick other parts or another rig")
    last_frame = int(start_frame) + len(plan.frames) - 1
    if int(start_frame) < -MAX_FRAME or last_frame > MAX_FRAME:
        raise ValueError(f"take '{name}' would span frames {int(start_frame)}..{last_frame}, outside Blender's "
                         f"frame range -{MAX_FRAME}..{MAX_FRAME}; pick another start frame")
    if smoothing > 0.0:
        plan.bone_channels = channels.smooth_channels(plan.bone_channels, target_fps, smoothing)
        plan.shape_channels = channels.smooth_channels(plan.shape_channels, target_fps, smoothing)
    key = face_mesh.data.shape_keys if use_face and plan.shape_channels else None
    if key is not None:
        _check_editable(key, f"the shape keys of '{face_mesh.name}'")

    def store(action):
        _store_properties(action, take, plan, parts=parts, start_frame=int(start_frame), target_fps=target_fps,
                          face_used=key is not None)
        _store_key_options(action, keys, tolerances, smoothing)

    action, track, stats = write_take_action(armature, key, plan, name=name or "Take", start_frame=start_frame,
                                             keys=keys, tolerances=tolerances, store=store)
    for joint in plan.joints:
        armature.pose.bones[bone_names[joint]].rotation_mode = "QUATERNION"
    return {
        "action": action.name, "track": track.name, "frames": len(plan.frames), "start_frame": int(start_frame),
        "end_frame": int(start_frame) + len(plan.frames) - 1, "joints": len(plan.joints),
        "expressions": plan.expression_count, "fcurves": len(plan.bone_channels) + len(plan.shape_channels),
        "keys_mode": keys, **stats, "missing_joints": plan.missing_joints, "scene_fps": target_fps,
        "take_fps": take.fps,
    }


def write_take_action(armature, key, plan, *, name: str, start_frame: int, keys: str, tolerances: dict, store):
    """A new Action with the plan's bone channels (OBJECT slot of `armature`) and shape channels (KEY slot of `key`,
    when not None), pushed to a new NLA track on each; store(action) sets its custom properties. Nothing is left
    behind on failure. Returns (action, armature track, merged keywriter stats)."""
    action = bpy.data.actions.new(name)
    pushed = []  # (owner, track, created animation data)
    try:
        layer = action.layers.new("Layer")
        strip = layer.strips.new(type="KEYFRAME")
        arm_slot = action.slots.new(id_type="OBJECT", name=armature.name)
        stats = [_write_fcurves(strip.channelbag(arm_slot, ensure=True), plan.frames, plan.bone_channels, keys,
                                tolerances)]
        key_slot = None
        if key is not None:
            key_slot = action.slots.new(id_type="KEY", name=key.name)
            stats.append(_write_fcurves(strip.channelbag(key_slot, ensure=True), plan.frames, plan.shape_channels,
                                        keys, tolerances))
        store(action)
        track, created = _push_to_nla(armature, action, arm_slot, start_frame)
        pushed.append((armature, track, created))
        if key is not None:
            track_key, created = _push_to_nla(key, action, key_slot, start_frame)
            pushed.append((key, track_key, created))
    except BaseException:
        for owner, pushed_track, created in reversed(pushed):
            owner.animation_data.nla_tracks.remove(pushed_track)
            if created:
                owner.animation_data_clear()
        bpy.data.actions.remove(action)
        raise
    return action, track, _merge_stats(stats)


def _store_key_options(action, keys: str, tolerances: dict, smoothing: float) -> None:
    action["sheg_keys"] = keys
    if keys == "reduced":
        action["sheg_rotation_tolerance_deg"] = float(tolerances["rotation_tolerance_deg"])
        action["sheg_location_tolerance"] = float(tolerances["location_tolerance"])
        action["sheg_shape_tolerance"] = float(tolerances["shape_tolerance"])
    action["sheg_smoothing"] = float(smoothing)


def _merge_stats(stats: list) -> dict:
    """Sum key counts and take the worst errors of keywriter stats dicts."""
    out = keywriter.empty_stats()
    for item in stats:
        for field, value in item.items():
            out[field] = out[field] + value if field in ("keys", "dense_keys") else max(out[field], value)
    return out


def import_take(context, filepath: str, *, armature, face_mesh=None, start_frame: int | None = None,
                name: str | None = None, parts: str = "both", keys: str = "dense",
                rotation_tolerance_deg: float = 1.0, location_tolerance: float = 0.001,
                shape_tolerance: float = 0.01, smoothing: float = 0.0) -> dict:
    """Read a take .npz (ours, SMPL-X add-on, AMASS, BEAT2) and apply it (see apply_take for the key options).
    start_frame defaults to the current frame, name to the file name."""
    take = takefile.read_take(filepath)
    if start_frame is None:
        start_frame = context.scene.frame_current
    if not name:
        name = os.path.splitext(os.path.basename(filepath))[0]
    return apply_take(context, take, armature=armature, face_mesh=face_mesh, start_frame=start_frame, name=name,
                      parts=parts, keys=keys, rotation_tolerance_deg=rotation_tolerance_deg,
                      location_tolerance=location_tolerance, shape_tolerance=shape_tolerance, smoothing=smoothing)


# apply_take / import_take keywords that choose the key density (for callers that forward options)
KEY_OPTIONS = ("keys", "rotation_tolerance_deg", "location_tolerance", "shape_tolerance", "smoothing")


# --- listing / removing / solo ------------------------------------------------------------------------------------

def _take_tracks(owner):
    """(track, strip) pairs of `owner`'s NLA tracks that play a take action."""
    anim = getattr(owner, "animation_data", None)
    if anim is None:
        return []
    return [(track, strip) for track in anim.nla_tracks for strip in track.strips
            if strip.action is not None and strip.action.get(TAKE_PROP)]


def list_takes(armature) -> list:
    """Takes on the armature's NLA, bottom (oldest) first: dicts with name, action, track, start, end, mute, solo,
    model_id, seed, audio_file, take_fps, parts, joints, expressions."""
    out = []
    for track, strip in _take_tracks(armature):
        action = strip.action
        joints = action.get("sheg_generated_joints", "")
        out.append({
            "name": track.name, "action": action.name, "track": track.name,
            "start": strip.frame_start, "end": strip.frame_end, "mute": track.mute, "solo": track.is_solo,
            "model_id": action.get("sheg_model_id", ""), "seed": action.get("sheg_seed"),
            "audio_file": action.get("sheg_audio_file", ""), "take_fps": action.get("sheg_take_fps"),
            "parts": action.get("sheg_parts", ""), "joints": len(joints.split(",")) if joints else 0,
            "expressions": action.get("sheg_expressions", 0), "keys": action.get("sheg_keys", "dense"),
            "tweak_layers": len(tweak_tracks(armature, action)), "baked_from": action.get("sheg_baked_from", ""),
        })
    return out


def tweak_tracks(owner, take_action) -> list:
    """`owner`'s NLA tracks holding tweak layers of `take_action`, bottom first."""
    anim = getattr(owner, "animation_data", None)
    if anim is None:
        return []
    return [track for track in anim.nla_tracks
            if any(strip.action is not None and strip.action.get(TWEAK_PROP) == take_action.name
                   for strip in track.strips)]


def _find_take_action(armature, take_name: str):
    for track, strip in _take_tracks(armature):
        if take_name in (track.name, strip.action.name):
            return strip.action
    names = ", ".join(t["name"] for t in list_takes(armature)) or "none"
    raise ValueError(f"'{armature.name}' has no take '{take_name}' (takes: {names})")


def _owners_of(action):
    """Armature objects and Keys whose NLA plays `action`: (owner, track) pairs."""
    pairs = []
    for owner in list(bpy.data.objects) + list(bpy.data.shape_keys):
        for track, strip in _take_tracks(owner):
            if strip.action == action:
                pairs.append((owner, track))
    return pairs


def remove_take(armature, take_name: str) -> None:
    """Remove a take's NLA tracks (armature and face Key) with its tweak layers, and their actions (if nothing else
    uses them)."""
    action = _find_take_action(armature, take_name)
    tweak_actions = set()
    for owner, track in _owners_of(action):
        anim = owner.animation_data
        if anim.use_tweak_mode:
            anim.use_tweak_mode = False  # tracks cannot be removed while one of them is being tweaked
        for tweak in tweak_tracks(owner, action):
            tweak_actions.update(strip.action for strip in tweak.strips if strip.action is not None)
            anim.nla_tracks.remove(tweak)
        anim.nla_tracks.remove(track)
    for unused in [action, *tweak_actions]:
        if unused.users == 0 or (unused.users == 1 and unused.use_fake_user):
            bpy.data.actions.remove(unused)


def solo_take(armature, take_name: str, solo: bool = True) -> None:
    """Play only this take (its tracks soloed on the armature and the face Key), or clear solo with solo=False."""
    action = _find_take_action(armature, take_name)
    for owner, track in _owners_of(action):
        if solo:
            for other in owner.animation_data.nla_tracks:
                other.is_solo = False
        track.is_solo = solo


# --- key reduction of an existing take, tweak layers, baking ---------------------------------------------------------

def _channelbag(action, slot):
    if not action.layers or not action.layers[0].strips:
        return None
    return action.layers[0].strips[0].channelbag(slot)


def reduce_take(context, armature, take_name: str, *, rotation_tolerance_deg: float = 1.0,
                location_tolerance: float = 0.001, shape_tolerance: float = 0.01, smoothing: float = 0.0) -> dict:
    """Rewrite an existing take's F-curves with reduced keys (see apply_take): each curve is sampled at every
    whole frame of the take's key range as Blender evaluates it (so artists' edits count), optionally smoothed, and
    replaced by the fewest Bezier keys within the tolerances of those samples. F-curves, groups and slots stay;
    curves with modifiers are left as they are. Returns keys_before, keys (after), fcurves, skipped and the worst
    errors (max_rotation_error_deg, max_location_error, max_shape_error)."""
    keywriter.check_key_options("reduced", rotation_tolerance_deg, location_tolerance, shape_tolerance, smoothing)
    tolerances = {"rotation_tolerance_deg": rotation_tolerance_deg, "location_tolerance": location_tolerance,
                  "shape_tolerance": shape_tolerance}
    action = _find_take_action(armature, take_name)
    fps = float(action.get("sheg_scene_fps", _scene_fps(context.scene)))
    keys_before, stats, rewritten, skipped = 0, [], 0, []
    for slot in action.slots:
        bag = _channelbag(action, slot)
        if bag is None:
            continue
        fcurves = [fc for fc in bag.fcurves if len(fc.keyframe_points)]
        skipped += [fc.data_path for fc in fcurves if len(fc.modifiers)]
        fcurves = [fc for fc in fcurves if not len(fc.modifiers)]
        span = keywriter.key_range(fcurves)
        if span is None:
            continue
        frames = np.arange(span[0], span[1] + 1, dtype=np.float64)
        keys_before += sum(len(fc.keyframe_points) for fc in fcurves)
        sampled = [channels.Channel(fc.data_path, fc.array_index, fc.group.name if fc.group else "",
                                    keywriter.sample_fcurve(fc, frames).astype(np.float32)) for fc in fcurves]
        if smoothing > 0.0:
            sampled = channels.smooth_channels(sampled, fps, smoothing)
        groups = [(path, kind, members, np.stack([c.values for c in members], axis=1))
                  for path, kind, members in channels.channel_groups(sampled)]
        by_channel = {(fc.data_path, fc.array_index): fc for fc in fcurves}
        slot_stats = keywriter.empty_stats()
        for (path, kind, members, _), reduced in zip(groups, keywriter.reduce_channel_groups(frames, groups,
                                                                                              tolerances)):
            for column, ch in enumerate(members):
                keywriter.set_reduced_keys(by_channel[(ch.data_path, ch.index)], reduced, column)
            slot_stats["keys"] += len(reduced.frames) * len(members)
            slot_stats["dense_keys"] += len(frames) * len(members)
            keywriter.add_error(slot_stats, kind, path, reduced.max_error)
        rewritten += len(fcurves)
        stats.append(slot_stats)
    _store_key_options(action, "reduced", tolerances, smoothing)
    merged = _merge_stats(stats)
    return {"action": action.name, "keys_before": keys_before, "fcurves": rewritten, "skipped": skipped,
            **{k: v for k, v in merged.items() if k != "dense_keys"}}


# --- export -------------------------------------------------------------------------------------------------------

def _sample(fcurve, frames: np.ndarray) -> np.ndarray:
    """F-curve values at (T,) scene frames as Blender evaluates them (keywriter.sample_fcurve)."""
    return keywriter.sample_fcurve(fcurve, frames)


def take_scene_frames(context, action) -> tuple:
    """(take fps, take frames, (T,) scene frame of each take frame) of a take action."""
    fps = float(action.get("sheg_take_fps", 0.0))
    frames = int(action.get("sheg_take_frames", 0))
    if fps <= 0 or frames <= 0:
        raise ValueError(f"take '{action.name}' lacks its frame rate/count properties; re-import it")
    # the scene fps and start frame the keys were written with (the scene's fps may have changed since)
    written_fps = float(action.get("sheg_scene_fps", _scene_fps(context.scene)))
    return fps, frames, resample.take_frames_in_scene(frames, fps, written_fps,
                                                      float(action.get("sheg_start_frame", 1)))


def export_take(context, armature, take_name: str, filepath: str) -> dict:
    """Write a take .npz from its action, sampling the F-curves at the take's own frames (so artists' edits are
    exported). Joints whose rotation curves exist are marked generated; others are at rest."""
    take = take_from_action(context, armature, take_name)
    takefile.write_take(filepath, take)
    return {"path": filepath, "frames": take.frames, "fps": take.fps, "joints": int(take.generated_joints.sum()),
            "expressions": 0 if take.expressions is None else int(np.any(take.expressions != 0, axis=0).sum())}


def take_from_action(context, armature, take_name: str) -> takefile.Take:
    """The take as its action plays now (edits included), at the take's own frames (see export_take)."""
    action = _find_take_action(armature, take_name)
    fps, frames, sample_at = take_scene_frames(context, action)
    bone_names = rig.find_smplx_bones(armature)
    joint_of_bone = {bone: joint for joint, bone in bone_names.items()}
    rotations, location, expressions, arkit = {}, {}, {}, {}
    arkit_lower = {a.lower(): a for a in smplx.ARKIT_NAMES}
    for slot in action.slots:
        bag = action.layers[0].strips[0].channelbag(slot) if action.layers else None
        if bag is None:
            continue
        for fcurve in bag.fcurves:
            parsed = channels.parse_path(fcurve.data_path)
            if parsed is None:
                continue
            kind, target, prop = parsed
            if kind == "bone" and target in joint_of_bone:
                joint = joint_of_bone[target]
                if prop == "rotation_quaternion":
                    rotations.setdefault(joint, {})[fcurve.array_index] = _sample(fcurve, sample_at)
                elif prop == "location" and joint == "pelvis":
                    location[fcurve.array_index] = _sample(fcurve, sample_at)
            elif kind == "key" and prop == "value":
                match = smplx.EXPRESSION_KEY_PATTERN.fullmatch(target)
                if match:
                    expressions[int(match.group(1))] = _sample(fcurve, sample_at)
                elif target.lower() in arkit_lower:
                    arkit[arkit_lower[target.lower()]] = _sample(fcurve, sample_at)
    identity = (np.ones(frames), np.zeros(frames), np.zeros(frames), np.zeros(frames))
    quats = {joint: np.stack([axes.get(i, identity[i]) for i in range(4)], axis=1) for joint, axes in rotations.items()}
    loc = np.stack([location.get(i, np.zeros(frames)) for i in range(3)], axis=1) if location else None
    seed = action.get("sheg_seed")
    betas = action.get("sheg_betas")
    return channels.take_from_channels(
        fps=fps, frames=frames, rotations=quats, location=loc, expressions=expressions, arkit=arkit,
        bone_frames=rig.bone_frames(armature, bone_names), trans_origin=action.get("sheg_trans_origin"),
        model_id=str(action.get("sheg_model_id", "")), seed=None if seed is None else int(seed),
        audio_file=str(action.get("sheg_audio_file", "")), audio_sha256=str(action.get("sheg_audio_sha256", "")),
        gender=str(action.get("sheg_gender", "neutral")),
        betas=None if betas is None else np.array(list(betas), dtype=np.float32))
