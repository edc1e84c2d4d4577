"""Take .npz files (SMPL-X / AMASS / BEAT2 keys + the project's own) <-> a plain `Take`, with validation.

Accepted arrays (T frames):
  poses         (T, 165) or (T, 55, 3) axis-angle, SMPL-X joint order; (T, 156) SMPL+H (no jaw/eyes) is widened to
                55 joints with jaw and eyes at rest and marked not generated.
  trans         (T, 3) metres, optional.            expressions  (T, E) FLAME/SMPL-X coefficients, optional.
  mocap_frame_rate | mocap_framerate | fps          frames per second (required).
  betas, gender                                     carried through to export.
  generated_joints (55,) bool, generated_expressions, model_id, seed, audio_file, audio_sha256, sheg_version,
  arkit_names (51,) + arkit_weights (T, 51)         project keys, all optional (no generated_joints = all present).
  up_axis "Y" | "Z"                                 optional; without it AMASS files (keys surface_model_type, dmpls,
                                                    mocap_framerate or mocap_time_length) are Z-up, others Y-up.
Bad files raise ValueError with one line saying what is wrong and what to do.
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from dataclasses import dataclass, field, replace

import numpy as np

from . import quaternions
from . import smplx

FPS_KEYS = ("mocap_frame_rate", "mocap_framerate", "fps")
AMASS_MARKER_KEYS = ("surface_model_type", "dmpls", "mocap_framerate", "mocap_time_length")
# SMPL+H (52 joints) -> SMPL-X (55): jaw and eyes do not exist there.
_SMPLH_TO_SMPLX = tuple(j for j in range(smplx.NUM_JOINTS) if j not in smplx.FACE_JOINTS)


@dataclass
class Take:
    """One take, at its own frame rate. Arrays are float32 as stored; maths happens in float64 elsewhere."""

    poses: np.ndarray                      # (T, 55, 3) axis-angle, SMPL-X joint order
    fps: float                             # frames per second of the take
    trans: np.ndarray | None = None        # (T, 3) metres, SMPL-X coordinates
    expressions: np.ndarray | None = None  # (T, E) expression coefficients
    generated_joints: np.ndarray = None    # (55,) bool: joints the take really drives (others are rest filler)
    generated_expressions: bool = True
    arkit_weights: np.ndarray | None = None  # (T, 51) ARKit blendshape weights (BEAT models)
    arkit_names: tuple = ()
    betas: np.ndarray | None = None
    gender: str = "neutral"
    model_id: str = ""
    seed: int | None = None
    audio_file: str = ""
    audio_sha256: str = ""
    up_axis: str = "Y"
    source: str = ""                       # where it was read from, for messages
    extra: dict = field(default_factory=dict)  # other project strings (sheg_version, ...) carried to export

    def __post_init__(self):
        if self.generated_joints is None:  # nothing said: every joint is real data (AMASS/BEAT2)
            self.generated_joints = np.ones(smplx.NUM_JOINTS, dtype=bool)

    @property
    def frames(self) -> int:
        return int(self.poses.shape[0])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (self.frames - 1) / self.fps


def _where(source: str) -> str:
    return f"take {os.path.basename(source)}" if source else "take"


def _finite(name: str, array: np.ndarray, where: str) -> None:
    if not np.all(np.isfinite(array)):
        bad = int(np.argwhere(~np.isfinite(array).reshape(len(array), -1).all(axis=1))[0][0])
        raise ValueError(f"{where}: {name} has NaN or infinite values (first at frame {bad}); re-export the take")


def _frame_rate(value, where: str) -> float:
    try:
        fps = float(np.asarray(value).reshape(()))
    except (TypeError, ValueError):
        raise ValueError(f"{where}: frame rate {value!r} is not a number") from None
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"{where}: frame rate {fps} must be a positive number of frames per second")
    return fps


def _poses(value, where: str):
    """-> ((T, 55, 3) float32, (55,) bool joints present)."""
    p = np.asarray(value)
    if p.dtype.kind not in "fiu":
        raise ValueError(f"{where}: poses must be numbers, got dtype {p.dtype}")
    present = np.ones(smplx.NUM_JOINTS, dtype=bool)
    if p.ndim == 3 and p.shape[1:] == (smplx.NUM_JOINTS, 3):
        p = p.reshape(len(p), -1)
    if p.ndim != 2:
        raise ValueError(f"{where}: poses has shape {p.shape}, expected (frames, 165) or (frames, 55, 3)")
    if p.shape[1] == 156:
        wide = np.zeros((len(p), smplx.NUM_JOINTS, 3), dtype=np.float32)
        wide[:, list(_SMPLH_TO_SMPLX)] = p.reshape(len(p), 52, 3)
        present[list(smplx.FACE_JOINTS)] = False
        p = wide.reshape(len(p), -1)
    if p.shape[1] != 3 * smplx.NUM_JOINTS:
        raise ValueError(f"{where}: poses has {p.shape[1]} values a frame, expected 165 (SMPL-X, 55 joints x 3) "
                         f"or 156 (SMPL+H)")
    if len(p) < 1:
        raise ValueError(f"{where}: poses has no frames")
    poses = p.astype(np.float32).reshape(len(p), smplx.NUM_JOINTS, 3)
    _finite("poses", poses, where)
    return poses, present


def _per_frame(name: str, value, frames: int, where: str, width: int | None = None) -> np.ndarray:
    a = np.asarray(value)
    if a.dtype.kind not in "fiub":
        raise ValueError(f"{where}: {name} must be numbers, got dtype {a.dtype}")
    if a.ndim != 2 or len(a) != frames or (width is not None and a.shape[1] != width):
        want = f"({frames}, {width})" if width is not None else f"({frames}, N)"
        raise ValueError(f"{where}: {name} has shape {a.shape}, expected {want} to match poses")
    a = a.astype(np.float32)
    _finite(name, a, where)
    return a


def _text(value) -> str:
    a = np.asarray(value)
    return str(a.reshape(-1)[0]) if a.size else ""


def take_from_arrays(data: dict, source: str = "") -> Take:
    """Validate a dict of arrays (as in an .npz) and build a Take. Raises ValueError on bad content."""
    where = _where(source)
    if "poses" not in data:
        raise ValueError(f"{where} has no 'poses' array; expected SMPL-X poses (frames, 165) as AMASS/BEAT2 write")
    poses, present = _poses(data["poses"], where)
    frames = len(poses)
    fps_key = next((k for k in FPS_KEYS if k in data), None)
    if fps_key is None:
        raise ValueError(f"{where} has no frame rate; add 'mocap_frame_rate' (frames per second) to the file")
    fps = _frame_rate(data[fps_key], where)

    generated = present.copy()
    if "generated_joints" in data:
        g = np.asarray(data["generated_joints"])
        if g.shape != (smplx.NUM_JOINTS,):
            raise ValueError(f"{where}: generated_joints has shape {g.shape}, expected (55,)")
        generated &= g.astype(bool)

    trans = _per_frame("trans", data["trans"], frames, where, 3) if "trans" in data else None
    expressions = None
    if "expressions" in data:
        expressions = _per_frame("expressions", data["expressions"], frames, where)
    arkit_weights, arkit_names = None, ()
    if "arkit_weights" in data:
        arkit_weights = _per_frame("arkit_weights", data["arkit_weights"], frames, where)
        names = data.get("arkit_names")
        arkit_names = tuple(str(n) for n in np.asarray(names).reshape(-1)) if names is not None else smplx.ARKIT_NAMES
        if len(arkit_names) != arkit_weights.shape[1]:
            raise ValueError(f"{where}: {len(arkit_names)} arkit_names for {arkit_weights.shape[1]} arkit_weights")

    up_axis = _text(data["up_axis"]).upper() if "up_axis" in data else (
        "Z" if any(k in data for k in AMASS_MARKER_KEYS) else "Y")
    if up_axis not in ("Y", "Z"):
        raise ValueError(f"{where}: up_axis is '{up_axis}', expected 'Y' or 'Z'")
    seed = None
    if "seed" in data:
        try:
            seed = int(np.asarray(data["seed"]).reshape(()))
        except (TypeError, ValueError):
            seed = None
    betas = np.asarray(data["betas"], dtype=np.float32).reshape(-1) if "betas" in data else None
    extra = {k: _text(data[k]) for k in ("sheg_version",) if k in data}
    return Take(
        poses=poses, fps=fps, trans=trans, expressions=expressions, generated_joints=generated,
        generated_expressions=bool(np.asarray(data.get("generated_expressions", expressions is not None))),
        arkit_weights=arkit_weights, arkit_names=arkit_names, betas=betas,
        gender=_text(data["gender"]) if "gender" in data else "neutral",
        model_id=_text(data["model_id"]) if "model_id" in data else "",
        seed=seed, audio_file=_text(data.get("audio_file", "")), audio_sha256=_text(data.get("audio_sha256", "")),
        up_axis=up_axis, source=source, extra=extra)


_WANTED = ("poses", "trans", "expressions", "generated_joints", "generated_expressions", "arkit_names",
           "arkit_weights", "betas", "gender", "model_id", "seed", "audio_file", "audio_sha256", "sheg_version",
           "up_axis") + FPS_KEYS + AMASS_MARKER_KEYS


def read_take(path: str) -> Take:
    """Read and validate a take .npz (ours, SMPL-X add-on, AMASS or BEAT2). Never unpickles."""
    where = _where(path)
    if not os.path.isfile(path):
        raise ValueError(f"take file not found: {path}")
    data = {}
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it is a single .npy array, not an .npz archive")
        with archive:
            for key in archive.files:
                if key in _WANTED:
                    try:
                        data[key] = archive[key]
                    except ValueError:  # a pickled object array: never loaded; only fatal if it is the poses
                        if key == "poses":
                            raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"cannot read {where}: {reason} (expected an .npz with poses and mocap_frame_rate)") from None
    return take_from_arrays(data, source=path)


def y_up(take: Take) -> Take:
    """A Z-up (AMASS) take turned into SMPL-X's Y-up frame: -90 degrees about X applied to the global orientation
    and to trans. Y-up takes come back unchanged. (Only trans differences are meaningful after the turn; the
    add-on keys trans relative to the first frame.)"""
    if take.up_axis == "Y":
        return take
    turn = quaternions.axis_angle_to_quat(np.array([-0.5 * math.pi, 0.0, 0.0]))
    poses = take.poses.astype(np.float64).copy()
    root = quaternions.quat_multiply(turn, quaternions.axis_angle_to_quat(poses[:, 0]))
    poses[:, 0] = quaternions.quat_to_axis_angle(root)
    trans = None
    if take.trans is not None:
        t = take.trans.astype(np.float64)
        trans = np.stack([t[:, 0], t[:, 2], -t[:, 1]], axis=1).astype(np.float32)
    return replace(take, poses=poses.astype(np.float32), trans=trans, up_axis="Y")


def take_arrays(take: Take) -> dict:
    """The arrays of a take .npz (AMASS/BEAT2 keys + project keys), float32."""
    frames = take.frames
    expressions = take.expressions
    content = {
        "poses": np.asarray(take.poses, dtype=np.float32).reshape(frames, -1),
        "trans": (np.zeros((frames, 3), np.float32) if take.trans is None
                  else np.asarray(take.trans, dtype=np.float32)),
        "expressions": (np.zeros((frames, smplx.NUM_EXPRESSIONS), np.float32) if expressions is None
                        else np.asarray(expressions, dtype=np.float32)),
        "betas": np.zeros(10, np.float32) if take.betas is None else np.asarray(take.betas, dtype=np.float32),
        "gender": np.array(take.gender or "neutral"),
        "mocap_frame_rate": np.array(float(take.fps)),
        "generated_joints": np.asarray(take.generated_joints, dtype=bool),
        "generated_expressions": np.array(bool(take.generated_expressions and expressions is not None)),
        "up_axis": np.array(take.up_axis),
    }
    if take.arkit_weights is not None:
        content["arkit_weights"] = np.asarray(take.arkit_weights, dtype=np.float32)
        content["arkit_names"] = np.array(list(take.arkit_names))
    for key in ("model_id", "audio_file", "audio_sha256"):
        if getattr(take, key):
            content[key] = np.array(getattr(take, key))
    if take.seed is not None:
        content["seed"] = np.array(int(take.seed))
    for key, value in take.extra.items():
        content[key] = np.array(value)
    return content


def write_take(path: str, take: Take) -> None:
    """Write a take .npz atomically (temporary file + rename): a failure leaves nothing at `path`."""
    content = take_arrays(take)
    take_from_arrays(content, source=path)  # the same checks as reading: never write a file we would refuse
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"cannot write take: folder {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".sheg-take-", suffix=".npz", dir=folder)
    except OSError as exc:
        raise ValueError(f"cannot write take to {folder}: {exc.strerror}; pick a writable folder") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **content)
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise ValueError(f"cannot write take {path}: {exc.strerror or exc}") from None
        raise
