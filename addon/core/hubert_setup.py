"""HuBERT set-up for models that read HuBERT features (imports no bpy): which models need it, the backend commands
that install the `hubert` extra and download HuBERT-large, and the download's JSON lines as progress."""

from __future__ import annotations

import glob
import json
import os
import pathlib

HUBERT_ID = "facebook/hubert-large-ls960-ft"
FOLDER_NAME = "hubert-large-ls960-ft"  # under the add-on's user folder: hubert/<this>
# What the hubert extra installs into the managed backend: the versions the project tests (build.py pins the same).
# Neither depends on torch; torch itself is named with its installed version so pip can never swap it.
HUBERT_PINS = ("transformers==5.23.0", "huggingface-hub==2.4.0")


def model_needs_hubert(meta: dict) -> bool:
    """True for a model.json whose audio features include HuBERT (audio.hubert set, or a UniEG using HuBERT)."""
    if not isinstance(meta, dict):
        return False
    audio = meta.get("audio") if isinstance(meta.get("audio"), dict) else {}
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return bool(audio.get("hubert")) or (meta.get("arch", "unieg") == "unieg" and bool(config.get("use_hubert")))


def folder_needs_hubert(folder: str) -> bool:
    """model_needs_hubert of FOLDER/model.json (False when it cannot be read)."""
    try:
        with open(os.path.join(folder, "model.json"), encoding="utf-8") as f:
            return model_needs_hubert(json.load(f))
    except (OSError, ValueError):
        return False


def venv_has_package(venv: str, package: str) -> bool:
    """Whether the virtual environment `venv` holds the importable package `package` (its site-packages, read
    without starting its Python)."""
    patterns = [os.path.join(venv, "lib", "python*", "site-packages", package, "__init__.py"),
                os.path.join(venv, "Lib", "site-packages", package, "__init__.py")]
    return any(glob.glob(pattern) for pattern in patterns)


def hubert_extra_command(python: str, wheel: str, torch_version: str, pins=HUBERT_PINS) -> list[str]:
    """pip installing the bundled backend wheel's `hubert` extra with pinned versions, keeping torch as it is."""
    return [python, "-m", "pip", "install", "--disable-pip-version-check",
            f"sheg[hubert] @ {pathlib.Path(os.path.abspath(wheel)).as_uri()}", f"torch=={torch_version}", *pins]


def download_command(python: str, out: str, endpoint: str = "") -> list[str]:
    """`sheg download-hubert` into `out` with JSON progress; `endpoint` (a mirror) when set, else HF_ENDPOINT or
    Hugging Face, as the backend decides."""
    command = [python, "-m", "sheg", "download-hubert", "-o", out, "--json"]
    return command + (["--endpoint", endpoint.strip()] if endpoint.strip() else [])


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n < 1e8 else f"{n / 1e6:.0f} MB"


def download_progress(event: dict, start: float = 0.0, end: float = 1.0) -> tuple[str, float] | None:
    """(message, fraction between start and end) for one JSON line of `sheg download-hubert --json`; None for
    lines that change nothing (the 'done' event). The weights file is nearly all of the download."""
    if event.get("event") != "progress":
        return None
    span = end - start
    if event.get("stage") == "check":
        return "Checking that HuBERT loads", start + 0.95 * span
    name, done, total = str(event.get("file") or ""), int(event.get("done") or 0), int(event.get("total") or 0)
    if not name.endswith((".safetensors", ".bin")):
        return f"Downloading {name}", start + 0.02 * span
    share = done / total if total else 0.0
    sizes = f"{_size(done)} of {_size(total)}" if total else _size(done)
    return f"Downloading {name}: {sizes}", start + (0.03 + 0.9 * min(1.0, share)) * span
