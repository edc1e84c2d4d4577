"""Default model v2 plumbing: speakers as style slots, a held-out speaker, the per-utterance audio front end and
the jaw's rest in pauses."""

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from sheg.data.audio import AudioFeatureSpec, mel_features, normalize_utterance, pause_frames
from sheg.data.windows import build_training_data, split_speaker
from sheg.errors import BadInput
from sheg.inference.base import close_jaw_in_pauses
from test_train import COMMON, train, write_take

SPEC = AudioFeatureSpec(sample_rate=18000, hop_length=600, log=True)


@pytest.fixture(scope="module")
def speakers(tmp_path_factory):
    root = tmp_path_factory.mktemp("speakers")
    for speaker, names in {"ann": ["a1", "a2"], "bob": ["b1"], "cid": ["c1"]}.items():
        (root / speaker).mkdir()
        for i, name in enumerate(names):
            write_take(root / speaker, name, 4.0, seed=10 * len(name) + i + ord(speaker[0]))
    return root


def test_speaker_names_split_off_paths_but_existing_paths_stay_whole(tmp_path):
    assert split_speaker("oliver=/data/show") == ("oliver", "/data/show")
    assert split_speaker("/data/show") == ("default", "/data/show")
    odd = tmp_path / "x=y"
    odd.mkdir()
    assert split_speaker(str(odd)) == ("default", str(odd))
    assert split_speaker("a b=/data")[0] == "default"  # not a name: a path


def test_held_out_speaker_only_validates_and_stays_out_of_statistics(speakers):
    args = [f"ann={speakers / 'ann'}", f"bob={speakers / 'bob'}", f"cid={speakers / 'cid'}"]
    data = build_training_data(args, SPEC, 30.0, window=32, stride=4, holdout_seconds=1.0, holdout_speaker="bob")
    assert data.speakers == ["ann", "cid"]
    by_name = {s["name"]: s for s in data.sources}
    assert by_name["b1"]["speaker"] == "bob" and by_name["b1"]["train_frames"] == 0
    assert by_name["a1"]["train_frames"] == by_name["a1"]["frames"] == 120  # no seconds held out of the others
    train_takes = {data.train.takes[k].name for k, _ in data.train.index}
    val_takes = {data.val.takes[k].name for k, _ in data.val.index}
    assert train_takes == {"a1", "a2", "c1"} and val_takes == {"b1"}
    assert set(data.train.speakers(range(len(data.train)))) == {0, 1}
    assert set(data.val.speakers(range(len(data.val)))) == {-1}
    # statistics from the training speakers only
    without = build_training_data(args[::2], SPEC, 30.0, window=32, stride=4, holdout_seconds=0.0)
    assert np.allclose(without.mean, data.mean) and np.allclose(without.std, data.std)
    with pytest.raises(BadInput, match="no data is named for that speaker"):
        build_training_data(args, SPEC, 30.0, window=32, holdout_speaker="dan")
    with pytest.raises(BadInput, match="every take belongs to the held-out speaker"):
        build_training_data(args[1:2], SPEC, 30.0, window=32, holdout_speaker="bob")


def test_training_gives_one_style_slot_per_speaker_and_generates_in_each(speakers, tmp_path):
    out = tmp_path / "model"
    args = [f"ann={speakers / 'ann'}", f"bob={speakers / 'bob'}", f"cid={speakers / 'cid'}"]
    assert train([*args, "-o", out, *COMMON, "--holdout-speaker", "bob", "--steps", "3", "--val-every", "3"]) == 0
    meta = json.loads((out / "model.json").read_text())
    assert meta["speakers"] == ["ann", "cid"] and meta["config"]["style_dim"] == 2
    assert meta["source"]["settings"]["holdout_speaker"] == "bob"
    assert {s["speaker"] for s in meta["source"]["data"]} == {"ann", "bob", "cid"}
    history = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("val_loss" in row for row in history)  # validated on bob

    from sheg.inference.load import load_model

    model = load_model(str(out), device="cpu")
    wave = (0.1 * np.random.default_rng(0).standard_normal(18000 * 2)).astype(np.float32)
    a = model.generate((wave, 18000), seed=0, steps=2, jumps=1, style=0).arrays["poses"]
    c = model.generate((wave, 18000), seed=0, steps=2, jumps=1, style=1).arrays["poses"]
    assert a.shape == c.shape == (60, 165) and not np.allclose(a, c)
    with pytest.raises(BadInput, match="styles 0..1 \\(ann, cid\\)"):
        model.generate((wave, 18000), seed=0, steps=1, style=2)
    # a resume must name the same speakers
    with pytest.raises(BadInput, match="name the same speakers"):
        train([*args[:2], "-o", out, *COMMON, "--resume", "--steps", "4"])


def test_balanced_picks_give_every_speaker_the_same_share(speakers, tmp_path):
    args = [f"ann={speakers / 'ann'}", f"bob={speakers / 'bob'}"]
    data = build_training_data(args, SPEC, 30.0, window=32, stride=1, holdout_seconds=0.0)
    weights = data.train.speaker_balanced_weights()
    slots = data.train.speakers(range(len(data.train)))
    assert (slots == 0).sum() == 2 * (slots == 1).sum()  # ann has two takes, bob one
    assert np.isclose(weights[slots == 0].sum(), 0.5) and np.isclose(weights[slots == 1].sum(), 0.5)
    out = tmp_path / "balanced"
    assert train([*args, "-o", out, *COMMON, "--steps", "2", "--balance-speakers"]) == 0
    assert json.loads((out / "model.json").read_text())["source"]["settings"]["balance_speakers"] is True


def speech_with_a_pause(rate: int, gain: float = 1.0, seed: int = 0) -> np.ndarray:
    """2 s of syllable-like noise bursts, 2 s of silence, 2 s of bursts."""
    rng = np.random.default_rng(seed)
    n = 2 * rate
    bursts = (np.sin(2 * np.pi * 4.0 * np.arange(n) / rate) > -0.2) * rng.standard_normal(n)
    return (gain * 0.1 * np.concatenate([bursts, np.zeros(n), bursts[::-1]])).astype(np.float32)


def test_utterance_normalisation_removes_the_recording_level_and_keeps_silence_finite():
    spec = AudioFeatureSpec.from_dict({**SPEC.to_dict(), "normalize": "utterance"})
    quiet, loud = speech_with_a_pause(18000, 0.05), speech_with_a_pause(18000, 20.0)
    a, b = mel_features(quiet, spec), mel_features(loud, spec)
    assert a.shape == (180, 128) and np.allclose(a, b, atol=1e-3)
    raw = mel_features(quiet, SPEC)
    assert np.abs(raw.mean(axis=0)).max() > 1.0  # the plain log-mel keeps the level
    assert np.abs(a.mean(axis=0)).max() < 1e-4 and a[70:110].mean() < a[:50].mean() - 1.0  # the pause reads low
    silent = mel_features(np.zeros(18000, np.float32), spec)
    assert np.isfinite(silent).all() and np.allclose(silent, 0.0, atol=1e-3)
    with pytest.raises(BadInput, match="audio.normalize must be one of"):
        AudioFeatureSpec.from_dict({**SPEC.to_dict(), "normalize": "loudness"})
    with pytest.raises(BadInput, match="needs audio.log true"):
        AudioFeatureSpec.from_dict({**SPEC.to_dict(), "log": False, "normalize": "utterance"})


def test_jaw_rests_in_pauses_and_speech_frames_are_untouched():
    wave = speech_with_a_pause(18000)
    pauses = pause_frames(wave, 600, 180, min_frames=9)
    assert pauses[65:115].all() and not pauses[:55].any() and not pauses[125:].any()
    rng = np.random.default_rng(0)
    vec = rng.normal(0.1, 0.05, (180, 232)).astype(np.float32)
    jaw = slice(129, 132)
    out = close_jaw_in_pauses(vec, jaw, pauses, ramp_frames=3)
    inside = np.flatnonzero(pauses)
    assert np.array_equal(out[~pauses], vec[~pauses])  # speech as generated
    assert np.array_equal(np.delete(out, jaw, axis=1), np.delete(vec, jaw, axis=1))  # only the jaw
    assert np.all(out[inside[3]:inside[-1] - 2, jaw] == 0.0)  # shut inside the pause
    assert 0 < abs(out[inside[0], 129]) < abs(vec[inside[0], 129])  # eased in
    # a pause shorter than the minimum is speech
    assert not pause_frames(wave[: 2 * 18000 + 3000], 600, 65, min_frames=9).any()


def test_a_model_card_can_ask_for_the_jaw_rest(tmp_path):
    from sheg.inference.load import load_model
    from sheg.testing import make_tiny_model_dir

    folder = Path(make_tiny_model_dir(str(tmp_path / "m")))
    wav = tmp_path / "pause.wav"
    sf.write(wav, speech_with_a_pause(16000), 16000)
    plain = load_model(str(folder), device="cpu").generate(str(wav), seed=0, steps=2, jumps=1).arrays["poses"]
    meta = json.loads((folder / "model.json").read_text())
    meta["sampler"]["close_jaw_in_pauses"] = True
    (folder / "model.json").write_text(json.dumps(meta))
    shut = load_model(str(folder), device="cpu").generate(str(wav), seed=0, steps=2, jumps=1).arrays["poses"]
    jaw = slice(22 * 3, 23 * 3)
    assert np.abs(plain[75:105, jaw]).max() > 1e-4 and np.abs(shut[75:105, jaw]).max() == 0.0
    assert np.array_equal(np.delete(shut, np.s_[66:69], axis=1), np.delete(plain, np.s_[66:69], axis=1))
    assert np.array_equal(shut[:50], plain[:50])


def test_the_default_model_shuts_the_mouth_in_two_seconds_of_silence(tmp_path):
    """The issue's clip: speech, 2 s of silence, speech (the bundled CMU ARCTIC utterance twice)."""
    import sheg
    from sheg.data.audio import load_audio
    from sheg.evaluation.metrics import jaw_energy_correlation, jaw_silence_ratio

    speech = load_audio(str(Path(__file__).resolve().parents[2] / "assets" / "speech" / "arctic_a0007.wav"), 16000)
    wave = np.concatenate([speech, np.zeros(2 * 16000, np.float32), speech])
    wav = tmp_path / "speech_pause_speech.wav"
    sf.write(wav, wave, 16000)
    poses = sheg.load_model(None, device="cpu").generate(str(wav), seed=0).arrays["poses"]
    assert jaw_silence_ratio(poses, wave, 16000, 30.0) <= 0.2
    assert jaw_energy_correlation(poses, wave, 16000, 30.0) > 0.5
