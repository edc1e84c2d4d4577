"""Tiny random models for tests of the plumbing (worker, add-on, CLI). Their motion is noise, not gestures."""

from __future__ import annotations

import torch

from sheg.motion.layouts import get_layout

# What differs between the two layouts' tiny models: the audio rate of the official profile (SHOW 30 fps, BEAT 15 fps),
# and BEAT's lack of classifier-free guidance, as in the official checkpoints.
_TINY = {
    "show": {"fps": 30.0, "hop_length": 600, "classifier_free": True},
    "beat": {"fps": 15.0, "hop_length": 1200, "classifier_free": False},
}


def tiny_config(layout: str = "show", hubert_dim: int | None = None):
    """A tiny UniEG config for `layout`; with `hubert_dim` it reads HuBERT features of that width."""
    from sheg.nets.unieg import UniEGConfig

    spec = get_layout(layout)
    return UniEGConfig(gesture_dim=spec.gesture_dim, expression_dim=spec.expression_dim, style_dim=2,
                       latent_dim=32, ff_size=64, num_layers=2, num_heads=4, aud_latent_dim=32,
                       use_hubert=hubert_dim is not None, hubert_dim=hubert_dim or 1024,
                       classifier_free=_TINY[layout]["classifier_free"])


def make_tiny_model_dir(out_dir: str, seed: int = 0, window: int = 32, overlap: int = 4, layout: str = "show",
                        hubert: str | None = None, hubert_dim: int = 1024) -> str:
    """Write a model folder with a tiny random UniEG in the SHOW (30 fps) or BEAT (15 fps, ARKit) layout; mel only
    unless `hubert` names a HuBERT model (folder or id) whose `hubert_dim`-wide features the model then reads."""
    from sheg.io.checkpoint import save_model_dir
    from sheg.nets.unieg import UniEG

    spec, rates = get_layout(layout), _TINY[layout]
    torch.manual_seed(seed)
    net = UniEG(tiny_config(layout, None if hubert is None else hubert_dim))
    with torch.no_grad():  # the official init zeroes the output layers; random values make outputs depend on input
        for p in net.parameters():
            p.add_(0.02 * torch.randn_like(p))
    meta = {
        "name": f"tiny-test-{layout}" if layout != "show" else "tiny-test", "arch": "unieg", "layout": layout,
        "fps": rates["fps"], "window": window, "overlap": overlap,
        "audio": {"sample_rate": 18000, "hop_length": rates["hop_length"], "n_fft": 2048, "n_mels": 128,
                  "power": 2.0, "log": False,
                  "hubert": None if hubert is None else {"model": hubert, "sample_rate": 16000}},
        "stats": {"mean": [0.0] * spec.dim, "std": [0.1] * spec.dim},
        "speakers": ["a", "b"], "default_style": 0, "guidance_scale": 1.0,
        "sampler": {"steps": 5, "jump_length": 3, "jump_n_sample": 2},
        "source": {"file": "random"}, "license": "test only",
    }
    save_model_dir(out_dir, net, meta)
    return out_dir


def make_tiny_hubert(out_dir: str, seed: int = 0, hidden_size: int = 16) -> str:
    """Write a tiny random HuBERT in the Hugging Face layout (config.json, model.safetensors,
    preprocessor_config.json) with HuBERT-large's front end: kernel 400 / stride 320 samples, layer-normalised
    convolutions, stable layer norm, a feature extractor that normalises the clip. Needs `transformers`."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    torch.manual_seed(seed)
    config = HubertConfig(hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=2 * hidden_size, conv_dim=(8,) * 7, feat_extract_norm="layer",
                          do_stable_layer_norm=True, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                          conv_bias=True)
    HubertModel(config).eval().save_pretrained(out_dir)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(out_dir)
    return out_dir
