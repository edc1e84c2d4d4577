"""`sheg doctor`: which models this Python can run, and for each one what it still needs and the exact step to fix it.

One check per model folder (embedded ones, the folders given, and the model folders under the folders given):
its description and weights, and for HuBERT models the `transformers` package and the HuBERT weights (a folder, or
the Hugging Face cache for a model id). The optional `smplx` package (exact SMPL-X rig only) is reported apart.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys

from sheg.errors import ShegError
from sheg.version import __version__

HUBERT_ID = "facebook/hubert-large-ls960-ft"
# A HuBERT folder in the Hugging Face layout: its config, its feature extractor, and one of its weight files.
HUBERT_FILES = ("config.json", "preprocessor_config.json")
HUBERT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def _pip(extra: str) -> str:
    return f"{sys.executable} -m pip install '{extra}'"


def hubert_problem(hubert: str) -> dict | None:
    """What keeps HuBERT from loading from `hubert` (a folder or a model id), with its fix; None when it is there."""
    if os.path.isdir(hubert):
        missing = [n for n in HUBERT_FILES if not os.path.isfile(os.path.join(hubert, n))]
        if not any(os.path.isfile(os.path.join(hubert, n)) for n in HUBERT_WEIGHTS):
            missing.append(" or ".join(HUBERT_WEIGHTS))
        if not missing:
            return None
        return {"what": "HuBERT", "problem": f"the HuBERT folder {hubert} lacks {', '.join(missing)}",
                "fix": f"download {HUBERT_ID} again into that folder (add-on: Preferences > Download HuBERT)"}
    # a Hugging Face id is "owner/name"; anything else that is not a folder here is a folder that is missing
    if os.path.isabs(hubert) or hubert.startswith((".", "~")) or hubert.count("/") > 1 or (
            os.sep != "/" and os.sep in hubert):
        return {"what": "HuBERT", "problem": f"the HuBERT folder {hubert} does not exist",
                "fix": f"download {HUBERT_ID} to a folder (add-on: Preferences > Download HuBERT) and pass "
                       "--hubert FOLDER"}
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        cached = False
    else:
        cached = all(isinstance(try_to_load_from_cache(hubert, n), str) for n in HUBERT_FILES) and any(
            isinstance(try_to_load_from_cache(hubert, n), str) for n in HUBERT_WEIGHTS)
    if cached:
        return None
    return {"what": "HuBERT", "problem": f"HuBERT '{hubert}' is not downloaded (not in the Hugging Face cache)",
            "fix": f"download {hubert} to a folder (add-on: Preferences > Download HuBERT) and pass --hubert FOLDER"}


def check_model(path: str, hubert: str | None = None) -> dict:
    """{'path', 'name', 'arch', 'layout', 'fps', 'license', 'usable', 'needs': [{'what', 'problem', 'fix'}]}."""
    entry = {"path": os.path.abspath(path), "name": os.path.basename(os.path.normpath(path)), "arch": None,
             "layout": None, "fps": None, "license": None, "usable": False, "needs": []}
    meta_file = os.path.join(path, "model.json")
    try:
        with open(meta_file, encoding="utf-8") as f:
            try:
                meta = json.load(f)
            except ValueError as exc:
                raise ShegError(f"{meta_file} is not valid JSON ({exc})") from None
        arch = meta.get("arch")
        if arch == "diffgesture":
            from sheg.io.diffgesture_dir import _validate as validate_diffgesture  # the loader's check, weights aside

            validate_diffgesture(meta, path)
        else:
            from sheg.io.checkpoint import read_model_meta

            meta = read_model_meta(path)
    except (OSError, ValueError, AttributeError, ShegError) as exc:
        entry["needs"].append({"what": "model files", "problem": str(exc).splitlines()[0],
                               "fix": "convert the checkpoint again (sheg import-diffsheg / add-on: Add Model...)"})
        return entry
    entry.update(name=str(meta.get("name") or entry["name"]), arch=arch, layout=meta.get("layout"),
                 fps=meta.get("fps"), license=meta.get("license"))
    if not os.path.isfile(os.path.join(path, "model.safetensors")):
        entry["needs"].append({"what": "weights", "problem": f"{path} has no model.safetensors",
                               "fix": "convert the checkpoint again (sheg import-diffsheg / add-on: Add Model...)"})
    if arch != "diffgesture" and (meta.get("config") or {}).get("use_hubert"):
        if importlib.util.find_spec("transformers") is None:
            entry["needs"].append({"what": "transformers", "problem": "HuBERT models need the transformers package",
                                   "fix": _pip("sheg[hubert]") + " (add-on with a managed backend: Preferences > "
                                                                 "Install HuBERT Support)"})
        problem = hubert_problem(hubert or ((meta.get("audio") or {}).get("hubert") or {}).get("model") or HUBERT_ID)
        if problem:
            entry["needs"].append(problem)
    entry["usable"] = not entry["needs"]
    return entry


def model_folders(paths) -> list[str]:
    """The model folders named by `paths`: a folder with model.json is one; another folder holds them."""
    found = []
    for path in paths:
        if os.path.isfile(os.path.join(path, "model.json")) or not os.path.isdir(path):
            found.append(path)
            continue
        found += [os.path.join(path, n) for n in sorted(os.listdir(path))
                  if os.path.isfile(os.path.join(path, n, "model.json"))]
    return found


def diagnose(paths=(), hubert: str | None = None) -> dict:
    """The whole report: versions, devices, the optional packages and one entry per model (embedded ones first)."""
    import torch

    from sheg.inference.base import EMBEDDED_MODELS_DIR, embedded_models

    folders = [os.path.join(EMBEDDED_MODELS_DIR, n) for n in embedded_models()] + model_folders(paths)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else []) + (
        ["mps"] if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available() else [])
    packages = {}
    for name, extra, use in (("transformers", "sheg[hubert]", "HuBERT features (official DiffSHEG models)"),
                             ("smplx", "smplx==0.1.28", "the exact SMPL-X rig from your model file")):
        found = importlib.util.find_spec(name) is not None
        packages[name] = {"installed": found, "for": use, "fix": None if found else _pip(extra)}
    return {"sheg": __version__, "python": sys.executable, "torch": torch.__version__, "devices": devices,
            "packages": packages, "models": [check_model(f, hubert) for f in folders]}


def format_report(report: dict) -> str:
    lines = [f"sheg {report['sheg']} · torch {report['torch']} · devices: {', '.join(report['devices'])}",
             f"python: {report['python']}", ""]
    for name, pkg in report["packages"].items():
        state = "installed" if pkg["installed"] else f"not installed — for {pkg['for']}: {pkg['fix']}"
        lines.append(f"{name}: {state}")
    lines.append("")
    usable = sum(m["usable"] for m in report["models"])
    lines.append(f"models: {usable} of {len(report['models'])} usable")
    for model in report["models"]:
        mark = "ok  " if model["usable"] else "NEEDS"
        detail = f" ({model['layout']}, {model['fps']:g} fps)" if model["fps"] else ""
        lines.append(f"  {mark} {model['name']}{detail}  {model['path']}")
        if model["license"]:
            lines.append(f"        licence: {model['license']}")
        for need in model["needs"]:
            lines.append(f"        {need['what']}: {need['problem']}")
            lines.append(f"          fix: {need['fix']}")
    return "\n".join(lines)
