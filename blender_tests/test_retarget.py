"""Retarget onto other rigs inside the real `bpy` module: Rigify (the metarig and the rig it generates, from the
rigify add-on shipped with Blender), a Mixamo-named FBX-style rig and a CC-named A-pose rig (retarget_rigs.py).

The BEAT2 take is imported onto the stand-in SMPL-X rig with the Import take path, retargeted onto each rig, and the
world-space directions of the upper arms, forearms, hands, head, thighs and shins are compared frame by frame with
the SMPL-X rig's.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

import numpy as np
import pytest

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="sheg-blender-user-"))  # before bpy
bpy = pytest.importorskip("bpy")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import retarget_rigs  # noqa: E402
from addon import retarget, rig, takes  # noqa: E402
from addon.core import arkit, bonemap, smplx  # noqa: E402

BEAT2 = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "beat2", "2_scott_0_1_1.npz"))
FRAME_STEP = 4  # every 4th frame of the 1906 (477 frames)

# part -> (SMPL-X joint, its child joint or None for the bone's own axis) on the stand-in rig
SOURCE_PARTS = {f"{side}_{part}": (f"{side}_{a}", f"{side}_{b}") for side in ("left", "right")
                for part, a, b in (("upper_arm", "shoulder", "elbow"), ("forearm", "elbow", "wrist"),
                                   ("hand", "wrist", "middle1"), ("thigh", "hip", "knee"),
                                   ("shin", "knee", "ankle"))}
SOURCE_PARTS["head"] = ("head", None)
# part -> bone whose own axis is measured on each target
_RIGIFY = {"upper_arm": "upper_arm{s}", "forearm": "forearm{s}", "hand": "hand{s}", "thigh": "thigh{s}",
           "shin": "shin{s}"}
TARGET_PARTS = {
    "mixamo": {**{f"{side}_{p}": f"mixamorig:{side.capitalize()}{n}" for side in ("left", "right")
                  for p, n in (("upper_arm", "Arm"), ("forearm", "ForeArm"), ("hand", "Hand"), ("thigh", "UpLeg"),
                               ("shin", "Leg"))},
               "head": "mixamorig:Head"},
    "cc": {**{f"{side}_{p}": f"CC_Base_{side[0].upper()}_{n}" for side in ("left", "right")
              for p, n in (("upper_arm", "Upperarm"), ("forearm", "Forearm"), ("hand", "Hand"), ("thigh", "Thigh"),
                           ("shin", "Calf"))},
           "head": "CC_Base_Head"},
    "metarig": {**{f"{side}_{p}": n.format(s=s) for side, s in (("left", ".L"), ("right", ".R"))
                   for p, n in _RIGIFY.items()}, "head": "spine.006"},
    # the generated rig is keyed on its FK controls; what deforms the mesh are its DEF- bones
    "rig": {**{f"{side}_{p}": "DEF-" + n.format(s=s) for side, s in (("left", ".L"), ("right", ".R"))
               for p, n in _RIGIFY.items()}, "head": "DEF-spine.006"},
}
EXPECTED_PRESET = {"mixamo": "mixamo", "cc": "cc", "metarig": "rigify_metarig", "rig": "rigify"}


def _direction(obj, bone, child=None) -> np.ndarray:
    world = obj.matrix_world
    pose = obj.pose.bones[bone]
    end = obj.pose.bones[child].head if child else pose.tail
    v = np.array(world @ end) - np.array(world @ pose.head)
    return v / np.linalg.norm(v)


@pytest.fixture(scope="module")
def scene_with_rigs():
    """Stand-in + BEAT2 take, the four target rigs, each retargeted; returns (context, source, take name, targets,
    results, generation error or None)."""
    if not os.path.isfile(BEAT2):
        pytest.skip(f"shared BEAT2 data not found at {BEAT2}")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    context = bpy.context
    context.scene.render.fps = 30
    source, face = rig.create_smplx_rig(context)
    takes.import_take(context, BEAT2, armature=source, face_mesh=face, start_frame=1)
    take_name = takes.list_takes(source)[-1]["name"]
    targets = {"mixamo": retarget_rigs.build_armature(context, "mixamo", retarget_rigs.mixamo_bones(), rolls_deg=20,
                                                      fbx_axes=True, location=(1.5, 0, 0)),
               "cc": retarget_rigs.build_armature(context, "cc", retarget_rigs.cc_bones(), rolls_deg=35,
                                                  location=(3.0, 0, 0))}
    metarig, generated = retarget_rigs.rigify_rigs(context, generate=True, location=(-1.5, 0, 0))
    targets["metarig"] = metarig
    assert generated is not None, "Rigify did not generate a rig headless"
    generated.location = (-3.0, 0, 0)
    targets["rig"] = generated
    results = {name: retarget.retarget_take(context, source, take_name, obj) for name, obj in targets.items()}
    return context, source, take_name, targets, results


@pytest.fixture(scope="module")
def direction_errors(scene_with_rigs):
    """rig -> part -> (frames,) angle in degrees between the rig's bone and the SMPL-X rig's."""
    context, source, _, targets, results = scene_with_rigs
    errors = {name: {part: [] for part in SOURCE_PARTS} for name in targets}
    end = results["mixamo"]["end_frame"]
    for frame in range(1, end + 1, FRAME_STEP):
        context.scene.frame_set(frame)
        for part, (joint, child) in SOURCE_PARTS.items():
            expected = _direction(source, joint, child)
            for name, obj in targets.items():
                got = _direction(obj, TARGET_PARTS[name][part])
                errors[name][part].append(np.degrees(np.arccos(np.clip(np.dot(expected, got), -1.0, 1.0))))
    context.scene.frame_set(1)
    return {name: {part: np.array(v) for part, v in parts.items()} for name, parts in errors.items()}


@pytest.mark.parametrize("name", list(TARGET_PARTS))
def test_auto_bone_map_covers_the_upper_body(scene_with_rigs, name):
    info = scene_with_rigs[4][name]
    assert info["preset"] == EXPECTED_PRESET[name]
    assert bonemap.missing_required(info["bone_map"]) == []
    hands = [j for j in smplx.JOINT_NAMES if smplx.BODY_PART[smplx.JOINT_INDEX[j]].endswith("Hand")]
    assert all(j in info["bone_map"] for j in hands)  # every rig here has fingers
    assert "\n" not in info["unmapped_line"]
    if name == "mixamo":  # Mixamo rigs have no jaw and these none of its eyes
        assert info["unmapped"] == ["jaw", "left_eye_smplhf", "right_eye_smplhf"]
        assert info["unmapped_line"] == "not mapped (3): jaw; left_eye_smplhf, right_eye_smplhf"


@pytest.mark.parametrize("name", list(TARGET_PARTS))
def test_bones_point_like_the_smplx_rig_frame_by_frame(direction_errors, name):
    for part, angles in direction_errors[name].items():
        print(f"{name} {part}: mean {angles.mean():.3f} max {angles.max():.3f} degrees over {len(angles)} frames")
        assert angles.mean() <= 5.0 and angles.max() <= 5.0, (name, part, angles.mean(), angles.max())


def test_retarget_is_a_new_take_on_the_target_and_keeps_the_source(scene_with_rigs):
    context, source, take_name, targets, results = scene_with_rigs
    info = results["cc"]
    target = targets["cc"]
    action = bpy.data.actions[info["action"]]
    assert action[retarget.RETARGET_PROP] == take_name
    assert [t.name for t in target.animation_data.nla_tracks] == [info["track"]]
    assert info["frames"] == 1906 and info["start_frame"] == 1
    assert json.loads(action["sheg_bone_map"])["left_wrist"] == "CC_Base_L_Hand"
    assert takes.list_takes(source)[-1]["name"] == take_name  # the source take stays
    assert "sheg.retarget" not in action.get("sheg_root", "") and action["sheg_root"] == "in_place"
    # a second retarget adds a track and keeps the first
    again = retarget.retarget_take(context, source, take_name, target, name="second")
    assert [t.name for t in target.animation_data.nla_tracks] == [info["track"], again["track"]]
    assert info["action"] in bpy.data.actions


def test_root_translation_moves_the_pelvis_bone(scene_with_rigs):
    context, source, take_name, targets, _ = scene_with_rigs
    info = retarget.retarget_take(context, source, take_name, targets["mixamo"], root="translation",
                                  name="with translation")
    action = bpy.data.actions[info["action"]]
    bag = action.layers[0].strips[0].channelbag(action.slots[0])
    paths = {fc.data_path for fc in bag.fcurves}
    assert 'pose.bones["mixamorig:Hips"].location' in paths
    take = takes.take_from_action(context, source, take_name)
    moved = np.ptp(take.trans, axis=0).max()  # metres the take travels
    loc = np.array([[fc.evaluate(f) for f in range(1, 1900, 50)] for fc in bag.fcurves
                    if fc.data_path.endswith(".location")])
    assert np.ptp(loc, axis=1).max() * 0.01 == pytest.approx(moved * 1.05, rel=0.2)  # cm rig, 1.05x taller


@pytest.mark.parametrize("name", list(TARGET_PARTS))
def test_saved_preset_reloads_to_the_same_map(scene_with_rigs, tmp_path, name):
    target = scene_with_rigs[3][name]
    preset, found = retarget.find_bone_map(target)
    path = str(tmp_path / f"{name}.json")
    retarget.save_bone_map(target, path)
    retarget.store_bone_map(target, {j: b for j, b in found.items() if j != "head"}, "edited")  # a user's change
    assert retarget.find_bone_map(target)[1] != found
    retarget.load_bone_map(target, path)
    assert retarget.find_bone_map(target) == (preset, found)


def test_bad_targets_get_one_line_errors_and_change_nothing(scene_with_rigs):
    context, source, take_name, targets, _ = scene_with_rigs
    actions = len(bpy.data.actions)
    for kwargs, message in (({"target": source}, "the take's own SMPL-X armature"),
                            ({"target": targets["cc"], "root": "fly"}, "unknown root policy"),
                            ({"target": targets["cc"], "bone_map": {"head": "CC_Base_Head"}}, "lacks spine1"),
                            ({"target": targets["cc"], "bone_map": {"head": "nope"}}, "has no bone 'nope'")):
        target = kwargs.pop("target")
        with pytest.raises(ValueError, match=message) as info:
            retarget.retarget_take(context, source, take_name, target, **kwargs)
        assert "\n" not in str(info.value)
    assert len(bpy.data.actions) == actions


def _arkit_face(context, names):
    mesh = bpy.data.meshes.new("arkit-face")
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("arkit-face", mesh)
    context.scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis")
    for name in names:
        obj.shape_key_add(name=name).value = 0.0
    return obj


def test_show_layout_take_drives_an_arkit_face(scene_with_rigs):
    context, source, take_name, targets, _ = scene_with_rigs
    names = list(smplx.ARKIT_NAMES) + ["tongueOut"]
    face = _arkit_face(context, [n.lower() if i % 3 == 0 else n for i, n in enumerate(names)])  # any case
    assert len(face.data.shape_keys.key_blocks) == 53
    info = retarget.retarget_take(context, source, take_name, targets["cc"], face_mesh=face, name="with face")
    assert info["expressions"] == 1  # jawOpen: the one ARKit key the jaw drives (core/arkit.py)
    key = face.data.shape_keys
    track = key.animation_data.nla_tracks[-1]
    assert track.strips[0].action.name == info["action"]
    take = takes.take_from_action(context, source, take_name)
    expected = np.clip(arkit.JAW_OPEN_PER_DEGREE * arkit.jaw_opening_degrees(take.poses[:, smplx.JAW]), 0, 1)
    got = []
    for frame in range(1, 1906, 25):
        context.scene.frame_set(frame)
        got.append(key.key_blocks["jawopen"].value)
    got = np.array(got)
    np.testing.assert_allclose(got, expected[0:1905:25], atol=1e-4)  # jawOpen follows the jaw
    assert got.std() > 0.02 and got.max() > 0.2  # and moves with the speech


def test_retarget_operator_is_one_undo_step(addon):
    if not os.path.isfile(BEAT2):
        pytest.skip(f"shared BEAT2 data not found at {BEAT2}")
    context = bpy.context
    scene = context.scene
    source, face = addon.rig.create_smplx_rig(context)
    addon.takes.import_take(context, BEAT2, armature=source, face_mesh=face, start_frame=1)
    target = retarget_rigs.build_armature(context, "mixamo", retarget_rigs.mixamo_bones(), fbx_axes=True)
    scene.sheg.armature = source
    scene.sheg_retarget.target = target
    assert bpy.ops.sheg.find_bone_map() == {"FINISHED"}
    assert len(scene.sheg_retarget.bones) == 55
    bpy.ops.ed.undo_push(message="before retarget")
    actions = sorted(a.name for a in bpy.data.actions)
    assert bpy.ops.sheg.retarget_take("EXEC_DEFAULT", True) == {"FINISHED"}
    target = bpy.data.objects["mixamo"]
    assert len(target.animation_data.nla_tracks) == 1 and len(bpy.data.actions) == len(actions) + 1
    assert retarget.MAP_PROP in target.keys()
    bpy.ops.ed.undo()
    target = bpy.data.objects["mixamo"]
    assert sorted(a.name for a in bpy.data.actions) == actions
    assert target.animation_data is None or len(target.animation_data.nla_tracks) == 0
    assert all(pb.rotation_quaternion[:] == (1.0, 0.0, 0.0, 0.0) for pb in target.pose.bones)
    # the same from Python, as a headless script would; the factory scene runs at 24 fps: 1906 frames -> 1525
    info = addon.api.retarget_take(target=target, source=bpy.data.objects["SMPLX-neutral"],
                                   root="translation")
    assert info["frames"] == 1525 and info["preset"] == "mixamo" and info["unmapped"] == ["jaw", "left_eye_smplhf",
                                                                                        "right_eye_smplhf"]
    assert [t.name for t in target.animation_data.nla_tracks] == [info["track"]]
