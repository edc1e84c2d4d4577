"""Training the jaw-from-speech head (sheg.nets.jaw_head) on the windows of a training run.

The target is one channel of the normalised motion vector (the jaw's opening); windows whose take does not hold it
(a SHOW fit trained with --no-show-jaw) are left out of the loss, as in the diffusion loss. Mean squared error,
AdamW; the picks come from their own generator, so the diffusion run's random stream is untouched.
"""

from __future__ import annotations

import numpy as np
import torch

from sheg.errors import BadInput
from sheg.evaluation.metrics import pearson
from sheg.nets.jaw_head import JawHead

JAW_HEAD_LR = 1e-3
JAW_HEAD_WEIGHT_DECAY = 1e-2


def _batch(windows, rows, channel: int):
    vec, mel, _, known = windows.gather(rows)
    target = torch.from_numpy(np.ascontiguousarray(vec[:, :, channel]))
    weight = (torch.ones(len(rows), 1) if known is None else torch.from_numpy(known[:, :, channel]))
    return torch.from_numpy(mel), target, weight.expand_as(target)


def _rows_holding(windows, channel: int) -> np.ndarray:
    """Indices of the windows whose take holds `channel` (a SHOW fit trained with --no-show-jaw does not)."""
    return np.flatnonzero([windows.takes[k].known is None or bool(windows.takes[k].known[channel])
                           for k, _ in windows.index])


def _masked_mse(pred, target, weight) -> torch.Tensor:
    return ((pred - target) ** 2 * weight).sum() / weight.sum().clamp_min(1.0)


def train_jaw_head(head: JawHead, train, val, channel: int, steps: int, seed: int, batch: int = 32,
                   log=None) -> dict:
    """Fit `head` to channel `channel` of the WindowSets' vectors for `steps` AdamW steps; returns
    {"train_mse", "val_mse", "val_corr"} (the validation entries NaN without validation windows)."""
    log = log or (lambda msg: None)
    if steps < 1:
        raise BadInput(f"--jaw-head-steps must be at least 1, got {steps}")
    rows_ok = _rows_holding(train, channel)
    if not len(rows_ok):
        raise BadInput("no training take holds the jaw (every one is a SHOW fit with --no-show-jaw): the jaw head "
                       "needs captured jaws")
    gen = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.AdamW(head.parameters(), lr=JAW_HEAD_LR, weight_decay=JAW_HEAD_WEIGHT_DECAY)
    head.train()
    running = 0.0
    for step in range(1, steps + 1):
        rows = rows_ok[torch.randint(0, len(rows_ok), (batch,), generator=gen).numpy()]
        mel, target, weight = _batch(train, rows, channel)
        loss = _masked_mse(head(mel), target, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running = 0.9 * running + 0.1 * loss.item() if step > 1 else loss.item()
    head.eval()
    report = {"train_mse": running, "val_mse": float("nan"), "val_corr": float("nan")}
    val_rows = _rows_holding(val, channel)
    if len(val_rows):
        with torch.no_grad():
            mel, target, weight = _batch(val, val_rows, channel)
            pred = head(mel)
        report["val_mse"] = float(_masked_mse(pred, target, weight))
        report["val_corr"] = pearson(pred.flatten().numpy(), target.flatten().numpy())
    log(f"jaw head: {steps} steps, train MSE {report['train_mse']:.4f}, validation MSE {report['val_mse']:.4f}, "
        f"correlation with the held-out jaw {report['val_corr']:.3f}")
    return report
