"""Download HuBERT through the add-on in real Blender, from a loopback hub (127.0.0.1 only, backend/tests/hub_server.py)
serving a tiny random HuBERT in the hub's layout: progress, cancel (the partial file stays, nothing is set), a rerun
that asks only for the missing bytes, the HuBERT folder set, Check seeing it, then Generate with a HuBERT model."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

import bpy

from test_extension import LayoutProbe, PanelStandIn, addon_module, configure, ready_scene, take_fcurves

BACKEND_TESTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backend", "tests")
sys.path.insert(0, BACKEND_TESTS)
from hub_server import Hub  # noqa: E402

WEIGHTS = "model.safetensors"
HIDDEN = 64  # a 214 kB weights file, so it arrives in many pieces
STALL_AT = 100_000  # the first GET of the weights sends this many bytes, then waits: the test cancels there

MAKE = """
import sys
from sheg.testing import make_tiny_hubert, make_tiny_model_dir
make_tiny_hubert(sys.argv[1], hidden_size={hidden})
make_tiny_model_dir(sys.argv[2], hubert="facebook/hubert-large-ls960-ft", hubert_dim={hidden})
"""


@pytest.fixture(scope="module")
def hubert_files(backend_python, tmp_path_factory):
    """(the served HuBERT's files as bytes, a tiny model folder that reads HuBERT features of that width)."""
    root = tmp_path_factory.mktemp("hubert")
    served, model = root / "served", root / "tiny-hubert-model"
    made = subprocess.run([backend_python, "-c", MAKE.format(hidden=HIDDEN), str(served), str(model)],
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr[-2000:]
    return {n: (served / n).read_bytes() for n in os.listdir(served)}, str(model)


@pytest.fixture
def hub(hubert_files):
    server = Hub(dict(hubert_files[0])).start()
    yield server
    server.stop()


@pytest.fixture
def online():
    """Blender's Allow Online Access, on for the test (the bpy module starts with it off)."""
    system = bpy.context.preferences.system
    system.use_online_access = True
    assert bpy.app.online_access
    yield
    system.use_online_access = False


def test_download_hubert_refuses_without_online_access(backend_prefs):
    backend_env = addon_module("backend_env")
    assert bpy.app.online_access is False
    assert not bpy.ops.sheg.download_hubert.poll()
    with pytest.raises(RuntimeError, match="online access is disabled: enable Preferences > System > Network"):
        bpy.ops.sheg.download_hubert()
    assert backend_prefs.hubert_path == "" and not os.path.exists(backend_env.hubert_folder())
    # the managed backend's HuBERT support: the same refusal, or what comes first
    assert not bpy.ops.sheg.install_hubert_support.poll()
    with pytest.raises(RuntimeError, match="the managed backend is not installed: press Install Backend first"):
        bpy.ops.sheg.install_hubert_support()
    assert backend_env.managed_lacks_hubert_support() is False  # nothing installed, nothing to add to
    drawn = draw_preferences(backend_prefs)
    assert drawn.index("hubert_path") < drawn.index("sheg.download_hubert") < drawn.index("hubert_endpoint")


def draw_preferences(prefs) -> list:
    drawn = []
    type(prefs).draw(PanelStandIn(LayoutProbe(drawn), prefs), bpy.context)
    return drawn


def test_a_managed_backend_without_transformers_offers_hubert_support(scene, backend_prefs, online, hubert_files,
                                                                      speech_wav):
    """A real (bare) managed venv and a listed, selected HuBERT model: Install HuBERT Support in the preferences
    and the panel, and Generate says what to press."""
    import shutil

    backend_env = addon_module("backend_env")
    strip, armature, face = ready_scene(scene, speech_wav, backend_prefs.python_path)
    configure(scene, strip, armature, face, hubert_files[1])
    backend_prefs.backend_mode = "MANAGED"
    backend_prefs.model_folders.add().path = hubert_files[1]
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", backend_env.venv_dir()],
                          capture_output=True, text=True, timeout=120)
    try:
        assert made.returncode == 0, made.stderr
        assert backend_env.managed_lacks_hubert_support()
        assert bpy.ops.sheg.install_hubert_support.poll()
        drawn = draw_preferences(backend_prefs)
        assert "sheg.install_hubert_support" in drawn
        assert "label:A listed model reads HuBERT features: the managed backend needs HuBERT support" in drawn
        assert addon_module("operators").generate_problem(bpy.context) == (
            "tiny-test reads HuBERT features: press Install HuBERT Support (Preferences > SHEG), then Download HuBERT")
        drawn = []
        bpy.types.SHEG_PT_main.draw(PanelStandIn(LayoutProbe(drawn)), bpy.context)
        assert "sheg.install_hubert_support" in drawn
    finally:
        shutil.rmtree(backend_env.venv_dir(), ignore_errors=True)
    assert not backend_env.managed_lacks_hubert_support()
    assert backend_prefs.hubert_problem(hubert_files[1]) is None


def _cancel_when_stalled(hub, job, partial: str, seen: list, errors: list) -> None:
    """Beside the blocking operator: note the progress shown, cancel once the stalled download holds its bytes."""
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not (
                hub.stalled.is_set() and os.path.isfile(partial) and os.path.getsize(partial) >= STALL_AT):
            if job.running:
                seen.append((job.message, job.fraction))
            time.sleep(0.02)
        seen.append((job.message, job.fraction))
        addon_module("backend_env").cancel_hubert_download()
    except Exception as exc:  # reported by the test, not lost in a thread
        errors.append(exc)


@pytest.mark.worker
def test_download_hubert_progress_cancel_resume_check_and_generate(scene, backend_prefs, online, hub, hubert_files,
                                                                  speech_wav):
    backend_env = addon_module("backend_env")
    served, model = hubert_files
    size = len(served[WEIGHTS])
    backend_prefs.hubert_endpoint = hub.endpoint
    folder = backend_env.hubert_folder()
    partial = os.path.join(folder, WEIGHTS + ".incomplete")
    assert bpy.ops.sheg.download_hubert.poll()

    # 1. cancel while the weights arrive: a resumable partial file, the preference untouched
    hub.stall_after[WEIGHTS] = STALL_AT
    seen, errors = [], []
    watcher = threading.Thread(target=_cancel_when_stalled, args=(hub, backend_env.HUBERT, partial, seen, errors))
    watcher.start()
    with pytest.raises(RuntimeError, match=r"cancelled: start the HuBERT download again to finish it \(the bytes "
                                           r"that arrived are kept\)"):
        bpy.ops.sheg.download_hubert()  # background mode: blocks until the job ends
    watcher.join(30)
    hub.release.set()
    assert not errors and not watcher.is_alive()
    assert any(message.startswith(f"Downloading {WEIGHTS}: ") and 0.03 < fraction < 0.93
               for message, fraction in seen), seen
    assert [f for _, f in seen] == sorted(f for _, f in seen)
    kept = open(partial, "rb").read()
    assert len(kept) == STALL_AT and kept == served[WEIGHTS][:STALL_AT]
    assert not os.path.exists(os.path.join(folder, WEIGHTS)) and backend_prefs.hubert_path == ""
    assert backend_env.HUBERT.error.startswith("cancelled") and "\n" not in backend_env.HUBERT.error

    # 2. Download HuBERT again: only the rest comes, the folder loads and becomes the HuBERT preference
    assert bpy.ops.sheg.download_hubert() == {"FINISHED"}, backend_env.HUBERT.error
    assert hub.ranges == [(WEIGHTS, STALL_AT)]
    assert hub.requests[-1] == [WEIGHTS, STALL_AT, size - STALL_AT]
    assert size <= hub.sent[WEIGHTS] < 2 * size
    for name, data in served.items():
        assert open(os.path.join(folder, name), "rb").read() == data
    assert not os.path.exists(partial)
    assert os.path.normpath(backend_prefs.hubert()) == os.path.normpath(folder)
    assert backend_env.HUBERT.summary == f"HuBERT downloaded to {folder} ({HIDDEN}-wide features, loads)"
    with open(os.path.join(backend_env.backend_root(), "hubert_download.log")) as f:
        assert "download-hubert" in f.read()
    assert f"label:{backend_env.HUBERT.summary}" in draw_preferences(backend_prefs)

    # 3. Check (sheg doctor) sees it: the HuBERT model is usable with the preference as it is now
    assert not backend_prefs.models_need_hubert()  # the tiny mel-only model
    backend_prefs.model_folders.add().path = model
    assert backend_prefs.models_need_hubert()  # a managed install would now add the hubert extra
    assert bpy.ops.sheg.check_backend() == {"FINISHED"}
    entry = next(m for m in backend_env.CHECK.report["models"] if os.path.normpath(m["path"]) == model)
    assert entry["usable"] and not entry["needs"], entry

    # 4. Generate with the model that reads HuBERT features from the downloaded folder
    strip, armature, face = ready_scene(scene, speech_wav, backend_prefs.python_path)
    configure(scene, strip, armature, face, model)
    assert bpy.ops.sheg.generate() == {"FINISHED"}, bpy.context.window_manager.sheg_job.last_message
    curves = take_fcurves(armature)
    assert 'pose.bones["right_elbow"].rotation_quaternion[0]' in curves and 'key_blocks["Exp000"].value[0]' in curves


@pytest.mark.skipif(not os.environ.get("SHEG_TEST_ONLINE_PIP"),
                    reason="installs PyTorch and transformers from the package index: set SHEG_TEST_ONLINE_PIP=1")
def test_managed_install_with_a_hubert_model_adds_the_pinned_extra_and_keeps_torch(addon, tmp_path, hub):
    """Opt-in (network): the real managed install with HuBERT support into a new venv, then a download with it."""
    backend_env = addon_module("backend_env")
    job = backend_env.Job("install-hubert-test")
    venv, log = str(tmp_path / "venv"), str(tmp_path / "install.log")
    job.start(backend_env._install, "cpu", "", backend_env.bundled_wheel(), venv, log, True)
    job.wait(3600)
    assert not job.running and not job.error, job.error
    with open(log) as f:
        text = f.read()
    assert "sheg[hubert] @ file:" in text and "torch==2.13.0 transformers==5.23.0 huggingface-hub==2.4.0" in text
    hubert_step = next(step for step in text.split("\n$ ") if "sheg[hubert] @ file:" in step.splitlines()[0])
    installed = [line for line in hubert_step.splitlines() if line.startswith("Successfully installed")]
    assert installed and "transformers-5.23.0" in installed[0] and " torch-" not in installed[0]
    assert "Uninstalling torch" not in text
    python = backend_env.venv_python(venv)
    versions = subprocess.run([python, "-c", "import torch, transformers, huggingface_hub as h; "
                               "print(torch.__version__, transformers.__version__, h.__version__)"],
                              capture_output=True, text=True, timeout=300)
    assert versions.stdout.split() == ["2.13.0+cpu", "5.23.0", "2.4.0"], versions.stderr
    assert addon_module("core.hubert_setup").venv_has_package(venv, "transformers")
    out = tmp_path / "hubert"
    done = subprocess.run([python, "-m", "sheg", "download-hubert", "-o", str(out), "--endpoint", hub.endpoint],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (out / WEIGHTS).read_bytes() == hub.files[WEIGHTS]
