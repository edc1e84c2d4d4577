"""Bone maps (SMPL-X joint -> target bone) for humanoid rigs, found by name, and their JSON presets. No bpy.

A preset is a table of bone names after an optional prefix (`mixamorig:`, `mixamorig1:`, `DEF-`, `Armature|`...):
`find_bone_map` tries every preset on the rig's bone names (case-insensitive, one prefix for the whole rig) and keeps
the one that maps most joints (ties: the order of PRESETS, so Rigify's controls win over its DEF-/ORG- bones, which
constraints drive). The map is what the user corrects in the panel and saves as JSON.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

from . import smplx

BONE_MAP_FORMAT = "sheg-bone-map"
BONE_MAP_VERSION = 1

# Joints a retarget needs for a take to read on the character (the "spine, neck, head, arms and hands").
REQUIRED_JOINTS = ("spine1", "spine2", "spine3", "neck", "head", "left_collar", "right_collar", "left_shoulder",
                   "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist")

_FINGERS = ("index", "middle", "pinky", "ring", "thumb")


def _sided(table: dict, left: str, right: str, side_style) -> dict:
    """Expand {"collar": "shoulder{s}", ...} for both sides; side_style(side, template) -> bone name."""
    out = {}
    for part, template in table.items():
        out[f"left_{part}"] = side_style(left, template)
        out[f"right_{part}"] = side_style(right, template)
    return out


def _fmt(side, template):
    return template.format(s=side)


def _fingers(template: str, names: dict | None = None, numbers=(1, 2, 3)) -> dict:
    """{"index1": template.format(f="Index", n=1), ...} for the 15 finger joints."""
    names = names or {f: f.capitalize() for f in _FINGERS}
    return {f"{finger}{i}": template.format(f=names[finger], n=n, i=i) for finger in _FINGERS
            for i, n in zip((1, 2, 3), numbers)}


def _rigify_names(spine: tuple, limbs: dict) -> dict:
    center = dict(zip(("pelvis", "spine1", "spine2", "spine3", "neck", "head"), spine))
    center["jaw"] = limbs.pop("jaw", "jaw")
    fingers = {f"{finger}{i}": f"{'thumb' if finger == 'thumb' else 'f_' + finger}.0{i}{{s}}"
               for finger in _FINGERS for i in (1, 2, 3)}
    return {**center, **_sided({**limbs, **fingers}, ".L", ".R", _fmt)}


_RIGIFY_LIMBS = {"collar": "shoulder{s}", "shoulder": "upper_arm{s}", "elbow": "forearm{s}", "wrist": "hand{s}",
                 "hip": "thigh{s}", "knee": "shin{s}", "ankle": "foot{s}", "foot": "toe{s}", "eye_smplhf": "eye{s}"}
_MIXAMO_LIMBS = {"collar": "{s}Shoulder", "shoulder": "{s}Arm", "elbow": "{s}ForeArm", "wrist": "{s}Hand",
                 "hip": "{s}UpLeg", "knee": "{s}Leg", "ankle": "{s}Foot", "foot": "{s}ToeBase", "eye_smplhf": "{s}Eye",
                 **{k: "{s}Hand" + v for k, v in _fingers("{f}{n}").items()}}
_CC_LIMBS = {"collar": "{s}_Clavicle", "shoulder": "{s}_Upperarm", "elbow": "{s}_Forearm", "wrist": "{s}_Hand",
             "hip": "{s}_Thigh", "knee": "{s}_Calf", "ankle": "{s}_Foot", "foot": "{s}_ToeBase", "eye_smplhf": "{s}_Eye",
             **{k: "{s}_" + v for k, v in _fingers("{f}{n}", {"index": "Index", "middle": "Mid", "pinky": "Pinky",
                                                              "ring": "Ring", "thumb": "Thumb"}).items()}}
_UE_LIMBS = {"collar": "clavicle_{s}", "shoulder": "upperarm_{s}", "elbow": "lowerarm_{s}", "wrist": "hand_{s}",
             "hip": "thigh_{s}", "knee": "calf_{s}", "ankle": "foot_{s}", "foot": "ball_{s}",
             **{k: v + "_{s}" for k, v in _fingers("{f}_0{n}", {f: f for f in _FINGERS}).items()}}
_ARP_CONTROL_LIMBS = {"collar": "c_shoulder{s}", "shoulder": "c_arm_fk{s}", "elbow": "c_forearm_fk{s}",
                      "wrist": "c_hand_fk{s}", "hip": "c_thigh_fk{s}", "knee": "c_leg_fk{s}", "ankle": "c_foot_fk{s}",
                      "foot": "c_toes_fk{s}", "eye_smplhf": "c_eye{s}",
                      **{k: "c_" + v + "{s}" for k, v in _fingers("{f}{n}", {f: f for f in _FINGERS}).items()}}
_ARP_DEFORM_LIMBS = {"collar": "shoulder{s}", "shoulder": "arm_stretch{s}", "elbow": "forearm_stretch{s}",
                     "wrist": "hand{s}", "hip": "thigh_stretch{s}", "knee": "leg_stretch{s}", "ankle": "foot{s}",
                     "foot": "toes_01{s}",
                     **{k: v + "{s}" for k, v in _fingers("{f}{n}", {f: f for f in _FINGERS}).items()}}


def _center(names: tuple) -> dict:
    return {j: n for j, n in zip(("pelvis", "spine1", "spine2", "spine3", "neck", "head", "jaw"), names) if n}


@dataclass(frozen=True)
class Preset:
    name: str
    label: str
    prefix: str        # regex of what may stand before the names (one prefix string for the whole rig)
    bones: dict        # SMPL-X joint -> bone name after the prefix


PRESETS = (
    # Rigify: a generated rig is driven through its FK controls (DEF-/ORG- bones follow them by constraints)
    Preset("rigify", "Rigify (generated rig controls)", "",
           {**_rigify_names(("torso", "spine_fk.001", "spine_fk.002", "spine_fk.003", "neck", "head"),
                            {**_RIGIFY_LIMBS, "shoulder": "upper_arm_fk{s}", "elbow": "forearm_fk{s}",
                             "wrist": "hand_fk{s}", "hip": "thigh_fk{s}", "knee": "shin_fk{s}", "ankle": "foot_fk{s}",
                             "foot": "toe_fk{s}", "eye_smplhf": "eye{s}", "jaw": "jaw_master"})}),
    Preset("rigify_metarig", "Rigify metarig / DEF- / ORG- bones", r"(?:DEF-|ORG-)?",
           _rigify_names(("spine", "spine.001", "spine.002", "spine.003", "spine.004", "spine.006"),
                         dict(_RIGIFY_LIMBS))),
    Preset("mixamo", "Mixamo (mixamorig:)", r"(?:mixamorig\d*[:_])?",
           {**_center(("Hips", "Spine", "Spine1", "Spine2", "Neck", "Head", None)),
            **_sided(_MIXAMO_LIMBS, "Left", "Right", _fmt)}),
    Preset("cc", "Character Creator / iClone (CC_Base_)", r"(?:.*[|:])?",
           {**_center(("CC_Base_Hip", "CC_Base_Waist", "CC_Base_Spine01", "CC_Base_Spine02", "CC_Base_NeckTwist01",
                       "CC_Base_Head", "CC_Base_JawRoot")),
            **{k: "CC_Base_" + v for k, v in _sided(_CC_LIMBS, "L", "R", _fmt).items()}}),
    Preset("metahuman", "MetaHuman (spine_01..05)", r"(?:.*[|:])?",
           {**_center(("pelvis", "spine_01", "spine_03", "spine_05", "neck_01", "head", "FACIAL_C_Jaw")),
            **_sided(_UE_LIMBS, "l", "r", _fmt)}),
    Preset("ue_mannequin", "Unreal mannequin (spine_01..03)", r"(?:.*[|:])?",
           {**_center(("pelvis", "spine_01", "spine_02", "spine_03", "neck_01", "head", None)),
            **_sided(_UE_LIMBS, "l", "r", _fmt)}),
    Preset("auto_rig_pro", "Auto-Rig Pro (controls)", "",
           {**_center(("c_root.x", "c_spine_01.x", "c_spine_02.x", "c_spine_03.x", "c_neck.x", "c_head.x",
                       "c_jawbone.x")),
            **_sided(_ARP_CONTROL_LIMBS, ".l", ".r", _fmt)}),
    Preset("auto_rig_pro_export", "Auto-Rig Pro (exported deform bones)", "",
           {**_center(("root.x", "spine_01.x", "spine_02.x", "spine_03.x", "neck.x", "head.x", "jawbone.x")),
            **_sided(_ARP_DEFORM_LIMBS, ".l", ".r", _fmt)}),
)
PRESET_BY_NAME = {p.name: p for p in PRESETS}


def _apply_preset(preset: Preset, bone_names) -> dict:
    """SMPL-X joint -> bone for one preset, using the prefix that most of the matching bones share."""
    wanted = {name.lower(): joint for joint, name in preset.bones.items()}
    pattern = re.compile(f"({preset.prefix})(.*)", re.IGNORECASE)
    by_prefix: dict = {}
    for bone in bone_names:
        match = pattern.fullmatch(bone)
        if match is None:
            continue
        # the prefix is optional, so try it both ways: "DEF-spine" is "spine" behind "DEF-"
        for prefix, rest in ((match.group(1), match.group(2)), ("", bone)):
            joint = wanted.get(rest.lower())
            if joint is not None:
                by_prefix.setdefault(prefix.lower(), {}).setdefault(joint, bone)
    if not by_prefix:
        return {}
    return max(by_prefix.values(), key=len)


def find_bone_map(bone_names) -> tuple:
    """(preset name, {SMPL-X joint: bone}) of the preset that maps the most joints on a rig with these bone names;
    ("", {}) when none maps any."""
    best_name, best = "", {}
    for preset in PRESETS:
        found = _apply_preset(preset, bone_names)
        if len(found) > len(best):
            best_name, best = preset.name, found
    return best_name, best


def missing_required(bone_map: dict) -> list:
    return [j for j in REQUIRED_JOINTS if j not in bone_map]


def describe_unmapped(joints) -> str:
    """One line naming the joints a retarget leaves out, grouped so it stays short."""
    joints = list(joints)
    if not joints:
        return "every joint of the take is mapped"
    groups: dict = {}
    for joint in joints:
        groups.setdefault(smplx.BODY_PART[smplx.JOINT_INDEX[joint]], []).append(joint)
    parts = [f"{group} ({len(names)})" if len(names) > 3 else ", ".join(names) for group, names in groups.items()]
    return f"not mapped ({len(joints)}): " + "; ".join(parts)


def check_bone_map(bone_map: dict, bone_names=None) -> dict:
    """The map with joints in SMPL-X order; ValueError (one line) for unknown joints, empty or missing bones."""
    unknown = [j for j in bone_map if j not in smplx.JOINT_INDEX]
    if unknown:
        raise ValueError(f"bone map names unknown SMPL-X joints ({', '.join(unknown[:3])}); "
                         f"use names such as 'left_shoulder' (see core.smplx.JOINT_NAMES)")
    bad = [j for j, b in bone_map.items() if not isinstance(b, str) or not b]
    if bad:
        raise ValueError(f"bone map has no bone name for {', '.join(bad[:3])}; give a bone name or remove the joint")
    if bone_names is not None:
        present = set(bone_names)
        absent = [b for b in bone_map.values() if b not in present]
        if absent:
            raise ValueError(f"the armature has no bone {', '.join(repr(b) for b in absent[:3])} named in the bone "
                             f"map; fix the map or pick the armature it was made for")
    doubled = sorted({b for b in bone_map.values() if list(bone_map.values()).count(b) > 1})
    if doubled:
        raise ValueError(f"bone map gives bone '{doubled[0]}' to more than one joint; each bone can follow one joint")
    return {j: bone_map[j] for j in smplx.JOINT_NAMES if j in bone_map}


def save_bone_map(path: str, bone_map: dict, *, name: str = "", preset: str = "") -> None:
    """Write a bone map preset (JSON, atomic)."""
    data = {"format": BONE_MAP_FORMAT, "format_version": BONE_MAP_VERSION, "name": name, "preset": preset,
            "bones": check_bone_map(bone_map)}
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


def load_bone_map(path: str) -> dict:
    """Read a bone map preset: {"name", "preset", "bones"}; ValueError (one line) when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"bone map file not found: {path}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read the bone map {path}: {exc}; save the map again") from None
    if not isinstance(data, dict) or data.get("format") != BONE_MAP_FORMAT or not isinstance(data.get("bones"), dict):
        raise ValueError(f"{path} is not a SHEG bone map (no '{BONE_MAP_FORMAT}' format); save one from the panel")
    if int(data.get("format_version", 0)) > BONE_MAP_VERSION:
        raise ValueError(f"{path} is a newer bone map (version {data['format_version']}); update the add-on")
    return {"name": str(data.get("name", "")), "preset": str(data.get("preset", "")),
            "bones": check_bone_map(data["bones"])}
