"""Read pickled PyTorch checkpoints that hold foreign Python objects, without running any code from the file.

Official DiffGesture checkpoints are `torch.save` dicts with an argparse Namespace ('args'), the project's
`model.vocab.Vocab` ('lang_model', with fastText vectors as a numpy array) and a state_dict. `torch.load(...,
weights_only=True)` refuses them, and full unpickling would import and run whatever the file names.

`safe_torch_load(path)` first tries `weights_only=True`; if torch refuses a global, it loads again through
`RestrictedUnpickler`, whose `find_class` is the only way a pickle can reach a callable or class:
- real objects only for an allowlist: torch's tensor/parameter rebuild functions (storages are resolved by torch's
  own loader before find_class is asked), torch dtypes and torch.device, collections.OrderedDict, numpy array /
  scalar / dtype reconstruction (array subtype must be ndarray), `_codecs.encode` of a str to latin-1 bytes, and a
  few inert builtins (set, frozenset, complex, slice, range, bytearray);
- every other name from a module outside the Python standard library and outside torch/numpy (the project's own
  classes, `model.vocab.Vocab`, `configargparse.*`, ...) and argparse.Namespace / pathlib paths become an inert
  `Placeholder` subclass created on the spot: the module is never imported, constructor arguments and pickled state
  are kept as plain data (`placeholder_state(obj)`), attribute reads fall back to that state;
- anything else (os.system, builtins.eval, subprocess, importlib, torch.load, numpy.load, ...) raises
  `UnsafePickle`: a checkpoint has no reason to name them, so the file is refused rather than neutered.
Pickle can only call what find_class returned (REDUCE / NEWOBJ / BUILD act on those objects), so no code from the
file runs. What remains trusted is torch's zip/storage reader and numpy's ndarray.__setstate__, the same code
`weights_only=True` relies on.
"""

from __future__ import annotations

import codecs
import collections
import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch

from sheg.errors import CheckpointError

__all__ = ["Placeholder", "UnsafePickle", "RestrictedUnpickler", "restricted_loads", "safe_torch_load",
           "placeholder_state", "to_plain"]


class UnsafePickle(pickle.UnpicklingError):
    """The pickle names a global that could run code; nothing was executed."""


class Placeholder:
    """An inert stand-in for an object of a class we do not import. Keeps what the pickle gave it as plain data."""

    _pickled_module = ""
    _pickled_name = ""

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        object.__setattr__(obj, "_pickle_args", args)
        object.__setattr__(obj, "_pickle_kwargs", kwargs)
        object.__setattr__(obj, "_pickle_state", {})
        return obj

    def __init__(self, *args, **kwargs):  # REDUCE calls the class: keep the arguments, do nothing else
        pass

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2 and all(s is None or isinstance(s, dict) for s in state):
            merged = dict(state[0] or {})
            merged.update(state[1] or {})  # (__dict__, __slots__) state
            state = merged
        object.__setattr__(self, "_pickle_state", state if isinstance(state, dict) else {"__state__": state})

    # dict-like helpers that pickle may use for subclasses of list/dict (APPENDS / SETITEMS)
    def append(self, value):
        self._pickle_state.setdefault("__items__", []).append(value)

    def extend(self, values):
        self._pickle_state.setdefault("__items__", []).extend(values)

    def __setitem__(self, key, value):
        self._pickle_state.setdefault("__mapping__", {})[key] = value

    def __getattr__(self, name):
        state = object.__getattribute__(self, "_pickle_state")
        if isinstance(state, dict) and name in state:
            return state[name]
        raise AttributeError(f"{type(self).__name__} placeholder has no attribute {name!r}")

    def __repr__(self):
        return f"<placeholder {self._pickled_module}.{self._pickled_name}>"


def placeholder_state(obj) -> dict:
    """The plain state a Placeholder kept: {'module', 'name', 'args', 'kwargs', 'state'}."""
    if not isinstance(obj, Placeholder):
        raise TypeError(f"not a placeholder: {type(obj).__name__}")
    return {"module": obj._pickled_module, "name": obj._pickled_name, "args": obj._pickle_args,
            "kwargs": obj._pickle_kwargs, "state": obj._pickle_state}


def to_plain(obj):
    """Placeholders -> their state dicts, recursively through dicts, lists and tuples (for JSON-ish inspection)."""
    if isinstance(obj, Placeholder):
        return {k: to_plain(v) for k, v in obj._pickle_state.items()} if isinstance(obj._pickle_state, dict) else {}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return obj


# ----------------------------------------------------------------------------------------------------------------
# the allowlist


def _latin1_encode(text, encoding="latin1"):
    # numpy arrays pickled at protocol 2 carry their bytes as _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") != "latin1":
        raise UnsafePickle("refusing _codecs.encode other than str -> latin-1 bytes")
    return codecs.encode(text, "latin1")


def _numpy_multiarray():
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:
        from numpy.core import multiarray
    return multiarray


def _reconstruct_array(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafePickle(f"refusing to rebuild a numpy array of type {getattr(subtype, '__name__', subtype)}")
    return _numpy_multiarray()._reconstruct(np.ndarray, shape, dtype)


def _allowed() -> dict:
    import torch._utils as tu

    table = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor"): tu._rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): tu._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): tu._rebuild_parameter,
        ("torch", "device"): torch.device,
        ("_codecs", "encode"): _latin1_encode,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "complex"): complex,
        ("builtins", "slice"): slice, ("builtins", "range"): range, ("builtins", "bytearray"): bytearray,
    }
    if hasattr(tu, "_rebuild_parameter_with_state"):
        table[("torch._utils", "_rebuild_parameter_with_state")] = tu._rebuild_parameter_with_state
    multiarray = _numpy_multiarray()
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = _reconstruct_array
        table[(module, "scalar")] = multiarray.scalar
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes through these classes
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith("DType") and name != "ObjectDType":
                table[("numpy.dtypes", name)] = getattr(dtypes, name)
    for name in dir(torch):
        if isinstance(getattr(torch, name, None), torch.dtype):
            table[("torch", name)] = getattr(torch, name)
    return table


_ALLOWED: dict | None = None
# Standard-library names that legitimately appear in training checkpoints; kept as inert placeholders.
_STDLIB_PLACEHOLDERS = {("argparse", "Namespace"), ("pathlib", "PosixPath"), ("pathlib", "WindowsPath"),
                        ("pathlib", "Path"), ("pathlib", "PurePosixPath"), ("pathlib", "PureWindowsPath")}
_TRUSTED_PACKAGES = {"torch", "numpy", "safetensors"}  # only their allowlisted names; the rest is refused
_STDLIB = set(getattr(sys, "stdlib_module_names", ())) | {"__builtin__", "copy_reg", "__main__"}
_PLACEHOLDER_TYPES: dict[tuple[str, str], type] = {}


def _placeholder_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _PLACEHOLDER_TYPES:
        safe_name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:80] or "Unknown"
        _PLACEHOLDER_TYPES[key] = type(safe_name, (Placeholder,),
                                       {"_pickled_module": module, "_pickled_name": name, "__module__": __name__})
    return _PLACEHOLDER_TYPES[key]


def resolve_global(module: str, name: str):
    """What a restricted unpickle gets for `module.name`: an allowlisted object, a placeholder class or UnsafePickle."""
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _allowed()
    module, name = str(module), str(name)
    if (module, name) in _ALLOWED:
        return _ALLOWED[(module, name)]
    if (module, name) in _STDLIB_PLACEHOLDERS:
        return _placeholder_class(module, name)
    top = module.split(".", 1)[0]
    dotted_ok = all(part.isidentifier() for part in module.split(".") + name.split("."))
    if top in _STDLIB or top in _TRUSTED_PACKAGES or top.startswith("_") or not dotted_ok:
        raise UnsafePickle(f"refusing to load {module}.{name}: the checkpoint names a function that could run code")
    return _placeholder_class(module, name)


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler whose globals come only from `resolve_global` (see the module docstring)."""

    def find_class(self, module, name):
        return resolve_global(module, name)


class DataUnpickler(RestrictedUnpickler):
    """For data files (motion fits), not checkpoints: torch objects inside (logged losses, say) are not needed, so
    every torch name becomes an inert placeholder too, torch's byte-level loaders included."""

    def find_class(self, module, name):
        if str(module).split(".", 1)[0] == "torch":
            return _placeholder_class(str(module), str(name))
        return resolve_global(module, name)


def restricted_loads(data: bytes):
    """Unpickle bytes with RestrictedUnpickler (no persistent ids: plain pickles only)."""
    import io

    return RestrictedUnpickler(io.BytesIO(data)).load()


def _pickle_module():
    """A module object torch.load accepts as pickle_module; its Unpickler is the restricted one."""
    module = types.ModuleType("sheg_restricted_pickle")
    module.Unpickler = RestrictedUnpickler
    module.UnpicklingError = pickle.UnpicklingError

    def load(file, **kwargs):
        return RestrictedUnpickler(file, **kwargs).load()

    module.load = load
    return module


def safe_torch_load(path, what: str = "checkpoint"):
    """torch.load a checkpoint on the CPU without running code from it (module docstring).

    Raises CheckpointError with one line when the file is missing, damaged, or names a code-running global.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no {what} file at {path}: check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" not in str(exc):
            raise CheckpointError(f"{path.name} is a damaged PyTorch {what} ({_first_line(exc)})") from None
    except Exception as exc:  # torch reports damaged zips/pickles as RuntimeError, EOFError, ValueError, ...
        raise CheckpointError(f"{path.name} is not a readable PyTorch {what} ({_first_line(exc)})") from None
    previous = os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)  # it would override pickle_module
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_pickle_module())
    except UnsafePickle as exc:
        raise CheckpointError(f"{path.name}: {exc}; it was not loaded (only use checkpoints from a source you "
                              f"trust)") from None
    except Exception as exc:
        raise CheckpointError(f"{path.name} could not be read safely ({_first_line(exc)})") from None
    finally:
        if previous is not None:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = previous


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
