"""Session setup for tests inside real Blender (the `bpy` module) with the BUILT extension zip installed.

1. BLENDER_USER_RESOURCES points to a fresh temporary folder before anything imports bpy, so tests never touch the
   real Blender configuration.
2. The extension zip comes from $SHEG_EXTENSION_ZIP, or is built from addon/ with Blender's own extension builder.
3. It is installed into the `user_default` repository and enabled, as a user would.
4. Fixtures give a fresh empty scene with the add-on enabled and pointed at the backend Python
   ($SHEG_BACKEND_PYTHON, default <repo>/.venv/bin/python), a tiny random model and real speech.

The unit tests in blender_tests/unit/ use only the bpy-free fixtures (backend_python, tiny_model_dir, speech_wav).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON_DIR = os.path.join(REPO_ROOT, "addon")
SHARED_DIR = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared"))
EXTENSION_ID = "sheg"
ADDON_MODULE = f"bl_ext.user_default.{EXTENSION_ID}"

_USER_RESOURCES = tempfile.mkdtemp(prefix="sheg-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER_RESOURCES  # must precede `import bpy` anywhere


def pytest_sessionfinish(session, exitstatus):
    addon = sys.modules.get(ADDON_MODULE + ".core.worker_client")
    if addon is not None:
        addon.shutdown_session()
    shutil.rmtree(_USER_RESOURCES, ignore_errors=True)


def pytest_configure(config):
    config.addinivalue_line("markers", "worker: needs the real backend worker and a model")


# --- bpy-free fixtures ---------------------------------------------------------------------------------------------

def _default_backend_python() -> str:
    sub = "Scripts/python.exe" if os.name == "nt" else "bin/python"
    return os.path.join(REPO_ROOT, ".venv", sub)


@pytest.fixture(scope="session")
def backend_python() -> str:
    """A Python that runs `python -m sheg worker`; skips the test when there is none."""
    python = os.environ.get("SHEG_BACKEND_PYTHON") or _default_backend_python()
    if not os.path.isabs(python):
        python = os.path.join(REPO_ROOT, python)
    if not os.path.isfile(python):
        pytest.skip(f"no backend Python at {python} (set SHEG_BACKEND_PYTHON)")
    probe = subprocess.run([python, "-c", "import sheg.worker, sheg.testing"], capture_output=True, text=True,
                           timeout=120)
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"the backend worker is not available in {python}: {last}")
    return python


@pytest.fixture(scope="session")
def tiny_model_dir(backend_python, tmp_path_factory) -> str:
    """A tiny random model folder made by the backend (`python -m sheg make-test-model`)."""
    out = str(tmp_path_factory.mktemp("models") / "tiny")
    made = subprocess.run([backend_python, "-m", "sheg", "make-test-model", out], capture_output=True, text=True,
                          timeout=300)
    if made.returncode != 0 or not os.path.isfile(os.path.join(out, "model.json")):
        last = (made.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"`sheg make-test-model` is not available: {last}")
    return out


@pytest.fixture(scope="session")
def speech_wav() -> str:
    path = os.path.join(SHARED_DIR, "data", "speech", "arctic_a0007.wav")
    if not os.path.isfile(path):
        pytest.skip(f"shared speech data not found at {path}")
    return path


# --- the built extension -------------------------------------------------------------------------------------------

def blender_ext_script() -> str:
    """Blender's own extension command line (bl_pkg/cli/blender_ext.py) inside the installed bpy module."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the bpy module is not installed")
    for location in spec.submodule_search_locations:
        found = sorted(glob.glob(os.path.join(location, "*", "scripts", "addons_core", "bl_pkg", "cli",
                                              "blender_ext.py")))
        if found:
            return found[-1]
    pytest.skip("Blender's extension builder (bl_pkg/cli/blender_ext.py) was not found in the bpy module")


def stage_addon(dest: str) -> str:
    """Copy addon/ without caches: what build.py packs (it also adds backend_wheels/, not needed by these tests)."""
    shutil.copytree(ADDON_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.zip"))
    return dest


@pytest.fixture(scope="session")
def extension_zip(tmp_path_factory) -> str:
    path = os.environ.get("SHEG_EXTENSION_ZIP")
    if path:
        if not os.path.isfile(path):
            pytest.fail(f"SHEG_EXTENSION_ZIP={path} does not exist")
        return os.path.abspath(path)
    work = tmp_path_factory.mktemp("extension")
    staging = stage_addon(str(work / EXTENSION_ID))
    out_dir = work / "dist"
    out_dir.mkdir()  # the builder fails when the output folder does not exist
    built = subprocess.run([sys.executable, blender_ext_script(), "build", "--source-dir", staging,
                            "--output-dir", str(out_dir)], capture_output=True, text=True, timeout=300)
    zips = sorted(out_dir.glob("*.zip"))
    if built.returncode != 0 or not zips:
        pytest.fail(f"extension build failed: {built.stdout[-2000:]} {built.stderr[-2000:]}")
    return str(zips[0])


@pytest.fixture(scope="session")
def installed_extension(extension_zip):
    """Install the zip into the isolated user folder once; returns the add-on module name."""
    import addon_utils
    import bpy

    result = bpy.ops.extensions.package_install_files(filepath=extension_zip, repo="user_default",
                                                      enable_on_install=True)
    assert result == {"FINISHED"}, result
    loaded, enabled = addon_utils.check(ADDON_MODULE)
    assert enabled, f"{ADDON_MODULE} is not enabled after install"
    return ADDON_MODULE


def enable_addon():
    import addon_utils

    addon_utils.enable(ADDON_MODULE, default_set=True, handle_error=_raise)
    return sys.modules[ADDON_MODULE]


def _raise(exc):
    raise exc


@pytest.fixture
def addon(installed_extension):
    """The enabled add-on's package module, after a factory reset to an empty scene."""
    import bpy

    bpy.ops.wm.read_factory_settings(use_empty=True)  # also resets preferences: enable again
    module = enable_addon()
    yield module


@pytest.fixture
def prefs(addon):
    import bpy

    return bpy.context.preferences.addons[ADDON_MODULE].preferences


@pytest.fixture
def backend_prefs(prefs, backend_python, tiny_model_dir):
    """Preferences pointing at the real backend Python, CPU, with the tiny model's folder listed."""
    prefs.backend_mode = "CUSTOM"
    prefs.python_path = backend_python
    prefs.device = "CPU"
    folder = prefs.model_folders.add()
    folder.path = tiny_model_dir
    return prefs


@pytest.fixture
def scene(addon):
    import bpy

    return bpy.context.scene
