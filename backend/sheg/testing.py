"""Tiny random models for tests of the plumbing (worker, add-on, CLI). Their motion is noise, not gestures."""

from __future__ import annotations

import torch

from sheg.motion.layouts import SHOW


def tiny_show_config():
    from sheg.nets.unieg import UniEGConfig

    return UniEGConfig(gesture_dim=SHOW.gesture_dim, expression_dim=SHOW.expression_dim, style_dim=2,
                       latent_dim=32, ff_size=64, num_layers=2, num_heads=4, aud_latent_dim=32,
                       use_hubert=False, classifier_free=True)


def make_tiny_model_dir(out_dir: str, seed: int = 0, window: int = 32, overlap: int = 4) -> str:
    """Write a model folder with a tiny random SHOW-layout UniEG (mel only, 30 fps)."""
    from sheg.io.checkpoint import save_model_dir
    from sheg.nets.unieg import UniEG

    torch.manual_seed(seed)
    net = UniEG(tiny_show_config())
    with torch.no_grad():  # the official init zeroes the output layers; random values make outputs depend on input
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    meta = {
        "name": "tiny-test", "arch": "unieg", "layout": "show", "fps": 30.0, "window": window, "overlap": overlap,
        "audio": {"sample_rate": 18000, "hop_length": 600, "n_fft": 2048, "n_mels": 128, "power": 2.0,
                  "log": False, "hubert": None},
        "stats": {"mean": [0.0] * SHOW.dim, "std": [0.1] * SHOW.dim},
        "speakers": ["a", "b"], "default_style": 0, "guidance_scale": 1.0,
        "sampler": {"steps": 5, "jump_length": 3, "jump_n_sample": 2},
        "source": {"file": "random"}, "license": "test only",
    }
    save_model_dir(out_dir, net, meta)
    return out_dir
