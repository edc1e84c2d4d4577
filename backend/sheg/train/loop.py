"""`sheg train`: train a UniEG (or DiffGesture) model on SMPL-X takes with speech, into a model folder that `sheg.load_model`
loads.

    sheg train takes/ -o MODEL_DIR --config small --steps 20000 --batch 32
    sheg train takes/ -o MODEL_DIR --arch diffgesture --config small    # DiffGesture, TED Expressive layout
    sheg train takes/ -o MODEL_DIR --resume --steps 30000          # continue as if never stopped
    torchrun --nproc_per_node 4 -m sheg train takes/ -o MODEL_DIR    # DDP: the global batch is split across ranks

Recipe (DIFFSHEG_FACTS.md §4): eps-prediction on the linear 1000-step schedule with the official loss
1000 MSE(eps) + 1 MSE(velocity of x̂0) + 100 Huber(x̂0) (weights configurable), Adam lr 2e-4 with no schedule,
grad-norm clip 0.5, and for classifier-free configs the first 20 % of every batch trained with null conditions.
DiffGesture (`--arch diffgesture`, sheg.train.diffgesture) keeps its official recipe: eps-MSE on the 500-step
schedule, Adam lr 5e-4 betas (0.5, 0.999), clip 10, null context with probability 0.1. One loop serves both: a
recipe object says how to load the data, build the network, compute the loss and write the model folder.

Determinism: the network init, the window picks, the timesteps, the noise and the null rows all come from --seed;
the picks, timesteps and noise are drawn for the whole global batch from one generator on every rank, and each rank
takes its slice, so N ranks with batch B follow the one-process run with batch B. The model folder is rewritten at
every checkpoint together with train_state.pt (optimizer, step, generator states); --resume continues from it and,
with the same number of CPU threads, gives bit-for-bit the weights of an uninterrupted run (thread counts change the
rounding of CPU kernels). Ctrl-C in a one-process run saves the last completed step before exiting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sheg.version import __version__
from sheg.data.audio import AudioFeatureSpec
from sheg.diffusion.gaussian import LossWeights, NoiseSchedule, diffusion_loss
from sheg.errors import BadInput, ShegError
from sheg.train.diffgesture import DiffGestureRecipe

TRAIN_STATE = "train_state.pt"
TRAIN_LOG = "train_log.jsonl"
STATE_FORMAT = "sheg-train-state"

_SHOW_DIMS = {"gesture_dim": 129, "expression_dim": 103}
_MEL_30FPS = {"sample_rate": 18000, "hop_length": 600, "n_fft": 2048, "n_mels": 128, "power": 2.0}

# Training configurations. "small" is the embedded default model: mel-only, SHOW/SMPL-X layout at 30 fps, one style,
# classifier-free; 6.25 M parameters (about 26 MB of float32 weights with the PE buffers); one guided forward of an
# 88-frame window takes about 12 ms on one CPU thread, so FOPPAS with 25 DDIM steps runs several times faster than
# real time on a 2-core CPU. It reads log-mel (log(mel + 1e-6)): a small model trained on little data copes far
# better with log-compressed input than with the official raw power mel. "official-show" is the published SHOW
# network (needs HuBERT-large: --hubert). "tiny" is for tests of the plumbing only.
CONFIGS = {
    "small": {
        "unieg": dict(**_SHOW_DIMS, style_dim=1, latent_dim=128, ff_size=256, num_layers=4, num_heads=4,
                      aud_latent_dim=128, use_hubert=False, classifier_free=True),
        "audio": dict(**_MEL_30FPS, log=True, hubert=None),
        "fps": 30.0, "window": 88, "overlap": 10, "guidance_scale": 1.15,
        "sampler": {"steps": 25, "jump_length": 3, "jump_n_sample": 5},
    },
    # "small-v2": the same network, one style slot per speaker of the data, reading log-mel standardised over each
    # clip (AudioFeatureSpec.normalize "utterance"); its model card asks for the 4 Hz low-pass, x0 clipping and the
    # jaw's rest in pauses from the start.
    "small-v2": {
        "unieg": dict(**_SHOW_DIMS, style_dim=1, latent_dim=128, ff_size=256, num_layers=4, num_heads=4,
                      aud_latent_dim=128, use_hubert=False, classifier_free=True),
        "audio": dict(**_MEL_30FPS, log=True, hubert=None, normalize="utterance"),
        "fps": 30.0, "window": 88, "overlap": 10, "guidance_scale": 1.15,
        "sampler": {"steps": 25, "jump_length": 3, "jump_n_sample": 5, "clip_x0": 4.0, "lowpass_hz": 4.0,
                    "close_jaw_in_pauses": True},
    },
    "official-show": {
        "unieg": dict(**_SHOW_DIMS, style_dim=4, classifier_free=True),
        "audio": dict(**_MEL_30FPS, log=False,
                      hubert={"model": "facebook/hubert-large-ls960-ft", "sample_rate": 16000}),
        "fps": 30.0, "window": 88, "overlap": 10, "guidance_scale": 1.15,
        "sampler": {"steps": 25, "jump_length": 3, "jump_n_sample": 5},
    },
    "tiny": {
        "unieg": dict(**_SHOW_DIMS, style_dim=1, latent_dim=32, ff_size=64, num_layers=2, num_heads=4,
                      aud_latent_dim=32, use_hubert=False, classifier_free=True),
        "audio": dict(**_MEL_30FPS, log=True, hubert=None),
        "fps": 30.0, "window": 32, "overlap": 4, "guidance_scale": 1.15,
        "sampler": {"steps": 5, "jump_length": 3, "jump_n_sample": 2},
    },
}

# Settings a resumed run must keep (default used when a new run does not give them).
RESUMABLE_DEFAULTS = {"arch": "unieg", "config": "small", "batch": 32, "lr": 2e-4, "seed": 0, "holdout_seconds": 10.0,
                      "window": None, "stride": 1, "loss_eps": 1000.0, "loss_vel": 1.0, "loss_huber": 100.0,
                      "null_prob": 0.2, "grad_clip": 0.5, "mirror": False, "holdout_speaker": None,
                      "show_jaw": True, "init_from": None, "balance_speakers": False}
DEFAULT_STEPS = 20000


# ----------------------------------------------------------------------------------------------------------------
# distributed setup


@dataclass
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls()
        return cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def _pick_device(name: str, dist: Dist) -> torch.device:
    name = (name or "auto").lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ShegError("--device cuda was asked for but this torch sees no CUDA GPU; use --device cpu")
        return torch.device("cuda", dist.local_rank) if dist.world > 1 else torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ShegError(f"unknown device '{name}': use auto, cpu or cuda")


def _log(msg: str, dist: Dist) -> None:
    if dist.main:
        print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# settings, state, checkpoints


def _resolve_settings(args, saved: dict | None) -> dict:
    """Resumable settings from the command line, or from the saved state when resuming (differences are errors)."""
    saved = None if saved is None else {"arch": "unieg", **saved}  # states written before DiffGesture training
    arch = (saved or {}).get("arch") or getattr(args, "arch", None) or "unieg"
    recipe_type = RECIPES.get(arch)
    if recipe_type is None:
        raise BadInput(f"unknown --arch {arch!r}: use one of {', '.join(RECIPES)}")
    defaults = {**RESUMABLE_DEFAULTS, **recipe_type.defaults}
    settings = {}
    for key, default in defaults.items():
        given = getattr(args, key, None)
        if saved is None:
            settings[key] = default if given is None else given
        else:
            if given is not None and given != saved.get(key, default):
                raise BadInput(f"--resume continues with the saved settings, but --{key.replace('_', '-')} {given} "
                               f"differs from the run's {saved.get(key, default)}: drop the option or start a new run")
            settings[key] = saved.get(key, default)
    configs = recipe_type.configs
    if settings["config"] not in configs:
        raise BadInput(f"unknown --config {settings['config']!r} for --arch {arch}: use one of {', '.join(configs)}")
    if settings["window"] is None:
        settings["window"] = configs[settings["config"]]["window"]
    for key in ("batch", "window", "stride"):
        if int(settings[key]) < 1:
            raise BadInput(f"--{key} must be at least 1, got {settings[key]}")
    if not 0.0 <= settings["null_prob"] < 1.0:
        raise BadInput(f"--null-prob must be in [0, 1), got {settings['null_prob']}")
    if settings["lr"] <= 0 or settings["grad_clip"] <= 0:
        raise BadInput("--lr and --grad-clip must be positive")
    return settings


def _copy_weights(net, loaded) -> None:
    """Load `loaded`'s weights into `net`, giving it loaded's jaw head first when it has one."""
    head = getattr(loaded, "jaw_head", None)
    if head is not None:
        from sheg.nets.jaw_head import JawHead

        net.jaw_head = JawHead(head.config).requires_grad_(False)  # trained only by --jaw-head-steps
    # Copy into freshly allocated tensors: the loader's tensors may sit at other memory alignments, which
    # changes CPU kernels' rounding and would make a resumed run drift from the uninterrupted one.
    net.load_state_dict(loaded.state_dict())


def _train_jaw_head(net, recipe, data, settings: dict, steps: int, log) -> dict:
    """Train a fresh jaw-from-speech head (sheg.nets.jaw_head) on the run's windows, attach it to `net`, and return
    its model.json entry."""
    from sheg.motion.layouts import SHOW
    from sheg.nets.jaw_head import JawHead, JawHeadConfig
    from sheg.train.jaw_head import train_jaw_head

    torch.manual_seed(settings["seed"])
    head = JawHead(JawHeadConfig(audio_dim=net.config.audio_dim))
    channel = SHOW.gesture_dim  # the jaw's x rotation (its opening) follows the gesture values, as at generation
    report = train_jaw_head(head, data.train, data.val, channel, steps, settings["seed"],
                            batch=int(settings["batch"]), log=log)
    net.jaw_head = head.eval()
    return {"steps": steps, "val_corr": None if np.isnan(report["val_corr"]) else round(report["val_corr"], 4)}


def _read_init_meta(folder: str, arch: str) -> dict:
    """model.json of the model folder --init-from names, checked to be a sheg model of `arch`."""
    path = Path(folder) / "model.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BadInput(f"--init-from {folder}: no readable model.json there ({exc}); give a model folder that "
                       f"sheg train wrote") from None
    if meta.get("arch", "unieg") != arch or "stats" not in meta:
        raise BadInput(f"--init-from {folder}: it holds a {meta.get('arch', '?')} model, this run trains {arch}")
    return meta


def _check_out_dir(out: Path, resume: bool) -> None:
    if resume:
        if not (out / TRAIN_STATE).is_file():
            raise BadInput(f"nothing to resume in {out}: it has no {TRAIN_STATE} (start without --resume)")
        return
    if out.exists():
        if not out.is_dir():
            raise BadInput(f"{out} exists and is not a folder: choose a new output folder")
        if (out / TRAIN_STATE).exists():
            raise BadInput(f"{out} already holds a training run: pass --resume to continue it, or choose a new folder")
        if any(out.iterdir()):
            raise BadInput(f"{out} exists and is not empty: choose a new or empty output folder")


def _write_checkpoint(out: Path, save_model_dir, net, meta: dict, state: dict) -> None:
    """Write model folder + train_state.pt + train_log.jsonl under a staging name, then swap it in (atomic)."""
    staging = out.parent / f".{out.name}.staging-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    for leftover in (staging, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    try:
        save_model_dir(staging, net, meta)
        torch.save(state, staging / TRAIN_STATE)
        with open(staging / TRAIN_LOG, "w", encoding="utf-8") as f:
            for row in state["history"]:
                f.write(json.dumps(row) + "\n")
        if out.exists():
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        raise


class UniEGRecipe:
    """How `sheg train` makes a UniEG model: SMPL-X takes -> SHOW vectors + mel (sheg.data.windows), the official loss."""

    arch = "unieg"
    configs = CONFIGS
    defaults: dict = {}
    loss_terms = ("eps_mse", "velocity", "huber")

    def __init__(self, settings: dict, args, device):
        from sheg.nets.unieg import UniEGConfig

        self.settings, self.args, self.device = settings, args, device
        self.cfg = CONFIGS[settings["config"]]
        self.net_config = UniEGConfig(**self.cfg["unieg"])
        if self.net_config.use_hubert and not args.hubert:
            raise BadInput(f"config {settings['config']} conditions on HuBERT-large: pass --hubert FOLDER_OR_ID "
                           f"(facebook/hubert-large-ls960-ft), or use --config small")
        if int(settings["window"]) > 1200:
            raise BadInput(f"--window {settings['window']} is longer than the network's 1200-frame positional "
                           f"encoding")
        self.schedule = NoiseSchedule()
        self.weights = LossWeights(eps=settings["loss_eps"], velocity=settings["loss_vel"],
                                   huber_x0=settings["loss_huber"])
        self.classifier_free = self.net_config.classifier_free

    def load_data(self, paths, saved_meta: dict | None, log):
        from sheg.data.windows import build_training_data

        cfg, settings = self.cfg, self.settings
        stats = (saved_meta["stats"]["mean"], saved_meta["stats"]["std"]) if saved_meta else None
        hubert_rate = int((cfg["audio"]["hubert"] or {}).get("sample_rate", 16000))
        data = build_training_data(paths, AudioFeatureSpec.from_dict(cfg["audio"]), cfg["fps"], settings["window"],
                                   settings["stride"], settings["holdout_seconds"], stats=stats,
                                   hubert_model=self.args.hubert if self.net_config.use_hubert else None,
                                   hubert_rate=hubert_rate, device=str(self.device),
                                   mirror=settings["mirror"], holdout_speaker=settings["holdout_speaker"],
                                   show_jaw=settings["show_jaw"], log=log)
        if saved_meta and list(saved_meta.get("speakers", [])) != data.speakers:
            raise BadInput(f"the model being continued has speakers {saved_meta.get('speakers')}, the data now "
                           f"{data.speakers}: name the same speakers as when it started")
        # one style slot per speaker named in the data (one slot, "default", when none is named)
        self.net_config = dataclasses.replace(self.net_config, style_dim=len(data.speakers))
        return data

    def new_net(self):
        from sheg.nets.unieg import UniEG

        return UniEG(self.net_config)

    def load_net(self, folder):
        from sheg.io.checkpoint import load_model_dir

        net, _ = load_model_dir(folder, "cpu")
        if net.config != self.net_config:
            raise BadInput(f"{folder} holds a network that does not match config {self.settings['config']}")
        return net

    def save(self, folder, net, meta) -> None:
        from sheg.io.checkpoint import save_model_dir

        save_model_dir(folder, net, meta)

    def training_module(self, net):
        return net

    def optimizer(self, net):
        # a jaw head carried over from a resumed or starting model trains on its own (--jaw-head-steps), not here
        params = [p for name, p in net.named_parameters() if not name.startswith("jaw_head.")]
        return torch.optim.Adam(params, lr=self.settings["lr"])

    def noise_shape(self, batch: int) -> tuple:
        return (batch, int(self.settings["window"]), self.net_config.net_dim)

    def null_rows(self, global_batch: int, gen: torch.Generator) -> torch.Tensor:
        return torch.linspace(0.0, 1.0, global_batch) < self.settings["null_prob"]  # official: first ~20 %

    def batch(self, windows, rows: np.ndarray):
        to = lambda a: None if a is None else torch.from_numpy(a).to(self.device)  # noqa: E731
        slots = windows.speakers(rows)
        styles = np.full((len(rows), self.net_config.style_dim), 1.0 / self.net_config.style_dim, np.float32)
        styles[slots >= 0] = np.eye(self.net_config.style_dim, dtype=np.float32)[slots[slots >= 0]]
        return tuple(map(to, windows.gather(rows))) + (to(styles),)

    def loss(self, module, batch, t, noise, null_mask) -> dict:
        x0, mel, hub, known, style = batch

        def denoise(x_t, tt):
            return module(x_t, tt, self.schedule.x0_coeffs(tt), mel, hub, style, null_mask=null_mask)

        return diffusion_loss(denoise, x0, self.schedule, t=t, noise=noise, weights=self.weights, known=known)

    def meta(self, data, source: dict, license: str) -> dict:
        cfg, settings, args = self.cfg, self.settings, self.args
        audio = dict(cfg["audio"])
        if audio["hubert"] is not None and args.hubert:
            audio["hubert"] = {**audio["hubert"], "model": args.hubert}
        return {
            "name": args.name or f"sheg-{settings['config']}",
            "layout": "show",
            "fps": cfg["fps"], "window": settings["window"], "overlap": min(cfg["overlap"], settings["window"] - 1),
            "audio": audio,
            "stats": {"mean": data.mean.tolist(), "std": data.std.tolist()},
            "speakers": list(data.speakers),
            "default_style": 0,
            "guidance_scale": cfg["guidance_scale"] if cfg["unieg"]["classifier_free"] else 1.0,
            "sampler": dict(cfg["sampler"]),
            "source": source,
            "license": license,
        }


def _source(settings: dict, data, step: int) -> dict:
    return {"trained_by": f"sheg {__version__} train", "arch": settings["arch"], "config": settings["config"],
            "steps": step, "settings": settings, "data": data.sources}


def _license(args, data) -> str:
    names = [s["name"] for s in data.sources]
    return args.license or ("trained by sheg train on " + ", ".join(names)
                            + "; the licence of that training data applies to these weights")


RECIPES = {"unieg": UniEGRecipe, "diffgesture": DiffGestureRecipe}


@torch.no_grad()
def validation_loss(recipe, net, windows, batch: int, seed: int = 0) -> dict | None:
    """Mean loss terms over all validation windows with fixed timesteps and noise (the same at every call)."""
    if len(windows) == 0:
        return None
    gen = torch.Generator().manual_seed(seed)
    was_training = net.training
    net.eval()
    totals, count = {}, 0
    device = recipe.device
    for lo in range(0, len(windows), batch):
        rows = np.arange(lo, min(lo + batch, len(windows)))
        t = torch.randint(0, recipe.schedule.num_steps, (len(rows),), generator=gen)
        noise = torch.randn(recipe.noise_shape(len(rows)), generator=gen)
        losses = recipe.loss(recipe.training_module(net), recipe.batch(windows, rows), t.to(device),
                             noise.to(device), None)
        for k, v in losses.items():
            totals[k] = totals.get(k, 0.0) + float(v) * len(rows)
        count += len(rows)
    net.train(was_training)
    return {k: v / count for k, v in totals.items()}


def _fmt_time(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    return f"{h}h{rem // 60:02d}m" if h else f"{rem // 60}m{rem % 60:02d}s"


def train_main(args) -> int:
    """Run `sheg train` with parsed arguments (see build_parser). Returns 0."""
    dist = Dist.from_env()
    device = _pick_device(args.device, dist)
    if args.threads:
        torch.set_num_threads(int(args.threads))
    out = Path(args.out)
    _check_out_dir(out, args.resume)

    saved = None
    if args.resume:
        saved = torch.load(out / TRAIN_STATE, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
            raise BadInput(f"{out / TRAIN_STATE} is not a sheg training state")
    settings = _resolve_settings(args, saved["settings"] if saved else None)
    steps = int(args.steps if args.steps is not None else (saved["total_steps"] if saved else DEFAULT_STEPS))
    global_batch = int(settings["batch"])
    if global_batch % dist.world:
        raise BadInput(f"--batch {global_batch} must be divisible by the {dist.world} processes")
    local_batch = global_batch // dist.world
    for key in ("log_every", "val_every", "save_every"):
        if getattr(args, key) < (1 if key == "log_every" else 0):
            raise BadInput(f"--{key.replace('_', '-')} must be {'>= 1' if key == 'log_every' else '>= 0'}")
    recipe = RECIPES[settings["arch"]](settings, args, device)
    if args.jaw_head_steps < 0 or (args.jaw_head_steps and recipe.arch != "unieg"):
        raise BadInput("--jaw-head-steps takes a count >= 0, and is for UniEG models (the SHOW layout's jaw)")

    if dist.world > 1:
        import torch.distributed as tdist

        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)

    try:
        saved_meta = json.loads((out / "model.json").read_text(encoding="utf-8")) if saved else None
        if saved_meta:  # the name and licence given when the run started stay unless given again
            args.name = args.name or saved_meta.get("name")
            args.license = args.license or saved_meta.get("license")
        init_meta = None
        if settings["init_from"] and not saved:  # fine-tuning keeps the starting model's normalisation and speakers
            init_meta = _read_init_meta(settings["init_from"], settings["arch"])
        data = recipe.load_data(args.data, saved_meta or init_meta, lambda m: _log(m, dist))
        if saved and [s["fingerprint"] for s in saved["data"]] != [s["fingerprint"] for s in data.sources]:
            _log("sheg: warning: the training data differ from the run being resumed; it will not continue exactly",
                 dist)

        torch.manual_seed(settings["seed"])
        net = recipe.new_net()
        if saved:
            loaded = recipe.load_net(out)
            _copy_weights(net, loaded)
            del loaded
        elif init_meta is not None:
            _copy_weights(net, recipe.load_net(settings["init_from"]))
            _log(f"starting from the weights of {settings['init_from']} ({init_meta.get('name', '?')})", dist)
        jaw_head_meta = dict((saved_meta or init_meta or {}).get("jaw_head") or {})
        net = net.to(device).train()
        model = recipe.training_module(net)
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = recipe.optimizer(net)
        gen = torch.Generator().manual_seed(settings["seed"])
        history = []
        step = 0
        if saved:
            optimizer.load_state_dict(saved["optimizer"])
            gen.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
            history = list(saved["history"])
            step = int(saved["step"])

        mine = slice(dist.rank * local_batch, (dist.rank + 1) * local_batch)
        terms = ("loss",) + recipe.loss_terms

        def state_dict():
            return {"format": STATE_FORMAT, "version": 1, "step": step, "total_steps": steps, "settings": settings,
                    "optimizer": optimizer.state_dict(), "generator": gen_state,
                    "torch_rng": torch.get_rng_state(), "history": history, "data": data.sources}

        def checkpoint():
            if dist.main:
                meta = recipe.meta(data, _source(settings, data, step), _license(args, data))
                if getattr(net, "jaw_head", None) is not None:
                    meta["jaw_head"] = jaw_head_meta
                _write_checkpoint(out, recipe.save, net, meta, state_dict())

        params = sum(p.numel() for p in net.parameters())
        _log(f"training {settings['config']} {recipe.arch} ({params / 1e6:.2f} M parameters) on "
             f"{len(data.sources)} take(s): {len(data.train)} training windows of {settings['window']} frames, "
             f"{len(data.val)} validation windows; batch {global_batch}"
             + (f" over {dist.world} processes" if dist.world > 1 else "")
             + f", steps {step}->{steps}, device {device}", dist)

        pick_weights = None
        if settings["balance_speakers"]:
            if not hasattr(data.train, "speaker_balanced_weights"):
                raise BadInput(f"--balance-speakers needs speakers named as SPEAKER=PATH, which --arch "
                               f"{settings['arch']} does not read")
            pick_weights = torch.from_numpy(data.train.speaker_balanced_weights())
        gen_state = gen.get_state()  # the generator as of the last completed step (what a resume needs)
        acc = torch.zeros(len(terms) + 1, dtype=torch.float64)  # loss terms and grad norm summed since the last log
        acc_steps, t_log, t_start, start_step = 0, time.perf_counter(), time.perf_counter(), step
        try:
            while step < steps:
                # 1. the global batch: window picks, timesteps, noise, null rows (identical on every rank); my slice
                if pick_weights is None:
                    rows = torch.randint(0, len(data.train), (global_batch,), generator=gen)
                else:
                    rows = torch.multinomial(pick_weights, global_batch, replacement=True, generator=gen)
                t = torch.randint(0, recipe.schedule.num_steps, (global_batch,), generator=gen)
                noise = torch.randn(recipe.noise_shape(global_batch), generator=gen)
                null_mask = None
                if recipe.classifier_free and settings["null_prob"] > 0:
                    null_mask = recipe.null_rows(global_batch, gen)[mine].to(device)
                batch = recipe.batch(data.train, rows[mine].numpy())
                # 2. loss, gradients (averaged over ranks by DDP), clip, step
                losses = recipe.loss(model, batch, t[mine].to(device), noise[mine].to(device), null_mask)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), settings["grad_clip"])
                optimizer.step()
                step += 1
                gen_state = gen.get_state()
                acc += torch.tensor([float(losses[k].detach()) for k in terms] + [float(grad_norm)],
                                    dtype=torch.float64)
                acc_steps += 1

                last = step == steps
                if step % args.log_every == 0 or last:
                    if dist.world > 1:
                        import torch.distributed as tdist

                        tdist.all_reduce(acc)
                        acc /= dist.world
                    mean = (acc / acc_steps).tolist()
                    now = time.perf_counter()
                    per_step = (now - t_log) / acc_steps
                    eta = (now - t_start) / max(1, step - start_step) * (steps - step)
                    shown = "  ".join(f"{_SHORT.get(k, k)} {v:.5f}" for k, v in zip(terms, mean))
                    _log(f"step {step}/{steps}  {shown}  |grad| {mean[-1]:.3g}  {per_step:.3f} s/step  "
                         f"eta {_fmt_time(eta)}", dist)
                    history.append({"step": step, **dict(zip(terms, mean)), "grad_norm": mean[-1],
                                    "seconds_per_step": per_step})
                    acc.zero_()
                    acc_steps, t_log = 0, now
                if (args.val_every and step % args.val_every == 0) or last:
                    if dist.main:
                        val = validation_loss(recipe, net, data.val, local_batch)
                        if val is not None:
                            shown = "  ".join(f"{_SHORT.get(k, k)} {val[k]:.5f}" for k in terms)
                            _log(f"val  step {step}  {shown}", dist)
                            history.append({"step": step, **{f"val_{k}": v for k, v in val.items()}})
                    _barrier(dist)
                if (args.save_every and step % args.save_every == 0) or last:
                    checkpoint()
                    _barrier(dist)
        except KeyboardInterrupt:
            if dist.world == 1 and step > start_step:
                _log(f"interrupted: saving step {step} to {out} (continue with --resume)", dist)
                checkpoint()
            raise
        if args.jaw_head_steps and dist.main:
            jaw_head_meta = _train_jaw_head(net, recipe, data, settings, int(args.jaw_head_steps),
                                            lambda m: _log(m, dist))
            checkpoint()
        elif step == start_step:  # nothing to do (already at --steps): still leave a consistent folder
            checkpoint()
        _log(f"done: {out} at step {step}", dist)
    finally:
        if dist.world > 1:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()
    return 0


_SHORT = {"eps_mse": "eps", "velocity": "vel"}  # log-line names of the loss terms


def _barrier(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()


# ----------------------------------------------------------------------------------------------------------------
# command line


def build_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `train` subcommand to `subparsers` (from sheg.cli); sets func=train_main."""
    p = subparsers.add_parser(
        "train", help="train a UniEG or DiffGesture model on SMPL-X takes (.npz + same-named .wav)",
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", nargs="+",
                   help="take .npz files or SHOW .pkl fits (each with a same-named .wav) or folders of them; "
                        "SPEAKER=PATH names the speaker of PATH (one style slot per speaker)")
    p.add_argument("-o", "--out", required=True, help="model folder to write (checkpoints rewrite it)")
    p.add_argument("--arch", default=None, choices=list(RECIPES),
                   help="model family (default unieg; diffgesture trains a DiffGesture on TED Expressive directions)")
    p.add_argument("--config", default=None,
                   help="network and audio recipe of the --arch: unieg small, official-show or tiny; diffgesture "
                        "small or tiny (default small; tiny is for tests)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"train until this many optimizer steps (default {DEFAULT_STEPS}; with --resume the saved "
                        "target)")
    p.add_argument("--batch", type=int, default=None, help="global batch of windows (default 32), split across "
                                                           "DDP processes")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 2e-4; diffgesture 5e-4)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--seed", type=int, default=None, help="seed of init, batches and noise (default 0)")
    p.add_argument("--holdout-seconds", type=float, default=None,
                   help="hold out the last seconds of every take for validation (default 10)")
    p.add_argument("--holdout-speaker", default=None,
                   help="validate on this speaker's takes (named SPEAKER=PATH), whole, and train on the others "
                        "(--holdout-seconds is then 0)")
    p.add_argument("--window", type=int, default=None, help="frames per training window (default: the config's)")
    p.add_argument("--stride", type=int, default=None, help="frames between training window starts (default 1)")
    p.add_argument("--loss-eps", type=float, default=None, help="weight of MSE(eps) (default 1000, official)")
    p.add_argument("--loss-vel", type=float, default=None, help="weight of the x̂0 velocity MSE (default 1)")
    p.add_argument("--loss-huber", type=float, default=None, help="weight of Huber(x̂0) (default 100)")
    p.add_argument("--null-prob", type=float, default=None,
                   help="share of each batch trained without conditions, classifier-free configs (default 0.2; "
                        "diffgesture 0.1)")
    p.add_argument("--grad-clip", type=float, default=None, help="gradient-norm clip (default 0.5; diffgesture 10)")
    p.add_argument("--mirror", action="store_const", const=True, default=None,
                   help="also train on every take reflected left <-> right (expressions as captured); validation "
                        "stays on the captured takes")
    p.add_argument("--no-show-jaw", dest="show_jaw", action="store_const", const=False, default=None,
                   help="leave the jaw of SHOW fits (.pkl) out of the loss, as their hands are: fitted to video, it "
                        "is noisier than captured jaws; the jaw is then learned from the motion-capture takes")
    p.add_argument("--jaw-head-steps", type=int, default=0,
                   help="after the diffusion steps, train the jaw-from-speech head (sheg.nets.jaw_head) for this "
                        "many steps; the model's jaw opening then comes from it (0: none)")
    p.add_argument("--balance-speakers", action="store_const", const=True, default=None,
                   help="pick training windows so that every named speaker fills the same share of the batches")
    p.add_argument("--init-from", default=None,
                   help="fine-tune: start from this model folder's weights, normalisation and speakers (same "
                        "--config) instead of a fresh init; the optimizer starts afresh")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (DDP: cuda:LOCAL_RANK)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--val-every", type=int, default=500, help="validation loss every N steps (0: only at the end)")
    p.add_argument("--save-every", type=int, default=1000, help="checkpoint every N steps (0: only at the end)")
    p.add_argument("--log-every", type=int, default=50, help="progress line every N steps")
    p.add_argument("--hubert", default=None, help="HuBERT-large folder or id, for configs that use HuBERT")
    p.add_argument("--name", default=None, help="model name written to model.json")
    p.add_argument("--license", default=None, help="licence text written to model.json (say what the data allow)")
    p.set_defaults(func=train_main)
    return p


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="sheg")
    build_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ShegError as exc:
        print(f"sheg: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
