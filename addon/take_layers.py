"""Tweak layers on top of a take, and baking a take with its tweaks into one new take.

Tweak layer: a new NLA track right above the take's track (on the armature, and on the face Key when the take
animates it) holding one strip of a new, empty Action. The action has an OBJECT slot for the armature and a KEY slot
for the Key, spans the take's frames (manual frame range, so the strip covers the whole take) and is marked with
`sheg_tweak_of` = the take action's name. The strip blends with 'ADD' by default ('COMBINE' on request).

Where the artist's keys go (Blender 5.0): the tweak strip is entered in NLA tweak mode (AnimData.use_tweak_mode),
so the tweak action becomes the edited action, shown in the Dope Sheet/Graph Editor, and keys inserted with I (or
keyframe_insert) land in it while the take's action is never written. Blender remaps a key inserted in tweak mode
through the strip's blend: with ADD the stored value is (wanted - take) per channel, so the keyed frame shows exactly
the pose the artist posed. Evaluation adds, channel by channel:
    location, shape-key value:  evaluated = take + tweak       (a true offset)
    rotation_quaternion:        evaluated = take + tweak       component-wise (Blender's ADD), then normalized by
                                the armature when it builds the bone matrix; small offsets act as rotations, large
                                ones do not. blend_type='COMBINE' instead multiplies: evaluated = take @ tweak (a
                                rotation offset in the bone's frame), with the same additive location/shape keys.
Leave tweak mode with Tab in the NLA editor, or bake.

Bake: the evaluated pose of every channel the take or its tweak layers animate is sampled after scene.frame_set at
every frame of the take (other tracks above it and the active action are switched off while sampling), written as
one new take action (dense LINEAR keys, or reduced Bezier keys within tolerances) on a new NLA track where the
take's track was, and the take's and tweak layers' tracks are muted (kept for reference).
"""

from __future__ import annotations

import bpy
import numpy as np

from . import keywriter, takes
from .core import channels, smplx

BLEND_TYPES = ("ADD", "COMBINE")


def _take_strip(track):
    return next(strip for strip in track.strips if strip.action is not None and strip.action.get(takes.TAKE_PROP))


def _exit_tweak_mode(owner) -> None:
    anim = owner.animation_data
    if anim is not None and anim.use_tweak_mode:
        anim.use_tweak_mode = False


def _enter_tweak_mode(owner, track, strip) -> None:
    anim = owner.animation_data
    for other in anim.nla_tracks:
        other.select = False
        for other_strip in other.strips:
            other_strip.select = False
    anim.nla_tracks.active = track
    track.select = True
    strip.select = True
    anim.use_tweak_mode = True
    if not anim.use_tweak_mode or anim.action != strip.action:
        raise ValueError(f"Blender refused NLA tweak mode on '{track.name}'; open the NLA editor and press Tab on "
                         f"the tweak strip")


def _slot_type(owner) -> str:
    return "KEY" if isinstance(owner, bpy.types.Key) else "OBJECT"


def add_tweak_layer(context, armature, take_name: str, *, blend_type: str = "ADD",
                    enter_tweak_mode: bool = True) -> dict:
    """New additive NLA track(s) with an empty tweak action above the take's track on the armature and face Key.

    With enter_tweak_mode the tweak strips are entered in NLA tweak mode, so the artist's keys go to the tweak
    action. The take's action is not changed. Returns action, tracks (names), blend_type, frame_start, frame_end.
    """
    if blend_type not in BLEND_TYPES:
        raise ValueError(f"unknown blend_type '{blend_type}' (use one of: {', '.join(BLEND_TYPES)})")
    take_action = takes._find_take_action(armature, take_name)
    owners = takes._owners_of(take_action)
    take_strip = _take_strip(owners[0][1])
    start, end = float(take_strip.frame_start), float(take_strip.frame_end)
    for owner, _ in owners:
        takes._check_editable(owner, f"'{owner.name}'")
        _exit_tweak_mode(owner)

    layer_number = 1 + max((len(takes.tweak_tracks(owner, take_action)) for owner, _ in owners), default=0)
    tweak = bpy.data.actions.new(f"{take_action.name} tweak {layer_number}")
    tweak[takes.TWEAK_PROP] = take_action.name
    tweak.use_frame_range = True
    tweak.frame_start, tweak.frame_end = start, end  # the strip spans the take even while the action is empty
    layer = tweak.layers.new("Layer")
    layer.strips.new(type="KEYFRAME")
    created = []  # (owner, track)
    try:
        for owner, take_track in owners:
            slot = tweak.slots.new(id_type=_slot_type(owner), name=owner.name)
            layer.strips[0].channelbag(slot, ensure=True)
            anim = owner.animation_data
            below = (takes.tweak_tracks(owner, take_action) or [take_track])[-1]
            track = anim.nla_tracks.new(prev=below)
            track.name = f"{take_track.name} tweak {layer_number}"
            created.append((owner, track))
            strip = track.strips.new(tweak.name, int(round(start)), tweak)
            strip.action_slot = slot
            strip.blend_type = blend_type
            strip.extrapolation = "NOTHING"
            if enter_tweak_mode:
                _enter_tweak_mode(owner, track, strip)
    except BaseException:
        for owner, track in reversed(created):
            _exit_tweak_mode(owner)
            owner.animation_data.nla_tracks.remove(track)
        bpy.data.actions.remove(tweak)
        raise
    return {"action": tweak.name, "tracks": [track.name for _, track in created], "blend_type": blend_type,
            "frame_start": start, "frame_end": end, "tweak_mode": bool(enter_tweak_mode)}


# --- bake -----------------------------------------------------------------------------------------------------------

def _animated_channels(owner, actions_and_slots) -> list:
    """(data_path, index, group) of every F-curve the take/tweak actions drive on `owner`, first-seen order."""
    seen, out = set(), []
    for action, slot in actions_and_slots:
        if slot is None or not action.layers or not action.layers[0].strips:
            continue
        bag = action.layers[0].strips[0].channelbag(slot)
        if bag is None:
            continue
        for fcurve in bag.fcurves:
            key = (fcurve.data_path, fcurve.array_index)
            if key not in seen:
                seen.add(key)
                out.append((fcurve.data_path, fcurve.array_index, fcurve.group.name if fcurve.group else ""))
    return out


def _body_part_group(owner, data_path: str, fallback: str, joint_of_bone: dict) -> str:
    parsed = channels.parse_path(data_path)
    if parsed is None:
        return fallback or "Other"
    kind, target, _ = parsed
    if kind == "key":
        return smplx.EXPRESSIONS_GROUP
    joint = joint_of_bone.get(target)
    return smplx.BODY_PART[smplx.JOINT_INDEX[joint]] if joint else (fallback or target)


class _Sampler:
    """Reads the evaluated values of one owner's channels after frame_set, with one foreach_get per property."""

    _BONE_PROPS = {"rotation_quaternion": 4, "location": 3, "scale": 3, "rotation_euler": 3}

    def __init__(self, owner, channel_list):
        self.owner = owner
        self.columns = []  # per channel: (source, row, index) with source a prop name or None (path_resolve)
        self.props = set()
        if isinstance(owner, bpy.types.Key):
            rows = {block.name: i for i, block in enumerate(owner.key_blocks)}
        else:
            rows = {bone.name: i for i, bone in enumerate(owner.pose.bones)} if owner.pose else {}
        for data_path, index, _ in channel_list:
            parsed = channels.parse_path(data_path)
            source = None
            if parsed is not None:
                kind, target, prop = parsed
                if target in rows and ((kind == "key" and prop == "value") or
                                       (kind == "bone" and prop in self._BONE_PROPS)):
                    source = prop
            self.props.add(source)
            self.columns.append((source, rows.get(parsed[1]) if source else None, index, data_path))

    def read(self) -> np.ndarray:
        buffers = {}
        for prop in self.props - {None}:
            if prop == "value":
                blocks = self.owner.key_blocks
                buf = np.empty(len(blocks), dtype=np.float32)
                blocks.foreach_get("value", buf)
                buffers[prop] = buf[:, None]
            else:
                bones = self.owner.pose.bones
                width = self._BONE_PROPS[prop]
                buf = np.empty(len(bones) * width, dtype=np.float32)
                bones.foreach_get(prop, buf)
                buffers[prop] = buf.reshape(-1, width)
        out = np.empty(len(self.columns), dtype=np.float64)
        for c, (source, row, index, data_path) in enumerate(self.columns):
            if source is None:
                value = self.owner.path_resolve(data_path)
                out[c] = value[index] if hasattr(value, "__len__") else value
            else:
                out[c] = buffers[source][row, 0 if source == "value" else index]
        return out


def bake_take(context, armature, take_name: str, *, keys: str = "dense", rotation_tolerance_deg: float = 1.0,
              location_tolerance: float = 0.001, shape_tolerance: float = 0.01, name: str | None = None) -> dict:
    """Merge a take and its tweak layers into one new take action (see the module docstring).

    Returns action, track, frames, start_frame, end_frame, fcurves, keys, dense_keys, the worst reduction errors,
    and muted (names of the muted source tracks).
    """
    keywriter.check_key_options(keys, rotation_tolerance_deg, location_tolerance, shape_tolerance, 0.0)
    tolerances = {"rotation_tolerance_deg": rotation_tolerance_deg, "location_tolerance": location_tolerance,
                  "shape_tolerance": shape_tolerance}
    scene = context.scene
    take_action = takes._find_take_action(armature, take_name)
    owners = takes._owners_of(take_action)
    take_strip = _take_strip(owners[0][1])
    start, end = int(round(take_strip.frame_start)), int(round(take_strip.frame_end))
    frames = np.arange(start, end + 1, dtype=np.float64)
    bone_names = {}
    try:
        from . import rig
        bone_names = rig.find_smplx_bones(armature)
    except ValueError:
        pass
    joint_of_bone = {bone: joint for joint, bone in bone_names.items()}

    plans = []  # (owner, take_track, source tracks, channel list, sampler)
    for owner, take_track in owners:
        takes._check_editable(owner, f"'{owner.name}'")
        _exit_tweak_mode(owner)
        tweaks = takes.tweak_tracks(owner, take_action)
        sources = [(take_action, _take_strip(take_track).action_slot)]
        sources += [(strip.action, strip.action_slot) for track in tweaks for strip in track.strips
                    if strip.action is not None]
        channel_list = _animated_channels(owner, sources)
        plans.append((owner, take_track, [take_track, *tweaks], channel_list, _Sampler(owner, channel_list)))

    # sample with only this take and what lies below it playing: tracks above its tweak layers and the active
    # action are switched off meanwhile
    switched = []  # (object, attribute, old value)
    for owner, _, sources, _, _ in plans:
        anim = owner.animation_data
        top = max(list(anim.nla_tracks).index(track) for track in sources)
        for track in list(anim.nla_tracks)[top + 1:]:
            switched.append((track, "mute", track.mute))
            track.mute = True
        if anim.action is not None:
            switched.append((anim, "action_influence", anim.action_influence))
            anim.action_influence = 0.0
    frame_before = scene.frame_current, scene.frame_subframe
    samples = [np.empty((len(frames), len(plan[3])), dtype=np.float64) for plan in plans]
    try:
        for row, frame in enumerate(frames):
            scene.frame_set(int(frame))
            for p, plan in enumerate(plans):
                samples[p][row] = plan[4].read()
    finally:
        for target, attribute, value in reversed(switched):
            setattr(target, attribute, value)
        scene.frame_set(frame_before[0], subframe=frame_before[1])

    action = bpy.data.actions.new(name or f"{take_action.name} baked")
    created, muted, stats = [], [], []
    try:
        for key, value in take_action.items():
            if key.startswith("sheg_"):
                action[key] = value
        action["sheg_baked_from"] = take_action.name
        layer = action.layers.new("Layer")
        strip = layer.strips.new(type="KEYFRAME")
        for (owner, take_track, sources, channel_list, _), values in zip(plans, samples):
            if not channel_list:
                continue
            slot = action.slots.new(id_type=_slot_type(owner), name=owner.name)
            channel_values = [channels.Channel(path, index, _body_part_group(owner, path, group, joint_of_bone),
                                               values[:, c].astype(np.float32))
                              for c, (path, index, group) in enumerate(channel_list)]
            stats.append(keywriter.write_channels(strip.channelbag(slot, ensure=True), frames, channel_values, keys,
                                                  tolerances))
            anim = owner.animation_data
            track = anim.nla_tracks.new(prev=sources[-1])
            track.name = action.name
            created.append((owner, track))
            nla_strip = track.strips.new(action.name, start, action)
            nla_strip.action_slot = slot
            nla_strip.extrapolation = "NOTHING"
            nla_strip.blend_type = "REPLACE"
        takes._store_key_options(action, keys, tolerances, float(take_action.get("sheg_smoothing", 0.0)))
    except BaseException:
        for owner, track in reversed(created):
            owner.animation_data.nla_tracks.remove(track)
        bpy.data.actions.remove(action)
        raise
    for _, _, sources, _, _ in plans:
        for track in sources:
            track.mute = True
            muted.append(track.name)
    merged = takes._merge_stats(stats)
    return {"action": action.name, "track": action.name, "frames": len(frames), "start_frame": start,
            "end_frame": end, "fcurves": sum(len(plan[3]) for plan in plans), **merged, "muted": muted}
