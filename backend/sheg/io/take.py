"""The take file: one .npz per generation, readable by the SMPL-X ecosystem (AMASS / BEAT2 keys) plus our own keys.

Required: `poses` (T, 165) float32 axis-angle, SMPL-X joint order; `expressions` (T, 100); `trans` (T, 3);
`betas` (10,); `gender`; `mocap_frame_rate`. Project keys: `generated_joints` (55,) bool, `generated_expressions`,
`model_id`, `seed`, `audio_file`, `audio_sha256`, `sheg_version`; BEAT models add `arkit_names`/`arkit_weights`,
`beat_joint_names`/`beat_poses`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile

import numpy as np

from sheg.errors import BadInput


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_writable(out: str) -> None:
    """Fail before any work when an output cannot be written: its nearest existing folder must be writable."""
    if os.path.isdir(out):
        raise BadInput(f"{out} is a folder: give a file name (such as take.npz) instead")
    folder = os.path.dirname(os.path.abspath(out))
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise BadInput(f"cannot write {out}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise BadInput(f"cannot write {out}: the folder {folder} is read-only: choose a folder you can write to")


def atomic_write(path: str, write_fn) -> None:
    """Call write_fn(tmp_path) then rename onto `path`: a failure or cancel leaves nothing at `path`."""
    path = os.path.abspath(path)
    check_writable(path)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".sheg-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        write_fn(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_take(path: str, arrays: dict, *, fps: float, meta: dict) -> None:
    """Write a take .npz atomically. `arrays` holds poses/expressions/generated_joints (+ optional BEAT keys)."""
    frames = len(arrays["poses"])
    content = {
        "poses": np.asarray(arrays["poses"], dtype=np.float32),
        "expressions": np.asarray(arrays["expressions"], dtype=np.float32),
        "trans": np.zeros((frames, 3), dtype=np.float32),
        "betas": np.zeros(10, dtype=np.float32),
        "gender": np.array("neutral"),
        "mocap_frame_rate": np.array(float(fps)),
        "generated_joints": np.asarray(arrays["generated_joints"], dtype=bool),
        "generated_expressions": np.array(bool(arrays.get("generated_expressions", True))),
    }
    for key in ("arkit_names", "arkit_weights", "beat_joint_names", "beat_poses"):
        if key in arrays:
            content[key] = np.asarray(arrays[key])
    for key, value in meta.items():
        content[key] = np.array(value if not isinstance(value, dict) else json.dumps(value))

    def _write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **content)

    atomic_write(path, _write)


def write_arkit_json(path: str, names, weights: np.ndarray, fps: float) -> None:
    """ARKit weights as the BEAT/LiveLink-style JSON: {"names": [...], "frames": [{"time", "weights"}]}."""
    doc = {"names": list(map(str, names)), "fps": fps,
           "frames": [{"time": i / fps, "weights": [round(float(v), 6) for v in row]}
                      for i, row in enumerate(np.asarray(weights))]}

    def _write(tmp):
        with open(tmp, "w") as f:
            json.dump(doc, f)

    atomic_write(path, _write)


def read_take(path: str) -> dict:
    """Read a take (ours, AMASS or BEAT2). Returns a dict of arrays plus `fps`."""
    if not os.path.exists(path):
        raise BadInput(f"take file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:
        raise BadInput(f"cannot read take {path}: {exc} (expected an .npz with poses and mocap_frame_rate)") from None
    if "poses" not in data:
        raise BadInput(f"take {path} has no 'poses' array (expected SMPL-X poses (T,165))")
    fps = data.get("mocap_frame_rate", data.get("mocap_framerate"))
    if fps is None:
        raise BadInput(f"take {path} has no mocap_frame_rate (or mocap_framerate)")
    data["fps"] = float(fps)
    data["poses"] = np.asarray(data["poses"], dtype=np.float32).reshape(len(data["poses"]), -1)
    if data["poses"].shape[1] != 165:
        raise BadInput(f"take {path}: poses has {data['poses'].shape[1]} values a frame, expected 165 (55 joints)")
    return data
