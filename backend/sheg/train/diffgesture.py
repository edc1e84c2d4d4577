"""`sheg train --arch diffgesture`: DiffGesture training data from SMPL-X takes, and the training recipe.

SMPL-X takes (BEAT2/AMASS .npz with a same-named speech file, as for UniEG) are resampled to the model's 15 fps and
turned into TED Expressive direction vectors with `ted.dir_vec_from_smplx` (upper body and fingers; the face
points ride on the head). The model's mean_dir_vec is their mean over the training frames; windows are 34 frames
(the first 4 the seed poses) with the raw 16 kHz audio under them, as the official loader cuts them. The last
`holdout_seconds` of each take are held out for validation. The recipe keeps the official optimisation: eps-MSE on
the 500-step schedule, Adam lr 5e-4 betas (0.5, 0.999), grad-norm clip 10, null context with probability 0.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sheg.data.audio import load_audio
from sheg.data.windows import _file_fingerprint, find_takes, read_motion, resample_motion, split_frames, window_starts
from sheg.diffusion.gaussian import NoiseSchedule, randn
from sheg.errors import BadInput
from sheg.io.diffgesture_dir import diffgesture_meta, load_diffgesture_dir, save_diffgesture_dir
from sheg.motion.skeleton import mirror_poses
from sheg.motion.ted import dir_vec_from_smplx, generated_joints, get_ted_layout
from sheg.nets.diffgesture import DiffGestureConfig, DiffGestureNet, seed_context


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


# "small": the project's DiffGesture trained on the BEAT2 take, upper body in the TED Gesture layout (10 joints,
# 27 values): the noise it must carry through the network fits its width easily (a 192-wide net on the 126 values
# of TED Expressive plateaued at eps-MSE 0.25 even at t = 499, where eps is almost x_t; the official width there is
# 512). "tiny" (TED Expressive, fingers included) is for tests of the plumbing only.
CONFIGS = {
    "small": {"diffgesture": dict(pose_dim=27, hidden=192, depth=4, heads=8), "layout": "ted10", "window": 34},
    "tiny": {"diffgesture": dict(pose_dim=126, hidden=32, depth=2, heads=4), "layout": "ted43", "window": 34},
}


@dataclass
class DirVecTake:
    """One take at the model's fps: direction vectors (T, P) (mean-subtracted once the mean is known), raw audio."""

    name: str
    vectors: np.ndarray
    wave: np.ndarray
    fingerprint: str = ""

    @property
    def frames(self) -> int:
        return len(self.vectors)


@dataclass
class DirVecWindows:
    """Windows into takes: `index` (W, 2) rows of (take number, start frame), `window` frames, `samples` of audio."""

    takes: list
    index: np.ndarray
    window: int
    samples: int

    def __len__(self) -> int:
        return len(self.index)

    def gather(self, rows) -> tuple[np.ndarray, np.ndarray]:
        """Stack windows `rows` -> poses (B, N, P), audio (B, samples) (copies)."""
        picks = [(self.takes[k], s) for k, s in self.index[np.asarray(rows, dtype=np.int64)]]
        poses = np.stack([t.vectors[s:s + self.window] for t, s in picks])
        audio = np.stack([window_audio(t.wave, s, t.frames, self.samples) for t, s in picks])
        return poses, audio


@dataclass
class DirVecData:
    train: DirVecWindows
    val: DirVecWindows
    mean: np.ndarray  # (P,) the model's mean_dir_vec
    sources: list = field(default_factory=list)


def load_dir_vec_takes(npz_path: str, audio_path: str, layout, fps: float, sample_rate: int,
                       mirror: bool = False) -> list[DirVecTake]:
    """One SMPL-X take as TED direction vectors at `fps` with its raw audio at `sample_rate`, cut to the shorter;
    with mirror, also the take reflected left <-> right (skeleton.mirror_poses) on the same audio."""
    motion = read_motion(npz_path)
    if (generated_joints(layout) & ~motion.known_joints).any():
        raise BadInput(f"{npz_path} has no hand motion (a SHOW fit) but the {layout.name} layout has fingers: "
                       f"train --config small (TED Gesture, no fingers) or leave this take out")
    poses, _ = resample_motion(motion.poses, motion.expressions, motion.fps, fps)
    wave = load_audio(audio_path, sample_rate)
    frames = min(len(poses), int(len(wave) * fps // sample_rate))
    name = npz_path.replace("\\", "/").rsplit("/", 1)[-1].rsplit(".", 1)[0]
    if frames < 1:
        raise BadInput(f"take {name} has no frame with both motion and audio")
    wave = wave[:int(np.ceil(frames * sample_rate / fps))]
    fingerprint = _file_fingerprint(npz_path, audio_path)
    takes = [DirVecTake(name, dir_vec_from_smplx(poses[:frames], layout), wave, fingerprint)]
    if mirror:
        takes.append(DirVecTake(f"{name}~mirrored", dir_vec_from_smplx(mirror_poses(poses[:frames]), layout), wave,
                                fingerprint))
    return takes


def build_dir_vec_data(paths, config: DiffGestureConfig, layout, holdout_seconds: float, stride: int = 1,
                       mean: np.ndarray | None = None, mirror: bool = False, log=None) -> DirVecData:
    """Load the takes under `paths`, hold out the last seconds of each, subtract the mean, and window them.

    mean: the mean_dir_vec to use instead of computing it (resuming must reuse the saved one). mirror: also train on
    the takes reflected left <-> right; validation stays on the takes as captured."""
    log = log or (lambda msg: None)
    layout = get_ted_layout(layout)
    captured, mirrored = [], []
    for npz, audio in find_takes(paths):
        loaded = load_dir_vec_takes(npz, audio, layout, config.fps, config.sample_rate, mirror)
        captured.append(loaded[0])
        mirrored += loaded[1:]
        log(f"loaded {loaded[0].name}: {loaded[0].frames} frames ({loaded[0].frames / config.fps:.1f} s)"
            + (" (+ mirrored)" if mirror else ""))
    takes = captured + mirrored  # a mirrored take trains on the same frames as its captured one, validates on none
    stops = [split_frames(t.frames, config.fps, holdout_seconds) for t in captured] * (2 if mirror else 1)
    if mean is None:
        frames = np.concatenate([t.vectors[:stop] for t, stop in zip(takes, stops)]).astype(np.float64)
        if len(frames) == 0:
            raise BadInput("no training frames left after the hold-out: use shorter --holdout-seconds or more data")
        mean = frames.mean(axis=0)
    mean = np.asarray(mean, dtype=np.float32).reshape(-1)
    if mean.shape != (layout.dim,):
        raise BadInput(f"mean_dir_vec must have {layout.dim} values, got {mean.shape[0]}")
    for t in takes:
        t.vectors = (t.vectors - mean).astype(np.float32)

    def windows(ranges, step):
        rows = [(k, s) for k, (lo, hi) in enumerate(ranges) for s in window_starts(lo, hi, config.n_poses, step)]
        return DirVecWindows(takes, np.asarray(rows, dtype=np.int64).reshape(-1, 2), config.n_poses,
                             config.audio_samples)

    train = windows([(0, stop) for stop in stops], stride)
    val = windows([(stop, t.frames) for t, stop in zip(captured, stops)] + [(0, 0)] * len(mirrored),
                  max(1, config.n_poses // 2))
    if len(train) == 0:
        raise BadInput(f"no training window of {config.n_poses} frames fits after holding out {holdout_seconds:g} s "
                       f"per take; use more data or a shorter --holdout-seconds")
    sources = [{"name": t.name, "frames": t.frames, "train_frames": stop, "fingerprint": t.fingerprint}
               for t, stop in zip(captured, stops)]
    return DirVecData(train=train, val=val, mean=mean, sources=sources)


class DiffGestureRecipe:
    """How `sheg train` makes a DiffGesture model (the interface of train.UniEGRecipe)."""

    arch = "diffgesture"
    configs = CONFIGS
    defaults = {"lr": 5e-4, "null_prob": 0.1, "grad_clip": 10.0}
    loss_terms = ("eps_mse",)

    def __init__(self, settings: dict, args, device):
        self.settings, self.args, self.device = settings, args, device
        self.cfg = CONFIGS[settings["config"]]
        self.layout = get_ted_layout(self.cfg["layout"])
        self.net_config = DiffGestureConfig(**self.cfg["diffgesture"], null_cond_prob=float(settings["null_prob"]),
                                            classifier_free=float(settings["null_prob"]) > 0)
        if int(settings["window"]) != self.net_config.n_poses:
            raise BadInput(f"DiffGesture windows are the network's {self.net_config.n_poses} frames: leave --window "
                           f"unset")
        if getattr(args, "hubert", None):
            raise BadInput("DiffGesture models read raw audio, not HuBERT: drop --hubert")
        given = [f"--{k.replace('_', '-')}" for k in ("loss_eps", "loss_vel", "loss_huber")
                 if getattr(args, k, None) is not None]
        if given:
            raise BadInput(f"DiffGesture trains on the eps MSE alone: drop {', '.join(given)}")
        self.schedule = NoiseSchedule(self.net_config.diffusion_steps, self.net_config.beta_start,
                                      self.net_config.beta_end)
        self.classifier_free = self.net_config.classifier_free

    def load_data(self, paths, saved_meta: dict | None, log) -> DirVecData:
        mean = saved_meta["stats"]["mean_dir_vec"] if saved_meta else None
        return build_dir_vec_data(paths, self.net_config, self.layout, self.settings["holdout_seconds"],
                                  self.settings["stride"], mean=mean, mirror=self.settings["mirror"], log=log)

    def new_net(self) -> DiffGestureNet:
        return DiffGestureNet(self.net_config)

    def load_net(self, folder) -> DiffGestureNet:
        net, _ = load_diffgesture_dir(folder, "cpu")
        if net.config != self.net_config:
            raise BadInput(f"{folder} holds a network that does not match config {self.settings['config']}")
        return net

    def save(self, folder, net, meta) -> None:
        save_diffgesture_dir(folder, net, meta)

    def training_module(self, net):
        return DiffGestureTrainingForward(net)

    def optimizer(self, net):
        return torch.optim.Adam(net.parameters(), lr=self.settings["lr"], betas=(0.5, 0.999))

    def noise_shape(self, batch: int) -> tuple:
        return (batch, self.net_config.n_poses, self.net_config.pose_dim)

    def null_rows(self, global_batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(global_batch, generator=gen) < self.settings["null_prob"]  # official: per item

    def batch(self, windows: DirVecWindows, rows: np.ndarray) -> dict:
        poses, audio = windows.gather(rows)
        return {"poses": torch.from_numpy(poses).to(self.device), "audio": torch.from_numpy(audio).to(self.device)}

    def loss(self, module, batch: dict, t, noise, null_mask) -> dict:
        net = module.module.net if hasattr(module, "module") else module.net  # under DDP: .module
        if null_mask is None:
            null_mask = torch.zeros(len(t), dtype=torch.bool, device=t.device)
        return diffgesture_training_loss(net, batch, self.schedule, t=t, noise=noise, null_mask=null_mask,
                                         forward=module)

    def meta(self, data: DirVecData, source: dict, license: str) -> dict:
        meta = diffgesture_meta(self.net_config, self.layout.name, data.mean,
                                name=self.args.name or f"sheg-diffgesture-{self.settings['config']}", source=source,
                                license=license)
        # official sampling (DDPM over all 500 steps, stabilized); fewer steps run DDIM with eta 1 so the stabilizer
        # still shapes the injected noise (at eta 0 it has none to shape)
        meta["sampler"].update({"eta": 1.0, "long_mode": "chain"})
        return meta
