"""Audio file in, take out: joins the audio features, a network, the noise schedule and the FOPPAS sampler.

    model = sheg.load_model("path/to/MODEL_DIR")        # or None for the embedded default model
    take = model.generate("speech.wav", seed=1)
    take.save("take.npz")
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Callable

import numpy as np
import torch

from sheg.data.audio import AudioFeatureSpec, hubert_features, load_audio, mel_features, num_motion_frames, pause_frames
from sheg.diffusion.gaussian import NoiseSchedule
from sheg.diffusion.samplers import count_model_calls, foppas_sample
from sheg.errors import BadInput, ShegError
from sheg.inference.base import Take, checked_guidance, checked_seed, close_jaw_in_pauses, finish_take, lowpass
from sheg.inference.keep import KeepConstraint, keep_constraint
from sheg.motion.layouts import get_layout, take_from_vector
from sheg.version import __version__

# "native": the model's own rate (SHOW 30 fps: mel hop 600 at 18 kHz). "official-15": the official SHOW custom-audio
# script's path, mel hop 1200 at 18 kHz, so 15 motion frames per second of audio (DIFFSHEG_FACTS §2, §11).
FPS_MODES = ("native", "official-15")
OFFICIAL_15_HOP = 1200


class Model:
    """A loaded model folder, ready to generate. Holds the network on its device between calls."""

    def __init__(self, net: torch.nn.Module, meta: dict, device: torch.device, hubert: str | None = None,
                 fps_mode: str | None = None):
        self.net = net.eval()
        self.meta = meta
        self.device = device
        self.layout = get_layout(meta["layout"])
        self.audio_spec = AudioFeatureSpec.from_dict(meta["audio"])
        self.fps = float(meta.get("fps", self.audio_spec.fps))
        self.fps_mode = fps_mode or meta.get("fps_mode") or "native"
        if self.fps_mode not in FPS_MODES:
            raise BadInput(f"unknown fps mode '{self.fps_mode}': use {' or '.join(FPS_MODES)}")
        if self.fps_mode == "official-15":
            if self.layout.name != "show" or self.audio_spec.hop_length == OFFICIAL_15_HOP:
                raise BadInput(f"fps mode official-15 is for SHOW models at 30 fps; this {self.layout.name.upper()} "
                               f"model already runs at {self.fps:g} fps: use fps mode native")
            self.audio_spec = dataclasses.replace(self.audio_spec, hop_length=OFFICIAL_15_HOP)
            self.fps = self.audio_spec.fps
        self.sample_rate = self.audio_spec.sample_rate  # of the audio generate() reads (mel)
        self.window = int(meta["window"])
        self.overlap = int(meta["overlap"])
        self.schedule = NoiseSchedule()
        self.mean = torch.tensor(meta["stats"]["mean"], dtype=torch.float32, device=device)
        self.std = torch.tensor(meta["stats"]["std"], dtype=torch.float32, device=device)
        self.speakers = list(meta.get("speakers") or ["default"])
        sampler = meta.get("sampler", {})
        self.default_steps = int(sampler.get("steps", 25))
        self.default_jumps = int(sampler.get("jump_n_sample", 5))
        self.jump_length = int(sampler.get("jump_length", 3))
        clip = sampler.get("clip_x0")
        self.clip_x0 = None if clip is None else float(clip)
        lowpass = sampler.get("lowpass_hz")
        self.lowpass_hz = None if not lowpass else float(lowpass)
        # DiffSHEG samples with eta 0; a card may ask for DDIM noise shaped by DiffGesture's stabilizer
        self.eta = float(sampler.get("eta", 0.0))
        self.stabilizer = sampler.get("stabilizer")
        self.stabilizer_t0 = int(sampler.get("stabilizer_t0", 25))
        # A lip-sync rest shape: the jaw eased shut in pauses of the speech (SHOW layout only)
        self.close_jaw_in_pauses = bool(sampler.get("close_jaw_in_pauses", False)) and self.layout.name == "show"
        # The jaw's opening from speech (sheg.nets.jaw_head) instead of the sampled one, when the folder holds one
        self.jaw_head = getattr(net, "jaw_head", None) if self.layout.name == "show" else None
        self.default_guidance = float(meta.get("guidance_scale", 1.0))
        self.default_style = int(meta.get("default_style", 0))
        self.uses_hubert = bool(getattr(net.config, "use_hubert", False))
        hub = dict(self.audio_spec.hubert or {})
        self.hubert_model = hubert or hub.get("model")
        self.hubert_rate = int(hub.get("sample_rate", 16000))

    @property
    def model_id(self) -> str:
        return str(self.meta.get("name") or self.meta.get("source", {}).get("file") or "model")

    def summary(self) -> dict:
        return {"name": self.model_id, "layout": self.layout.name, "fps": self.fps, "window": self.window,
                "overlap": self.overlap, "speakers": self.speakers, "default_style": self.default_style,
                "guidance_scale": self.default_guidance, "steps": self.default_steps,
                "hubert": self.uses_hubert, "device": str(self.device), "fps_mode": self.fps_mode}

    # -- features -------------------------------------------------------------------------------------------------

    def _features(self, audio) -> tuple[torch.Tensor, torch.Tensor | None, int, np.ndarray | None]:
        """mel (1, T, 128) and HuBERT (1, T, 1024) or None on the model's device; T motion frames; the frames in
        pauses of the speech (T,) bool when the card asks for the jaw's rest, else None."""
        if isinstance(audio, (str, os.PathLike)):
            wave = load_audio(os.fspath(audio), self.audio_spec.sample_rate)
        else:
            samples, rate = audio
            wave = np.asarray(samples, dtype=np.float32)
            if wave.ndim > 1:
                wave = wave.mean(axis=1)
            if rate != self.audio_spec.sample_rate:
                import soxr
                wave = soxr.resample(wave, rate, self.audio_spec.sample_rate).astype(np.float32)
        frames = num_motion_frames(len(wave), self.audio_spec.hop_length)
        mel = mel_features(wave, self.audio_spec, frames)  # raises BadInput when frames < 1
        pauses = None
        if self.close_jaw_in_pauses:
            pauses = pause_frames(wave, self.audio_spec.hop_length, frames, min_frames=max(1, round(0.3 * self.fps)))
        del wave
        hub = None
        if self.uses_hubert:
            if not isinstance(audio, (str, os.PathLike)):
                raise BadInput("HuBERT models need an audio file path, not samples")
            if not self.hubert_model:
                raise ShegError("this model needs HuBERT features: pass --hubert FOLDER_OR_ID "
                                "(facebook/hubert-large-ls960-ft)")
            # 16 kHz is right; a model card may ask for 22050 to reproduce the official custom-audio path.
            wave_h = load_audio(os.fspath(audio), self.hubert_rate)
            hub = torch.from_numpy(hubert_features(wave_h, frames, self.hubert_model, str(self.device)))[None]
            hub = hub.to(self.device)
        return torch.from_numpy(mel)[None].to(self.device), hub, frames, pauses

    # -- generation -----------------------------------------------------------------------------------------------

    def style_vector(self, style: int | None) -> torch.Tensor:
        style = self.default_style if style is None else int(style)
        dim = int(self.net.config.style_dim)
        if not 0 <= style < dim:
            raise BadInput(f"style {style} is out of range: this model has styles 0..{dim - 1} "
                           f"({', '.join(self.speakers)})")
        onehot = torch.zeros(1, dim, device=self.device)
        onehot[0, style] = 1.0
        return onehot

    def generate(self, audio, *, seed: int = 0, steps: int | None = None, guidance: float | None = None,
                 style: int | None = None, overlap: int | None = None, jumps: int | None = None,
                 resample: bool = True, progress: Callable[[dict], None] | None = None, keep=None,
                 keep_frames=None, keep_parts=None) -> Take:
        """Generate a take for `audio` (a file path, or (samples, rate)).

        progress receives {'stage', 'fraction', 'window', 'windows', 'step', 'steps'}; raising
        sheg.errors.Cancelled from it stops the generation.
        keep (a take .npz path, a Take or take arrays with 'fps', at the model's fps), keep_frames ([(start, stop)]
        take frames or 'A:B,C:D'; None: all) and keep_parts (motion.layouts.PARTS names or 'a,b'; None: all):
        constrained regeneration (inference.keep): those values of the earlier take come out exactly as they were,
        the rest is generated around them.
        """
        started = time.perf_counter()
        seed = checked_seed(seed)
        report = progress or (lambda event: None)
        report({"stage": "features", "fraction": 0.0})
        mel, hub, frames, pauses = self._features(audio)
        constraint = None
        if keep is not None:
            constraint = keep_constraint(self.layout, self.fps, frames, keep, keep_frames, keep_parts)
        vec = self.sample(mel, hub, seed=seed, steps=steps, guidance=guidance, style=style, overlap=overlap,
                          jumps=jumps, resample=resample, progress=report, keep=constraint)
        if self.jaw_head is not None:
            g = self.layout.gesture_dim  # the jaw's x rotation: its opening
            with torch.inference_mode():
                opening = self.jaw_head(mel)[0] * self.std[g] + self.mean[g]
            vec[:, g] = opening.float().cpu().numpy()
        if self.lowpass_hz:
            vec = lowpass(vec, self.fps, self.lowpass_hz)
        if self.close_jaw_in_pauses:
            jaw = slice(self.layout.gesture_dim, self.layout.gesture_dim + 3)
            vec = close_jaw_in_pauses(vec, jaw, pauses, ramp_frames=max(1, round(0.1 * self.fps)))
        if constraint is not None:
            vec = constraint.restore(vec)
        arrays = take_from_vector(self.layout, vec)
        meta = {"model_id": self.model_id, "seed": int(seed), "steps": steps or self.default_steps,
                "guidance": self.default_guidance if guidance is None else float(guidance),
                "style": self.default_style if style is None else int(style), "sheg_version": __version__,
                "layout": self.layout.name, "fps_mode": self.fps_mode}
        if constraint is not None:
            meta["kept_frames"] = int(constraint.frame_mask.sum())
            meta["kept_values"] = int(constraint.mask.sum())
        return finish_take(arrays, vec, self.fps, meta, audio, started, report, self.lowpass_hz)

    def sample(self, mel: torch.Tensor, hub: torch.Tensor | None, *, seed: int = 0, steps: int | None = None,
               guidance: float | None = None, style: int | None = None, overlap: int | None = None,
               jumps: int | None = None, resample: bool = True,
               progress: Callable[[dict], None] | None = None, keep: KeepConstraint | None = None) -> np.ndarray:
        """FOPPAS over features mel (1, T, 128) [+ HuBERT (1, T, 1024)] -> de-normalized vector (T, D) float32.
        keep: values to inpaint around (normalized here with the model's statistics)."""
        steps = self.default_steps if steps is None else int(steps)
        guidance = checked_guidance(guidance, self.default_guidance, getattr(self.net.config, "classifier_free", False))
        overlap = self.overlap if overlap is None else int(overlap)
        jumps = self.default_jumps if jumps is None else int(jumps)
        if steps < 1 or steps > 1000:
            raise BadInput(f"steps must be between 1 and 1000, got {steps}")
        if not 0 <= overlap < self.window:
            raise BadInput(f"overlap must be between 0 and {self.window - 1} frames, got {overlap}")
        if jumps < 1:
            raise BadInput(f"jumps must be at least 1, got {jumps}")
        report = progress or (lambda event: None)
        frames = mel.shape[1]
        style_vec = self.style_vector(style)

        def make_denoiser(start: int, stop: int):
            mel_w = mel[:, start:stop]
            hub_w = None if hub is None else hub[:, start:stop]

            def denoise(x_t, t):
                batch = x_t.shape[0]
                coeffs = self.schedule.x0_coeffs(t)
                eps = self.net(x_t, t, coeffs, mel_w.expand(batch, -1, -1),
                               None if hub_w is None else hub_w.expand(batch, -1, -1),
                               style_vec.expand(batch, -1), guidance_scale=guidance)
                if self.clip_x0 is None:
                    return eps
                # Clip the implied clean motion to +-clip_x0 standard deviations and return the noise that agrees
                # with it (guided-diffusion's clip_denoised, in normalized units). Off for official checkpoints.
                c1, c2 = coeffs
                x0 = (c1 * x_t - c2 * eps).clamp(-self.clip_x0, self.clip_x0)
                return (c1 * x_t - x0) / c2
            return denoise

        total_calls = count_model_calls(frames, self.window, overlap, steps, self.jump_length, jumps, resample)

        def on_step(info: dict) -> None:
            report({"stage": "sampling", "fraction": min(1.0, info.get("calls", 0) / max(1, total_calls)),
                    "window": info.get("window", 0) + 1, "windows": info.get("windows", 1),
                    "step": info.get("i", 0) + 1, "steps": info.get("steps", steps)})

        keep_values = keep_mask = None
        if keep is not None:
            keep_values = ((torch.from_numpy(keep.values).to(self.device) - self.mean) / self.std)[None]
            keep_mask = torch.from_numpy(keep.mask).to(self.device)[None]
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        cache = getattr(self.net, "modulation_cache", None)
        with torch.inference_mode(), (cache() if cache else contextlib.nullcontext()):
            x = foppas_sample(make_denoiser, frames, self.layout.dim, self.schedule, window=self.window,
                              overlap=overlap, steps=steps, jump_length=self.jump_length, jump_n_sample=jumps,
                              resample=resample, generator=generator, callback=on_step, device=self.device,
                              eta=self.eta, stabilizer=self.stabilizer, stabilizer_t0=self.stabilizer_t0,
                              keep=keep_values, keep_mask=keep_mask)
            return (x[0].float() * self.std + self.mean).cpu().numpy()
