"""The SHEG extension inside real Blender (`bpy` module): the BUILT zip installed into an isolated user folder.

Generation tests drive the real backend worker with a tiny random model (`python -m sheg make-test-model`); they
skip with a reason when the backend is not available. Background mode has no event loop, so the interactive path is
exercised through the same GenerationJob.tick() the modal operator calls on its timer.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import threading
import time
import tomllib
import wave
import zipfile

import numpy as np
import pytest

import bpy  # noqa: I001  (bpy first: it provides `aud`)
import aud

from conftest import ADDON_MODULE, _USER_RESOURCES, blender_ext_script

FPS_CASES = [24, 25, 30, 60]


def addon_module(name: str):
    return importlib.import_module(f"{ADDON_MODULE}.{name}")


def add_trimmed_strip(scene, wav: str, fps: int, name: str = "speech"):
    """Sound strip whose content starts at frame 91, trimmed 10 frames on the left (audible from 101) and 6 on the
    right."""
    scene.render.fps, scene.render.fps_base = fps, 1.0
    sed = scene.sequence_editor_create()
    strip = sed.strips.new_sound(name, wav, 1, 91)
    strip.frame_offset_start = 10
    strip.frame_offset_end = 6
    assert strip.frame_final_start == 101
    return strip


def ready_scene(scene, wav: str, python: str, fps: int = 30):
    """A scene where Generate is allowed: a strip, a stand-in rig with face, a backend Python that exists."""
    strip = add_trimmed_strip(scene, wav, fps)
    armature, face = addon_module("api").create_rig()
    prefs = bpy.context.preferences.addons[ADDON_MODULE].preferences
    prefs.backend_mode, prefs.python_path = "CUSTOM", python
    return strip, armature, face


def take_fcurves(armature) -> dict:
    """data_path[index] -> (frames (N,), values (N,)) of the armature's only take."""
    found = addon_module("takes").list_takes(armature)
    assert len(found) == 1, found
    action = bpy.data.actions[found[0]["action"]]
    curves = {}
    strip = action.layers[0].strips[0]
    for slot in action.slots:
        bag = strip.channelbag(slot)
        for fc in bag.fcurves:
            co = np.empty(2 * len(fc.keyframe_points), dtype=np.float32)
            fc.keyframe_points.foreach_get("co", co)
            curves[f"{fc.data_path}[{fc.array_index}]"] = (co[0::2], co[1::2])
    return curves


def scene_state(armature=None) -> tuple:
    """What a cancelled or failed generation must leave unchanged."""
    tracks = () if armature is None or armature.animation_data is None else tuple(
        t.name for t in armature.animation_data.nla_tracks)
    return tuple(sorted(a.name for a in bpy.data.actions)), tracks


# --- the package ---------------------------------------------------------------------------------------------------

def test_zip_validates_and_ships_no_torch(extension_zip):
    checked = subprocess.run([sys.executable, blender_ext_script(), "validate", extension_zip], capture_output=True,
                             text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with zipfile.ZipFile(extension_zip) as z:
        names = z.namelist()
        sources = {n: z.read(n).decode() for n in names if n.endswith(".py")}
        manifest = z.read("blender_manifest.toml").decode()
    assert {"blender_manifest.toml", "__init__.py", "core/worker_client.py", "core/strip_timing.py"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n, text in sources.items() if "import torch" in text]
    manifest = tomllib.loads(manifest)
    assert manifest["id"] == "sheg" and manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert "wheels" not in manifest  # the backend wheel is data for the managed install, not a Blender wheel
    assert set(manifest["permissions"]) == {"files", "network"}


def test_installed_extension_registers_everything(addon, prefs):
    import addon_utils

    assert addon_utils.check(ADDON_MODULE) == (True, True)
    for op in ("generate", "cancel", "new_seed", "create_rig", "import_take", "export_take", "remove_take",
               "solo_take", "check_backend", "install_backend", "cancel_install"):
        assert hasattr(bpy.ops.sheg, op), op
    assert hasattr(bpy.types, "SHEG_PT_main") and hasattr(bpy.types, "SHEG_PT_takes")
    assert bpy.types.SHEG_PT_main.bl_category == "SHEG" and bpy.types.SHEG_PT_main.bl_space_type == "VIEW_3D"
    scene = bpy.context.scene
    assert scene.sheg.model == "Default (embedded)" and scene.sheg.step_count() == 25
    assert bpy.context.window_manager.sheg_job.running is False
    assert prefs.backend_mode == "MANAGED" and prefs.device == "AUTO"
    assert addon_module("prefs").ShegPreferences.from_context(bpy.context) == prefs


def test_quality_presets_and_new_seed(scene):
    settings = scene.sheg
    for quality, steps in (("FAST", 10), ("DEFAULT", 25), ("HIGH", 50)):
        settings.quality = quality
        assert settings.step_count() == steps
    settings.quality, settings.steps = "CUSTOM", 7
    assert settings.step_count() == 7
    settings.seed = 5
    assert bpy.ops.sheg.new_seed() == {"FINISHED"}
    assert settings.seed != 5


# --- poll messages -------------------------------------------------------------------------------------------------

def _break_no_strip(scene, strip, armature, face, prefs):
    scene.sequence_editor.strips.remove(strip)


def _break_muted(scene, strip, armature, face, prefs):
    strip.mute = True


def _break_zero_length(scene, strip, armature, face, prefs):
    strip.frame_offset_end = strip.frame_duration - strip.frame_offset_start
    assert strip.frame_final_end == strip.frame_final_start


def _break_missing_file(scene, strip, armature, face, prefs):
    strip.sound.filepath = "/no/such/folder/speech.wav"


def _break_no_armature(scene, strip, armature, face, prefs):
    scene.sheg.armature = None


def _break_plain_armature(scene, strip, armature, face, prefs):
    bpy.ops.object.armature_add()
    scene.sheg.armature = bpy.context.active_object


def _break_face_keys(scene, strip, armature, face, prefs):
    mesh = bpy.data.objects.new("plain-face", bpy.data.meshes.new("plain-face"))
    scene.collection.objects.link(mesh)
    mesh.shape_key_add(name="Basis")
    mesh.shape_key_add(name="Smile")
    scene.sheg.face_mesh = mesh


def _break_expression_without_face(scene, strip, armature, face, prefs):
    scene.sheg.face_mesh = None
    scene.sheg.parts = "EXPRESSION"


def _break_managed_not_installed(scene, strip, armature, face, prefs):
    prefs.backend_mode = "MANAGED"


def _break_custom_python_missing(scene, strip, armature, face, prefs):
    prefs.python_path = "/no/such/python"


POLL_CASES = [
    (_break_no_strip, "No sound strip"),
    (_break_muted, "is muted"),
    (_break_zero_length, "has zero length"),
    (_break_missing_file, "Sound file not found: /no/such/folder/speech.wav"),
    (_break_no_armature, "Choose a target armature"),
    (_break_plain_armature, "has no SMPL-X bones"),
    (_break_face_keys, "plain-face"),
    (_break_expression_without_face, "needs a face mesh"),
    (_break_managed_not_installed, "Backend not installed"),
    (_break_custom_python_missing, "Backend Python not found"),
]


@pytest.mark.parametrize("breaker,message", POLL_CASES, ids=[c[0].__name__[7:] for c in POLL_CASES])
def test_generate_poll_says_why(scene, prefs, speech_wav, breaker, message):
    strip, armature, face = ready_scene(scene, speech_wav, sys.executable)
    assert bpy.ops.sheg.generate.poll(), addon_module("operators").generate_problem(bpy.context)
    breaker(scene, strip, armature, face, prefs)
    assert not bpy.ops.sheg.generate.poll()
    with pytest.raises(RuntimeError) as info:
        bpy.ops.sheg.generate()
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_install_refuses_without_online_access(addon):
    assert bpy.app.online_access is False  # the bpy module's default
    assert not bpy.ops.sheg.install_backend.poll()
    with pytest.raises(RuntimeError, match="online access is disabled"):
        bpy.ops.sheg.install_backend()


def test_torch_pip_arguments_follow_the_device(addon):
    env = addon_module("backend_env")
    assert env.torch_pip_args("cpu", "Linux") == ["torch==2.13.0", "--index-url", env.TORCH_CPU_INDEX]
    assert env.torch_pip_args("auto", "Windows") == ["torch==2.13.0", "--index-url", env.TORCH_CPU_INDEX]
    assert env.torch_pip_args("cuda", "Linux") == ["torch==2.13.0"]
    assert env.torch_pip_args("cuda", "Windows")[-1].startswith("https://download.pytorch.org/whl/cu")
    assert env.torch_pip_args("mps", "Darwin") == ["torch==2.13.0"]
    assert env.torch_pip_args("cpu", "Linux", "https://mirror/simple")[-1] == "https://mirror/simple"
    assert env.managed_python().startswith(_USER_RESOURCES)


@pytest.mark.parametrize("constraints", [None, "torch<=2.14.1\n"], ids=["plain-pip", "pip-with-constraints"])
def test_managed_install_creates_the_venv_and_reports_a_pip_failure_in_one_line(addon, tmp_path, monkeypatch,
                                                                                constraints):
    """A torch version no index has makes the (large) torch step fail fast, after the venv step ran for real. pip
    runs with a config of the test's own (none, or a constraints file as some machines have globally), so the
    machine's pip.conf cannot change the outcome; either way the error names the cause, not pip's generic hint."""
    env = addon_module("backend_env")
    monkeypatch.setattr(env, "TORCH_VERSION", "0.0.0")
    for name in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    if constraints:
        (tmp_path / "constraints.txt").write_text(constraints)
        monkeypatch.setenv("PIP_CONSTRAINT", str(tmp_path / "constraints.txt"))
    empty_index = tmp_path / "index"
    empty_index.mkdir()
    job = env.Job("install-test")
    venv, log = str(tmp_path / "venv"), str(tmp_path / "install.log")
    job.start(env._install, "cpu", empty_index.as_uri(), str(tmp_path / "sheg-0.1.0-py3-none-any.whl"), venv, log)
    job.wait(300)
    assert not job.running
    assert os.path.isfile(env.venv_python(venv))  # step 1 worked with this interpreter
    assert "Installing PyTorch failed" in job.error and "torch==0.0.0" in job.error
    assert "for help visit" not in job.error
    if constraints:  # the conflict pip names, with the constraint that caused it
        assert "conflicting dependencies" in job.error and "(constraint) torch<=2.14.1" in job.error, job.error
    assert f"(log: {log})" in job.error and "\n" not in job.error
    with open(log) as f:
        text = f.read()
    assert "-m venv" in text and "pip install" in text and "torch==0.0.0" in text

def test_cancel_stops_a_managed_install_at_once(addon, tmp_path):
    """A package index that accepts connections and never answers keeps pip waiting on torch; Cancel ends it."""
    import socket

    env = addon_module("backend_env")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    accepting = threading.Thread(target=lambda: held.extend(server.accept() for _ in range(8)), daemon=True)
    accepting.start()
    try:
        job = env.Job("install")
        venv, log = str(tmp_path / "venv"), str(tmp_path / "install.log")
        job.start(env._install, "cpu", f"http://127.0.0.1:{server.getsockname()[1]}/simple",
                  str(tmp_path / "sheg-0.1.0-py3-none-any.whl"), venv, log)
        deadline = time.monotonic() + 120
        while job.message != "Installing PyTorch" and job.running and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.running and job.message == "Installing PyTorch", job.error
        time.sleep(1.0)  # pip is waiting on the index now
        assert job.running
        started = time.monotonic()
        job.cancel()
        job.wait(10)
        assert not job.running and time.monotonic() - started < 5
        assert job.error.startswith("cancelled: start the install again") and "\n" not in job.error
        with open(log) as f:
            assert f.read().rstrip().endswith("cancelled")
    finally:
        server.close()
        for conn, _ in held:
            conn.close()


# --- strip audio ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fps", FPS_CASES, ids=lambda f: f"{f}fps")
def test_strip_audio_is_exactly_the_audible_range(scene, speech_wav, tmp_path, fps):
    strip_audio = addon_module("strip_audio")
    strip = add_trimmed_strip(scene, speech_wav, fps)
    frames = strip.frame_final_end - strip.frame_final_start
    out = str(tmp_path / "strip.wav")
    start, seconds = strip_audio.export_strip_wav(bpy.context, strip, out)
    assert start == 101
    assert seconds == pytest.approx(frames / fps)
    source = aud.Sound(speech_wav).data()[:, 0]
    written = aud.Sound(out).data()[:, 0]
    first = round(10 / fps * 16000)
    assert len(written) == round(frames / fps * 16000)
    np.testing.assert_array_equal(written, source[first:first + len(written)])


def test_sound_offset_gives_leading_silence_and_pcm16_works(scene, speech_wav, tmp_path):
    strip_audio = addon_module("strip_audio")
    scene.render.fps = 25
    strip = scene.sequence_editor_create().strips.new_sound("speech", speech_wav, 1, 1)
    strip.sound_offset = 0.5  # the sound starts half a second after the strip's left handle
    out = str(tmp_path / "strip16.wav")
    strip_audio.export_strip_wav(bpy.context, strip, out, sample_format="PCM16")
    with wave.open(out) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 16000)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert len(pcm) == round((strip.frame_final_end - strip.frame_final_start) / 25 * 16000)
    assert not pcm[:8000].any() and pcm[8000:].any()


def test_whole_file_export_is_placed_at_the_current_frame(scene, speech_wav, tmp_path):
    scene.frame_current = 42
    start, seconds = addon_module("strip_audio").export_file_wav(bpy.context, speech_wav, str(tmp_path / "f.wav"))
    assert (start, seconds) == (42, pytest.approx(4.0))


# --- generation through the real worker ----------------------------------------------------------------------------

def configure(scene, strip, armature, face, model_dir, steps=2, parts="BOTH"):
    settings = scene.sheg
    settings.strip_name = strip.name
    settings.armature, settings.face_mesh = armature, face
    settings.model = model_dir
    settings.quality, settings.steps = "CUSTOM", steps
    settings.parts = parts


@pytest.fixture
def gen_scene(scene, backend_prefs, tiny_model_dir, speech_wav):
    """(scene, strip, armature, face, model) at 30 fps, ready to generate with the tiny model."""
    strip, armature, face = ready_scene(scene, speech_wav, backend_prefs.python_path)
    configure(scene, strip, armature, face, tiny_model_dir)
    return scene, strip, armature, face, tiny_model_dir


@pytest.mark.worker
@pytest.mark.parametrize("fps", FPS_CASES, ids=lambda f: f"{f}fps")
def test_generate_keys_the_right_channels_at_the_right_frames(scene, backend_prefs, tiny_model_dir, speech_wav,
                                                              fps):
    strip, armature, face = ready_scene(scene, speech_wav, backend_prefs.python_path, fps=fps)
    configure(scene, strip, armature, face, tiny_model_dir)
    assert bpy.ops.sheg.generate() == {"FINISHED"}, bpy.context.window_manager.sheg_job.last_message
    curves = take_fcurves(armature)
    assert 'pose.bones["right_elbow"].rotation_quaternion[0]' in curves
    assert 'pose.bones["jaw"].rotation_quaternion[3]' in curves
    assert 'key_blocks["Exp000"].value[0]' in curves
    assert not [p for p in curves if "left_knee" in p or "eye" in p]  # the SHOW layout does not generate them
    frames, _ = curves['pose.bones["right_elbow"].rotation_quaternion[0]']
    assert frames[0] == 101
    np.testing.assert_allclose(np.diff(frames), 1.0)
    action = bpy.data.actions[addon_module("takes").list_takes(armature)[0]["action"]]
    resample = addon_module("core.resample")
    expected = resample.frame_count(int(action["sheg_take_frames"]), float(action["sheg_take_fps"]), fps)
    assert len(frames) == expected
    assert strip.frame_final_end - 2 <= frames[-1] <= strip.frame_final_end  # the motion spans the audible range
    assert len(curves['key_blocks["Exp000"].value[0]'][0]) == expected
    take = addon_module("takes").list_takes(armature)[0]
    assert take["seed"] == 0 and take["audio_file"].endswith("arctic_a0007.wav")


@pytest.mark.worker
def test_the_embedded_diffgesture_model_is_selectable_and_drives_the_upper_body(gen_scene):
    scene, strip, armature, face, model = gen_scene
    label = "DiffGesture small (embedded)"
    search = addon_module("props")._model_search(scene.sheg, bpy.context, "")
    assert label in search and addon_module("prefs").DEFAULT_MODEL in search
    scene.sheg.model = label
    assert scene.sheg.model_path() == "diffgesture-small"
    scene.sheg.steps = 4
    assert bpy.ops.sheg.generate() == {"FINISHED"}, bpy.context.window_manager.sheg_job.last_message
    curves = take_fcurves(armature)
    assert 'pose.bones["right_elbow"].rotation_quaternion[0]' in curves
    assert 'pose.bones["spine3"].rotation_quaternion[0]' in curves
    # TED Gesture (10 joints): no fingers, jaw or face keys
    assert not [p for p in curves if "key_blocks" in p or '"jaw"' in p or "index" in p or "knee" in p]
    take = addon_module("takes").list_takes(armature)[0]
    action = bpy.data.actions[take["action"]]
    assert float(action["sheg_take_fps"]) == 15.0
    frames, _ = curves['pose.bones["right_elbow"].rotation_quaternion[0]']
    expected = addon_module("core.resample").frame_count(int(action["sheg_take_frames"]), 15.0, 30.0)
    assert len(frames) == expected and frames[0] == strip.frame_final_start


@pytest.mark.worker
def test_gesture_only_leaves_the_face_alone(gen_scene):
    scene, strip, armature, face, model = gen_scene
    scene.sheg.parts = "GESTURE"
    assert bpy.ops.sheg.generate() == {"FINISHED"}
    curves = take_fcurves(armature)
    assert 'pose.bones["right_elbow"].rotation_quaternion[0]' in curves
    assert not [p for p in curves if "key_blocks" in p or '"jaw"' in p]
    assert face.data.shape_keys.animation_data is None or not face.data.shape_keys.animation_data.nla_tracks


@pytest.mark.worker
def test_interactive_ticks_stay_short(gen_scene):
    scene, strip, armature, face, model = gen_scene
    api = addon_module("api")
    job = api.GenerationJob(strip=strip, armature=armature, face_mesh=face, model=model, steps=3)
    job.start(bpy.context)
    try:
        slowest = 0.0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            state = job.tick()
            slowest = max(slowest, time.perf_counter() - t0)
            if state != "running":
                break
            time.sleep(0.1)  # the modal operator's timer
        assert state == "done", job.error
        info = job.finish(bpy.context)
    finally:
        job.close()
    assert slowest < 0.05
    assert info["start_frame"] == 101 and info["frames"] > 0
    assert not os.path.exists(job.task.out)  # temporary files are gone


def _run_until_sampling(job):
    deadline = time.monotonic() + 120
    while job.tick() == "running" and not job.stage.startswith("Sampling") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert job.state == "running", job.error


@pytest.mark.worker
def test_cancel_stops_within_a_second_and_leaves_the_scene_unchanged(gen_scene):
    scene, strip, armature, face, model = gen_scene
    api = addon_module("api")
    before = scene_state(armature)
    job = api.GenerationJob(strip=strip, armature=armature, face_mesh=face, model=model, steps=900)
    job.start(bpy.context)
    api.set_active_job(job)
    try:
        _run_until_sampling(job)
        assert bpy.ops.sheg.cancel.poll()
        t0 = time.monotonic()
        assert bpy.ops.sheg.cancel() == {"FINISHED"}  # what the Cancel button and Esc do
        while job.tick() == "running":
            time.sleep(0.01)
        assert time.monotonic() - t0 < 1.0
        assert job.state == "cancelled"
    finally:
        api.set_active_job(None)
        job.close()
    assert scene_state(armature) == before
    assert not bpy.ops.sheg.cancel.poll()


@pytest.mark.worker
def test_a_killed_worker_is_one_line_error_and_the_next_generate_starts_afresh(gen_scene):
    scene, strip, armature, face, model = gen_scene
    api = addon_module("api")
    before = scene_state(armature)
    job = api.GenerationJob(strip=strip, armature=armature, face_mesh=face, model=model, steps=900)
    job.start(bpy.context)
    try:
        _run_until_sampling(job)
        job.task.client.process.kill()  # what an out-of-memory kill looks like
        with pytest.raises(addon_module("core.worker_client").WorkerError) as info:
            job.run_blocking(bpy.context, timeout=30)
    finally:
        job.close()
    assert "killed" in str(info.value) and "\n" not in str(info.value)
    assert scene_state(armature) == before
    assert bpy.ops.sheg.generate() == {"FINISHED"}
    assert len(addon_module("takes").list_takes(armature)) == 1


@pytest.mark.worker
def test_undo_removes_the_take_in_one_step(gen_scene):
    scene, strip, armature, face, model = gen_scene
    name = armature.name
    before = scene_state(armature)
    bpy.ops.ed.undo_push(message="before generate")
    assert bpy.ops.sheg.generate("EXEC_DEFAULT", True) == {"FINISHED"}  # True: push an undo step as the UI does
    assert len(addon_module("takes").list_takes(bpy.data.objects[name])) == 1
    bpy.ops.ed.undo()
    armature = bpy.data.objects[name]
    assert addon_module("takes").list_takes(armature) == []
    assert scene_state(armature) == before


@pytest.mark.worker
def test_existing_animation_is_untouched(gen_scene):
    scene, strip, armature, face, model = gen_scene
    elbow = armature.pose.bones["right_elbow"]
    elbow.rotation_quaternion = (0.9, 0.1, 0.2, 0.3)
    elbow.keyframe_insert("rotation_quaternion", frame=1)
    key = face.data.shape_keys
    key.key_blocks["Exp001"].value = 0.7
    key.key_blocks["Exp001"].keyframe_insert("value", frame=5)
    arm_action, key_action = armature.animation_data.action, key.animation_data.action

    def snapshot():
        bags = [arm_action.layers[0].strips[0].channelbag(arm_action.slots[0]),
                key_action.layers[0].strips[0].channelbag(key_action.slots[0])]
        return [(fc.data_path, fc.array_index, tuple(tuple(k.co) for k in fc.keyframe_points))
                for bag in bags for fc in bag.fcurves]

    before = snapshot()
    assert bpy.ops.sheg.generate() == {"FINISHED"}
    assert armature.animation_data.action == arm_action and key.animation_data.action == key_action
    assert snapshot() == before
    assert len(addon_module("takes").list_takes(armature)) == 1


@pytest.mark.worker
def test_worker_is_shut_down_with_the_addon(gen_scene):
    import addon_utils

    assert bpy.ops.sheg.generate() == {"FINISHED"}
    client = addon_module("core.worker_client").current_session()
    assert client is not None and client.alive
    addon_utils.disable(ADDON_MODULE, default_set=True)
    assert not client.alive
    assert addon_module("core.worker_client").current_session() is None


@pytest.mark.worker
def test_check_backend_reports_in_one_line(addon, backend_prefs, tmp_path):
    assert bpy.ops.sheg.check_backend() == {"FINISHED"}
    summary = backend_prefs.check_summary
    assert "\n" not in summary
    assert "sheg 0.1.0 ok" in summary and "torch" in summary and "devices: cpu" in summary
    assert "SMPL-X file: not set (stand-in rig)" in summary
    assert "models: 3 of 3 usable" in summary  # the two embedded ones and the tiny model's folder (`sheg doctor`)
    report = addon_module("backend_env").CHECK.report
    assert [m["usable"] for m in report["models"]] == [True] * 3 and report["models"][2]["license"] == "test only"
    model_file = tmp_path / "SMPLX_NEUTRAL.npz"
    model_file.write_bytes(b"x")
    backend_prefs.smplx_model_path = str(model_file)
    try:
        assert bpy.ops.sheg.check_backend() == {"FINISHED"}
        assert backend_prefs.check_summary.endswith("SMPL-X file ok")  # and the test venv has the smplx package
    finally:
        backend_prefs.smplx_model_path = ""


HEADLESS_SCRIPT = """
import importlib, json, sys
import bpy
import addon_utils
addon_utils.enable("{module}", default_set=True)
api = importlib.import_module("{module}.api")
prefs = bpy.context.preferences.addons["{module}"].preferences
prefs.backend_mode, prefs.python_path, prefs.device = "CUSTOM", {python!r}, "CPU"
scene = bpy.context.scene
scene.render.fps = 25
bpy.data.objects.remove(bpy.data.objects["Cube"])
scene.sequence_editor_create().strips.new_sound("speech", {wav!r}, 1, 1)
armature, face = api.create_rig()
info = api.generate(strip="speech", armature=armature, face_mesh=face, model={model!r}, seed=1, steps=2)
scene.frame_set(info["start_frame"] + info["frames"] // 2)
info["elbow"] = list(armature.pose.bones["right_elbow"].rotation_quaternion)
scene.render.engine = "BLENDER_WORKBENCH"
scene.render.resolution_x, scene.render.resolution_y = 160, 120
scene.render.filepath = {png!r}
bpy.ops.render.render(write_still=True)
print("RESULT " + json.dumps(info))
"""


@pytest.mark.worker
def test_headless_script_generates_and_renders(installed_extension, backend_python, tiny_model_dir, speech_wav,
                                               tmp_path):
    png = str(tmp_path / "frame.png")
    script = tmp_path / "render.py"
    script.write_text(HEADLESS_SCRIPT.format(module=ADDON_MODULE, python=backend_python, wav=speech_wav,
                                             model=tiny_model_dir, png=png))
    env = dict(os.environ, BLENDER_USER_RESOURCES=_USER_RESOURCES)
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    lines = [ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")]
    assert run.returncode == 0 and lines, run.stdout[-2000:] + run.stderr[-2000:]
    info = json.loads(lines[-1][len("RESULT "):])
    assert info["start_frame"] == 1 and info["frames"] >= 99
    assert not np.allclose(info["elbow"], [1, 0, 0, 0])  # the rig is posed by the take
    image = bpy.data.images.load(png)
    try:
        pixels = np.array(image.pixels[:]).reshape(-1, 4)
        assert image.size[:] == (160, 120) and pixels[:, :3].std() > 0.01
    finally:
        bpy.data.images.remove(image)


# --- the UI code, without a window ---------------------------------------------------------------------------------
# Background Blender has no event loop and no UILayout, so these drive the real modal()/draw() code with stand-ins
# for the two things Blender would pass in: the operator instance (events) and the layout (drawing).

class OperatorStandIn:
    """What modal() needs from its operator instance: the job, the timer and report()."""

    def __init__(self, job, timer):
        self.job, self.timer, self.max_tick, self.reports = job, timer, 0.0, []

    def report(self, kind, message):
        self.reports.append((set(kind), message))


def _bind_generate_methods():
    op = bpy.types.SHEG_OT_generate
    for name in ("modal", "_fail", "_report_done", "_cleanup"):
        setattr(OperatorStandIn, name, getattr(op, name))


def _drive_modal(stand_in, escape_after=None):
    timer_event = type("Event", (), {"type": "TIMER", "value": "NOTHING"})()
    escape = type("Event", (), {"type": "ESC", "value": "PRESS"})()
    deadline, pressed_at = time.monotonic() + 120, None
    while time.monotonic() < deadline:
        if escape_after and pressed_at is None and stand_in.job.stage.startswith(escape_after):
            pressed_at = time.monotonic()
            assert stand_in.modal(bpy.context, escape) == {"RUNNING_MODAL"}  # Esc is consumed
        result = stand_in.modal(bpy.context, timer_event)
        if result != {"PASS_THROUGH"}:
            return result, pressed_at
        time.sleep(0.1)
    raise AssertionError("the modal operator did not finish")


@pytest.mark.worker
@pytest.mark.parametrize("escape", [False, True], ids=["finishes", "esc-cancels"])
def test_modal_operator_ticks_finishes_or_cancels(gen_scene, escape):
    scene, strip, armature, face, model = gen_scene
    api = addon_module("api")
    _bind_generate_methods()
    before = scene_state(armature)
    wm = bpy.context.window_manager
    job = api.GenerationJob(strip=strip, armature=armature, face_mesh=face, model=model, steps=900 if escape else 2)
    job.start(bpy.context)
    api.set_active_job(job)
    stand_in = OperatorStandIn(job, wm.event_timer_add(0.1, window=bpy.context.window))
    result, pressed_at = _drive_modal(stand_in, escape_after="Sampling" if escape else None)
    assert api.active_job() is None and stand_in.timer is None and not wm.sheg_job.running
    assert 0.0 < wm.sheg_job.max_tick_ms < 50.0
    if escape:
        assert result == {"CANCELLED"} and time.monotonic() - pressed_at < 1.0
        assert stand_in.reports[-1][0] == {"WARNING"}
        assert scene_state(armature) == before
    else:
        assert result == {"FINISHED"}, stand_in.reports
        assert stand_in.reports[-1][0] == {"INFO"} and "frames from frame 101" in stand_in.reports[-1][1]
        assert len(addon_module("takes").list_takes(armature)) == 1
        assert wm.sheg_job.apply_ms > 0.0


class LayoutProbe:
    """Stands in for UILayout: every property, collection and operator it is asked to draw must exist."""

    def __init__(self, drawn):
        self.drawn = drawn

    def __getattr__(self, name):  # layout flags such as use_property_split, scale_y, active
        return None

    def _child(self, *args, **kwargs):
        return LayoutProbe(self.drawn)

    column = row = box = split = _child

    def prop(self, data, name, **kwargs):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name}"
        self.drawn.append(name)

    def prop_search(self, data, name, search_data, search_name, **kwargs):
        self.prop(data, name)
        assert search_name in search_data.bl_rna.properties, search_name

    def operator(self, idname, **kwargs):
        module, name = idname.split(".")
        op = getattr(getattr(bpy.ops, module), name)
        self.drawn.append(idname)
        props = {p.identifier for p in op.get_rna_type().properties}

        class Properties:
            def __setattr__(self, key, value):
                assert key in props, f"{idname} has no property {key}"

        return Properties()

    def template_list(self, list_type, list_id, data, prop, active_data, active_prop, **kwargs):
        assert hasattr(bpy.types, list_type)
        self.prop(data, prop)
        self.prop(active_data, active_prop)

    def label(self, text="", **kwargs):
        self.drawn.append("label:" + text)

    def progress(self, factor=0.0, type="BAR", text=""):
        self.drawn.append("progress:" + text)


class PanelStandIn:
    def __init__(self, layout, target=None):
        self.layout, self._target = layout, target

    def __getattr__(self, name):
        return getattr(self._target, name)


@pytest.mark.worker
def test_panels_and_preferences_draw(gen_scene, backend_prefs):
    scene, strip, armature, face, model = gen_scene
    drawn = []
    bpy.types.SHEG_PT_main.draw(PanelStandIn(LayoutProbe(drawn)), bpy.context)
    assert {"strip_name", "armature", "face_mesh", "model", "seed", "quality", "parts", "sheg.generate"} <= set(drawn)
    assert bpy.ops.sheg.generate() == {"FINISHED"}
    drawn.clear()
    bpy.types.SHEG_PT_takes.draw(PanelStandIn(LayoutProbe(drawn)), bpy.context)
    assert {"sheg.solo_take", "sheg.remove_take", "sheg.export_take"} <= set(drawn)
    assert any(d.startswith("label:tiny-test") and "seed 0" in d and "arctic_a0007.wav" in d for d in drawn)
    drawn.clear()
    type(backend_prefs).draw(PanelStandIn(LayoutProbe(drawn), backend_prefs), bpy.context)
    assert {"backend_mode", "python_path", "device", "model_folders", "sheg.check_backend"} <= set(drawn)
    assert "label:Models: Default (embedded), DiffGesture small (embedded), tiny-test" in drawn
    drawn.clear()
    backend_prefs.backend_mode = "MANAGED"
    type(backend_prefs).draw(PanelStandIn(LayoutProbe(drawn), backend_prefs), bpy.context)
    assert "sheg.install_backend" in drawn and "label:Not installed yet" in drawn
    assert any(d.startswith("label:Online access is off") for d in drawn)


# --- bad input through the add-on (the backend's own suite: backend/tests/test_bad_input.py) --------------------------

def _bad_take(path, kind: str, good_take: str) -> str:
    if kind == "corrupt":
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04" + bytes(300))
    elif kind == "object-array":
        np.savez(path, poses=np.array([{"a": 1}], dtype=object), mocap_frame_rate=30.0)
    elif kind == "truncated":
        data = open(good_take, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    elif kind == "nan-poses":
        poses = np.zeros((20, 165), np.float32)
        poses[7, 3] = np.nan
        np.savez(path, poses=poses, mocap_frame_rate=30.0)
    elif kind == "no-frame-rate":
        np.savez(path, poses=np.zeros((20, 165), np.float32))
    return str(path)


@pytest.mark.parametrize("kind,expected", [
    ("corrupt", "cannot read"), ("object-array", "cannot read"), ("truncated", "cannot read"),
    ("nan-poses", "NaN or infinite values (first at frame 7)"), ("no-frame-rate", "has no frame rate"),
])
def test_import_take_refuses_bad_files_in_one_line_and_changes_nothing(scene, tmp_path, kind, expected):
    armature, face = addon_module("api").create_rig()
    good = str(tmp_path / "good.npz")
    np.savez(good, poses=np.zeros((40, 165), np.float32), expressions=np.zeros((40, 100), np.float32),
             mocap_frame_rate=30.0)
    bad = _bad_take(tmp_path / f"ünï côdé {kind}.npz", kind, good)
    before = scene_state(armature), face.data.shape_keys.animation_data
    with pytest.raises(RuntimeError) as info:
        bpy.ops.sheg.import_take(filepath=bad)
    message = str(info.value).strip()
    assert expected in message and "\n" not in message and "Traceback" not in message, message
    assert (scene_state(armature), face.data.shape_keys.animation_data) == before
    assert bpy.ops.sheg.import_take(filepath=good) == {"FINISHED"}  # a good file under the same scene still works


@pytest.mark.worker
@pytest.mark.parametrize("kind,expected", [
    ("text", "cannot decode"), ("empty", "cannot decode"), ("nan", "NaN or infinite samples"),
    ("tampered-model", "is not valid JSON"),
])
def test_generate_from_a_bad_file_or_model_is_one_line_and_changes_nothing(gen_scene, tmp_path, kind, expected):
    scene, strip, armature, face, model = gen_scene
    settings = scene.sheg
    if kind == "tampered-model":
        import shutil

        broken = tmp_path / "broken-model"
        shutil.copytree(model, broken)
        (broken / "model.json").write_text((broken / "model.json").read_text()[:-30])
        settings.model = str(broken)
    else:
        audio = tmp_path / f"späch {kind}.wav"
        if kind == "text":
            audio.write_text("not audio\n" * 40)
        elif kind == "empty":
            audio.write_bytes(b"")
        else:
            samples = (0.2 * np.sin(np.arange(32000) / 10)).astype(np.float32)
            samples[100:200] = np.nan
            import soundfile

            soundfile.write(str(audio), samples, 16000, subtype="FLOAT")
        settings.audio_source, settings.audio_file = "FILE", str(audio)
    before = scene_state(armature), face.data.shape_keys.animation_data
    with pytest.raises(RuntimeError) as info:
        bpy.ops.sheg.generate()
    message = str(info.value).strip()
    assert expected in message and "\n" not in message and "Traceback" not in message, message
    assert (scene_state(armature), face.data.shape_keys.animation_data) == before
