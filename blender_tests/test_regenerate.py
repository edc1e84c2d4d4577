"""Regenerate (addon/regenerate.py, api.regenerate_take, sheg.regenerate_take) in the real bpy with the real worker:
locked frames and parts come back exactly, the rest is new, the seam is smooth, one Ctrl+Z undoes it."""

from __future__ import annotations

import importlib
import os
import tempfile

import numpy as np
import pytest

import bpy  # noqa: I001

from conftest import ADDON_MODULE, SHARED_DIR

SPEECH = os.path.join(SHARED_DIR, "data", "speech", "198-209-0000.hq.ogg")  # 14.8 s: 444 frames at 30 fps
LEFT_ARM = [13, 16, 18, 20]
RIGHT_ARM = [14, 17, 19, 21]
UPPER_BODY = [3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21]


def addon_module(name: str):
    return importlib.import_module(f"{ADDON_MODULE}.{name}")


@pytest.fixture
def regen_scene(scene, backend_prefs, tiny_model_dir):
    if not os.path.isfile(SPEECH):
        pytest.skip(f"shared speech clip not found at {SPEECH}")
    scene.render.fps, scene.render.fps_base = 30, 1.0
    strip = scene.sequence_editor_create().strips.new_sound("speech", SPEECH, 1, 1)
    armature, face = addon_module("api").create_rig()
    settings = scene.sheg
    settings.strip_name, settings.armature, settings.face_mesh = strip.name, armature, face
    settings.model, settings.quality, settings.steps = tiny_model_dir, "CUSTOM", 3
    return scene, armature, face


def take_arrays(armature, take_name) -> dict:
    """The take as it plays, exported at its own frames (poses in radians, expressions)."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "take.npz")
        addon_module("takes").export_take(bpy.context, armature, take_name, path)
        with np.load(path) as z:
            return {"poses": z["poses"].reshape(-1, 55, 3).astype(np.float64), "expressions": z["expressions"]}


def newest(armature) -> str:
    return addon_module("takes").list_takes(armature)[-1]["name"]


@pytest.mark.worker
def test_locked_frames_come_back_exactly_and_one_undo_removes_the_new_take(regen_scene):
    scene, armature, face = regen_scene
    api = addon_module("api")
    first = api.generate(seed=1)["name"]
    old = take_arrays(armature, first)
    scene.sheg.lock_frames, scene.sheg.lock_frame_start, scene.sheg.lock_frame_end = True, 61, 121  # take 60..120
    name = armature.name
    bpy.ops.ed.undo_push(message="before regenerate")
    assert bpy.ops.sheg.regenerate_take("EXEC_DEFAULT", True, take_name=first) == {"FINISHED"}
    armature = bpy.data.objects[name]
    listed = addon_module("takes").list_takes(armature)
    assert len(listed) == 2
    new = take_arrays(armature, listed[-1]["name"])
    assert np.abs(new["poses"][60:121] - old["poses"][60:121]).max() <= 1e-5
    assert np.abs(new["expressions"][60:121] - old["expressions"][60:121]).max() <= 1e-5
    assert np.abs(new["poses"][:55] - old["poses"][:55]).mean() > 1e-3
    assert np.abs(new["poses"][126:] - old["poses"][126:]).mean() > 1e-3
    action = bpy.data.actions[listed[-1]["action"]]
    assert action["sheg_regenerated_from"] == first and action["sheg_seed"] == 2
    bpy.ops.ed.undo()
    armature = bpy.data.objects[name]
    assert [t["name"] for t in addon_module("takes").list_takes(armature)] == [first]


@pytest.mark.worker
def test_locked_left_arm_stays_and_the_rest_is_regenerated(regen_scene):
    scene, armature, face = regen_scene
    api = addon_module("api")
    first = api.generate(seed=1)["name"]
    info = api.regenerate_take(first, lock_parts=["left_arm"])
    old, new = take_arrays(armature, first), take_arrays(armature, info["name"])
    assert np.abs(new["poses"][:, LEFT_ARM] - old["poses"][:, LEFT_ARM]).max() <= 1e-5
    assert np.abs(new["poses"][:, RIGHT_ARM] - old["poses"][:, RIGHT_ARM]).mean() > 1e-3


@pytest.mark.worker
def test_regenerate_gesture_from_an_edited_face(regen_scene):
    scene, armature, face = regen_scene
    api = addon_module("api")
    first = api.generate(seed=1)["name"]
    action = bpy.data.actions[first] if first in bpy.data.actions else \
        bpy.data.actions[addon_module("takes").list_takes(armature)[-1]["action"]]
    edited = 0
    for bag in (action.layers[0].strips[0].channelbag(slot) for slot in action.slots):
        for fcurve in bag.fcurves if bag is not None else ():
            if fcurve.data_path == 'key_blocks["Exp000"].value':  # the artist raises one expression
                for point in fcurve.keyframe_points:
                    point.co.y += 0.5
                    point.handle_left.y += 0.5
                    point.handle_right.y += 0.5
                edited += 1
    assert edited == 1
    artist = take_arrays(armature, first)
    info = api.regenerate_take(first, lock_parts=["face"])
    new = take_arrays(armature, info["name"])
    assert np.abs(new["expressions"] - artist["expressions"]).max() <= 1e-5  # the artist's face exactly
    assert np.abs(new["poses"][:, 22] - artist["poses"][:, 22]).max() <= 1e-5  # with the jaw
    assert np.abs(new["poses"][:, UPPER_BODY] - artist["poses"][:, UPPER_BODY]).mean() > 1e-4  # a new body


def test_bad_locks_are_one_line_errors_and_change_nothing(regen_scene):
    scene, armature, face = regen_scene
    api = addon_module("api")
    with pytest.raises(ValueError, match="no take to regenerate"):
        api.regenerate_take(lock_parts=["face"])
    before = sorted(a.name for a in bpy.data.actions)
    scene.sheg.lock_frames = False
    with pytest.raises(RuntimeError, match="no take to regenerate"):  # the operator's one-line report
        bpy.ops.sheg.regenerate_take("EXEC_DEFAULT")
    assert sorted(a.name for a in bpy.data.actions) == before


def _seam_ratio(poses, seams):
    """Mean jerk (third difference of the upper-body rotations) at the seams over the mean elsewhere."""
    jerk = np.linalg.norm(np.diff(poses[:, UPPER_BODY], n=3, axis=0), axis=-1).mean(axis=1)
    at_seam = np.zeros(len(jerk), dtype=bool)
    for s in seams:
        at_seam[max(0, s - 3):s] = True
    return jerk[at_seam].mean() / jerk[~at_seam].mean()


@pytest.mark.worker
def test_seam_jerk_with_the_default_model(regen_scene):
    scene, armature, face = regen_scene
    scene.sheg.model = ""  # the embedded default model
    scene.sheg.quality = "DEFAULT"
    api = addon_module("api")
    first = api.generate(seed=1)["name"]
    info = api.regenerate_take(first, lock_frames=(61, 121))
    old, new = take_arrays(armature, first), take_arrays(armature, info["name"])
    assert np.abs(new["poses"][60:121] - old["poses"][60:121]).max() <= 1e-5
    ratio = _seam_ratio(new["poses"], [60, 121])
    print(f"seam jerk / inner jerk: {ratio:.2f} (old take at the same frames: {_seam_ratio(old['poses'], [60, 121]):.2f})")
    assert ratio <= 1.5
