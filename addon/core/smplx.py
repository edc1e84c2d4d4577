"""SMPL-X skeleton facts the add-on needs without any SMPL-X model file.

Joint names and order are those of the `smplx` package and of the official SMPL-X Blender add-on (55 kinematic joints:
0 pelvis, 1-21 body, 22 jaw, 23-24 eyes, 25-39 left hand, 40-54 right hand). Parents are the 55-entry kintree shared by
every SMPL-X model file. STANDIN_REST_JOINTS are the project's own rough neutral-adult joint positions (no SMPL-X data):
SMPL-X coordinates, metres, +Y up, +X the body's left, +Z the body's front, pelvis at the origin, T-pose.
"""

from __future__ import annotations

import re

import numpy as np

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
NUM_JOINTS = len(JOINT_NAMES)  # 55
JOINT_INDEX = {name: i for i, name in enumerate(JOINT_NAMES)}

PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
           20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
           21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53)

PELVIS, JAW, LEFT_EYE, RIGHT_EYE = 0, 22, 23, 24
# Meshcapade's fork (and some exporters) drop the `_smplhf` suffix of the eyes.
ALTERNATE_NAMES = {"left_eye_smplhf": ("left_eye",), "right_eye_smplhf": ("right_eye",)}
# Bones a rig must have for a take to mean anything on it.
KEY_JOINTS = ("pelvis", "spine1", "spine2", "spine3", "neck", "head", "left_shoulder", "right_shoulder",
              "left_elbow", "right_elbow", "left_wrist", "right_wrist")

NUM_EXPRESSIONS = 100
EXPRESSION_KEY_FORMAT = "Exp{:03d}"  # shape key names of the official add-on: Exp000..Exp099
EXPRESSION_KEY_PATTERN = re.compile(r"Exp(\d{3})")

# The 51 ARKit blendshapes of BEAT, alphabetical (ARKit's 52 without tongueOut); same order as the backend's layouts.
ARKIT_NAMES = (
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight")

# F-curve groups, in the order the Graph Editor should list them.
GROUP_NAMES = ("Spine", "Neck & Head", "Left Arm", "Right Arm", "Left Hand", "Right Hand", "Jaw", "Legs", "Eyes",
               "Expressions")
EXPRESSIONS_GROUP = "Expressions"


def _body_part(name: str) -> str:
    if name == "jaw":
        return "Jaw"
    if "eye" in name:
        return "Eyes"
    if name in ("neck", "head"):
        return "Neck & Head"
    if name == "pelvis" or name.startswith("spine"):
        return "Spine"
    if any(name.endswith(s) for s in ("hip", "knee", "ankle", "foot")):
        return "Legs"
    side = "Left" if name.startswith("left_") else "Right"
    if any(name.endswith(s) for s in ("collar", "shoulder", "elbow", "wrist")):
        return f"{side} Arm"
    return f"{side} Hand"


BODY_PART = tuple(_body_part(n) for n in JOINT_NAMES)  # (55,) group name of each joint

# Which half of a take a joint belongs to: "face" (jaw, eyes; expressions too) or "body" (everything else + trans).
FACE_JOINTS = (JAW, LEFT_EYE, RIGHT_EYE)
PARTS = ("both", "body", "face")


def joints_for_parts(parts: str) -> np.ndarray:
    """(55,) bool mask of the joints that `parts` ("both" | "body" | "face") covers."""
    if parts not in PARTS:
        raise ValueError(f"unknown parts '{parts}' (use one of: {', '.join(PARTS)})")
    mask = np.zeros(NUM_JOINTS, dtype=bool)
    mask[list(FACE_JOINTS)] = True
    if parts == "face":
        return mask
    if parts == "body":
        return ~mask
    return np.ones(NUM_JOINTS, dtype=bool)


def _hand(side: float, wrist) -> list:
    """15 finger joints of one hand (index, middle, pinky, ring, thumb; 3 each) for a T-pose, flat palm down."""
    wx, wy, wz = wrist
    out = []
    # (knuckle offset along the arm, z across the palm, phalanx lengths)
    for along, across, lengths in ((0.090, 0.025, (0.038, 0.024)),    # index
                                   (0.095, 0.003, (0.042, 0.027)),    # middle
                                   (0.075, -0.042, (0.026, 0.020)),   # pinky
                                   (0.090, -0.020, (0.036, 0.025))):  # ring
        x = along
        out.append((wx + side * x, wy - 0.005, wz + across))
        for length in lengths:
            x += length
            out.append((wx + side * x, wy - 0.005, wz + across))
    # thumb: from the palm's base towards the front, slightly down
    out += [(wx + side * 0.028, wy - 0.015, wz + 0.035), (wx + side * 0.058, wy - 0.022, wz + 0.055),
            (wx + side * 0.083, wy - 0.027, wz + 0.070)]
    return out


def _standin_rest_joints() -> np.ndarray:
    left = {
        "hip": (0.060, -0.090, -0.010), "knee": (0.105, -0.480, 0.000), "ankle": (0.090, -0.880, -0.040),
        "foot": (0.115, -0.940, 0.100), "collar": (0.070, 0.430, -0.010), "shoulder": (0.170, 0.450, -0.020),
        "elbow": (0.430, 0.440, -0.035), "wrist": (0.680, 0.440, -0.030), "eye": (0.032, 0.675, 0.085),
    }
    center = {"pelvis": (0.0, 0.0, 0.0), "spine1": (0.0, 0.110, -0.030), "spine2": (0.0, 0.240, -0.020),
              "spine3": (0.0, 0.300, 0.000), "neck": (0.0, 0.510, -0.030), "head": (0.0, 0.600, 0.005),
              "jaw": (0.0, 0.620, 0.030)}
    joints = {}
    for name in JOINT_NAMES[:25]:
        if name in center:
            joints[name] = center[name]
            continue
        side_name, part = name.split("_")[0], name.split("_")[1]
        x, y, z = left[part]
        joints[name] = (x if side_name == "left" else -x, y, z)
    rows = [joints[n] for n in JOINT_NAMES[:25]]
    rows += _hand(1.0, joints["left_wrist"]) + _hand(-1.0, joints["right_wrist"])
    return np.array(rows, dtype=np.float64)


STANDIN_REST_JOINTS = _standin_rest_joints()  # (55, 3) SMPL-X coordinates, metres
# Height of the stand-in pelvis above its soles: the rig is built with the soles on the armature's origin.
STANDIN_PELVIS_HEIGHT = 0.96

# SMPL-X (Y up, Z front) -> Blender (Z up, -Y front): (x, y, z) -> (x, -z, y), a +90 degree turn about X.
SMPLX_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


def smplx_to_blender(points: np.ndarray) -> np.ndarray:
    """(..., 3) SMPL-X coordinates -> Blender coordinates (x, -z, y)."""
    return np.asarray(points, dtype=np.float64) @ SMPLX_TO_BLENDER.T


def children_of(joint: int) -> list:
    return [j for j, p in enumerate(PARENTS) if p == joint]
