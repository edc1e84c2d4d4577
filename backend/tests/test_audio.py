import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from sheg.data.audio import AudioFeatureSpec, load_audio, mel_features, num_motion_frames
from sheg.errors import BadInput

SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared")
SPEECH = os.path.join(SHARED, "data", "speech")


def tone(seconds, rate, channels=1):
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * 220 * t)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS"),
                                         ("MP3", "MPEG_LAYER_III")], ids=["wav", "flac", "ogg", "mp3"])
def test_reads_common_formats_mixed_to_mono_and_resampled(tmp_path, fmt, subtype):
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, tone(2.0, 44100, channels=2), 44100, format=fmt, subtype=subtype)
    wave = load_audio(str(path), 18000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 36000) < 2000  # mp3 adds encoder padding
    assert 0.1 < np.abs(wave).max() < 0.5


def test_mel_matches_librosa_on_real_speech():
    import librosa

    path = os.path.join(SPEECH, "arctic_a0007.wav")
    if not os.path.exists(path):
        pytest.skip("shared speech data not present")
    spec = AudioFeatureSpec()
    wave = load_audio(path, spec.sample_rate)
    mel = mel_features(wave, spec)
    ref = librosa.feature.melspectrogram(y=wave, sr=18000, n_fft=2048, hop_length=600, n_mels=128, power=2.0,
                                         center=True, pad_mode="constant")
    frames = len(wave) // 600
    assert mel.shape == (frames, 128) == (120, 128)  # 4.0 s at 30 fps
    np.testing.assert_allclose(mel, ref[:, :frames].T, rtol=1e-3, atol=1e-6 * ref.max())


def test_mel_chunking_is_seamless(monkeypatch):
    import sheg.data.audio as audio

    wave = np.random.default_rng(0).standard_normal(18000 * 3).astype(np.float32)
    whole = mel_features(wave, AudioFeatureSpec())
    monkeypatch.setattr(audio, "_MEL_CHUNK_FRAMES", 7)
    chunked = mel_features(wave, AudioFeatureSpec())
    np.testing.assert_allclose(chunked, whole, rtol=1e-5)


def test_frame_count_rule():
    assert num_motion_frames(599, 600) == 0
    assert num_motion_frames(600, 600) == 1
    assert num_motion_frames(18000 * 10, 600) == 300


def test_bad_files_give_one_line_errors(tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(BadInput, match="not found"):
        load_audio(str(missing), 18000)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(BadInput, match="empty"):
        load_audio(str(empty), 18000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + os.urandom(200))
    with pytest.raises(BadInput, match="cannot decode"):
        load_audio(str(corrupt), 18000)
    text = tmp_path / "notes.txt"
    text.write_text("this is not audio\n" * 20)
    with pytest.raises(BadInput, match="cannot decode"):
        load_audio(str(text), 18000)
    with pytest.raises(BadInput):
        load_audio(str(tmp_path), 18000)
    for exc_path in (missing, empty, corrupt, text):
        try:
            load_audio(str(exc_path), 18000)
        except BadInput as exc:
            assert "\n" not in str(exc)


def test_shorter_than_one_frame_is_rejected(tmp_path):
    path = tmp_path / "blip.wav"
    sf.write(path, np.zeros(100, dtype=np.float32), 16000)
    wave = load_audio(str(path), 18000)
    with pytest.raises(BadInput, match="too short"):
        mel_features(wave, AudioFeatureSpec())


@pytest.mark.slow
def test_two_hour_file_memory_stays_bounded(tmp_path):
    """Decoding + mel of a 2-hour file must not hold the decoded input or a full STFT in memory."""
    path = tmp_path / "long.wav"
    rate = 16000
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        block = (0.1 * np.sin(np.arange(rate * 60) / 7.0)).astype(np.float32)
        for _ in range(120):
            f.write(block)
    code = (
        "import resource, sys\n"
        "from sheg.data.audio import load_audio, mel_features, AudioFeatureSpec\n"
        f"w = load_audio({str(path)!r}, 18000)\n"
        "m = mel_features(w, AudioFeatureSpec())\n"
        "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024\n"
        "print(len(w), m.shape[0], peak)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    samples, frames, peak = map(int, out.stdout.split())
    assert frames == 2 * 3600 * 30
    output_bytes = samples * 4 + frames * 128 * 4
    # Interpreter + numpy/librosa/scipy import cost ~250 MB; the rest must stay near the outputs' size.
    assert peak < output_bytes * 2 + 600e6, f"peak {peak / 1e6:.0f} MB for {output_bytes / 1e6:.0f} MB of output"
