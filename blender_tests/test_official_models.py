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


# --- Add Model…: official-format checkpoints (random values, official names and shapes) ---------------------------

BACKEND_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backend", "tests")
SHARED_STATS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data",
                            "diffsheg_stats")

WRITE_OFFICIAL = """
import sys
sys.path.insert(0, {tests!r})
from official_format import write_official_archive, write_official_tar
from sheg.testing import make_tiny_hubert
write_official_tar({folder!r} + "/ckpt_e2599.tar", "show", seed=1)
write_official_tar({folder!r} + "/fgd_best.tar", "beat", seed=2, module_prefix=True)
write_official_archive({folder!r} + "/data.tar.gz", {stats!r} + "/SHOW/talkshow_mean_std.npy", {stats!r} + "/BEAT")
make_tiny_hubert({folder!r} + "/hubert", hidden_size=1024)  # the official models read 1024-wide features
"""


@pytest.fixture(scope="module")
def official_files(backend_python, tmp_path_factory):
    """ckpt_e2599.tar (SHOW), fgd_best.tar (BEAT, DDP names), data.tar.gz from the real statistics, a tiny HuBERT."""
    if not os.path.isdir(SHARED_STATS):
        pytest.skip("../shared/data/diffsheg_stats not available")
    folder = tmp_path_factory.mktemp("official")
    script = WRITE_OFFICIAL.format(tests=BACKEND_TESTS, folder=str(folder), stats=os.path.abspath(SHARED_STATS))
    made = subprocess.run([backend_python, "-c", script], capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    yield folder
    import shutil

    shutil.rmtree(folder, ignore_errors=True)  # GBs: do not keep them in pytest's temp folders


def model_root_entries():
    root = addon_module("backend_env").models_root()
    return sorted(os.listdir(root))


@pytest.mark.worker
@pytest.mark.parametrize("profile", ["show", "beat"])
def test_add_model_lists_the_official_checkpoint_and_generate_works(profile, scene, backend_prefs, official_files,
                                                                    speech_wav):
    backend_env = addon_module("backend_env")
    before = model_root_entries()
    backend_prefs.hubert_path = str(official_files / "hubert")
    tar = official_files / ("ckpt_e2599.tar" if profile == "show" else "fgd_best.tar")
    # no statistics given: the data.tar.gz beside the checkpoint is used
    assert bpy.ops.sheg.add_model(filepath=str(tar)) == {"FINISHED"}, backend_env.IMPORT.error
    job = backend_env.IMPORT
    assert not job.error and job.report["profile"] == profile
    folder = job.report["out"]
    assert model_root_entries() == sorted(before + [os.path.basename(folder)])
    listed = dict((f, label) for label, f in backend_prefs.models())
    assert listed[os.path.normpath(folder)] == f"DiffSHEG {profile.upper()} ({tar.stem})"
    assert "non-commercial" in addon_module("prefs").model_licence(folder)
    assert scene.sheg.model_path() == folder

    strip, armature, face = ready_scene(scene, speech_wav, backend_prefs.python_path, fps=30)
    if profile == "beat":
        face = arkit_face()
    configure(scene, strip, armature, face, folder)
    scene.sheg.model = folder
    problem = addon_module("operators").generate_problem(bpy.context)
    assert problem.startswith(f"Accept the licence of DiffSHEG {profile.upper()}") and "non-commercial" in problem
    assert bpy.ops.sheg.accept_model_licence() == {"FINISHED"}
    assert addon_module("operators").generate_problem(bpy.context) is None
    assert bpy.ops.sheg.generate() == {"FINISHED"}, bpy.context.window_manager.sheg_job.last_message
    curves = take_fcurves(armature)
    if profile == "show":
        assert 'pose.bones["right_elbow"].rotation_quaternion[0]' in curves
        assert 'key_blocks["Exp000"].value[0]' in curves
    else:
        assert 'key_blocks["jawOpen"].value[0]' in curves
    action = bpy.data.actions[addon_module("takes").list_takes(armature)[0]["action"]]
    assert float(action["sheg_take_fps"]) == (30.0 if profile == "show" else 15.0)


@pytest.mark.worker
def test_a_damaged_or_wrong_file_is_one_line_and_registers_nothing(scene, backend_prefs, official_files, tmp_path):
    backend_env = addon_module("backend_env")
    damaged = tmp_path / "ckpt_e2599.tar"
    damaged.write_bytes((official_files / "ckpt_e2599.tar").read_bytes()[:4_000_000])
    folders = [e.path for e in backend_prefs.model_folders]
    before = model_root_entries()
    cases = [(damaged, official_files / "data.tar.gz", "ckpt_e2599.tar is a truncated or damaged PyTorch checkpoint"),
             (official_files / "ckpt_e2599.tar", official_files / "fgd_best.tar",
              "fgd_best.tar is not a readable .npy file"),
             (official_files / "data.tar.gz", official_files / "data.tar.gz", "data.tar.gz is a gzip archive")]
    for ckpt, stats, message in cases:
        with pytest.raises(RuntimeError, match="Adding the model failed"):  # the operator reports the error
            bpy.ops.sheg.add_model(filepath=str(ckpt), stats=str(stats))
        error = backend_env.IMPORT.error
        assert error.startswith("Adding the model failed: ") and message in error and "\n" not in error, error
        assert model_root_entries() == before and [e.path for e in backend_prefs.model_folders] == folders


@pytest.mark.worker
def test_cancel_stops_the_conversion_and_leaves_nothing(scene, backend_prefs, official_files):
    import threading

    backend_env = addon_module("backend_env")
    before = model_root_entries()
    threading.Timer(1.5, backend_env.cancel_import).start()  # background mode waits for the job: cancel from aside
    with pytest.raises(RuntimeError, match="cancelled"):
        bpy.ops.sheg.add_model(filepath=str(official_files / "ckpt_e2599.tar"),
                               stats=str(official_files / "data.tar.gz"))
    assert backend_env.IMPORT.error.startswith("cancelled"), backend_env.IMPORT.error
    assert model_root_entries() == before
