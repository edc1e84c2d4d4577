"""`sheg train`: train a UniEG model on SMPL-X takes with speech, into a model folder the pipeline loads.

    sheg train takes/ -o MODEL_DIR --config small --steps 20000 --batch 32
    sheg train takes/ -o MODEL_DIR --resume --steps 30000          # continue as if never stopped
    torchrun --nproc_per_node 4 -m sheg train takes/ -o MODEL_DIR    # DDP: the global batch is split across ranks

Recipe (DIFFSHEG_FACTS.md §4): eps-prediction on the linear 1000-step schedule with the official loss
1000 MSE(eps) + 1 MSE(velocity of x̂0) + 100 Huber(x̂0) (weights configurable), Adam lr 2e-4 with no schedule,
grad-norm clip 0.5, and for classifier-free configs the first 20 % of every batch trained with null conditions.

Determinism: the network init, the window picks, the timesteps, the noise and the null rows all come from --seed;
the picks, timesteps and noise are drawn for the whole global batch from one generator on every rank, and each rank
takes its slice, so N ranks with batch B follow the one-process run with batch B. The model folder is rewritten at
every checkpoint together with train_state.pt (optimizer, step, generator states); --resume continues from it and,
with the same number of CPU threads, gives bit-for-bit the weights of an uninterrupted run (thread counts change the
rounding of CPU kernels). Ctrl-C in a one-process run saves the last completed step before exiting.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .audio import AudioFeatureSpec
from .diffusion import LossWeights, NoiseSchedule, diffusion_loss
from .errors import BadInput, ShegError

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
RESUMABLE_DEFAULTS = {"config": "small", "batch": 32, "lr": 2e-4, "seed": 0, "holdout_seconds": 10.0, "window": None,
                      "stride": 1, "loss_eps": 1000.0, "loss_vel": 1.0, "loss_huber": 100.0, "null_prob": 0.2,
                      "grad_clip": 0.5}
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
    settings = {}
    for key, default in RESUMABLE_DEFAULTS.items():
        given = getattr(args, key, None)
        if saved is None:
            settings[key] = default if given is None else given
        else:
            if given is not None and given != saved[key]:
                raise BadInput(f"--resume continues with the saved settings, but --{key.replace('_', '-')} {given} "
                               f"differs from the run's {saved[key]}: drop the option or start a new run")
            settings[key] = saved[key]
    if settings["config"] not in CONFIGS:
        raise BadInput(f"unknown --config {settings['config']!r}: use one of {', '.join(CONFIGS)}")
    if settings["window"] is None:
        settings["window"] = CONFIGS[settings["config"]]["window"]
    for key in ("batch", "window", "stride"):
        if int(settings[key]) < 1:
            raise BadInput(f"--{key} must be at least 1, got {settings[key]}")
    if not 0.0 <= settings["null_prob"] < 1.0:
        raise BadInput(f"--null-prob must be in [0, 1), got {settings['null_prob']}")
    if settings["lr"] <= 0 or settings["grad_clip"] <= 0:
        raise BadInput("--lr and --grad-clip must be positive")
    return settings


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


def _write_checkpoint(out: Path, net, meta: dict, state: dict) -> None:
    """Write model folder + train_state.pt + train_log.jsonl under a staging name, then swap it in (atomic)."""
    from .checkpoint import save_model_dir

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


def _model_meta(settings: dict, args, data, step: int) -> dict:
    cfg = CONFIGS[settings["config"]]
    audio = dict(cfg["audio"])
    if audio["hubert"] is not None and args.hubert:
        audio["hubert"] = {**audio["hubert"], "model": args.hubert}
    style_dim = cfg["unieg"]["style_dim"]
    names = [s["name"] for s in data.sources]
    return {
        "name": args.name or f"sheg-{settings['config']}",
        "layout": "show",
        "fps": cfg["fps"], "window": settings["window"], "overlap": min(cfg["overlap"], settings["window"] - 1),
        "audio": audio,
        "stats": {"mean": data.mean.tolist(), "std": data.std.tolist()},
        "speakers": ["default"] + [f"style{i}" for i in range(1, style_dim)],
        "default_style": 0,
        "guidance_scale": cfg["guidance_scale"] if cfg["unieg"]["classifier_free"] else 1.0,
        "sampler": dict(cfg["sampler"]),
        "source": {"trained_by": f"sheg {__version__} train", "config": settings["config"], "steps": step,
                   "settings": settings, "data": data.sources},
        "license": args.license or ("trained by sheg train on " + ", ".join(names)
                                    + "; the licence of that training data applies to these weights"),
    }


# ----------------------------------------------------------------------------------------------------------------
# the loop


def _batch_tensors(windows, rows: np.ndarray, device):
    vec, mel, hub = windows.gather(rows)
    to = lambda a: None if a is None else torch.from_numpy(a).to(device)  # noqa: E731
    return to(vec), to(mel), to(hub)


def _loss_fn(model, schedule, weights: LossWeights):
    def run(x0, mel, hub, t, noise, null_mask):
        def denoise(x_t, tt):
            return model(x_t, tt, schedule.x0_coeffs(tt), mel, hub, None, null_mask=null_mask)

        return diffusion_loss(denoise, x0, schedule, t=t, noise=noise, weights=weights)
    return run


@torch.no_grad()
def validation_loss(net, windows, schedule, weights: LossWeights, batch: int, device, seed: int = 0) -> dict | None:
    """Mean loss terms over all validation windows with fixed timesteps and noise (the same at every call)."""
    if len(windows) == 0:
        return None
    gen = torch.Generator().manual_seed(seed)
    run = _loss_fn(net, schedule, weights)
    was_training = net.training
    net.eval()
    totals, count = {}, 0
    for lo in range(0, len(windows), batch):
        rows = np.arange(lo, min(lo + batch, len(windows)))
        x0, mel, hub = _batch_tensors(windows, rows, device)
        t = torch.randint(0, schedule.num_steps, (len(rows),), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        losses = run(x0, mel, hub, t.to(device), noise.to(device), None)
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
    from .checkpoint import load_model_dir
    from .data import build_training_data
    from .unieg import UniEG, UniEGConfig

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
    cfg = CONFIGS[settings["config"]]
    global_batch, window = int(settings["batch"]), int(settings["window"])
    if global_batch % dist.world:
        raise BadInput(f"--batch {global_batch} must be divisible by the {dist.world} processes")
    local_batch = global_batch // dist.world
    for key in ("log_every", "val_every", "save_every"):
        if getattr(args, key) < (1 if key == "log_every" else 0):
            raise BadInput(f"--{key.replace('_', '-')} must be {'>= 1' if key == 'log_every' else '>= 0'}")
    if window > 1200:
        raise BadInput(f"--window {window} is longer than the network's 1200-frame positional encoding")
    unieg_cfg = UniEGConfig(**cfg["unieg"])
    if unieg_cfg.use_hubert and not args.hubert:
        raise BadInput(f"config {settings['config']} conditions on HuBERT-large: pass --hubert FOLDER_OR_ID "
                       f"(facebook/hubert-large-ls960-ft), or use --config small")

    if dist.world > 1:
        import torch.distributed as tdist

        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            torch.cuda.set_device(device)

    try:
        spec = AudioFeatureSpec.from_dict(cfg["audio"])
        stats = None
        if saved:
            meta_saved = json.loads((out / "model.json").read_text(encoding="utf-8"))
            stats = (meta_saved["stats"]["mean"], meta_saved["stats"]["std"])
        hubert_rate = int((cfg["audio"]["hubert"] or {}).get("sample_rate", 16000))
        data = build_training_data(args.data, spec, cfg["fps"], window, settings["stride"],
                                   settings["holdout_seconds"], stats=stats,
                                   hubert_model=args.hubert if unieg_cfg.use_hubert else None,
                                   hubert_rate=hubert_rate, device=str(device), log=lambda m: _log(m, dist))
        if saved and [s["fingerprint"] for s in saved["data"]] != [s["fingerprint"] for s in data.sources]:
            _log("sheg: warning: the training data differ from the run being resumed; it will not continue exactly",
                 dist)

        torch.manual_seed(settings["seed"])
        net = UniEG(unieg_cfg)
        if saved:
            loaded, _ = load_model_dir(out, "cpu")
            if loaded.config != unieg_cfg:
                raise BadInput(f"{out} holds a network that does not match config {settings['config']}")
            # Copy into freshly allocated tensors: the loader's tensors may sit at other memory alignments, which
            # changes CPU kernels' rounding and would make the resumed run drift from the uninterrupted one.
            net.load_state_dict(loaded.state_dict())
            del loaded
        net = net.to(device).train()
        model = net
        if dist.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
        optimizer = torch.optim.Adam(net.parameters(), lr=settings["lr"])
        gen = torch.Generator().manual_seed(settings["seed"])
        history = []
        step = 0
        if saved:
            optimizer.load_state_dict(saved["optimizer"])
            gen.set_state(saved["generator"])
            torch.set_rng_state(saved["torch_rng"])
            history = list(saved["history"])
            step = int(saved["step"])

        schedule = NoiseSchedule()
        weights = LossWeights(eps=settings["loss_eps"], velocity=settings["loss_vel"],
                              huber_x0=settings["loss_huber"])
        run = _loss_fn(model, schedule, weights)
        use_null = unieg_cfg.classifier_free and settings["null_prob"] > 0
        null_rows = torch.linspace(0.0, 1.0, global_batch) < settings["null_prob"]  # official: first ~20 %
        mine = slice(dist.rank * local_batch, (dist.rank + 1) * local_batch)
        shape = (global_batch, window, unieg_cfg.net_dim)

        def state_dict():
            return {"format": STATE_FORMAT, "version": 1, "step": step, "total_steps": steps, "settings": settings,
                    "optimizer": optimizer.state_dict(), "generator": gen_state,
                    "torch_rng": torch.get_rng_state(), "history": history, "data": data.sources}

        def checkpoint():
            if dist.main:
                _write_checkpoint(out, net, _model_meta(settings, args, data, step), state_dict())

        _log(f"training {settings['config']} UniEG ({net.count_parameters() / 1e6:.2f} M parameters) on "
             f"{len(data.sources)} take(s): {len(data.train)} training windows of {window} frames, "
             f"{len(data.val)} validation windows; batch {global_batch}"
             + (f" over {dist.world} processes" if dist.world > 1 else "")
             + f", steps {step}->{steps}, device {device}", dist)

        gen_state = gen.get_state()  # the generator as of the last completed step (what a resume needs)
        acc = torch.zeros(5, dtype=torch.float64)  # loss, eps, vel, huber, grad-norm sums since the last log line
        acc_steps, t_log, t_start, start_step = 0, time.perf_counter(), time.perf_counter(), step
        try:
            while step < steps:
                # 1. the global batch: window picks, timesteps, noise (identical on every rank); keep my slice
                rows = torch.randint(0, len(data.train), (global_batch,), generator=gen)
                t = torch.randint(0, schedule.num_steps, (global_batch,), generator=gen)
                noise = torch.randn(shape, generator=gen)
                x0, mel, hub = _batch_tensors(data.train, rows[mine].numpy(), device)
                null_mask = null_rows[mine].to(device) if use_null else None
                # 2. loss, gradients (averaged over ranks by DDP), clip, step
                losses = run(x0, mel, hub, t[mine].to(device), noise[mine].to(device), null_mask)
                optimizer.zero_grad(set_to_none=True)
                losses["loss"].backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), settings["grad_clip"])
                optimizer.step()
                step += 1
                gen_state = gen.get_state()
                acc += torch.tensor([float(losses[k].detach()) for k in ("loss", "eps_mse", "velocity", "huber")]
                                    + [float(grad_norm)], dtype=torch.float64)
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
                    _log(f"step {step}/{steps}  loss {mean[0]:.4f}  eps {mean[1]:.5f}  vel {mean[2]:.5f}  "
                         f"huber {mean[3]:.5f}  |grad| {mean[4]:.3g}  {per_step:.3f} s/step  eta {_fmt_time(eta)}",
                         dist)
                    history.append({"step": step, "loss": mean[0], "eps_mse": mean[1], "velocity": mean[2],
                                    "huber": mean[3], "grad_norm": mean[4], "seconds_per_step": per_step})
                    acc.zero_()
                    acc_steps, t_log = 0, now
                if (args.val_every and step % args.val_every == 0) or last:
                    if dist.main:
                        val = validation_loss(net, data.val, schedule, weights, local_batch, device)
                        if val is not None:
                            _log(f"val  step {step}  loss {val['loss']:.4f}  eps {val['eps_mse']:.5f}  "
                                 f"vel {val['velocity']:.5f}  huber {val['huber']:.5f}", dist)
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
        if step == start_step:  # nothing to do (already at --steps): still leave a consistent folder
            checkpoint()
        _log(f"done: {out} at step {step}", dist)
    finally:
        if dist.world > 1:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()
    return 0


def _barrier(dist: Dist) -> None:
    if dist.world > 1:
        import torch.distributed as tdist

        tdist.barrier()


# ----------------------------------------------------------------------------------------------------------------
# command line


def build_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `train` subcommand to `subparsers` (from sheg.cli); sets func=train_main."""
    p = subparsers.add_parser(
        "train", help="train a UniEG model on SMPL-X takes (.npz + same-named .wav)",
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("data", nargs="+", help="take .npz files (each with a same-named .wav) or folders of them")
    p.add_argument("-o", "--out", required=True, help="model folder to write (checkpoints rewrite it)")
    p.add_argument("--config", default=None, choices=list(CONFIGS),
                   help="network and audio recipe (default small; tiny is for tests)")
    p.add_argument("--steps", type=int, default=None,
                   help=f"train until this many optimizer steps (default {DEFAULT_STEPS}; with --resume the saved "
                        "target)")
    p.add_argument("--batch", type=int, default=None, help="global batch of windows (default 32), split across "
                                                           "DDP processes")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 2e-4)")
    p.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    p.add_argument("--seed", type=int, default=None, help="seed of init, batches and noise (default 0)")
    p.add_argument("--holdout-seconds", type=float, default=None,
                   help="hold out the last seconds of every take for validation (default 10)")
    p.add_argument("--window", type=int, default=None, help="frames per training window (default: the config's)")
    p.add_argument("--stride", type=int, default=None, help="frames between training window starts (default 1)")
    p.add_argument("--loss-eps", type=float, default=None, help="weight of MSE(eps) (default 1000, official)")
    p.add_argument("--loss-vel", type=float, default=None, help="weight of the x̂0 velocity MSE (default 1)")
    p.add_argument("--loss-huber", type=float, default=None, help="weight of Huber(x̂0) (default 100)")
    p.add_argument("--null-prob", type=float, default=None,
                   help="fraction of each batch trained without conditions, classifier-free configs (default 0.2)")
    p.add_argument("--grad-clip", type=float, default=None, help="gradient-norm clip (default 0.5)")
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
