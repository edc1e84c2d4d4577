"""Humanoid target rigs for the retarget tests, the benchmark and the README picture.

Mixamo- and CC-named armatures with their real bone names and hierarchy, built from the stand-in skeleton with other
proportions and rest poses: Mixamo as it comes out of an FBX import (T-pose, Y-up armature data in centimetres under
an object turned +90 degrees about X with scale 0.01), CC in an A-pose (arms 40 degrees down) with Z-up data, twist
bones and a forward-pointing hip bone. Rigify's human metarig (and its generated rig) come from the rigify add-on
that ships with Blender. The geometry helpers import no bpy (the unit tests use them).
"""

from __future__ import annotations

import math

import numpy as np

import sys
import os

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "addon"))
from core import smplx  # noqa: E402

ARM_PARTS = ("elbow", "wrist", "index", "middle", "ring", "pinky", "thumb")
FINGERS = ("index", "middle", "pinky", "ring", "thumb")


def rotation(axis, angle: float) -> np.ndarray:
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def a_pose_joints(degrees: float = 45.0, joints: np.ndarray = smplx.STANDIN_REST_JOINTS) -> np.ndarray:
    """SMPL-X joints with both arms lowered by `degrees` about the front axis at the shoulders (SMPL-X axes)."""
    joints = np.array(joints, dtype=np.float64)
    for side, sign in (("left", -1.0), ("right", 1.0)):
        pivot = joints[smplx.JOINT_INDEX[f"{side}_shoulder"]].copy()
        turn = rotation((0, 0, 1), sign * math.radians(degrees))
        arm = [j for j, n in enumerate(smplx.JOINT_NAMES) if n.startswith(side) and any(p in n for p in ARM_PARTS)]
        joints[arm] = (joints[arm] - pivot) @ turn.T + pivot
    return joints


def _at(joints, name):
    return joints[smplx.JOINT_INDEX[name]]


def _proportions(joints: np.ndarray, arm: float, spine: float) -> np.ndarray:
    """Other proportions: arms (from the shoulders) and the upper body (from the pelvis) scaled."""
    out = joints.copy()
    for side in ("left", "right"):
        pivot = _at(joints, f"{side}_shoulder")
        arm_joints = [j for j, n in enumerate(smplx.JOINT_NAMES) if n.startswith(side) and
                      any(p in n for p in ARM_PARTS)]
        out[arm_joints] = pivot + (joints[arm_joints] - pivot) * arm
    upper = [j for j, n in enumerate(smplx.JOINT_NAMES) if not any(p in n for p in ("hip", "knee", "ankle", "foot"))]
    out[upper] = out[upper] * np.array([1.0, spine, 1.0])
    return out


def mixamo_bones(prefix: str = "mixamorig:") -> list:
    """(name, head, tail, parent) in Mixamo's FBX armature space: Y up, Z front, centimetres, T-pose."""
    j = _proportions(smplx.STANDIN_REST_JOINTS, arm=1.08, spine=1.05) * 100.0
    bones = []

    def add(name, head, tail, parent):
        bones.append((prefix + name, head, tail, prefix + parent if parent else None))

    spine = [("Hips", "pelvis"), ("Spine", "spine1"), ("Spine1", "spine2"), ("Spine2", "spine3"), ("Neck", "neck"),
             ("Head", "head")]
    for i, (name, joint) in enumerate(spine):
        tail = _at(j, spine[i + 1][1]) if i + 1 < len(spine) else _at(j, "head") + (0, 18.0, 0)
        add(name, _at(j, joint), tail, spine[i - 1][0] if i else None)
    add("HeadTop_End", _at(j, "head") + (0, 18.0, 0), _at(j, "head") + (0, 24.0, 0), "Head")
    for side, s in (("Left", "left"), ("Right", "right")):
        chain = [("Shoulder", "collar"), ("Arm", "shoulder"), ("ForeArm", "elbow"), ("Hand", "wrist")]
        for i, (name, joint) in enumerate(chain):
            tail = _at(j, f"{s}_{chain[i + 1][1]}") if i + 1 < len(chain) else _at(j, f"{s}_middle1")
            add(side + name, _at(j, f"{s}_{joint}"), tail, side + chain[i - 1][0] if i else "Spine2")
        for finger in FINGERS:
            title = finger.capitalize()
            points = [_at(j, f"{s}_{finger}{k}") for k in (1, 2, 3)]
            points.append(points[2] + (points[2] - points[1]) * 0.8)
            points.append(points[3] + (points[2] - points[1]) * 0.4)
            for k in range(4):
                add(f"{side}Hand{title}{k + 1}", points[k], points[k + 1],
                    f"{side}Hand{title}{k}" if k else f"{side}Hand")
        legs = [("UpLeg", "hip"), ("Leg", "knee"), ("Foot", "ankle"), ("ToeBase", "foot")]
        for i, (name, joint) in enumerate(legs):
            tail = _at(j, f"{s}_{legs[i + 1][1]}") if i + 1 < len(legs) else _at(j, f"{s}_foot") + (0, 0, 8.0)
            add(side + name, _at(j, f"{s}_{joint}"), tail, side + legs[i - 1][0] if i else "Hips")
        add(f"{side}Toe_End", _at(j, f"{s}_foot") + (0, 0, 8.0), _at(j, f"{s}_foot") + (0, 0, 12.0), side + "ToeBase")
    return bones


def cc_bones() -> list:
    """(name, head, tail, parent) of a Character Creator 3/4 rig in Blender axes (Z up, -Y front), metres, A-pose."""
    j = smplx.smplx_to_blender(_proportions(a_pose_joints(40.0), arm=0.97, spine=0.96) * 0.98)
    j = j + (0.0, 0.0, 0.94)
    bones = []

    def add(name, head, tail, parent):
        bones.append(("CC_Base_" + name, np.asarray(head, float), np.asarray(tail, float),
                      "CC_Base_" + parent if parent else None))

    pelvis = _at(j, "pelvis")
    add("BoneRoot", (0, 0, 0), (0, 0, 0.1), None)
    add("Hip", pelvis, pelvis + (0, -0.12, 0), "BoneRoot")          # points forward, as exported
    add("Pelvis", pelvis, pelvis + (0, 0, -0.1), "Hip")
    add("Waist", _at(j, "spine1"), _at(j, "spine2"), "Hip")
    add("Spine01", _at(j, "spine2"), _at(j, "spine3"), "Waist")
    add("Spine02", _at(j, "spine3"), _at(j, "neck"), "Spine01")
    neck_mid = 0.5 * (_at(j, "neck") + _at(j, "head"))
    add("NeckTwist01", _at(j, "neck"), neck_mid, "Spine02")
    add("NeckTwist02", neck_mid, _at(j, "head"), "NeckTwist01")
    add("Head", _at(j, "head"), _at(j, "head") + (0, 0, 0.17), "NeckTwist02")
    add("JawRoot", _at(j, "jaw"), _at(j, "jaw") + (0, -0.08, -0.04), "Head")
    for side, s in (("L", "left"), ("R", "right")):
        add(f"{side}_Eye", _at(j, f"{s}_eye_smplhf"), _at(j, f"{s}_eye_smplhf") + (0, -0.02, 0), "Head")
        add(f"{side}_Clavicle", _at(j, f"{s}_collar"), _at(j, f"{s}_shoulder"), "Spine02")
        add(f"{side}_Upperarm", _at(j, f"{s}_shoulder"), _at(j, f"{s}_elbow"), f"{side}_Clavicle")
        add(f"{side}_UpperarmTwist01", _at(j, f"{s}_shoulder"),
            0.5 * (_at(j, f"{s}_shoulder") + _at(j, f"{s}_elbow")), f"{side}_Upperarm")
        add(f"{side}_Forearm", _at(j, f"{s}_elbow"), _at(j, f"{s}_wrist"), f"{side}_Upperarm")
        add(f"{side}_ForearmTwist01", 0.5 * (_at(j, f"{s}_elbow") + _at(j, f"{s}_wrist")), _at(j, f"{s}_wrist"),
            f"{side}_Forearm")
        add(f"{side}_Hand", _at(j, f"{s}_wrist"), _at(j, f"{s}_middle1"), f"{side}_Forearm")
        for finger, cc in zip(FINGERS, ("Index", "Mid", "Pinky", "Ring", "Thumb")):
            points = [_at(j, f"{s}_{finger}{k}") for k in (1, 2, 3)]
            points.append(points[2] + (points[2] - points[1]) * 0.8)
            for k in range(3):
                add(f"{side}_{cc}{k + 1}", points[k], points[k + 1], f"{side}_{cc}{k}" if k else f"{side}_Hand")
        add(f"{side}_Thigh", _at(j, f"{s}_hip"), _at(j, f"{s}_knee"), "Pelvis")
        add(f"{side}_Calf", _at(j, f"{s}_knee"), _at(j, f"{s}_ankle"), f"{side}_Thigh")
        add(f"{side}_Foot", _at(j, f"{s}_ankle"), _at(j, f"{s}_foot"), f"{side}_Calf")
        add(f"{side}_ToeBase", _at(j, f"{s}_foot"), _at(j, f"{s}_foot") + (0, -0.06, 0), f"{side}_Foot")
    return bones


def build_armature(context, name: str, bones: list, *, rolls_deg: float = 0.0, fbx_axes: bool = False,
                   location=(0.0, 0.0, 0.0)):
    """An armature object from (name, head, tail, parent) rows; rolls alternate +-rolls_deg (other bone axes);
    fbx_axes: the object turned +90 degrees about X with scale 0.01 (an imported FBX rig)."""
    import bpy

    data = bpy.data.armatures.new(name)
    obj = bpy.data.objects.new(name, data)
    context.scene.collection.objects.link(obj)
    context.view_layer.objects.active = obj
    if fbx_axes:
        obj.rotation_euler = (math.radians(90.0), 0.0, 0.0)
        obj.scale = (0.01, 0.01, 0.01)
    obj.location = location
    bpy.ops.object.mode_set(mode="EDIT")
    edit = {}
    for i, (bone_name, head, tail, parent) in enumerate(bones):
        bone = data.edit_bones.new(bone_name)
        bone.head, bone.tail = tuple(map(float, head)), tuple(map(float, tail))
        bone.roll = math.radians(rolls_deg if i % 2 else -rolls_deg)
        if parent:
            bone.parent = edit[parent]
        edit[bone_name] = bone
    bpy.ops.object.mode_set(mode="OBJECT")
    return obj


def rigify_rigs(context, generate: bool = True, location=(0.0, 0.0, 0.0)):
    """(metarig, generated rig or None) from Rigify's human metarig; generation takes ~20 s on a laptop CPU."""
    import addon_utils
    import bpy

    addon_utils.enable("rigify", default_set=True)
    context.scene.cursor.location = location
    bpy.ops.object.armature_human_metarig_add()
    metarig = context.view_layer.objects.active
    context.scene.cursor.location = (0.0, 0.0, 0.0)
    if not generate:
        return metarig, None
    before = set(bpy.data.objects)
    bpy.ops.pose.rigify_generate()
    made = [o for o in bpy.data.objects if o not in before and o.type == "ARMATURE"]
    return metarig, made[0] if made else None
