"""Model folders (model.json + model.safetensors), official DiffSHEG checkpoint import, strict loading.

A model folder holds everything needed to generate: the UniEG weights (safetensors, no pickle) and model.json with
the network config, data layout, frame rate, window sizes, audio recipe, normalization statistics, speakers and
sampler defaults (keys: docs/ARCHITECTURE.md "Model folder").

Official DiffSHEG checkpoints (`ckpt_e2599.tar` for SHOW, `fgd_best.tar` for BEAT) are `torch.save` dicts despite
the .tar name; they are read with `torch.load(weights_only=True)` only, never with full unpickling.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from sheg.io.take import sha256_of
from sheg.errors import BadInput, CheckpointError, DeviceError, ShegError
from sheg.nets.unieg import UniEG, UniEGConfig

__all__ = [
    "MODEL_JSON", "MODEL_WEIGHTS", "OFFICIAL_PROFILES", "save_model_dir", "load_model_dir", "read_model_meta",
    "check_state_dict", "read_official_checkpoint", "official_stats", "import_diffsheg",
]

FORMAT = "sheg-model"
FORMAT_VERSION = 1
MODEL_JSON = "model.json"
MODEL_WEIGHTS = "model.safetensors"
REQUIRED_META = ("name", "layout", "fps", "window", "overlap", "audio", "stats", "speakers", "default_style",
                 "guidance_scale", "sampler", "source", "license")

EXPECTED_OFFICIAL = ("expected an official DiffSHEG checkpoint such as ckpt_e2599.tar (SHOW) or fgd_best.tar (BEAT): "
                     "a torch.save dict with an 'encoder' state_dict")

HUBERT = {"model": "facebook/hubert-large-ls960-ft", "sample_rate": 16000}

# Settings of the two published checkpoints (DIFFSHEG_FACTS.md §1.2, §2, §11). SHOW runs at its training rate of
# 30 fps (hop 600 at 18 kHz), not the 15-fps rate of the official custom-audio script.
OFFICIAL_PROFILES = {
    "show": {
        "config": UniEGConfig.official_show,
        "fps": 30, "window": 88, "overlap": 10, "hop_length": 600,
        "speakers": ["chemistry", "conan", "oliver", "seth"],  # TalkSHOW speaker order (one-hot index = id - 20)
        "default_style": 0, "guidance_scale": 1.15, "jump_n_sample": 5,
    },
    "beat": {
        "config": UniEGConfig.official_beat,
        "fps": 15, "window": 34, "overlap": 4, "hop_length": 1200,
        "speakers": [str(i) for i in range(1, 31)],  # BEAT speaker ids; one-hot index = id - 1
        "default_style": 1,  # speaker 2 "scott", one of the 4 English speakers the checkpoint was trained on
        "guidance_scale": 1.0, "jump_n_sample": 2,
    },
}
LICENSE = "DiffSHEG BSD-3-Clause code; weights trained on SHOW/BEAT (non-commercial research)"


# ----------------------------------------------------------------------------------------------------------------
# strict state_dict matching


def check_state_dict(expected: dict, state_dict: dict, what: str) -> None:
    """Raise CheckpointError unless `state_dict` has exactly the names and shapes of `expected` (a state_dict).

    The message names up to 5 missing, unexpected and wrong-shaped keys, with counts.
    """
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong = [
        f"{k} {_shape(state_dict[k])} vs {_shape(v)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong-shaped (file vs network)", wrong)):
        if items:
            more = f", ... {len(items) - 5} more" if len(items) > 5 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:5])}{more}")
    raise CheckpointError(f"{what} does not match the UniEG network: {'; '.join(parts)}")


def _shape(t) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _build_and_load(config: UniEGConfig, state_dict: dict, what: str) -> UniEG:
    """A UniEG on the CPU holding exactly `state_dict` (strict), float tensors as float32, in eval mode."""
    with torch.device("meta"):  # no random init of 155M parameters that are overwritten right away
        model = UniEG(config)
    check_state_dict(model.state_dict(), state_dict, what)
    tensors = {k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------------
# model folders


def save_model_dir(out_dir, model: UniEG, meta: dict, *, dtype: torch.dtype | None = None) -> Path:
    """Write `out_dir/model.safetensors` and `out_dir/model.json`; returns the folder.

    meta: the model.json keys other than format/format_version/arch/config (filled in here from the model).
    dtype: optional storage type for float tensors (e.g. torch.float16); loading always gives float32.
    The folder is written under a temporary name and renamed, so a failure leaves nothing half-written. An
    existing folder is replaced only if it is empty or holds nothing but a previous model.
    """
    out_dir = Path(out_dir)
    config = model.config
    doc = {"format": FORMAT, "format_version": FORMAT_VERSION, "arch": "unieg", **meta, "config": config.to_dict()}
    head = getattr(model, "jaw_head", None)
    if head is not None:  # its shape comes from the module; other entries (the steps it trained) from meta
        doc["jaw_head"] = {**(meta.get("jaw_head") or {}), **head.config.to_dict()}
    else:
        doc.pop("jaw_head", None)
    doc = json.loads(json.dumps(doc, default=_json_default))  # plain JSON types from here on
    _validate_meta(doc, config, "model meta")
    if out_dir.exists() and not _replaceable(out_dir):
        raise CheckpointError(f"{out_dir} exists and holds other files: choose a new or empty output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)

    from safetensors.torch import save_file

    tensors = {}
    for k, v in model.state_dict().items():
        v = v.detach().to("cpu")
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        tensors[k] = v.contiguous()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        save_file(tensors, str(tmp / MODEL_WEIGHTS), metadata={"format": "pt"})
        (tmp / MODEL_JSON).write_text(_dumps(doc) + "\n", encoding="utf-8")
        if out_dir.exists():
            old = tmp.with_suffix(".old")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def read_model_meta(path) -> dict:
    """Read and validate model.json of a model folder (or the model.json path itself) without loading weights."""
    return _read_meta(path)[1]


def load_model_dir(path, device="cpu") -> tuple[UniEG, dict]:
    """Load a model folder strictly: returns (UniEG in eval mode on `device`, the model.json dict).

    device: "cpu", "cuda", "cuda:1", "mps", a torch.device, or "auto" (CUDA, then MPS, then CPU).
    """
    folder, meta, config = _read_meta(path)
    weights = folder / MODEL_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder} has {MODEL_JSON} but no {MODEL_WEIGHTS}: copy the weights file next to it")
    from safetensors.torch import load_file

    try:
        state_dict = load_file(str(weights), device="cpu")
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise CheckpointError(f"{weights} is not a readable safetensors file ({_first_line(exc)}): "
                              "re-export or re-download the model") from None
    head_state = {k[len(JAW_HEAD_PREFIX):]: state_dict.pop(k) for k in list(state_dict)
                  if k.startswith(JAW_HEAD_PREFIX)}
    model = _build_and_load(config, state_dict, str(weights))
    if "jaw_head" in meta or head_state:
        attach_jaw_head(model, meta.get("jaw_head"), head_state, str(weights))
    return _to_device(model, device), meta


JAW_HEAD_PREFIX = "jaw_head."


def attach_jaw_head(model: UniEG, spec, state_dict: dict, what: str):
    """Give `model` the jaw-from-speech head model.json's "jaw_head" describes, holding exactly `state_dict`, as
    `model.jaw_head` (so that its weights are saved with the network's under ``jaw_head.``)."""
    from sheg.nets.jaw_head import JawHead, JawHeadConfig

    if spec is None:
        raise CheckpointError(f"{what} holds jaw_head weights but model.json has no \"jaw_head\" entry: "
                              "re-export the model")
    try:
        config = JawHeadConfig.from_dict(spec)
    except ShegError as exc:
        raise CheckpointError(f"{what}: {exc}") from None
    if config.audio_dim != model.config.audio_dim:
        raise CheckpointError(f"{what}: jaw_head.audio_dim {config.audio_dim} differs from the network's "
                              f"{model.config.audio_dim}")
    head = JawHead(config)
    check_state_dict(head.state_dict(), state_dict, f"{what} (jaw head)")
    head.load_state_dict({k: v.float() for k, v in state_dict.items()})
    model.jaw_head = head.eval()
    return head


def _read_meta(path) -> tuple[Path, dict, UniEGConfig]:
    path = Path(path)
    folder = path.parent if path.name == MODEL_JSON and path.is_file() else path
    meta_file = folder / MODEL_JSON
    if not meta_file.is_file():
        raise CheckpointError(f"no model folder at {path}: expected a folder with {MODEL_JSON} and {MODEL_WEIGHTS}")
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_file} is not valid JSON ({_first_line(exc)}): re-export the model") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{meta_file} is not a SHEG model description (format must be {FORMAT!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(f"{meta_file} has format_version {version!r}; this sheg reads up to {FORMAT_VERSION}: "
                              "update sheg")
    if meta.get("arch") != "unieg":
        raise CheckpointError(f"{meta_file} describes arch {meta.get('arch')!r}; this sheg runs 'unieg' models")
    try:
        config = UniEGConfig.from_dict(meta.get("config"))
    except ShegError as exc:
        raise CheckpointError(f"{meta_file}: {exc}") from None
    _validate_meta(meta, config, str(meta_file))
    return folder, meta, config


def _validate_meta(meta: dict, config: UniEGConfig, where: str) -> None:
    """Check the model.json keys the pipeline relies on; raise CheckpointError naming the first problem."""

    def fail(msg):
        raise CheckpointError(f"{where}: {msg}")

    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        fail(f"missing keys {', '.join(missing)}")
    if meta["layout"] not in ("show", "beat"):
        fail(f"layout must be 'show' or 'beat', got {meta['layout']!r}")
    if not _number(meta["fps"]) or meta["fps"] <= 0:
        fail(f"fps must be a positive number, got {meta['fps']!r}")
    window, overlap = meta["window"], meta["overlap"]
    if not (_integer(window) and 1 <= window <= config.pe_length):
        fail(f"window must be an integer in 1..{config.pe_length}, got {window!r}")
    if not (_integer(overlap) and 0 <= overlap < window):
        fail(f"overlap must be an integer in 0..window-1, got {overlap!r}")
    audio = meta["audio"]
    audio_keys = ("sample_rate", "hop_length", "n_fft", "n_mels", "power", "log", "hubert")
    if not isinstance(audio, dict) or any(k not in audio for k in audio_keys):
        fail(f"audio must be an object with keys {', '.join(audio_keys)}")
    if audio["n_mels"] != config.audio_dim:
        fail(f"audio.n_mels {audio['n_mels']!r} differs from the network's audio_dim {config.audio_dim}")
    if config.use_hubert != (audio["hubert"] is not None):
        fail("audio.hubert must be set exactly when the network uses HuBERT (config.use_hubert)")
    stats = meta["stats"]
    if not isinstance(stats, dict) or "mean" not in stats or "std" not in stats:
        fail("stats must be an object with 'mean' and 'std' lists")
    for key in ("mean", "std"):
        values = stats[key]
        if not (isinstance(values, list) and len(values) == config.net_dim and all(_number(v) for v in values)
                and all(math.isfinite(v) for v in values)):
            fail(f"stats.{key} must be a list of {config.net_dim} finite numbers")
    if 0 in stats["std"]:  # not "> 0": the official SHOW jaw "std" is the jaw mean, whose sign is free
        fail("stats.std must not contain zeros")
    speakers = meta["speakers"]
    if not (isinstance(speakers, list) and len(speakers) == config.style_dim and all(isinstance(s, str) for s in speakers)):
        fail(f"speakers must list {config.style_dim} names, one per style slot")
    if not (_integer(meta["default_style"]) and 0 <= meta["default_style"] < config.style_dim):
        fail(f"default_style must be an index in 0..{config.style_dim - 1}")
    if not _number(meta["guidance_scale"]) or (not config.classifier_free and meta["guidance_scale"] != 1.0):
        fail("guidance_scale must be a number (1.0 for a model without classifier-free guidance)")
    sampler = meta["sampler"]
    if not (isinstance(sampler, dict) and all(_integer(sampler.get(k)) and sampler[k] > 0
                                              for k in ("steps", "jump_length", "jump_n_sample"))):
        fail("sampler must hold positive integers steps, jump_length, jump_n_sample")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _integer(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _json_default(obj):
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _dumps(obj, indent: str = "") -> str:
    """JSON with nested objects indented and lists of numbers/strings on one line (stats stay readable)."""
    inner = indent + "  "
    if isinstance(obj, dict) and obj:
        items = [f"{inner}{json.dumps(k)}: {_dumps(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and any(isinstance(v, (dict, list)) for v in obj):
        return "[\n" + ",\n".join(inner + _dumps(v, inner) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj)


def _f32_list(values: np.ndarray) -> list[float]:
    # shortest decimals that read back as the same float32 values
    return [float(str(v)) for v in np.asarray(values, dtype=np.float32)]


def _replaceable(folder: Path) -> bool:
    return folder.is_dir() and all(p.name in (MODEL_JSON, MODEL_WEIGHTS) for p in folder.iterdir())


def _to_device(model: UniEG, device) -> UniEG:
    if device is None or device == "auto":
        if torch.cuda.is_available():
            device = "cuda"
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            device = "mps"
        else:
            device = "cpu"
    try:
        return model.to(torch.device(device))
    except (RuntimeError, AssertionError) as exc:
        raise DeviceError(f"cannot use device {device!r} ({_first_line(exc)}): choose 'cpu' or 'auto'") from None


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------------------------------------------
# official checkpoints


def _numpy_scalar_globals() -> list:
    # Official checkpoints store metrics such as best_mse as numpy float64 scalars; allow exactly the numpy
    # reconstructors of scalars and dtypes (no code objects) on top of torch's weights-only allowlist.
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray
    allowed = [multiarray.scalar, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for t in (np.float16, np.float32, np.float64, np.int32, np.int64, np.bool_):
            allowed.append(type(np.dtype(t)))
    return allowed


def _describe_file(head: bytes) -> str | None:
    """What a file is, from its first bytes; None when it could be a torch checkpoint (zip or pickle)."""
    if not head:
        return "an empty file"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if head.startswith(b"RIFF") and head[8:12] == b"WAVE":
        return "a WAV audio file"
    if head.startswith((b"OggS", b"fLaC", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")):
        return "an audio file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy file"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip archive (unpack it first)"
    if head[257:262] == b"ustar":
        return "a tar archive (unpack it: the checkpoint inside is itself named *.tar)"
    if len(head) > 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000:
        return "a safetensors file (a SHEG model folder's weights?)"
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8")
        except UnicodeDecodeError as exc:  # a multi-byte character cut at the end of the sample is still text
            text = head[: exc.start].decode("utf-8") if len(head) == 512 and exc.start >= 509 else None
        if text and all(c.isprintable() or c in "\r\n\t" for c in text):
            return "an HTML page (a failed download?)" if "<html" in text.lower() else "a text file"
    return "a binary file of an unknown kind"


def _load_official(path: Path):
    """torch.load(weights_only=True) of an official checkpoint, with a one-line CheckpointError on failure."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint file at {path}: {EXPECTED_OFFICIAL}")
    with open(path, "rb") as f:
        head = f.read(512)
    kind = _describe_file(head)
    if kind is not None:
        raise CheckpointError(f"{path.name} is {kind}, not a PyTorch checkpoint: {EXPECTED_OFFICIAL}")
    is_zip = head.startswith(b"PK\x03\x04")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            # mmap: a zip checkpoint's 600 MB of tensors stay in the page cache instead of a private copy
            return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" in message:
            found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", message)
            what = f" ({found.group(1)})" if found else ""
            raise CheckpointError(f"{path.name} holds Python objects{what} that safe loading (weights_only) refuses: "
                                  f"{EXPECTED_OFFICIAL}") from None
        raise CheckpointError(f"{path.name} is a truncated or damaged PyTorch checkpoint ({_first_line(exc)}): "
                              f"{EXPECTED_OFFICIAL}") from None
    except Exception as exc:  # torch reports damaged zips/pickles as RuntimeError, EOFError, ValueError, ...
        reason = "truncated or damaged" if is_zip or isinstance(exc, EOFError) else "damaged"
        raise CheckpointError(f"{path.name} is a {reason} PyTorch checkpoint ({_first_line(exc)}): "
                              f"{EXPECTED_OFFICIAL}") from None


def _official_state_dict(obj, name: str) -> dict:
    if not isinstance(obj, dict) or "encoder" not in obj:
        keys = ", ".join(sorted(str(k) for k in obj)[:8]) if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{name} is a PyTorch file without an 'encoder' entry (it holds: {keys}): "
                              f"{EXPECTED_OFFICIAL}")
    state_dict = obj["encoder"]
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise CheckpointError(f"{name}: 'encoder' is not a state_dict of tensors: {EXPECTED_OFFICIAL}")
    for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel / torch.compile wrappers
        if state_dict and all(k.startswith(prefix) for k in state_dict):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def read_official_checkpoint(path) -> dict:
    """The UniEG state_dict (names without 'module.') of an official DiffSHEG .tar checkpoint, on the CPU."""
    path = Path(path)
    return _official_state_dict(_load_official(path), path.name)


def _profile(profile: str) -> str:
    key = str(profile).lower()
    if key not in OFFICIAL_PROFILES:
        raise BadInput(f"unknown profile {profile!r}: use 'show' (TalkSHOW, SMPL-X) or 'beat' (BEAT, BVH + ARKit)")
    return key


def detect_profile(state_dict: dict, name: str) -> str:
    """'show' or 'beat' from the speaker count and the classifier-free null embedding of an official state_dict."""
    pid = state_dict.get("encoder_exp.pid_embed.0.weight")
    found = (pid.shape[1] if pid is not None and pid.dim() == 2 else None, "encoder_exp.null_cond_emb" in state_dict)
    for profile, spec in OFFICIAL_PROFILES.items():
        config = spec["config"]()
        if found == (config.style_dim, config.classifier_free):
            return profile
    if found[0] is None:
        raise CheckpointError(f"{name} has no encoder_exp.pid_embed.0.weight: not a DiffSHEG UniEG checkpoint "
                              f"({EXPECTED_OFFICIAL})")
    raise CheckpointError(f"{name} has {found[0]} style slots and {'a' if found[1] else 'no'} classifier-free null "
                          "embedding: it matches neither official checkpoint (SHOW: 4 with, BEAT: 30 without)")


def _check_profile(state_dict: dict, profile: str, name: str) -> None:
    """Say clearly when a checkpoint is the other official model (speaker count and CFG embedding differ)."""
    pid = state_dict.get("encoder_exp.pid_embed.0.weight")
    if pid is None or pid.dim() != 2:
        return  # the strict check names what is missing
    found = (pid.shape[1], "encoder_exp.null_cond_emb" in state_dict)
    want = OFFICIAL_PROFILES[profile]["config"]()
    if found == (want.style_dim, want.classifier_free):
        return
    matches = [p for p, spec in OFFICIAL_PROFILES.items()
               if (spec["config"]().style_dim, spec["config"]().classifier_free) == found]
    hint = (f"it looks like the official {matches[0].upper()} checkpoint: import it with profile '{matches[0]}'"
            if matches else "it matches neither official checkpoint")
    raise CheckpointError(
        f"{name} has {found[0]} style slots and {'a' if found[1] else 'no'} classifier-free null embedding, but "
        f"profile '{profile}' expects {want.style_dim} slots {'with' if want.classifier_free else 'without'} one: "
        f"{hint}"
    )


# ----------------------------------------------------------------------------------------------------------------
# normalization statistics

# TalkSHOW 165-d pose = [jaw 0:3, leye 3:6, reye 6:9, global_orient 9:12, body 12:75 (SMPL-X joints 1..21), hands
# 75:165]. DiffSHEG keeps spine1 (joint 3), spine2 (6), spine3 (9), joints 12..21 and both hands.
_SHOW_GESTURE_INDEX = np.concatenate([
    np.arange(18, 21), np.arange(27, 30), np.arange(36, 39), np.arange(45, 75), np.arange(75, 165)
])


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, scalars and plain containers only (the SHOW stats .npy is a pickled dict)."""

    def find_class(self, module, name):
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            try:
                from numpy._core import multiarray
            except ImportError:
                from numpy.core import multiarray
            return getattr(multiarray, name)
        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _load_pickled_npy(path: Path):
    # Same result as np.load(path, allow_pickle=True).item() for the stats file, without running arbitrary pickles.
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = reader(f)
        if not dtype.hasobject:
            return np.fromfile(f, dtype=dtype).reshape(shape)
        return _NumpyOnlyUnpickler(f).load()


def _find(folder: Path, name: str, subfolders) -> Path | None:
    for sub in subfolders:
        candidate = folder / sub / name
        if candidate.is_file():
            return candidate
    return None


def _vector(values, length: int, what: str, source: Path) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (length,):
        raise BadInput(f"{source}: {what} has shape {arr.shape}, expected ({length},): not DiffSHEG's statistics")
    if not np.all(np.isfinite(arr)):
        raise BadInput(f"{source}: {what} holds non-finite values")
    return arr


_ARCHIVE_STATS = {"show": ("talkshow_mean_std.npy",),
                  "beat": ("axis_angle_mean.npy", "axis_angle_std.npy", "json_mean.npy", "json_std.npy")}


def _extract_stats(archive: Path, profile: str, folder: Path) -> Path:
    """Copy the statistics files of `profile` out of DiffSHEG's assets/data.tar.gz (read as data: regular files
    with known names only, written flat into `folder`); returns `folder`. BEAT's come from its train split."""
    wanted = _ARCHIVE_STATS[profile]
    try:
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if m.isfile() and os.path.basename(m.name) in wanted]
            members.sort(key=lambda m: "/train/" not in m.name)  # the train split first
            for name in wanted:
                member = next((m for m in members if os.path.basename(m.name) == name), None)
                if member is None:
                    raise BadInput(f"{archive.name} holds no {name}: expected DiffSHEG's assets/data.tar.gz")
                (folder / name).write_bytes(tar.extractfile(member).read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BadInput(f"{archive.name} is a damaged archive ({_first_line(exc)}): download DiffSHEG's "
                       "assets/data.tar.gz again") from None
    return folder


def official_stats(profile: str, stats_path) -> tuple[np.ndarray, np.ndarray]:
    """DiffSHEG's normalization statistics as float32 (mean, std) of the network vector (SHOW 232, BEAT 192).

    SHOW: `talkshow_mean_std.npy` (or a folder holding it, also under SHOW/): a pickled dict with pose_mean/pose_std
    (165, TalkSHOW order) and expression_mean/expression_std (100).
    BEAT: a folder (or one of its files) with axis_angle_mean/std.npy (141) and json_mean/std.npy (51), also found
    under BEAT/ or facial52/ as in the official cache layout.
    Either may also be DiffSHEG's assets/data.tar.gz itself.
    """
    profile = _profile(profile)
    path = Path(stats_path)
    if not path.exists():
        raise BadInput(f"no statistics at {path}: pass DiffSHEG's stats (from its assets/data.tar.gz)")
    if path.is_file() and path.suffix != ".npy" and tarfile.is_tarfile(path):
        with tempfile.TemporaryDirectory(prefix="sheg-stats-") as tmp:
            return official_stats(profile, _extract_stats(path, profile, Path(tmp)))
    if profile == "show":
        file = path if path.is_file() else _find(path, "talkshow_mean_std.npy", (".", "SHOW", "data/SHOW"))
        if file is None:
            raise BadInput(f"no talkshow_mean_std.npy in {path}: pass data/SHOW/talkshow_mean_std.npy from DiffSHEG's "
                           "assets/data.tar.gz")
        try:
            stats = _load_pickled_npy(file)
        except (ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
            raise BadInput(f"{file} is not a readable .npy file ({_first_line(exc)}): expected talkshow_mean_std.npy")
        stats = stats.item() if isinstance(stats, np.ndarray) and stats.dtype.hasobject and stats.shape == () else stats
        keys = ("pose_mean", "pose_std", "expression_mean", "expression_std")
        if not isinstance(stats, dict) or any(k not in stats for k in keys):
            raise BadInput(f"{file} is not talkshow_mean_std.npy: expected a dict with {', '.join(keys)}")
        pose_mean = _vector(stats["pose_mean"], 165, "pose_mean", file)
        pose_std = _vector(stats["pose_std"], 165, "pose_std", file)
        expr_mean = _vector(stats["expression_mean"], 100, "expression_mean", file)
        expr_std = _vector(stats["expression_std"], 100, "expression_std", file)
        mean = np.concatenate([pose_mean[_SHOW_GESTURE_INDEX], pose_mean[0:3], expr_mean])
        # Official quirk the checkpoint was trained with (datasets/show.py): the jaw "std" is the jaw MEAN.
        std = np.concatenate([pose_std[_SHOW_GESTURE_INDEX], pose_mean[0:3], expr_std])
    else:
        folder = path.parent if path.is_file() else path
        found = {}
        for stem, sub in (("axis_angle_mean", (".", "BEAT")), ("axis_angle_std", (".", "BEAT")),
                          ("json_mean", (".", "facial52", "BEAT", "BEAT/facial52")),
                          ("json_std", (".", "facial52", "BEAT", "BEAT/facial52"))):
            file = _find(folder, stem + ".npy", sub)
            if file is None:
                raise BadInput(f"no {stem}.npy in {folder}: pass the folder holding DiffSHEG's BEAT statistics "
                               "(axis_angle_mean/std.npy, json_mean/std.npy)")
            try:
                found[stem] = (np.load(file, allow_pickle=False), file)
            except (ValueError, OSError) as exc:
                raise BadInput(f"{file} is not a readable .npy file ({_first_line(exc)})") from None
        parts = {stem: _vector(arr, 141 if stem.startswith("axis") else 51, stem, file)
                 for stem, (arr, file) in found.items()}
        mean = np.concatenate([parts["axis_angle_mean"], parts["json_mean"]])
        std = np.concatenate([parts["axis_angle_std"], parts["json_std"]])
    # the SHOW jaw slots hold means (quirk above): only their sign is free; a zero would divide by zero
    positive = np.ones(len(std), bool)
    if profile == "show":
        positive[129:132] = False
    if np.any(std[positive] <= 0) or np.any(std == 0):
        raise BadInput(f"{path}: a standard deviation is zero or negative: not DiffSHEG's statistics")
    return mean.astype(np.float32), std.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# import


def import_diffsheg(ckpt_path, profile: str | None, stats_path, out_dir, *, name: str | None = None,
                    progress=None) -> Path:
    """Turn an official DiffSHEG checkpoint + its statistics into a SHEG model folder; returns the folder.

    profile: "show" (ckpt_e2599.tar, SMPL-X, 30 fps) or "beat" (fgd_best.tar, BEAT skeleton + ARKit, 15 fps), or
    None to detect it from the checkpoint's keys and shapes. The weights must match the official network exactly
    (no silent partial loading). progress(stage, fraction) is told of each step.
    """
    report = progress or (lambda stage, fraction: None)
    ckpt_path = Path(ckpt_path)
    if profile is not None:
        profile = _profile(profile)
        official_stats(profile, stats_path)  # cheap: fail on bad stats before reading 600 MB
    report("reading the checkpoint", 0.05)
    checkpoint = _load_official(ckpt_path)
    state_dict = _official_state_dict(checkpoint, ckpt_path.name)
    if profile is None:
        profile = detect_profile(state_dict, ckpt_path.name)
    _check_profile(state_dict, profile, ckpt_path.name)
    report("reading the statistics", 0.4)
    mean, std = official_stats(profile, stats_path)
    spec = OFFICIAL_PROFILES[profile]
    report("checking the weights", 0.5)
    model = _build_and_load(spec["config"](), state_dict, ckpt_path.name)
    epoch = checkpoint.get("ep")
    meta = {
        "name": name or f"DiffSHEG {profile.upper()} ({ckpt_path.stem})",
        "layout": profile,
        "fps": spec["fps"],
        "window": spec["window"],
        "overlap": spec["overlap"],
        "audio": {"sample_rate": 18000, "hop_length": spec["hop_length"], "n_fft": 2048, "n_mels": 128,
                  "power": 2.0, "log": False, "hubert": dict(HUBERT)},
        "stats": {"mean": _f32_list(mean), "std": _f32_list(std)},
        "speakers": list(spec["speakers"]),
        "default_style": spec["default_style"],
        "guidance_scale": spec["guidance_scale"],
        "sampler": {"steps": 25, "jump_length": 3, "jump_n_sample": spec["jump_n_sample"]},
        "source": {"file": ckpt_path.name, "sha256": sha256_of(str(ckpt_path)),
                   "epoch": int(epoch) if isinstance(epoch, (int, np.integer)) else None},
        "license": LICENSE,
    }
    report("writing the model folder", 0.7)
    return save_model_dir(out_dir, model, meta)
