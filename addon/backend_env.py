"""The backend Python: where it lives, the managed install (a venv with torch + the bundled sheg wheel) and Check.

Managed mode creates `<extension user folder>/backend/venv` with Blender's own Python (`sys.executable`), then
pip-installs torch (CPU or CUDA build, per the device preference) and the sheg wheel shipped inside the extension
zip at backend_wheels/sheg-*.whl. It runs in a background thread; progress and a log file are kept here and drawn
by the preferences. Downloads need Blender's "Allow Online Access"; without it the install refuses with a message.
Models that read HuBERT features need the wheel's `hubert` extra (transformers, pinned, torch kept as installed) and
HuBERT-large itself: "Install HuBERT Support" and "Download HuBERT" (`sheg download-hubert --json`, resumable, into
`<extension user folder>/hubert/hubert-large-ls960-ft`) are jobs of the same kind as the install.
"""

from __future__ import annotations

import glob
import os
import platform
import shutil
import subprocess
import sys
import threading
import time

import bpy

from .core import doctor_report, hubert_setup, worker_client
from .core.pip_output import pip_failure_cause

TORCH_VERSION = "2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH_CUDA_INDEX_WINDOWS = "https://download.pytorch.org/whl/cu128"
ADDON_DIR = os.path.dirname(os.path.abspath(__file__))


# --- places --------------------------------------------------------------------------------------------------------

def backend_root() -> str:
    """User-writable folder of this extension for the venv, logs and worker pid files."""
    return bpy.utils.extension_path_user(__package__, path="backend", create=True)


def venv_dir() -> str:
    return os.path.join(backend_root(), "venv")


def venv_python(venv: str) -> str:
    return os.path.join(venv, "Scripts", "python.exe") if os.name == "nt" else os.path.join(venv, "bin", "python")


def managed_python() -> str:
    return venv_python(venv_dir())


def install_log_path() -> str:
    return os.path.join(backend_root(), "install.log")


def worker_log_path() -> str:
    return os.path.join(backend_root(), "worker.log")


def worker_state_dir() -> str:
    return os.path.join(backend_root(), "workers")


def bundled_wheel() -> str | None:
    """The newest backend wheel shipped in the extension (backend_wheels/sheg-*.whl), if any."""
    wheels = sorted(glob.glob(os.path.join(ADDON_DIR, "backend_wheels", "sheg-*.whl")))
    return wheels[-1] if wheels else None


def torch_pip_args(device: str, system: str | None = None, index_url: str = "") -> list[str]:
    """pip arguments installing torch for `device` ('auto'|'cpu'|'cuda'|'mps') on `system` (platform.system()).

    CPU builds come from PyTorch's CPU index (small); CUDA from PyPI on Linux (its default wheels are CUDA builds)
    and from PyTorch's CUDA index on Windows; macOS wheels on PyPI carry MPS.
    """
    system = system or platform.system()
    args = [f"torch=={TORCH_VERSION}"]
    if index_url:
        return args + ["--index-url", index_url]
    if system == "Darwin":
        return args
    if device == "cuda":
        return args + (["--index-url", TORCH_CUDA_INDEX_WINDOWS] if system == "Windows" else [])
    return args + ["--index-url", TORCH_CPU_INDEX]


# --- background jobs shown by the preferences ---------------------------------------------------------------------

class Job:
    """State of a background job (install or check); written by its thread, read by the UI."""

    def __init__(self, name: str, kept: str = "pip keeps what it completed"):
        self.name = name
        self.kept = kept  # what a cancelled run keeps for the next one, for the cancel message
        self.running = False
        self.fraction = 0.0
        self.message = ""
        self.error = ""
        self.summary = ""
        self.thread: threading.Thread | None = None
        self.process: subprocess.Popen | None = None  # the step running now (install), so cancel can stop it
        self.cancel_requested = False
        self.report: dict | None = None  # a check's `sheg doctor` report, an import's 'done' event

    def start(self, target, *args) -> None:
        self.running, self.fraction, self.message, self.error, self.summary = True, 0.0, "Starting", "", ""
        self.cancel_requested = False

        def run():
            try:
                target(self, *args)
            except Exception as exc:  # the UI shows one line; the log has the rest
                self.error = worker_client.one_line(str(exc)) or type(exc).__name__
            finally:
                self.running = False

        self.thread = threading.Thread(target=run, name=f"sheg-{self.name}", daemon=True)
        self.thread.start()
        _watch_until_done(self)

    def wait(self, timeout: float | None = None) -> None:
        if self.thread is not None:
            self.thread.join(timeout)

    def cancel(self) -> None:
        """Stop the job: the step's process is terminated and the thread ends with a 'cancelled' error."""
        self.cancel_requested = True
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()

    def check_cancelled(self) -> None:
        if self.cancel_requested:
            raise RuntimeError(f"cancelled: start the {self.name} again to finish it ({self.kept})")


INSTALL = Job("install")
CHECK = Job("check")
IMPORT = Job("model import")
HUBERT = Job("HuBERT download", kept="the bytes that arrived are kept")
_on_done = {}  # job name -> callable run on the main thread when it finishes


def _redraw_preferences() -> None:
    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type in {"PREFERENCES", "VIEW_3D"}:
                area.tag_redraw()


def _watch_until_done(job: Job) -> None:
    """Redraw while the job runs and hand its result to the main thread (timers never fire in background mode)."""
    if bpy.app.background:
        return

    def tick():
        _redraw_preferences()
        if job.running:
            return 0.25
        callback = _on_done.pop(job.name, None)
        if callback is not None:
            callback(job)
        return None

    bpy.app.timers.register(tick, first_interval=0.25)


def _run_job(job: Job, on_done, block: bool, target, *args) -> Job:
    """Start `job` on target(*args); on_done(job) runs on the main thread when it ends: from the timer, or here
    after waiting when blocking (background mode has no timers)."""
    if on_done is not None:
        _on_done[job.name] = on_done
    job.start(target, *args)
    if block or bpy.app.background:
        job.wait()
        callback = _on_done.pop(job.name, None)
        if callback is not None:
            callback(job)
    return job


# --- managed install -----------------------------------------------------------------------------------------------

def _cancel(job: Job) -> bool:
    """Stop `job` if it runs (its subprocess is terminated). False when it was not running."""
    if not job.running:
        return False
    job.cancel()
    return True


def cancel_install() -> bool:
    """Stop a running managed install (its pip process is terminated). False when none is running."""
    return _cancel(INSTALL)


def install_problem() -> str | None:
    """Why the managed install cannot start now, or None."""
    if INSTALL.running:
        return "the backend install is already running"
    if not bpy.app.online_access:
        return ("online access is disabled: enable Preferences > System > Network > Allow Online Access to "
                "download PyTorch, or choose Custom Python")
    if bundled_wheel() is None:
        return ("this extension build has no backend wheel (backend_wheels/sheg-*.whl): build it with "
                "`python3 build.py build`, or choose Custom Python")
    return None


def start_install(device: str, index_url: str = "", on_done=None, block: bool = False,
                  with_hubert: bool = False) -> Job:
    """The managed install; `with_hubert` adds the wheel's `hubert` extra (a listed model reads HuBERT features)."""
    problem = install_problem()
    if problem:
        raise ValueError(problem)
    return _run_job(INSTALL, on_done, block, _install, device, index_url, bundled_wheel(), venv_dir(),
                    install_log_path(), with_hubert)


def _install(job: Job, device: str, index_url: str, wheel: str, venv: str, log_path: str,
             with_hubert: bool = False) -> None:
    """Thread body: venv -> torch -> sheg wheel (-> its hubert extra) -> version check. No bpy calls here."""
    python = venv_python(venv)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"SHEG backend install {time.strftime('%Y-%m-%d %H:%M:%S')} device={device}\n")
        steps = [
            ("Creating the Python environment", 0.05, None if os.path.isfile(python) else
             [sys.executable, "-m", "venv", venv]),
            ("Installing PyTorch", 0.70 if with_hubert else 0.75,
             [python, "-m", "pip", "install", "--disable-pip-version-check", *torch_pip_args(device, None,
                                                                                          index_url)]),
            ("Installing the SHEG backend", 0.80 if with_hubert else 0.95,
             [python, "-m", "pip", "install", "--disable-pip-version-check", wheel]),
        ]
        if with_hubert:
            steps.append(("Installing HuBERT support", 0.95,
                          hubert_setup.hubert_extra_command(python, wheel, TORCH_VERSION)))
        steps.append(("Checking the backend", 1.0, [python, "-m", "sheg", "--version"]))
        start = 0.0
        for message, end, command in steps:
            job.check_cancelled()
            job.message = message
            if command is not None:
                _run_logged(message, command, log, job, start, end)
            job.fraction = start = end
        job.message = "Installed"
        job.summary = f"Backend installed in {venv}"


def _pip_progress(job: Job, start: float, end: float):
    """Line handler of a pip step: pip's own milestones as the message, a creeping fraction."""
    def on_line(line: str) -> None:
        if line.startswith(("Collecting", "Downloading", "Installing", "Successfully")):
            job.message = line[:120]
            job.fraction = min(end - 0.01, job.fraction + (end - start) * 0.05)
    return on_line


def _run_logged(what: str, command: list[str], log, job: Job, start: float, end: float, on_line=None) -> None:
    """Run one step as a cancellable subprocess, its output into `log` and each line to on_line (default: pip's
    progress). A failure raises RuntimeError with one line: pip's cause, a `sheg: error:` line, else the last line."""
    on_line = on_line or _pip_progress(job, start, end)
    log.write("$ " + " ".join(command) + "\n")
    log.flush()
    proc = job.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          errors="replace", bufsize=1)
    if job.cancel_requested:  # cancelled between the check and the start
        proc.terminate()
    output = []
    for line in proc.stdout:
        log.write(line)
        output.append(line)
        line = line.strip()
        if line:
            on_line(line)
    code = proc.wait()
    job.process = None
    if job.cancel_requested:
        log.write("cancelled\n")
        job.check_cancelled()
    if code != 0:
        log.flush()
        sheg_error = next((line.strip()[len("sheg: error:"):].strip() for line in output
                           if line.startswith("sheg: error:")), "")
        cause = pip_failure_cause(output) or sheg_error or next(
            (line.strip() for line in reversed(output) if line.strip()), f"exit code {code}")
        raise RuntimeError(f"{what} failed: {cause} (log: {log.name})")


# --- HuBERT: the hubert extra in the managed backend, and HuBERT-large itself ---------------------------------------

def managed_lacks_hubert_support() -> bool:
    """The managed backend is installed but has no `transformers` (the `hubert` extra)."""
    return os.path.isfile(managed_python()) and not hubert_setup.venv_has_package(venv_dir(), "transformers")


def hubert_support_problem() -> str | None:
    """Why "Install HuBERT Support" cannot start now, or None."""
    if INSTALL.running or HUBERT.running:
        return "the backend install or a HuBERT download is running: wait for it or cancel it"
    if not os.path.isfile(managed_python()):
        return "the managed backend is not installed: press Install Backend first (it adds HuBERT support too)"
    if not bpy.app.online_access:
        return ("online access is disabled: enable Preferences > System > Network > Allow Online Access to "
                "download HuBERT support, or install it yourself: BACKEND_PYTHON -m pip install 'sheg[hubert]'")
    if bundled_wheel() is None:
        return ("this extension build has no backend wheel (backend_wheels/sheg-*.whl): build it with "
                "`python3 build.py build`")
    return None


def start_hubert_support(on_done=None, block: bool = False) -> Job:
    """pip-install the bundled wheel's `hubert` extra (pinned; torch stays) into the managed backend: the INSTALL
    job, with its progress bar and cancel."""
    problem = hubert_support_problem()
    if problem:
        raise ValueError(problem)
    return _run_job(INSTALL, on_done, block, _install_hubert_support, managed_python(), bundled_wheel(),
                    install_log_path())


def _install_hubert_support(job: Job, python: str, wheel: str, log_path: str) -> None:
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"SHEG HuBERT support {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        job.message = "Installing HuBERT support"
        _run_logged(job.message, hubert_setup.hubert_extra_command(python, wheel, TORCH_VERSION), log, job, 0.0,
                    1.0)
    job.fraction, job.message = 1.0, "Installed"
    job.summary = "HuBERT support installed in the managed backend (transformers)"


def hubert_root() -> str:
    return bpy.utils.extension_path_user(__package__, path="hubert", create=True)


def hubert_folder() -> str:
    """Where Download HuBERT puts facebook/hubert-large-ls960-ft (a resumed download continues there)."""
    return os.path.join(hubert_root(), hubert_setup.FOLDER_NAME)


def hubert_download_problem(python: str, managed: bool) -> str | None:
    """Why Download HuBERT cannot start now, or None."""
    if HUBERT.running:
        return "HuBERT is being downloaded: wait for it or cancel it"
    if INSTALL.running:
        return "the backend install is running: wait for it, then download HuBERT"
    if not bpy.app.online_access:
        return ("online access is disabled: enable Preferences > System > Network > Allow Online Access to "
                "download HuBERT, or download it elsewhere and set the HuBERT folder")
    if not python or not os.path.isfile(python):
        return f"the backend Python was not found ({python or 'not set'}): set up the backend first"
    if managed and managed_lacks_hubert_support() and bundled_wheel() is None:
        return "the managed backend lacks HuBERT support and this build has no backend wheel to add it"
    return None


def cancel_hubert_download() -> bool:
    return _cancel(HUBERT)


def start_hubert_download(python: str, endpoint: str = "", managed: bool = False, on_done=None,
                          block: bool = False) -> Job:
    """Download HuBERT-large into hubert_folder() with progress and cancel (a cancelled or failed run keeps its
    bytes: the next one resumes); a managed backend without HuBERT support gets it first. job.report is the
    backend's 'done' event ({'folder', 'files', 'hidden_size'})."""
    problem = hubert_download_problem(python, managed)
    if problem:
        raise ValueError(problem)
    extra = (hubert_setup.hubert_extra_command(python, bundled_wheel(), TORCH_VERSION)
             if managed and managed_lacks_hubert_support() else None)
    return _run_job(HUBERT, on_done, block, _download_hubert, hubert_setup.download_command(
        python, hubert_folder(), endpoint), extra, os.path.join(backend_root(), "hubert_download.log"))


def _download_hubert(job: Job, command: list[str], extra: list[str] | None, log_path: str) -> None:
    import json

    job.report = None
    start = 0.0
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"SHEG HuBERT download {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        if extra:
            job.message = "Installing HuBERT support"
            _run_logged(job.message, extra, log, job, 0.0, 0.2)
            start = 0.2

        def on_line(line: str) -> None:
            if not line.startswith("{"):
                return
            event = json.loads(line)
            if event.get("event") == "done":
                job.report = event
            shown = hubert_setup.download_progress(event, start, 1.0)
            if shown:
                job.message, job.fraction = shown

        job.message = "Downloading HuBERT"
        _run_logged("Downloading HuBERT", command, log, job, start, 1.0, on_line=on_line)
    if not job.report:
        raise RuntimeError(f"Downloading HuBERT ended without its result (log: {log_path})")
    job.fraction, job.message = 1.0, "Downloaded"
    job.summary = f"HuBERT downloaded to {job.report['folder']} ({job.report['hidden_size']}-wide features, loads)"


# --- check ----------------------------------------------------------------------------------------------------------

def start_check(python: str, device: str, hubert: str | None = None, smplx_file: str = "",
                on_done=None, block: bool = False, model_paths=()) -> Job:
    """Run the backend once (`hello`, `load` of the default model, then `sheg doctor` over the model folders) and
    summarise what works in one line; `job.report` keeps the doctor's report (models, needs, fixes)."""
    if CHECK.running:
        return CHECK
    return _run_job(CHECK, on_done, block, _check, python, device, hubert, smplx_file, list(model_paths))


def run_doctor(python: str, model_paths, hubert: str | None = None, timeout: float = 300) -> dict:
    """`python -m sheg doctor --json` over `model_paths`: the report dict; RuntimeError with one line if it fails."""
    cmd = [python, "-m", "sheg", "doctor", "--json", *model_paths] + (["--hubert", hubert] if hubert else [])
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(worker_client.one_line(done.stderr.strip().splitlines()[-1] if done.stderr.strip()
                                                  else f"sheg doctor exited with code {done.returncode}"))
    import json

    return json.loads(done.stdout)


def _check(job: Job, python: str, device: str, hubert: str | None, smplx_file: str, model_paths: list) -> None:
    job.report = None
    parts = []
    smplx_part = ("SMPL-X file: not set (stand-in rig)" if not smplx_file else
                  "SMPL-X file ok" if os.path.isfile(smplx_file) else "SMPL-X file missing")
    if not python or not os.path.isfile(python):
        job.summary = f"Python missing (not found: {python or 'not set'}) · {smplx_part}"
        return
    job.message = "Starting Python"
    try:
        out = subprocess.run([python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True,
                             text=True, timeout=60)
        parts.append(f"Python {out.stdout.strip()} ok" if out.returncode == 0 else "Python broken (does not run)")
    except (OSError, subprocess.SubprocessError) as exc:
        job.summary = f"Python broken ({worker_client.one_line(str(exc))}) · {smplx_part}"
        return
    job.message = "Starting the worker"
    sheg_runs = False
    client = worker_client.WorkerClient(python, log_path=os.path.join(backend_root(), "check.log"))
    try:
        client.start()
        hello = client.request("hello", timeout=180)
        sheg_runs = True
        parts.append(f"sheg {hello.get('version')} ok")
        parts.append(f"torch {hello.get('torch', '?')} ok")
        devices = hello.get("devices", [])
        parts.append("devices: " + ", ".join(devices))
        if device not in ("auto", *devices):
            parts.append(f"{device} not available")
        job.message = "Loading the default model"
        try:
            loaded = client.request("load", timeout=300, model=None, device=device, hubert=hubert)
            parts.append(f"default model '{loaded.get('model', {}).get('name', '?')}' ok")
        except worker_client.WorkerError as exc:
            parts.append(f"default model missing ({exc})")
    except worker_client.WorkerError as exc:
        text = str(exc)
        if "No module named 'sheg'" in text or "No module named sheg" in text:
            parts.append("sheg missing (not installed in this Python)")
        elif "torch" in text:
            parts.append("sheg ok · torch missing")
        else:
            parts.append(f"worker failed ({text})")
    finally:
        client.shutdown(timeout=2)
    if sheg_runs:  # ask it what each model needs
        job.message = "Checking the models"
        try:
            job.report = run_doctor(python, model_paths, hubert)
            parts.append(doctor_report.summary_part(job.report))
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            parts.append(f"sheg doctor failed ({worker_client.one_line(str(exc))})")
    if smplx_file and os.path.isfile(smplx_file):
        # the exact rig reads the file with the optional `smplx` package in the backend Python
        found = subprocess.run([python, "-c", "import smplx"], capture_output=True, timeout=120).returncode == 0
        smplx_part += "" if found else " · smplx package missing (pip install smplx==0.1.28 in the backend Python)"
    parts.append(smplx_part)
    job.summary = " · ".join(parts)


# --- Add Model: an official DiffSHEG checkpoint converted by the backend ------------------------------------------

def models_root() -> str:
    """The add-on's own model folder (under its user folder): Add Model writes each converted model here."""
    return bpy.utils.extension_path_user(__package__, path="models", create=True)


def new_model_folder(root: str, checkpoint: str) -> str:
    """A folder name under `root` for a checkpoint that no model uses yet: diffsheg-<stem>[-2...]."""
    stem = "".join(c if c.isalnum() or c in "-_" else "-" for c in os.path.splitext(os.path.basename(checkpoint))[0])
    base = os.path.join(root, f"diffsheg-{stem or 'model'}")
    folder, n = base, 2
    while os.path.exists(folder):
        folder, n = f"{base}-{n}", n + 1
    return folder


def cancel_import() -> bool:
    return _cancel(IMPORT)


def start_import(python: str, checkpoint: str, stats: str, on_done=None, block: bool = False) -> Job:
    """Convert an official checkpoint (profile detected by the backend) into a model folder under models_root(),
    with progress and cancel; job.report is the backend's 'done' event. A failure leaves no folder behind."""
    if IMPORT.running:
        raise ValueError("a model is already being added: wait for it or cancel it")
    for what, path in (("checkpoint", checkpoint), ("statistics", stats)):
        if not path or not os.path.isfile(path) and not (what == "statistics" and os.path.isdir(path)):
            raise ValueError(f"the {what} file was not found: {path or 'none picked'}")
    if not python or not os.path.isfile(python):
        raise ValueError(f"the backend Python was not found ({python or 'not set'}): set up the backend first")
    root = models_root()
    return _run_job(IMPORT, on_done, block, _import, python, checkpoint, stats, new_model_folder(root, checkpoint),
                    os.path.join(backend_root(), "import.log"))


def _import(job: Job, python: str, checkpoint: str, stats: str, out: str, log_path: str) -> None:
    import json

    job.report = None

    def on_line(line: str) -> None:
        if not line.startswith("{"):
            return
        event = json.loads(line)
        if event.get("event") == "progress":
            job.message, job.fraction = event["stage"].capitalize(), float(event["fraction"])
        elif event.get("event") == "done":
            job.report = event

    command = [python, "-m", "sheg", "import-diffsheg", checkpoint, "--stats", stats, "-o", out, "--json"]
    try:
        with open(log_path, "w", encoding="utf-8") as log:
            _run_logged("Adding the model", command, log, job, 0.0, 1.0, on_line=on_line)
    except BaseException:
        # a cancelled backend may leave its temporary folder (.NAME.*.partial) or, just finished, the model
        for leftover in [out, *glob.glob(os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.*"))]:
            shutil.rmtree(leftover, ignore_errors=True)
        raise
    job.fraction, job.message = 1.0, "Added"
    job.summary = f"Added {job.report['name']} ({job.report['profile'].upper()}): licence {job.report['license']}"
