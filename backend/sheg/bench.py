"""`sheg bench`: speed figures of the engine, printed as a table.

- model calls: forward passes the sampler really made (counted by a hook on the network);
- s per generated s: wall seconds of sampling per second of motion (< 1 is faster than real time);
- frames/s: motion frames generated per wall second;
- overhead: total sampling time / (calls x one bare forward of a full window) — the sampler's own cost on top of
  the network; 1.00 means none (the last window is shorter than a full one, so this is an upper bound). The bare
  forward is timed in the sampler's steady state (per-step style modulations cached, see UniEG.modulation_cache);
  `uncached forward ms` is one forward from scratch, for comparison.
Audio features are timed apart (mel only; HuBERT needs the user's model and is excluded).
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time

import numpy as np
import torch

from sheg.data.audio import AudioFeatureSpec, mel_features
from sheg.motion.layouts import BEAT, SHOW
from sheg.inference.unieg_model import Model
from sheg.inference.load import load_model
from sheg.inference.base import resolve_device


def official_model(profile: str, device: torch.device) -> Model:
    """Official-size SHOW or BEAT UniEG with random weights and the official sampling settings."""
    from sheg.nets.unieg import UniEG, UniEGConfig

    torch.manual_seed(0)
    config = UniEGConfig.official_show() if profile == "show" else UniEGConfig.official_beat()
    layout = SHOW if profile == "show" else BEAT
    net = UniEG(config).to(device)
    meta = {
        "name": f"official-{profile}-random", "layout": profile,
        "fps": 30.0 if profile == "show" else 15.0, "window": 88 if profile == "show" else 34,
        "overlap": 10 if profile == "show" else 4,
        "audio": {"sample_rate": 18000, "hop_length": 600 if profile == "show" else 1200,
                  "hubert": {"model": None, "sample_rate": 16000}},
        "stats": {"mean": [0.0] * layout.dim, "std": [1.0] * layout.dim},
        "guidance_scale": 1.15 if profile == "show" else 1.0,
        "sampler": {"steps": 25, "jump_length": 3, "jump_n_sample": 5 if profile == "show" else 2},
    }
    return Model(net, meta, device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _autocast(device: torch.device, dtype: str):
    return torch.autocast(device.type, dtype=getattr(torch, dtype)) if dtype != "float32" else contextlib.nullcontext()


@contextlib.contextmanager
def _combined(*managers):
    with contextlib.ExitStack() as stack:
        for manager in managers:
            stack.enter_context(manager)
        yield


def _time_forwards(forward, n: int, device: torch.device, context) -> list[float]:
    """Wall seconds of n calls of forward() inside the context manager `context()`."""
    times = []
    with context():
        for _ in range(n):
            _sync(device)
            a = time.perf_counter()
            forward()
            _sync(device)
            times.append(time.perf_counter() - a)
    return times


def _measure(net, forward, sample, device: torch.device, autocast, forward_context) -> tuple[int, float, float]:
    """(network calls of one sampling run, median bare forward s, sampling run s).

    The bare forward is timed before and after the sampling run (the machine's speed drifts; the median of both is
    fairer); the sampling run is timed after a warm-up run (allocator, kernels); calls are counted by a hook."""
    calls = [0]
    handle = net.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        _time_forwards(forward, 2, device, forward_context)  # warm-up
        forward_times = _time_forwards(forward, 5, device, forward_context)
        with autocast:
            sample()  # warm-up
        calls[0] = 0
        _sync(device)
        a = time.perf_counter()
        with autocast:
            sample()
        _sync(device)
        total_s = time.perf_counter() - a
        sampler_calls = calls[0]
        forward_times += _time_forwards(forward, 5, device, forward_context)
    finally:
        handle.remove()
    return sampler_calls, statistics.median(forward_times), total_s


def _row(model, dtype, seconds, frames, calls, forward_s, total_s, uncached_s, feature_s) -> dict:
    return {"model": model.model_id, "device": str(model.device), "dtype": dtype, "audio_s": seconds,
            "frames": frames, "fps": model.fps, "calls": calls, "forward_ms": 1000 * forward_s,
            "uncached_forward_ms": 1000 * uncached_s, "sample_s": total_s, "s_per_s": total_s / seconds,
            "frames_per_s": frames / total_s, "overhead": total_s / (calls * forward_s), "mel_s": feature_s,
            "threads": torch.get_num_threads()}


def bench_diffgesture(model, seconds: float, steps=None, dtype: str = "float32") -> dict:
    """The same figures for a DiffGesture model (its own sampler settings). The bare forward is one guided window:
    a batched guided call is one network forward (cond and uncond in one batch), as the sampler makes it."""
    device = model.device
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(seconds * model.sample_rate))).astype(np.float32)
    frames = model.frames_for(len(wave))
    autocast = _autocast(device, dtype)
    cfg = model.config
    x = torch.randn(1, cfg.n_poses, cfg.pose_dim, device=device)
    t = torch.full((1,), cfg.diffusion_steps // 2, dtype=torch.long, device=device)
    with torch.inference_mode():
        denoiser = model._denoiser(wave, 0, None, model.default_guidance)  # one window, audio bound
    calls, forward_s, total_s = _measure(model.net, lambda: denoiser(x, t),
                                         lambda: model.sample(wave, frames, steps=steps), device, autocast,
                                         lambda: _combined(torch.inference_mode(), autocast))
    return _row(model, dtype, seconds, frames, calls, forward_s, total_s, float("nan"), 0.0)


def bench_model(model: Model, seconds: float, steps=None, jumps=None, dtype: str = "float32") -> dict:
    if not isinstance(model, Model):  # DiffGesture
        return bench_diffgesture(model, seconds, steps=steps, dtype=dtype)
    device = model.device
    spec = model.audio_spec
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(seconds * spec.sample_rate))).astype(np.float32)
    t0 = time.perf_counter()
    mel_np = mel_features(wave, AudioFeatureSpec(sample_rate=spec.sample_rate, hop_length=spec.hop_length))
    feature_s = time.perf_counter() - t0
    mel = torch.from_numpy(mel_np)[None].to(device)
    frames = mel.shape[1]
    hub = torch.zeros(1, frames, model.net.config.hubert_dim, device=device) if model.uses_hubert else None
    autocast = _autocast(device, dtype)
    # One bare forward of a full window, as the sampler calls it (CFG doubling happens inside the network).
    win = min(model.window, frames)
    x = torch.randn(1, win, model.layout.dim, device=device)
    t = torch.full((1,), 500, dtype=torch.long, device=device)
    style = model.style_vector(None)

    def forward():
        model.net(x, t, model.schedule.x0_coeffs(t), mel[:, :win], None if hub is None else hub[:, :win], style,
                  guidance_scale=model.default_guidance)

    # cached: the steady state the sampler sees (the style modulations of a step computed once per run)
    calls, forward_s, total_s = _measure(
        model.net, forward, lambda: model.sample(mel, hub, steps=steps, jumps=jumps), device, autocast,
        lambda: _combined(torch.inference_mode(), autocast, model.net.modulation_cache()))
    uncached_s = statistics.median(_time_forwards(forward, 5, device,
                                                  lambda: _combined(torch.inference_mode(), autocast)))
    return _row(model, dtype, seconds, frames, calls, forward_s, total_s, uncached_s, feature_s)


def format_rows(rows: list[dict]) -> str:
    head = ("model", "device", "dtype", "frames", "calls", "forward ms", "uncached forward ms", "sample s", "s per gen s", "frames/s",
            "overhead")
    lines = [" | ".join(head), " | ".join("---" for _ in head)]
    for r in rows:
        lines.append(" | ".join([r["model"], r["device"], r["dtype"], str(r["frames"]), str(r["calls"]),
                                 f"{r['forward_ms']:.1f}", f"{r['uncached_forward_ms']:.1f}", f"{r['sample_s']:.2f}", f"{r['s_per_s']:.3f}",
                                 f"{r['frames_per_s']:.1f}", f"{r['overhead']:.3f}"]))
    return "\n".join(lines)


def run_bench(models=None, seconds: float = 10.0, device: str = "cpu", steps=None, jumps=None,
              dtype: str = "float32") -> list[dict]:
    dev = resolve_device(device)
    rows = []
    targets = models or ["official-show", "official-beat"]
    for target in targets:
        if target in ("official-show", "official-beat"):
            model = official_model(target.split("-")[1], dev)
        else:
            model = load_model(target, device=str(dev))
        print(f"benchmarking {target} on {dev} ({seconds:g} s of audio) ...", file=sys.stderr)
        rows.append(bench_model(model, seconds, steps=steps, jumps=jumps, dtype=dtype))
        del model
    print(format_rows(rows))
    return rows
