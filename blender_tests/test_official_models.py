"""Official-profile models in real Blender: a BEAT-layout model's take lands on ARKit-named shape keys."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

import bpy

from test_extension import addon_module, configure, ready_scene, take_fcurves

# Mixed case on purpose: ARKit key names are matched case-insensitively.
ARKIT_KEYS = ("jawOpen", "EyeBlinkLeft", "mouthSmileRight")


@pytest.fixture(scope="session")
def tiny_beat_model_dir(backend_python, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("models") / "tiny-beat")
    made = subprocess.run([backend_python, "-m", "sheg", "make-test-model", out, "--layout", "beat"],
                          capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return out


def arkit_face(name="arkit-face"):
    """A small mesh with a Basis and a few ARKit-named shape keys (as on a MetaHuman/LiveLink face)."""
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    face = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(face)
    face.shape_key_add(name="Basis")
    for key in ARKIT_KEYS:
        face.shape_key_add(name=key, from_mix=False)
    return face


@pytest.mark.worker
def test_a_beat_model_take_drives_the_arkit_shape_keys(scene, backend_prefs, tiny_beat_model_dir, speech_wav):
    strip, armature, _ = ready_scene(scene, speech_wav, backend_prefs.python_path, fps=30)
    face = arkit_face()
    configure(scene, strip, armature, face, tiny_beat_model_dir)
    assert bpy.ops.sheg.generate() == {"FINISHED"}, bpy.context.window_manager.sheg_job.last_message
    curves = take_fcurves(armature)
    keyed = {path for path in curves if path.startswith("key_blocks")}
    assert keyed == {f'key_blocks["{k}"].value[0]' for k in ARKIT_KEYS}
    action = bpy.data.actions[addon_module("takes").list_takes(armature)[0]["action"]]
    assert float(action["sheg_take_fps"]) == 15.0  # the BEAT model's rate, resampled by time to the scene's 30
    frames, values = curves['key_blocks["jawOpen"].value[0]']
    expected = addon_module("core.resample").frame_count(int(action["sheg_take_frames"]), 15.0, 30)
    assert len(frames) == expected and frames[0] == strip.frame_final_start
    assert np.ptp(values) > 0 and np.isfinite(values).all()
    assert not [p for p in curves if "Exp0" in p]
