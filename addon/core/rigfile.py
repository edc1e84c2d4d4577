"""The exact SMPL-X rig from the user's own model file: run the backend's `sheg smplx-rig`, read and check its .npz.

The backend reads the model file with the `smplx` package (the add-on never imports torch or smplx) and writes the
rig .npz described in backend/sheg/smplx_rig.py: joints (55, 3), parents (55,), vertices (V, 3), faces (F, 3),
weights (V, 55), expressions (K, V, 3), SMPL-X coordinates, plus provenance. The .npz lives in a temporary folder
that is removed as soon as it is read: SMPL-X data must not be redistributed, so nothing derived is kept on disk.
Pure numpy + subprocess, no bpy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass

import numpy as np

from . import smplx
from .worker_client import one_line

FORMAT = "sheg-smplx-rig"
FORMAT_VERSION = 1
EXPORT_TIMEOUT = 600.0  # seconds; reading the real model takes a few
TEMP_PREFIX = "sheg-rig-"
_ERROR_PREFIX = "sheg: error: "


@dataclass
class ModelRig:
    """Everything the add-on needs to build the exact rig. SMPL-X coordinates (Y up), metres, betas 0."""

    joints: np.ndarray       # (55, 3) float64 rest joints
    vertices: np.ndarray     # (V, 3) float64 rest vertices (T-pose, flat hands)
    faces: np.ndarray        # (F, 3) int32 triangles
    weights: np.ndarray      # (V, 55) float32 skinning weights, rows sum to 1
    expressions: np.ndarray  # (K, V, 3) float32 vertex offsets per unit expression coefficient
    gender: str = "neutral"
    source_file: str = ""    # the model file's name
    source_sha256: str = ""

    @property
    def num_vertices(self) -> int:
        return int(len(self.vertices))


def read_rig(path: str) -> ModelRig:
    """Read and check a rig .npz; ValueError (one line) when it is not one."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = {k: archive[k] for k in archive.files}
    except FileNotFoundError:
        raise ValueError(f"rig file not found: {path}") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"cannot read the rig file {os.path.basename(path)}: {one_line(str(exc))}") from None
    where = f"rig from {data['source_file']}" if "source_file" in data else f"rig file {os.path.basename(path)}"
    if str(data.get("format", "")) != FORMAT:
        raise ValueError(f"{where} is not a SHEG SMPL-X rig (format '{data.get('format', '')}'); "
                         "make it with `sheg smplx-rig`")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{where} has format version {int(data['format_version'])}; this add-on reads "
                         f"{FORMAT_VERSION}: update the add-on")
    missing = [k for k in ("joints", "parents", "vertices", "faces", "weights", "expressions") if k not in data]
    if missing:
        raise ValueError(f"{where} has no {', '.join(missing)}: make it again with `sheg smplx-rig`")
    joints = np.asarray(data["joints"], dtype=np.float64)
    vertices = np.asarray(data["vertices"], dtype=np.float64)
    faces = np.asarray(data["faces"])
    weights = np.asarray(data["weights"], dtype=np.float32)
    expressions = np.asarray(data["expressions"], dtype=np.float32)
    count = len(vertices)
    if joints.shape != (smplx.NUM_JOINTS, 3):
        raise ValueError(f"{where}: joints has shape {joints.shape}, expected (55, 3)")
    if tuple(np.asarray(data["parents"]).tolist()) != smplx.PARENTS:
        raise ValueError(f"{where}: its joint hierarchy is not the SMPL-X kintree; use an SMPL-X model file")
    if vertices.ndim != 2 or vertices.shape[1] != 3 or count == 0:
        raise ValueError(f"{where}: vertices has shape {vertices.shape}, expected (V, 3)")
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer) or len(faces) == 0 \
            or faces.min() < 0 or faces.max() >= count:
        raise ValueError(f"{where}: faces must be (F, 3) integer triangles indexing the {count} vertices")
    if weights.shape != (count, smplx.NUM_JOINTS):
        raise ValueError(f"{where}: weights has shape {weights.shape}, expected ({count}, 55)")
    if expressions.ndim != 3 or expressions.shape[1:] != (count, 3) or not 1 <= len(expressions) <= 100:
        raise ValueError(f"{where}: expressions has shape {expressions.shape}, expected (K <= 100, {count}, 3)")
    for name, array in (("joints", joints), ("vertices", vertices), ("weights", weights),
                        ("expressions", expressions)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"{where}: {name} has NaN or infinite values; make it again with `sheg smplx-rig`")
    return ModelRig(joints, vertices, faces.astype(np.int32), weights, expressions,
                    gender=str(data.get("gender", "neutral")), source_file=str(data.get("source_file", "")),
                    source_sha256=str(data.get("source_sha256", "")))


def export_command(python: str, model_file: str, out: str, gender: str | None = None) -> list[str]:
    command = [python, "-m", "sheg", "smplx-rig", model_file, "-o", out]
    return command + (["--gender", gender] if gender else [])


def failure_message(returncode: int, stderr: str, model_file: str) -> str:
    """One line for a failed `sheg smplx-rig` run: the backend's own message when it gave one."""
    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    for line in reversed(lines):
        if line.startswith(_ERROR_PREFIX):
            text = line[len(_ERROR_PREFIX):]
            if "invalid choice: 'smplx-rig'" in text:
                return ("the backend is too old to read SMPL-X model files (no `sheg smplx-rig`): reinstall or "
                        "update the backend")
            return text
    if any("No module named sheg" in ln or "No module named 'sheg'" in ln for ln in lines):
        return "the backend Python has no `sheg` package: install the backend (Preferences > Add-ons > SHEG)"
    last = one_line(stderr) or f"exit code {returncode}"
    return f"reading the SMPL-X model file {os.path.basename(model_file)} failed: {last}"


def rig_from_model_file(python: str, model_file: str, gender: str | None = None,
                        timeout: float = EXPORT_TIMEOUT) -> ModelRig:
    """Run `python -m sheg smplx-rig MODEL -o TMP`, read the rig and delete TMP. Blocks (seconds).

    Raises ValueError with one line (missing file, no `smplx` in the backend, not an SMPL-X file, ...).
    """
    if not python or not os.path.isfile(python):
        raise ValueError(f"backend Python not found: '{python}': set it in Preferences > Add-ons > SHEG")
    if not os.path.exists(model_file):
        raise ValueError(f"SMPL-X model file not found: {model_file} (Preferences > Add-ons > SHEG > SMPL-X Model)")
    folder = tempfile.mkdtemp(prefix=TEMP_PREFIX)
    try:
        out = os.path.join(folder, "rig.npz")
        env = dict(os.environ)
        env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into another interpreter
        kwargs = {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)} if os.name == "nt" else {}
        try:
            proc = subprocess.run(export_command(python, model_file, out, gender), capture_output=True, text=True,
                                  errors="replace", timeout=timeout, env=env, stdin=subprocess.DEVNULL, **kwargs)
        except subprocess.TimeoutExpired:
            raise ValueError(f"reading the SMPL-X model file took longer than {timeout:.0f} s; "
                             "check the backend with Preferences > Add-ons > SHEG > Check") from None
        except OSError as exc:
            raise ValueError(f"cannot start the backend Python '{python}': {exc.strerror or exc}") from None
        if proc.returncode != 0 or not os.path.isfile(out):
            raise ValueError(failure_message(proc.returncode, proc.stderr, model_file))
        return read_rig(out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def vertex_groups(weights: np.ndarray, min_weight: float = 0.0) -> dict:
    """Joint name -> ((n,) vertex indices, (n,) weights) of the vertices it moves (weight > min_weight)."""
    groups = {}
    for j, name in enumerate(smplx.JOINT_NAMES):
        column = weights[:, j]
        indices = np.flatnonzero(column > min_weight)
        if len(indices):
            groups[name] = (indices, column[indices])
    return groups


def runs_of_equal_weight(indices: np.ndarray, values: np.ndarray):
    """Split one group's (indices, weights) into runs sharing one weight: [(indices, weight), ...]. Blender adds
    a weight to many vertices in one call, so this keeps the number of calls small (SMPL-X has many weights 1.0)."""
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(sorted_values)) + 1, [len(order)]])
    return [(indices[order[a:b]], float(sorted_values[a])) for a, b in zip(starts[:-1], starts[1:]) if b > a]


def ground_offset(vertices: np.ndarray) -> float:
    """Height (Blender Z) to lift the rig by so its lowest vertex (the soles) sits on the armature's origin, like the
    stand-in. SMPL-X Y is Blender Z."""
    return float(-np.min(vertices[:, 1]))
