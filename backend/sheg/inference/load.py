"""`load_model`: a model folder or embedded model name -> a loaded model of its family (UniEG or DiffGesture)."""

from __future__ import annotations

import json
import os

from sheg.errors import BadInput
from sheg.inference.base import resolve_device, resolve_model_path
from sheg.inference.diffgesture_model import load_diffgesture_model
from sheg.inference.unieg_model import Model
from sheg.io.checkpoint import load_model_dir


def _model_arch(path: str) -> str | None:
    """The `arch` named in a model folder's model.json (None when unreadable: the loader then reports why)."""
    meta_file = path if str(path).endswith(".json") else os.path.join(path, "model.json")
    try:
        with open(meta_file, encoding="utf-8") as f:
            return json.load(f).get("arch")
    except (OSError, ValueError, AttributeError):
        return None


def load_model(path: str | None = None, device: str = "auto", hubert: str | None = None,
               fps_mode: str | None = None):
    """Load a model folder (model.json + model.safetensors); None loads the embedded default model, a bare name an
    embedded model (`embedded_models()`). fps_mode ("native" | "official-15", see unieg_model.FPS_MODES) overrides
    the model card's.

    Returns a `Model` (UniEG) or a `sheg.inference.diffgesture_model.DiffGestureModel`, both with the same `generate` interface."""
    path = resolve_model_path(path)
    dev = resolve_device(device)
    if _model_arch(path) == "diffgesture":
        if fps_mode not in (None, "native"):
            raise BadInput(f"fps mode {fps_mode} is for DiffSHEG SHOW models, not DiffGesture ones")
        return load_diffgesture_model(path, dev)
    net, meta = load_model_dir(path, dev)
    return Model(net, meta, dev, hubert=hubert, fps_mode=fps_mode)
