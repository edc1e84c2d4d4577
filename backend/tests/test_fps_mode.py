"""The official 15-fps SHOW path (`fps_mode: official-15`): mel hop 1200 at 18 kHz, 15 motion frames per second."""

import json

import numpy as np
import pytest
import soundfile as sf

import sheg
from sheg.data.audio import AudioFeatureSpec, load_audio, mel_features
from sheg.errors import BadInput
from sheg.testing import make_tiny_model_dir
from sheg_cli import run_cli


@pytest.fixture(scope="module")
def show_dir(tmp_path_factory):
    return make_tiny_model_dir(str(tmp_path_factory.mktemp("models") / "show"))


@pytest.fixture(scope="module")
def ten_seconds(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "ten.wav"
    t = np.arange(10 * 16000) / 16000
    sf.write(path, (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), 16000)
    return str(path)


def test_ten_seconds_give_150_frames_at_15_fps_from_hop_1200_mel(show_dir, ten_seconds):
    native = sheg.load_model(show_dir, device="cpu")
    official = sheg.load_model(show_dir, device="cpu", fps_mode="official-15")
    assert (native.fps, official.fps, official.audio_spec.hop_length) == (30.0, 15.0, 1200)
    mel, _, frames, _ = official._features(ten_seconds)
    assert frames == 150 and mel.shape == (1, 150, 128)
    wave = load_audio(ten_seconds, 18000)
    np.testing.assert_allclose(mel[0].numpy(), mel_features(wave, AudioFeatureSpec(hop_length=1200), 150), rtol=1e-6)
    take = official.generate(ten_seconds, steps=2)
    assert (take.frames, take.fps) == (150, 15.0) and take.meta["fps_mode"] == "official-15"
    assert native.generate(ten_seconds, steps=2).frames == 300


def test_the_card_and_the_flag_choose_the_mode(show_dir, ten_seconds, tmp_path):
    card_dir = tmp_path / "card"
    make_tiny_model_dir(str(card_dir))
    meta = json.loads((card_dir / "model.json").read_text())
    (card_dir / "model.json").write_text(json.dumps(meta | {"fps_mode": "official-15"}))
    assert sheg.load_model(str(card_dir), device="cpu").fps == 15.0
    assert sheg.load_model(str(card_dir), device="cpu", fps_mode="native").fps == 30.0
    out = tmp_path / "take.npz"
    proc = run_cli("generate", ten_seconds, "-o", out, "--model", show_dir, "--fps-mode", "official-15", "--steps", "2",
                   "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["takes"][0]["frames"] == 150
    with np.load(out) as z:
        assert float(z["mocap_frame_rate"]) == 15.0 and z["poses"].shape == (150, 165)


def test_official_15_is_refused_where_it_means_nothing(tmp_path):
    beat = make_tiny_model_dir(str(tmp_path / "beat"), layout="beat")
    with pytest.raises(BadInput, match="official-15 is for SHOW models at 30 fps; this BEAT model already runs at 15"):
        sheg.load_model(beat, device="cpu", fps_mode="official-15")
    with pytest.raises(BadInput, match="unknown fps mode 'fast'"):
        sheg.load_model(beat, device="cpu", fps_mode="fast")
    with pytest.raises(BadInput, match="not DiffGesture"):
        sheg.load_model("diffgesture-small", device="cpu", fps_mode="official-15")
