"""DiffGesture (Zhu et al., CVPR 2023) in the SHEG engine: generation from a model folder.

The network lives in sheg.nets.diffgesture, the model folders in sheg.io.diffgesture_dir.

Long audio (`DiffGestureModel.generate`, long_mode):
- "chain" (official): 34-frame windows at a stride of 30, each seeded with the previous window's last 4 frames;
  the overlap is cross-faded prev (4 - j)/5 + new (j + 1)/5. DDPM over all 500 steps with the Diffusion Gesture
  Stabilizer, or DDIM when fewer steps are asked for.
- "foppas": DiffSHEG's outpainting windows (sheg.diffusion.samplers.foppas_sample, DDIM) with the previous window's clean tail
  also bound as the seed poses of the next window's context.
The first window's seed is the dataset mean pose (zeros after mean subtraction) unless seed_poses are given: the
official scripts seed from ground-truth poses, which arbitrary audio does not have.
"""

from __future__ import annotations

import math
import os
import time
from typing import Callable

import numpy as np
import torch

from sheg.diffusion.gaussian import NoiseSchedule, ddim_timesteps, randn
from sheg.diffusion.samplers import count_model_calls, ddim_sample, ddpm_sample, foppas_sample, stabilizer_share
from sheg.data.audio import load_audio
from sheg.errors import BadInput
from sheg.inference.base import checked_guidance, checked_seed, finish_take, lowpass, resolve_device
from sheg.io.diffgesture_dir import ARCH, load_diffgesture_dir
from sheg.motion.ted import get_ted_layout, take_arrays
from sheg.nets.diffgesture import DiffGestureDenoiser, DiffGestureNet, seed_context
from sheg.version import __version__


LONG_MODES = ("chain", "foppas")


def load_diffgesture_model(path, device="auto") -> "DiffGestureModel":
    """Load a DiffGesture model folder ready to generate; device "auto" | "cpu" | "cuda[:n]" | "mps"."""
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    net, meta = load_diffgesture_dir(path, dev)
    return DiffGestureModel(net, meta, dev)




class DiffGestureModel:
    """A loaded DiffGesture model folder with the interface of UniEG's Model (generate, summary, fps, model_id)."""

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
                 long_mode: str | None = None, stabilizer: str | None = "default", seed_poses=None, keep=None,
                 keep_frames=None, keep_parts=None):
        """Generate a take (sheg.inference.base.Take) for `audio` (a file path, or (samples, rate)).

        steps: chain mode runs DDPM when steps equals the training steps (500, the official sampler) and DDIM over
        that many steps otherwise; foppas mode always runs DDIM windows (default 25 steps). stabilizer: "default"
        (the model card's, "smooth"), "smooth", "hard" or None. seed_poses: optional (k <= 4, P) de-normalized
        direction vectors for the first window (default: the dataset mean pose). progress and cancel as UniEG's Model.generate.
        """
        started = time.perf_counter()
        seed = checked_seed(seed)
        report = progress or (lambda event: None)
        report({"stage": "features", "fraction": 0.0})
        if style not in (None, 0):
            raise BadInput("DiffGesture models have no speaker styles: leave style unset")
        if keep is not None:  # its TED direction vectors are not the SMPL-X channels a take keeps
            raise BadInput("keeping frames or parts needs a UniEG (SMPL-X layout) model, e.g. the default; "
                           "DiffGesture models regenerate whole takes only")
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
        if self.lowpass_hz:  # the model card's zero-phase low-pass, on the direction vectors (see sheg.inference.base.lowpass)
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
        guidance = checked_guidance(guidance, self.default_guidance, cfg.classifier_free)
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
