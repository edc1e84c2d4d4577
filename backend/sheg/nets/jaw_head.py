"""Jaw from speech: a small convolutional regressor from the audio features a model reads to the jaw's opening.

A diffusion model samples the jaw like any other channel, so on voices it never heard its jaw can open and close
without regard to the speech. This head predicts the jaw's mean opening given the audio (a regression, not a
sample), ±0.2 s of context, and replaces the sampled opening (the SMPL-X jaw x rotation) in the generated take.
It is stored inside the UniEG model folder (weights under ``jaw_head.``, its shape in model.json "jaw_head") and
trained after the diffusion network by ``sheg train --jaw-head-steps``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from sheg.errors import BadInput


RECORD_KEYS = {"steps", "val_corr"}  # what training wrote down next to the shape (model.json "jaw_head")


@dataclass(frozen=True)
class JawHeadConfig:
    audio_dim: int = 128  # audio feature channels (the model's mel bands)
    hidden: int = 64
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d) -> "JawHeadConfig":
        if not isinstance(d, dict):
            raise BadInput(f"jaw_head must be an object, got {d!r}")
        unknown = set(d) - set(cls.__dataclass_fields__) - RECORD_KEYS
        if unknown:
            raise BadInput(f"jaw_head has unknown keys {', '.join(sorted(unknown))}")
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        cfg = cls(**fields)
        if not (isinstance(cfg.audio_dim, int) and cfg.audio_dim > 0 and isinstance(cfg.hidden, int) and cfg.hidden > 0):
            raise BadInput(f"jaw_head audio_dim and hidden must be positive integers, got {cfg}")
        return cfg


class JawHead(nn.Module):
    """(B, T, audio_dim) audio features -> (B, T) normalised jaw opening. Three non-causal convolutions: 7 frames,
    5 frames dilated by 2, 5 frames (a receptive field of 19 frames, ±0.3 s at 30 fps)."""

    def __init__(self, config: JawHeadConfig):
        super().__init__()
        self.config = config
        h = config.hidden
        self.layers = nn.Sequential(
            nn.Conv1d(config.audio_dim, h, 7, padding=3), nn.GELU(), nn.Dropout(config.dropout),
            nn.Conv1d(h, h, 5, padding=4, dilation=2), nn.GELU(),
            nn.Conv1d(h, 1, 5, padding=2))

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or audio.shape[-1] != self.config.audio_dim:
            raise BadInput(f"the jaw head reads (batch, frames, {self.config.audio_dim}) audio features, got "
                           f"{tuple(audio.shape)}")
        return self.layers(audio.transpose(1, 2))[:, 0]
