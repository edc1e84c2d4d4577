#!/usr/bin/env python3
"""Build, test and demo SHEG from a fresh machine that has only python3 and the package registries.

    python3 build.py demo    # environment, wheel, extension zip, demo scene + take + contact sheet in out/
    python3 build.py test    # the same setup, then the backend tests and the Blender tests
    python3 build.py build   # only the extension zip: dist/sheg-VERSION.zip (it carries wheels/sheg-*.whl)

Standard library only at import time. Idempotent: a second run skips what is already done.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.abspath(__file__))
VENV = os.path.join(ROOT, ".venv")
VENV_PY = os.path.join(VENV, "bin", "python")
WHEELS = os.path.join(ROOT, "wheels")
DIST = os.path.join(ROOT, "dist")
OUT = os.path.join(ROOT, "out")
CACHE = os.path.join(ROOT, ".cache")
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

# Pinned: an unpinned torch pulls several GB of CUDA packages; bpy 5.0.1 needs numpy < 2.
REQUIREMENTS = [
    "torch==2.13.0",
    "bpy==5.0.1",
    "numpy<2",
    "librosa==0.11.0",
    "soundfile>=0.12",
    "safetensors>=0.4",
    "tqdm",
    # HuBERT features and the "Download HuBERT" path (tests use a tiny random HuBERT); neither pulls torch
    "transformers==5.23.0",
    "huggingface-hub==2.4.0",
    "smplx==0.1.28",  # tests only (exact rig from a synthetic model file); needs only torch + numpy, never shipped
    "pytest>=8",
    "setuptools>=64",
    "wheel",
]


def log(msg: str) -> None:
    print(f"[build] {msg}", flush=True)


def run(cmd, **kw) -> None:
    log(" ".join(str(c) for c in cmd))
    subprocess.run(cmd, check=True, **kw)


def version() -> str:
    text = open(os.path.join(ROOT, "backend", "pyproject.toml")).read()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def test_env() -> dict:
    env = dict(os.environ)
    env["NUMBA_CACHE_DIR"] = os.path.join(CACHE, "numba")  # librosa's numba cache must be private and writable
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 2))
    return env


# -- environment -------------------------------------------------------------------------------------------------

def ensure_venv() -> None:
    stamp = os.path.join(VENV, ".sheg-requirements")
    wanted = "\n".join(REQUIREMENTS + [version()])
    if os.path.exists(VENV_PY) and os.path.exists(stamp) and open(stamp).read() == wanted:
        log(".venv is up to date")
    else:
        if not os.path.exists(VENV_PY):
            run([sys.executable, "-m", "venv", VENV])
        run([VENV_PY, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
        run([VENV_PY, "-m", "pip", "install", "--quiet", *REQUIREMENTS])
        run([VENV_PY, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e",
             os.path.join(ROOT, "backend")])
        with open(stamp, "w") as f:
            f.write(wanted)
    # The editable install must point at this checkout (a moved or re-cloned tree needs a reinstall).
    probe = subprocess.run([VENV_PY, "-c", "import sheg, os; print(os.path.dirname(sheg.__file__))"],
                           capture_output=True, text=True)
    if probe.returncode != 0 or os.path.realpath(probe.stdout.strip()) != os.path.realpath(
            os.path.join(ROOT, "backend", "sheg")):
        run([VENV_PY, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e",
             os.path.join(ROOT, "backend")])


def _tree_digest(folder: str) -> str:
    h = hashlib.sha256()
    for base, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "build", "tests") and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = os.path.join(base, name)
            h.update(os.path.relpath(path, folder).encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def build_wheel() -> str:
    os.makedirs(WHEELS, exist_ok=True)
    name = f"sheg-{version()}-py3-none-any.whl"
    wheel = os.path.join(WHEELS, name)
    stamp = wheel + ".src-sha256"
    digest = _tree_digest(os.path.join(ROOT, "backend"))
    if os.path.exists(wheel) and os.path.exists(stamp) and open(stamp).read() == digest:
        log(f"{os.path.relpath(wheel, ROOT)} is up to date")
        return wheel
    for old in os.listdir(WHEELS):
        if old.startswith("sheg-") and old.endswith(".whl"):
            os.remove(os.path.join(WHEELS, old))
    shutil.rmtree(os.path.join(ROOT, "backend", "build"), ignore_errors=True)
    run([VENV_PY, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", WHEELS,
         os.path.join(ROOT, "backend")])
    shutil.rmtree(os.path.join(ROOT, "backend", "build"), ignore_errors=True)
    with open(stamp, "w") as f:
        f.write(digest)
    return wheel


def blender_ext_tool() -> str:
    """Blender's own extension builder (bl_pkg/cli/blender_ext.py) inside the installed bpy module."""
    code = ("import importlib.util, glob, os; spec = importlib.util.find_spec('bpy'); "
            "print('\\n'.join(p for loc in spec.submodule_search_locations for p in sorted(glob.glob("
            "os.path.join(loc, '*', 'scripts', 'addons_core', 'bl_pkg', 'cli', 'blender_ext.py')))))")
    out = subprocess.run([VENV_PY, "-c", code], capture_output=True, text=True, check=True, env=test_env())
    found = [line for line in out.stdout.splitlines() if line.strip()]
    if not found:
        raise SystemExit("Blender's extension builder (bl_pkg/cli/blender_ext.py) was not found in the bpy module")
    return found[-1]


def build_zip() -> str:
    wheel = build_wheel()
    zip_path = os.path.join(DIST, f"sheg-{version()}.zip")
    stage = os.path.join(CACHE, "ext-stage")
    shutil.rmtree(stage, ignore_errors=True)
    shutil.copytree(os.path.join(ROOT, "addon"), stage,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "backend_wheels"))
    os.makedirs(os.path.join(stage, "backend_wheels"))
    shutil.copy2(wheel, os.path.join(stage, "backend_wheels"))
    os.makedirs(DIST, exist_ok=True)
    tool = blender_ext_tool()
    run([VENV_PY, tool, "validate", stage], env=test_env())
    if os.path.exists(zip_path):
        os.remove(zip_path)
    run([VENV_PY, tool, "build", "--source-dir", stage, "--output-dir", DIST], env=test_env())
    built = os.path.join(DIST, f"sheg-{version()}.zip")
    if not os.path.exists(built):
        raise SystemExit(f"extension build did not produce {built}")
    log(f"extension zip: {os.path.relpath(built, ROOT)}")
    return built


# -- commands ----------------------------------------------------------------------------------------------------

def cmd_build() -> int:
    ensure_venv()
    build_zip()
    return 0


def _pytest(args: list[str], env: dict) -> tuple[int, int]:
    """Run pytest; return (exit code, tests collected)."""
    report = os.path.join(CACHE, "pytest-count.txt")
    proc = subprocess.run([VENV_PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], env=env, cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.stdout.write(proc.stdout)
    sys.stdout.flush()
    counts = re.findall(r"(\d+) (passed|failed|error|errors|skipped)", proc.stdout.splitlines()[-1]
                        if proc.stdout.strip() else "")
    ran = sum(int(n) for n, kind in counts if kind in ("passed", "failed", "error", "errors"))
    with open(report, "a") as f:
        f.write(f"{args}: rc={proc.returncode} ran={ran}\n")
    return proc.returncode, ran


def cmd_test() -> int:
    started = time.time()
    ensure_venv()
    zip_path = build_zip()
    env = test_env()
    env["SHEG_EXTENSION_ZIP"] = zip_path
    env["SHEG_BACKEND_PYTHON"] = VENV_PY
    os.makedirs(CACHE, exist_ok=True)
    results = []
    for label, args in (("backend", ["backend/tests"]), ("blender", ["blender_tests"])):
        log(f"running {label} tests")
        rc, ran = _pytest(args, env)
        results.append((label, rc, ran))
    ok = True
    for label, rc, ran in results:
        log(f"{label}: exit {rc}, {ran} tests ran")
        if rc != 0 or ran == 0:
            ok = False
    log(f"total {time.time() - started:.0f} s: {'OK' if ok else 'FAILED'}")
    return 0 if ok else 1


def cmd_demo() -> int:
    ensure_venv()
    zip_path = build_zip()
    env = test_env()
    env["SHEG_EXTENSION_ZIP"] = zip_path
    run([VENV_PY, os.path.join(ROOT, "scripts", "demo.py"), "--out", OUT, "--zip", zip_path], env=env)
    return 0


def main(argv: list[str]) -> int:
    commands = {"demo": cmd_demo, "test": cmd_test, "build": cmd_build}
    if len(argv) != 1 or argv[0] not in commands:
        print(__doc__)
        return 2
    try:
        return commands[argv[0]]()
    except subprocess.CalledProcessError as exc:
        print(f"[build] failed: {' '.join(map(str, exc.cmd))} exited with {exc.returncode}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
