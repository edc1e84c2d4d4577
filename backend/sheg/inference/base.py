"""What every model family shares when it generates: the embedded model folders, device choice, the Take result
and the output low-pass."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sheg.data.audio import true_runs
from sheg.errors import BadInput, DeviceError, ShegError
from sheg.io.take import sha256_of, write_arkit_json, write_take

EMBEDDED_MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(__file__)), "models")
DEFAULT_MODEL_DIR = os.path.join(EMBEDDED_MODELS_DIR, "default")


def embedded_models() -> list[str]:
    """Names of the models shipped inside the package ("default" first); `load_model(name)` loads one."""
    names = sorted(n for n in os.listdir(EMBEDDED_MODELS_DIR)
                   if os.path.isfile(os.path.join(EMBEDDED_MODELS_DIR, n, "model.json")))
    return sorted(names, key=lambda n: n != "default")


def resolve_model_path(path: str | None) -> str:
    """A model folder for `path`: None is the embedded default; an existing path is itself; a bare name that is no
    path here names an embedded model (e.g. "diffgesture-small")."""
    if path is None:
        path = DEFAULT_MODEL_DIR
        if not os.path.exists(os.path.join(path, "model.json")):
            raise ShegError("the embedded default model is not installed in this build of sheg: "
                            "pass --model MODEL_DIR")
        return path
    path = os.fspath(path)
    if not os.path.exists(path) and os.sep not in path and "/" not in path:
        if path in embedded_models():
            return os.path.join(EMBEDDED_MODELS_DIR, path)
        raise BadInput(f"model not found: {path} is neither a folder nor an embedded model "
                       f"({', '.join(embedded_models())})")
    return path


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu; asking for an absent device is an error, not a silent fallback."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was asked for but no CUDA GPU is available to this torch "
                              f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
        return torch.device(name)
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise DeviceError("MPS (Apple GPU) was asked for but is not available; use --device cpu")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"unknown device '{name}': use auto, cpu, cuda or mps")


@dataclass
class Take:
    """A generated take: take arrays (see take.py), their frame rate and provenance."""

    arrays: dict
    fps: float
    meta: dict = field(default_factory=dict)
    vector: np.ndarray | None = None  # (T, D) de-normalized network vector

    @property
    def frames(self) -> int:
        return len(self.arrays["poses"])

    def save(self, path: str) -> None:
        write_take(path, self.arrays, fps=self.fps, meta=self.meta)

    def save_arkit_json(self, path: str) -> None:
        """The ARKit weights of a BEAT-layout take as JSON (names, fps, weights per frame)."""
        write_arkit_json(path, self.arrays["arkit_names"], self.arrays["arkit_weights"], self.fps)


MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds; one sign keeps the range simple to state
MAX_GUIDANCE = 10.0  # classifier-free scales above ~3 already leave the data; 10 is far past any useful value


def checked_seed(seed) -> int:
    """The seed as an int in 0..MAX_SEED, or a one-line BadInput."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise BadInput(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


def checked_guidance(guidance, default: float, classifier_free: bool) -> float:
    """The guidance scale to use (None: the model's default), finite and within 0..MAX_GUIDANCE."""
    if guidance is None:
        return float(default)
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float, np.number)) \
            or not math.isfinite(float(guidance)) or not 0.0 <= float(guidance) <= MAX_GUIDANCE:
        raise BadInput(f"guidance must be a number from 0 to {MAX_GUIDANCE:g} (1 = off), got {guidance!r}")
    guidance = float(guidance)
    if guidance != 1.0 and not classifier_free:
        raise BadInput(f"this model was trained without classifier-free guidance: use guidance 1 (got {guidance:g})")
    return guidance


def finish_take(arrays: dict, vector: np.ndarray, fps: float, meta: dict, audio, started: float, report,
                lowpass_hz: float | None = None) -> Take:
    """The Take of a generation (any model family): provenance (the low-pass, the audio file and its sha256, the
    seconds since `started`) added to `meta`, and the 'done' progress event reported."""
    if not np.isfinite(vector).all():  # never write a take that Blender would key as NaN
        raise ShegError("the model produced non-finite motion (NaN or inf): try guidance closer to 1, another seed "
                        "or more steps")
    if lowpass_hz:
        meta["lowpass_hz"] = lowpass_hz
    if isinstance(audio, (str, os.PathLike)):
        meta["audio_file"] = os.path.abspath(os.fspath(audio))
        meta["audio_sha256"] = sha256_of(os.fspath(audio))
    report({"stage": "done", "fraction": 1.0})
    take = Take(arrays=arrays, fps=fps, meta=meta, vector=vector)
    take.meta["seconds"] = round(time.perf_counter() - started, 3)
    return take


def lowpass(vec: np.ndarray, fps: float, cutoff_hz: float) -> np.ndarray:
    """Zero-phase low-pass of a motion vector sequence (T, D) over time: a 2nd-order Butterworth run forward and
    backward (no lag). A model card's `sampler.lowpass_hz` asks for it when a small model's output carries
    frame-to-frame jitter that real motion does not have. Takes under 4 frames are returned as they are."""
    from scipy.signal import butter, sosfiltfilt

    if not 0.0 < cutoff_hz < fps / 2.0:
        raise BadInput(f"sampler.lowpass_hz must be between 0 and half the frame rate ({fps / 2:g}), got {cutoff_hz}")
    if len(vec) < 4:
        return vec
    sos = butter(2, cutoff_hz, fs=fps, output="sos")
    return sosfiltfilt(sos, vec, axis=0, padlen=min(len(vec) - 1, 3 * 2 * len(sos))).astype(vec.dtype)


def close_jaw_in_pauses(vec: np.ndarray, jaw: slice, pauses: np.ndarray, ramp_frames: int) -> np.ndarray:
    """The jaw channels `jaw` of a SHOW vector (T, D) eased to rest (zero rotation: the mouth closed) inside pauses,
    (T,) bool (data.audio.pause_frames), as a lip-sync rest shape: full rest from `ramp_frames` into a pause on,
    a linear ease over the first and last `ramp_frames` of it; frames of speech are untouched. A model card's
    `sampler.close_jaw_in_pauses` asks for it."""
    pauses = np.asarray(pauses, dtype=bool)
    if len(pauses) != len(vec):
        raise ValueError(f"pause mask has {len(pauses)} frames, the motion {len(vec)}")
    weight = np.zeros(len(vec))
    for start, stop in true_runs(pauses):
        k = np.arange(stop - start)
        ramp = max(1, min(int(ramp_frames), (stop - start) // 2))
        weight[start:stop] = np.minimum(1.0, np.minimum(k + 1, stop - start - k) / ramp)
    out = vec.copy()
    out[:, jaw] = vec[:, jaw] * (1.0 - weight[:, None]).astype(vec.dtype)
    return out
