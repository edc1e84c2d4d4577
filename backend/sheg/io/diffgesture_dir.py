"""DiffGesture model folders (model.json + model.safetensors, strict loading) and the official checkpoint import
(read by the restricted unpickler: no code from the file runs)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from sheg.errors import BadInput, CheckpointError
from sheg.motion.ted import get_ted_layout
from sheg.nets.diffgesture import DiffGestureConfig, DiffGestureNet


ARCH = "diffgesture"
FORMAT, FORMAT_VERSION = "sheg-model", 1
MODEL_JSON, MODEL_WEIGHTS = "model.json", "model.safetensors"
OFFICIAL_GUIDANCE = 1.15  # hard-coded in the official DiffusionNet.sample
LICENSE = "DiffGesture code GPL-3.0; weights trained on TED Gesture / TED Expressive (research use)"






def diffgesture_meta(config: DiffGestureConfig, layout: str, mean_dir_vec, *, name: str, source=None,
                     license: str = LICENSE) -> dict:
    """A complete model.json dict with SHEG's defaults for a DiffGesture network."""
    layout = get_ted_layout(layout).name
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "arch": ARCH, "name": name, "layout": layout,
        "fps": config.fps, "window": config.n_poses, "overlap": config.n_pre_poses,
        "audio": {"sample_rate": config.sample_rate, "raw": True},
        "stats": {"mean_dir_vec": [float(v) for v in np.asarray(mean_dir_vec, dtype=np.float32).reshape(-1)]},
        "speakers": ["default"], "default_style": 0,
        "guidance_scale": OFFICIAL_GUIDANCE if config.classifier_free else 1.0,
        "sampler": {"steps": config.diffusion_steps, "eta": 0.0, "stabilizer": "smooth", "stabilizer_t0": 25,
                    "long_mode": "chain", "foppas_steps": 25, "jump_length": 3, "jump_n_sample": 2},
        "spine": "chain", "source": source or {}, "license": license, "config": config.to_dict(),
    }


def _validate(meta: dict, where: str) -> DiffGestureConfig:
    if meta.get("format") != FORMAT or meta.get("arch") != ARCH:
        raise CheckpointError(f"{where} is not a DiffGesture model folder (format {meta.get('format')!r}, arch "
                              f"{meta.get('arch')!r})")
    try:
        config = DiffGestureConfig.from_dict(meta.get("config"))
        layout = get_ted_layout(meta.get("layout"))
    except BadInput as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    mean = (meta.get("stats") or {}).get("mean_dir_vec")
    if layout.dim != config.pose_dim or not isinstance(mean, list) or len(mean) != config.pose_dim:
        raise CheckpointError(f"{where}: layout {layout.name} ({layout.dim} values), config.pose_dim "
                              f"{config.pose_dim} and stats.mean_dir_vec ({len(mean or [])}) must agree")
    return config


def save_diffgesture_dir(out_dir, net: DiffGestureNet, meta: dict) -> Path:
    """Write model.safetensors + model.json (meta from diffgesture_meta, its config replaced by the network's).

    Written under a temporary name and renamed; an existing folder is replaced only if it holds nothing but a model.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    meta = json.loads(json.dumps({**meta, "config": net.config.to_dict()}))
    _validate(meta, str(out_dir))
    if out_dir.exists() and not (out_dir.is_dir() and all(p.name in (MODEL_JSON, MODEL_WEIGHTS)
                                                          for p in out_dir.iterdir())):
        raise CheckpointError(f"{out_dir} exists and holds other files: choose a new or empty output folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        save_file(tensors, str(tmp / MODEL_WEIGHTS), metadata={"format": "pt"})
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _load_strict(net: DiffGestureNet, state_dict: dict, what: str) -> DiffGestureNet:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or unexpected or wrong:
        parts = [f"{len(items)} {label}: {', '.join(items[:4])}" for label, items in
                 (("missing", missing), ("unexpected", unexpected), ("wrong-shaped (file vs network)", wrong))
                 if items]
        raise CheckpointError(f"{what} does not match the DiffGesture network: {'; '.join(parts)}")
    net.load_state_dict({k: (v.float() if v.is_floating_point() else v) for k, v in state_dict.items()}, strict=True)
    return net.eval()


def load_diffgesture_dir(path, device="cpu") -> tuple[DiffGestureNet, dict]:
    """(network in eval mode on `device`, model.json dict) of a DiffGesture model folder, loaded strictly."""
    from safetensors.torch import load_file

    folder = Path(path)
    if folder.name == MODEL_JSON:
        folder = folder.parent
    if not (folder / MODEL_JSON).is_file() or not (folder / MODEL_WEIGHTS).is_file():
        raise CheckpointError(f"{folder} is not a model folder: expected {MODEL_JSON} and {MODEL_WEIGHTS}")
    try:
        meta = json.loads((folder / MODEL_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / MODEL_JSON} is not valid JSON ({exc})") from None
    config = _validate(meta, str(folder))
    net = _load_strict(DiffGestureNet(config), load_file(str(folder / MODEL_WEIGHTS)), str(folder / MODEL_WEIGHTS))
    return net.to(torch.device(device)), meta


def import_diffgesture(ckpt, out_dir, *, name: str | None = None) -> Path:
    """Convert an official checkpoint (pose_diffusion_checkpoint_499.bin) into a model folder, without running code.

    Sizes, mean_dir_vec and classifier-free settings come from the pickled `args`; the layout from pose_dim
    (27 -> ted10, 126 -> ted43). The state_dict must load strictly.
    """
    from sheg.io.safe_unpickle import safe_torch_load, to_plain

    ckpt = Path(ckpt)
    obj = safe_torch_load(ckpt, "DiffGesture checkpoint")
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(f"{ckpt.name} has no 'state_dict': expected an official DiffGesture checkpoint such "
                              f"as pose_diffusion_checkpoint_499.bin")
    args = to_plain(obj.get("args")) or {}
    state_dict = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj["state_dict"].items()}
    try:
        pose_dim = int(args.get("pose_dim") or obj.get("pose_dim")
                       or state_dict["diffusion_net.net.out.2.weight"].shape[0])
        layout = get_ted_layout(pose_dim)
    except (KeyError, BadInput):
        raise CheckpointError(f"{ckpt.name}: pose_dim must be 27 (TED Gesture) or 126 (TED Expressive) for an "
                              f"official DiffGesture checkpoint") from None
    block_depth = int(args.get("block_depth") or 2 * sum(1 for k in state_dict if k.endswith(".norm1.weight")
                                                         and k.startswith("diffusion_net.net.blocks.")))
    config = DiffGestureConfig(
        pose_dim=pose_dim, n_poses=int(args.get("n_poses", 34)), n_pre_poses=int(args.get("n_pre_poses", 4)),
        hidden=int(args.get("diff_hidden_dim") or state_dict["diffusion_net.net.linear.weight"].shape[0]),
        depth=block_depth, classifier_free=bool(args.get("classifier_free", "null_cond_emb" in state_dict)),
        null_cond_prob=float(args.get("null_cond_prob") or 0.1), fps=int(args.get("motion_resampling_framerate", 15)),
        diffusion_steps=int(state_dict["diffusion_net.var_sched.betas"].shape[0] - 1)
        if "diffusion_net.var_sched.betas" in state_dict else 500)
    mean = args.get("mean_dir_vec")
    mean = np.asarray(layout.mean_dir_vec if mean is None else mean, dtype=np.float64).reshape(-1)
    net = _load_strict(DiffGestureNet(config), state_dict, ckpt.name)
    source = {"file": ckpt.name, "epoch": obj.get("epoch"), "mean_dir_vec": "args" if args.get("mean_dir_vec")
              is not None else "official yml"}
    meta = diffgesture_meta(config, layout.name, mean, name=name or f"diffgesture-{layout.name}", source=source)
    return save_diffgesture_dir(out_dir, net, meta)
