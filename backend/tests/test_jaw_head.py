"""The jaw-from-speech head: it learns a jaw that follows the audio, trains after the diffusion steps of `sheg train`,
travels inside the model folder, and gives the generated take its jaw opening."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sheg.data.windows import Take, WindowSet
from sheg.errors import CheckpointError
from sheg.nets.jaw_head import JawHead, JawHeadConfig
from sheg.train.jaw_head import train_jaw_head
from test_train import COMMON, train, write_take

JAW = 129  # SHOW vector: the jaw's x rotation follows the 129 gesture values


def synthetic_takes(count: int, frames: int, seed: int) -> list:
    """Takes whose jaw channel is a smoothed loudness of their (random) audio features."""
    rng = np.random.default_rng(seed)
    takes = []
    for i in range(count):
        loud = np.convolve(rng.standard_normal(frames), np.ones(5) / 5, mode="same")
        mel = (loud[:, None] * rng.uniform(0.5, 1.5, 8) + 0.3 * rng.standard_normal((frames, 8))).astype(np.float32)
        vec = rng.standard_normal((frames, 232)).astype(np.float32)
        vec[:, JAW] = np.convolve(loud, np.ones(3) / 3, mode="same")
        takes.append(Take(name=f"t{i}", vectors=vec, mel=mel))
    return takes


def windows(takes, window: int = 32) -> WindowSet:
    index = np.array([(k, s) for k, t in enumerate(takes) for s in range(0, t.frames - window + 1, 4)])
    return WindowSet(takes=takes, index=index, window=window)


def test_the_head_learns_a_jaw_that_follows_the_audio_and_skips_takes_without_a_jaw():
    torch.manual_seed(0)
    train_set, val_set = windows(synthetic_takes(4, 200, 0)), windows(synthetic_takes(1, 200, 1))
    # a take that does not hold the jaw: its (nonsense) jaw must not be learned
    odd = synthetic_takes(1, 200, 2)[0]
    odd.vectors[:, JAW] = 50.0
    odd.known = np.ones(232, bool)
    odd.known[JAW] = False
    train_set = windows(train_set.takes + [odd])
    head = JawHead(JawHeadConfig(audio_dim=8, hidden=16))
    report = train_jaw_head(head, train_set, val_set, JAW, steps=300, seed=0)
    assert report["val_corr"] > 0.9 and report["val_mse"] < 0.2, report


def test_sheg_train_adds_the_head_and_generation_takes_the_jaw_from_it(tmp_path):
    data = tmp_path / "takes"
    data.mkdir()
    write_take(data, "a", 5.0, seed=0)
    write_take(data, "b", 4.0, seed=1)
    out = tmp_path / "model"
    assert train([data, "-o", out, *COMMON, "--steps", "2", "--jaw-head-steps", "20"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["jaw_head"]["steps"] == 20 and meta["jaw_head"]["audio_dim"] == 128
    weights = load_file(str(out / "model.safetensors"))
    assert any(k.startswith("jaw_head.") for k in weights)

    from sheg.inference.load import load_model

    model = load_model(str(out), device="cpu")
    assert model.jaw_head is not None
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000 * 2)).astype(np.float32)
    take = model.generate((wave, 16000), seed=0, steps=2, jumps=1)
    mel, _, _, _ = model._features((wave, 16000))
    with torch.no_grad():
        expected = model.jaw_head(mel)[0] * model.std[JAW] + model.mean[JAW]
    assert np.allclose(take.arrays["poses"][:, 66], expected.numpy(), atol=1e-6)

    # a resumed run keeps the head (it is not part of the diffusion optimizer)
    before = {k: v for k, v in weights.items() if k.startswith("jaw_head.")}
    assert train([data, "-o", out, *COMMON, "--resume", "--steps", "3"]) == 0
    after = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert json.loads((out / "model.json").read_text())["jaw_head"]["steps"] == 20


def test_the_head_is_asked_for_with_a_usable_count(tmp_path):
    from sheg.errors import BadInput

    data = tmp_path / "takes"
    data.mkdir()
    write_take(data, "a", 4.0, seed=4)
    for extra in (["--jaw-head-steps", "-1"], ["--jaw-head-steps", "5", "--arch", "diffgesture"]):
        with pytest.raises(BadInput, match="--jaw-head-steps takes a count >= 0, and is for UniEG"):
            train([data, "-o", tmp_path / "m", *COMMON, "--steps", "1", *extra])
        assert not (tmp_path / "m").exists()  # refused before any training


def test_a_damaged_head_is_a_one_line_error(tmp_path):
    data = tmp_path / "takes"
    data.mkdir()
    write_take(data, "a", 4.0, seed=3)
    out = tmp_path / "model"
    assert train([data, "-o", out, *COMMON, "--steps", "1", "--jaw-head-steps", "2", "--holdout-seconds", "0"]) == 0
    from sheg.io.checkpoint import load_model_dir

    meta = json.loads((out / "model.json").read_text())
    entry = meta.pop("jaw_head")
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="no \"jaw_head\" entry") as info:
        load_model_dir(str(out))
    assert "\n" not in str(info.value)
    meta["jaw_head"] = entry
    (out / "model.json").write_text(json.dumps(meta))
    weights = load_file(str(out / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("jaw_head.layers.0")},
              str(out / "model.safetensors"))
    with pytest.raises(CheckpointError, match="jaw head.*missing"):
        load_model_dir(str(out))
