"""Synthesize checkpoints in the official DiffSHEG format for tests (the real ones are 600 MB downloads).

The parameter names and shapes come from ../shared/docs/state_dict_{show,beat}.txt, which were produced by
instantiating the official `UniDiffuser`; the dict around them follows the official trainer's `save()`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import torch

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SHARED = PROJECT_ROOT.parent / "shared"
SHARED_DOCS = SHARED / "docs"
SHARED_DATA = SHARED / "data"
LISTING = {"show": "state_dict_show.txt", "beat": "state_dict_beat.txt"}


def listing_path(profile: str) -> Path:
    return SHARED_DOCS / LISTING[profile]


def official_shapes(profile: str) -> dict[str, tuple[int, ...]]:
    """{name: shape} in file order, parsed from the shared state_dict listing ('name<TAB>(d0, d1)' lines)."""
    shapes = {}
    for line in listing_path(profile).read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split("\t")
            shapes[name] = tuple(ast.literal_eval(shape))
    return shapes


def official_state_dict(profile: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors with the official names and shapes (BatchNorm counters int64, variances positive)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in official_shapes(profile).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(12345, dtype=torch.long)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[name] = torch.randn(shape, generator=gen) * 0.02
    return state


def write_official_tar(path, profile: str, seed: int = 0, *, module_prefix: bool = False, edit=None) -> Path:
    """torch.save a dict shaped like the official trainer's checkpoint to `path`; returns the path.

    module_prefix: store names as 'module.<name>' (checkpoints saved from a DDP wrapper).
    edit: optional function(encoder_state_dict) -> state_dict, to make broken variants.
    """
    encoder = official_state_dict(profile, seed)
    if edit is not None:
        encoder = edit(encoder)
    if module_prefix:
        encoder = {"module." + k: v for k, v in encoder.items()}
    first = next(iter(encoder.values()))
    checkpoint = {
        "opt_encoder": {  # a tiny Adam state: the real one is as large as the weights
            "state": {0: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(first),
                          "exp_avg_sq": torch.zeros_like(first)}},
            "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0,
                              "amsgrad": False, "params": [0]}],
        },
        "ep": 2599,
        "total_it": 123456,
        "FGD": None,
        "best_fgd": np.float64(24.87),  # the official trainer stores numpy scalars here
        "MSE": None,
        "best_mse": np.float64(0.31),
        "PCK": None,
        "best_pck": np.float64(0.62),
        "encoder": encoder,
    }
    path = Path(path)
    torch.save(checkpoint, path)
    return path


def rewrite_official_tar(src, dst, edit) -> Path:
    """Copy an official-format checkpoint with its encoder state_dict passed through `edit` (memory-mapped read)."""
    checkpoint = torch.load(src, map_location="cpu", weights_only=False, mmap=True)  # a file this module wrote
    checkpoint["encoder"] = edit(dict(checkpoint["encoder"]))
    torch.save(checkpoint, dst)
    return Path(dst)


def write_official_stats(folder, profile: str, seed: int = 0) -> Path:
    """Write statistics files in the official formats to `folder`; returns the path to pass as stats_path."""
    rng = np.random.default_rng(seed)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if profile == "show":
        pose_mean = rng.normal(size=165)
        pose_mean[:3] = rng.uniform(0.001, 0.05, 3)  # jaw means are small positive angles, as in the real file
        stats = {"pose_mean": pose_mean, "pose_std": rng.uniform(0.1, 1, 165),
                 "expression_mean": rng.normal(size=100), "expression_std": rng.uniform(0.1, 1, 100)}
        np.save(folder / "talkshow_mean_std.npy", stats)  # a pickled dict, as in assets/data.tar.gz
        return folder / "talkshow_mean_std.npy"
    np.save(folder / "axis_angle_mean.npy", rng.normal(size=141))
    np.save(folder / "axis_angle_std.npy", rng.uniform(0.1, 1, 141))
    np.save(folder / "json_mean.npy", rng.uniform(0, 0.3, 51))
    np.save(folder / "json_std.npy", rng.uniform(0.01, 0.2, 51))
    return folder


def write_official_archive(path, show_stats, beat_stats) -> Path:
    """A data.tar.gz in the layout of DiffSHEG's assets/data.tar.gz (DIFFSHEG_FACTS §1.4), from a SHOW
    talkshow_mean_std.npy and a folder with the four BEAT .npy files."""
    import tarfile

    beat = Path(beat_stats)
    train = "data/BEAT/beat_cache/beat_4english_15_141/train"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(show_stats, "data/SHOW/talkshow_mean_std.npy")
        for stem in ("axis_angle_mean", "axis_angle_std"):
            tar.add(beat / f"{stem}.npy", f"{train}/{stem}.npy")
        for stem in ("json_mean", "json_std"):
            tar.add(beat / f"{stem}.npy", f"{train}/facial52/{stem}.npy")
    return Path(path)
