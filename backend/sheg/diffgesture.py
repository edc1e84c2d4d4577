"""DiffGesture (Zhu et al., CVPR 2023) in the SHEG engine: training loss, model folders, official import, generation.

The network lives in diffgesture_net.py (re-exported here).

Long audio (`DiffGestureModel.generate`, long_mode):
- "chain" (official): 34-frame windows at a stride of 30, each seeded with the previous window's last 4 frames;
  the overlap is cross-faded prev (4 - j)/5 + new (j + 1)/5. DDPM over all 500 steps with the Diffusion Gesture
  Stabilizer, or DDIM when fewer steps are asked for.
- "foppas": DiffSHEG's outpainting windows (sampling.foppas_sample, DDIM) with the previous window's clean tail
  also bound as the seed poses of the next window's context.
The first window's seed is the dataset mean pose (zeros after mean subtraction) unless seed_poses are given: the
official scripts seed from ground-truth poses, which arbitrary audio does not have.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .diffgesture_net import (AUDIO_FEATURE_DIM, DiffGestureConfig, DiffGestureDenoiser, DiffGestureNet, WavEncoder,
                              seed_context)
from .diffusion import NoiseSchedule, ddim_timesteps, randn
from .errors import BadInput, CheckpointError
from .sampling import count_model_calls, ddim_sample, ddpm_sample, foppas_sample, stabilizer_share
from .ted import get_ted_layout, take_arrays

__all__ = ["DiffGestureConfig", "DiffGestureNet", "WavEncoder", "DiffGestureDenoiser", "seed_context",
           "AUDIO_FEATURE_DIM", "DiffGestureTrainingForward", "diffgesture_training_loss", "window_audio",
           "make_training_windows", "diffgesture_meta", "save_diffgesture_dir", "load_diffgesture_dir",
           "load_diffgesture_model", "import_diffgesture", "DiffGestureModel", "LONG_MODES"]

ARCH = "diffgesture"
FORMAT, FORMAT_VERSION = "sheg-model", 1
MODEL_JSON, MODEL_WEIGHTS = "model.json", "model.safetensors"
OFFICIAL_GUIDANCE = 1.15  # hard-coded in the official DiffusionNet.sample
LONG_MODES = ("chain", "foppas")
LICENSE = "DiffGesture code GPL-3.0; weights trained on TED Gesture / TED Expressive (research use)"


# ----------------------------------------------------------------------------------------------------------------
# training helpers


class DiffGestureTrainingForward(nn.Module):
    """(x_t, t, seed, flag, raw audio (B, S), null_mask) -> eps: the audio encoder and the network in one forward, so
    a DistributedDataParallel wrapper sees every parameter used in one call."""

    def __init__(self, net: DiffGestureNet):
        super().__init__()
        self.net = net

    def forward(self, x_t, t, seed, flag, audio, null_mask=None):
        return self.net(x_t, t, seed, flag, self.net.encode_audio(audio), null_mask)


def diffgesture_training_loss(net: DiffGestureNet, batch: dict, schedule: NoiseSchedule,
                              generator: torch.Generator | None = None, *, t=None, noise=None, null_mask=None,
                              forward: nn.Module | None = None) -> dict:
    """The official loss: MSE between predicted and true eps over all frames and features.

    batch: "poses" (B, n_poses, P) mean-subtracted direction vectors; "audio" (B, audio_samples) raw audio.
    The first n_pre_poses frames are the seed (flag 1). t (B,), noise (B, n_poses, P) and null_mask (B,) bool are
    drawn from `generator` when not given: t uniform over 0..steps-1, the null context with probability
    null_cond_prob (pass an all-False mask for none). forward: the module to run (default DiffGestureTrainingForward(net); pass its DDP wrapper).
    Returns {"loss", "eps_mse"} (the same scalar, for logging symmetry).
    """
    poses, audio = batch["poses"], batch["audio"]
    cfg = net.config
    if schedule.num_steps != cfg.diffusion_steps:
        raise BadInput(f"the schedule has {schedule.num_steps} steps but the network {cfg.diffusion_steps}")
    b, device = poses.shape[0], poses.device
    gen_device = generator.device if generator is not None else "cpu"
    seed, flag = seed_context(poses[:, :cfg.n_pre_poses], b, cfg, device)
    if null_mask is None and cfg.classifier_free:
        null_mask = (torch.rand(b, generator=generator, device=gen_device) < cfg.null_cond_prob).to(device)
    if t is None:
        t = torch.randint(0, schedule.num_steps, (b,), generator=generator, device=gen_device).to(device)
    if noise is None:
        noise = randn(poses.shape, generator, device, poses.dtype)
    forward = forward if forward is not None else DiffGestureTrainingForward(net)
    eps = forward(schedule.q_sample(poses, t, noise), t, seed, flag, audio, null_mask)
    loss = F.mse_loss(eps, noise)
    return {"loss": loss, "eps_mse": loss.detach()}


def window_audio(audio: np.ndarray, start: int, frames: int, samples: int) -> np.ndarray:
    """The `samples`-long raw audio of a window starting at motion frame `start` of a clip of `frames` frames whose
    audio is `audio` (S,): it starts at floor(start / frames * S), mirrored past the clip's end (official cutting)."""
    a0 = math.floor(start / frames * len(audio))
    piece = audio[a0:a0 + samples]
    if len(piece) < samples:
        piece = np.pad(audio, (0, a0 + samples - len(audio)), mode="symmetric")[a0:a0 + samples]
    return piece


def make_training_windows(dir_vec, audio, mean_dir_vec, *, n_poses: int = 34, stride: int = 10, fps: int = 15,
                          sample_rate: int = 16000) -> dict:
    """Cut one clip into official training windows.

    dir_vec (K, P) or (K, B, 3): unit direction vectors at `fps`; audio (S,) raw at `sample_rate` covering the clip.
    Windows start every `stride` frames (floor((K - n_poses) / stride) + 1 of them), their audio cut by
    `window_audio`. Returns {"poses": (N, n_poses, P) float32 = dir_vec - mean_dir_vec, "audio": (N, samples)
    float32}. The official word-count and motion filters are left to the caller.
    """
    vec = np.asarray(dir_vec, dtype=np.float32)
    vec = vec.reshape(len(vec), -1)
    mean = np.asarray(mean_dir_vec, dtype=np.float32).reshape(-1)
    if mean.shape[0] != vec.shape[1]:
        raise BadInput(f"mean_dir_vec has {mean.shape[0]} values but the poses have {vec.shape[1]}")
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    samples = int(round(n_poses / fps * sample_rate))
    count = (len(vec) - n_poses) // stride + 1 if len(vec) >= n_poses else 0
    poses = np.zeros((count, n_poses, vec.shape[1]), np.float32)
    clips = np.zeros((count, samples), np.float32)
    for i in range(count):
        start = i * stride
        poses[i] = vec[start:start + n_poses] - mean
        clips[i] = window_audio(audio, start, len(vec), samples)
    return {"poses": poses, "audio": clips}


# ----------------------------------------------------------------------------------------------------------------
# model folders


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


def load_diffgesture_model(path, device="auto") -> "DiffGestureModel":
    """Load a DiffGesture model folder ready to generate; device "auto" | "cpu" | "cuda[:n]" | "mps"."""
    from .pipeline import resolve_device  # late: pipeline may import this module

    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    net, meta = load_diffgesture_dir(path, dev)
    return DiffGestureModel(net, meta, dev)


def import_diffgesture(ckpt, out_dir, *, name: str | None = None) -> Path:
    """Convert an official checkpoint (pose_diffusion_checkpoint_499.bin) into a model folder, without running code.

    Sizes, mean_dir_vec and classifier-free settings come from the pickled `args`; the layout from pose_dim
    (27 -> ted10, 126 -> ted43). The state_dict must load strictly.
    """
    from .safe_unpickle import safe_torch_load, to_plain

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


# ----------------------------------------------------------------------------------------------------------------
# generation


class DiffGestureModel:
    """A loaded DiffGesture model folder with the interface of pipeline.Model (generate, summary, fps, model_id)."""

    def __init__(self, net: DiffGestureNet, meta: dict, device):
        self.net = net.eval()
        self.meta = meta
        self.device = torch.device(device)
        self.config = net.config
        self.layout = get_ted_layout(meta["layout"])
        self.fps = float(meta.get("fps", self.config.fps))
        self.sample_rate = int((meta.get("audio") or {}).get("sample_rate", self.config.sample_rate))
        self.window = self.config.n_poses
        self.overlap = int(meta.get("overlap", self.config.n_pre_poses))
        self.schedule = NoiseSchedule(self.config.diffusion_steps, self.config.beta_start, self.config.beta_end)
        self.mean = torch.tensor(meta["stats"]["mean_dir_vec"], dtype=torch.float32, device=self.device)
        sampler = meta.get("sampler") or {}
        self.default_steps = int(sampler.get("steps", self.config.diffusion_steps))
        self.default_foppas_steps = int(sampler.get("foppas_steps", 25))
        self.eta = float(sampler.get("eta", 0.0))
        self.default_stabilizer = sampler.get("stabilizer", "smooth")
        self.stabilizer_t0 = int(sampler.get("stabilizer_t0", 25))
        self.default_long_mode = sampler.get("long_mode", "chain")
        self.jump_length = int(sampler.get("jump_length", 3))
        self.default_jumps = int(sampler.get("jump_n_sample", 2))
        self.default_guidance = float(meta.get("guidance_scale", 1.0))
        self.lowpass_hz = float(sampler["lowpass_hz"]) if sampler.get("lowpass_hz") else None
        self.spine = meta.get("spine", "chain")
        self.speakers = list(meta.get("speakers") or ["default"])
        self.default_style = 0

    @property
    def model_id(self) -> str:
        return str(self.meta.get("name") or (self.meta.get("source") or {}).get("file") or "diffgesture")

    def summary(self) -> dict:
        return {"name": self.model_id, "arch": ARCH, "layout": self.layout.name, "fps": self.fps,
                "window": self.window, "overlap": self.overlap, "speakers": self.speakers, "default_style": 0,
                "guidance_scale": self.default_guidance, "steps": self.default_steps, "hubert": False,
                "long_mode": self.default_long_mode, "stabilizer": self.default_stabilizer,
                "device": str(self.device)}

    def load_wave(self, audio) -> np.ndarray:
        """A file path or (samples, rate) -> mono float32 at the model's sample rate."""
        if isinstance(audio, (str, os.PathLike)):
            from .audio import load_audio

            return load_audio(os.fspath(audio), self.sample_rate)
        samples, rate = audio
        wave = np.asarray(samples, dtype=np.float32)
        if wave.ndim > 1:
            wave = wave.mean(axis=1)
        if int(rate) != self.sample_rate:
            import soxr

            wave = soxr.resample(wave, int(rate), self.sample_rate).astype(np.float32)
        return wave

    def frames_for(self, num_samples: int) -> int:
        return int(num_samples) * int(round(self.fps)) // self.sample_rate

    def generate(self, audio, *, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                 style: int | None = None, overlap: int | None = None, jumps: int | None = None,
                 resample: bool = True, progress: Callable[[dict], None] | None = None,
                 long_mode: str | None = None, stabilizer: str | None = "default", seed_poses=None):
        """Generate a take (pipeline.Take) for `audio` (a file path, or (samples, rate)).

        steps: chain mode runs DDPM when steps equals the training steps (500, the official sampler) and DDIM over
        that many steps otherwise; foppas mode always runs DDIM windows (default 25 steps). stabilizer: "default"
        (the model card's, "smooth"), "smooth", "hard" or None. seed_poses: optional (k <= 4, P) de-normalized
        direction vectors for the first window (default: the dataset mean pose). progress and cancel as pipeline.
        """
        from . import __version__
        from .pipeline import finish_take, lowpass

        started = time.perf_counter()
        report = progress or (lambda event: None)
        report({"stage": "features", "fraction": 0.0})
        if style not in (None, 0):
            raise BadInput("DiffGesture models have no speaker styles: leave style unset")
        wave = self.load_wave(audio)
        frames = self.frames_for(len(wave))
        if frames < 1:
            raise BadInput(f"the audio is too short: it needs at least 1/{self.fps:g} s for one motion frame")
        if seed_poses is not None:
            seed_poses = torch.as_tensor(np.asarray(seed_poses, np.float32), device=self.device) - self.mean
        mode = long_mode or self.default_long_mode
        vec = self.sample(wave, frames, seed=seed, steps=steps, guidance=guidance, overlap=overlap, jumps=jumps,
                          resample=resample, progress=report, long_mode=mode, stabilizer=stabilizer,
                          seed_poses=seed_poses)
        dir_vec = vec + self.mean.cpu().numpy()
        if self.lowpass_hz:  # the model card's zero-phase low-pass, on the direction vectors (see pipeline.lowpass)
            dir_vec = lowpass(dir_vec, self.fps, self.lowpass_hz)
        arrays = take_arrays(dir_vec, self.layout, self.spine)
        meta = {"model_id": self.model_id, "seed": int(seed), "steps": self._steps(steps, mode),
                "guidance": self.default_guidance if guidance is None else float(guidance), "style": 0,
                "sheg_version": __version__, "layout": self.layout.name, "long_mode": mode}
        return finish_take(arrays, dir_vec.astype(np.float32), self.fps, meta, audio, started, report,
                           self.lowpass_hz)

    # -- sampling -------------------------------------------------------------------------------------------------

    def _steps(self, steps, mode) -> int:
        if steps is None:
            return self.default_foppas_steps if mode == "foppas" else self.default_steps
        return int(steps)

    def _window_audio(self, wave: np.ndarray, start_frame: int) -> torch.Tensor:
        """(1, n_poses, 32) features of the window starting at `start_frame`, audio zero-padded past the end."""
        a0 = int(start_frame) * self.sample_rate // int(round(self.fps))
        piece = wave[a0:a0 + self.config.audio_samples]
        piece = np.pad(piece, (0, self.config.audio_samples - len(piece)))
        return self.net.encode_audio(torch.from_numpy(np.ascontiguousarray(piece, np.float32))[None].to(self.device))

    def sample(self, wave: np.ndarray, frames: int, *, seed: int = 0, steps=None, guidance=None, overlap=None,
               jumps=None, resample: bool = True, progress=None, long_mode: str = "chain",
               stabilizer="default", seed_poses=None) -> np.ndarray:
        """Mean-subtracted direction vectors (frames, P) float32 for raw audio `wave` (S,)."""
        cfg = self.config
        if long_mode not in LONG_MODES:
            raise BadInput(f"unknown long_mode {long_mode!r}: use 'chain' (official seed-pose chaining) or 'foppas'")
        steps = self._steps(steps, long_mode)
        if not 1 <= steps <= cfg.diffusion_steps:
            raise BadInput(f"steps must be between 1 and {cfg.diffusion_steps}, got {steps}")
        guidance = self.default_guidance if guidance is None else float(guidance)
        if guidance != 1.0 and not cfg.classifier_free:
            raise BadInput(f"this model was trained without classifier-free guidance: use guidance 1 (got {guidance})")
        stabilizer = self.default_stabilizer if stabilizer == "default" else stabilizer
        stabilizer = None if stabilizer in ("none", "off", "") else stabilizer
        stabilizer_share(0, self.stabilizer_t0, stabilizer)  # validates
        report = progress or (lambda event: None)
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        first_seed = seed_poses if seed_poses is not None else torch.zeros(1, cfg.n_pre_poses, cfg.pose_dim,
                                                                            device=self.device)
        with torch.inference_mode():
            if long_mode == "chain":
                if overlap not in (None, cfg.n_pre_poses):
                    raise BadInput(f"chain mode overlaps by the model's {cfg.n_pre_poses} seed frames; leave overlap "
                                   f"unset or use long_mode 'foppas'")
                x = self._chain(wave, frames, steps, guidance, stabilizer, generator, first_seed, report)
            else:
                overlap = self.overlap if overlap is None else int(overlap)
                jumps = self.default_jumps if jumps is None else int(jumps)
                if not 0 <= overlap < self.window or jumps < 1:
                    raise BadInput(f"overlap must be 0..{self.window - 1} frames and jumps >= 1, "
                                   f"got {overlap}, {jumps}")
                x = self._foppas(wave, frames, steps, guidance, overlap, jumps, resample, generator, first_seed,
                                 stabilizer, report)
        return x[:frames].float().cpu().numpy()

    def _denoiser(self, wave, start, seed_poses, guidance) -> DiffGestureDenoiser:
        seed_ctx, flag = seed_context(seed_poses, 1, self.config, self.device)
        return DiffGestureDenoiser(self.net, seed_ctx, flag, self._window_audio(wave, start), guidance)

    def _chain(self, wave, frames, steps, guidance, stabilizer, generator, first_seed, report) -> torch.Tensor:
        cfg = self.config
        n_seed, window = cfg.n_pre_poses, cfg.n_poses
        stride = window - n_seed
        windows = 1 if frames <= window else math.ceil((frames - window) / stride) + 1
        timesteps = None if steps == cfg.diffusion_steps else ddim_timesteps(cfg.diffusion_steps, steps)
        parts: list[torch.Tensor] = []
        seed_poses = first_seed
        for k in range(windows):
            def on_step(info, k=k):
                report({"stage": "sampling", "fraction": (k * steps + info["i"] + 1) / (windows * steps),
                        "window": k + 1, "windows": windows, "step": info["i"] + 1, "steps": steps})

            denoiser = self._denoiser(wave, k * stride, seed_poses, guidance)
            x_T = randn((1, window, cfg.pose_dim), generator, self.device)
            if timesteps is None:
                x = ddpm_sample(denoiser, x_T, self.schedule, generator, on_step, stabilizer, self.stabilizer_t0)
            else:
                x = ddim_sample(denoiser, x_T, self.schedule, timesteps, self.eta, generator, on_step,
                                stabilizer, self.stabilizer_t0)
            new = x[0].clone()
            if parts:  # official cross-fade: drop the previous tail, blend it into the new head
                tail = parts[-1][-n_seed:]
                parts[-1] = parts[-1][:-n_seed]
                w = torch.arange(1, n_seed + 1, device=new.device, dtype=new.dtype).view(-1, 1) / (n_seed + 1)
                new[:n_seed] = tail * (1.0 - w) + new[:n_seed] * w
            parts.append(new)
            seed_poses = x[:, -n_seed:]  # the raw (not cross-faded) tail seeds the next window, as upstream
        return torch.cat(parts, dim=0)

    def _foppas(self, wave, frames, steps, guidance, overlap, jumps, resample, generator, first_seed, stabilizer,
                report) -> torch.Tensor:
        cfg = self.config
        window, stride = cfg.n_poses, cfg.n_poses - overlap
        # the network only takes full windows: pad the length so every FOPPAS window is full, then trim
        padded = window if frames <= window else overlap + math.ceil((frames - overlap) / stride) * stride
        total = count_model_calls(padded, window, overlap, steps, self.jump_length, jumps, resample)

        def make_denoiser(start, stop, known):
            seeds = first_seed if known is None else known[:, :min(overlap, cfg.n_pre_poses)]
            return self._denoiser(wave, start, seeds if seeds.shape[1] else None, guidance)

        def on_step(info):
            report({"stage": "sampling", "fraction": min(1.0, info["calls"] / max(1, total)),
                    "window": info["window"] + 1, "windows": info["windows"], "step": info["i"] + 1,
                    "steps": info["steps"]})

        x = foppas_sample(make_denoiser, padded, cfg.pose_dim, self.schedule, window=window, overlap=overlap,
                          steps=steps, jump_length=self.jump_length, jump_n_sample=jumps, resample=resample,
                          generator=generator, callback=on_step, device=self.device, known_to_denoiser=True,
                          eta=self.eta, stabilizer=stabilizer, stabilizer_t0=self.stabilizer_t0)
        return x[0]
