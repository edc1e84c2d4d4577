"""Training data: take discovery, motion resampling, windows, hold-out and statistics."""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sheg.data.audio import AudioFeatureSpec
from sheg.data.windows import (STD_FLOOR, _axis_angle_to_quat, _quat_to_axis_angle, build_training_data, find_takes,
                       resample_motion, window_starts)
from sheg.errors import BadInput
from sheg.motion.layouts import SHOW, show_vector_from_take

SPEC = AudioFeatureSpec(sample_rate=18000, hop_length=600, log=True)
BEAT2 = Path(__file__).resolve().parents[3] / "shared" / "data" / "beat2" / "2_scott_0_1_1.npz"


def write_take(folder: Path, name: str, seconds: float, fps: float = 30.0, seed: int = 0,
               audio_seconds: float | None = None) -> Path:
    """A synthetic take: smooth random joint rotations and expressions, plus 16 kHz noise bursts as 'speech'."""
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * fps))
    time = np.arange(frames) / fps
    freq = rng.uniform(0.3, 2.0, size=(1, 165))
    phase = rng.uniform(0, 2 * np.pi, size=(1, 165))
    poses = 0.2 * np.sin(2 * np.pi * freq * time[:, None] + phase)
    expressions = np.sin(2 * np.pi * freq[:, :100] * time[:, None] + phase[:, :100])
    np.savez(folder / f"{name}.npz", poses=poses.astype(np.float32), expressions=expressions,
             trans=np.zeros((frames, 3)), betas=np.zeros(10), mocap_frame_rate=np.array(fps))
    sr = 16000
    n = int((audio_seconds or seconds) * sr)
    envelope = (np.sin(2 * np.pi * 3.0 * np.arange(n) / sr) > 0.3).astype(np.float32)
    sf.write(folder / f"{name}.wav", 0.1 * envelope * rng.standard_normal(n).astype(np.float32), sr)
    return folder / f"{name}.npz"


def test_find_takes_pairs_npz_with_audio_and_rejects_orphans(tmp_path):
    write_take(tmp_path, "b", 2.0)
    write_take(tmp_path, "a", 2.0)
    pairs = find_takes([tmp_path])
    assert [Path(p).name for p, _ in pairs] == ["a.npz", "b.npz"]
    assert all(Path(a).suffix == ".wav" for _, a in pairs)
    (tmp_path / "a.wav").unlink()
    with pytest.raises(BadInput, match="no audio"):
        find_takes([tmp_path])
    with pytest.raises(BadInput, match="no audio"):
        find_takes([tmp_path / "a.npz"])
    with pytest.raises(BadInput, match="not found"):
        find_takes([tmp_path / "missing.npz"])


def test_quaternion_round_trip_and_resampling():
    rng = np.random.default_rng(1)
    rotvec = rng.normal(size=(50, 3)) * 0.8
    rotvec[0] = 0.0
    assert np.allclose(_quat_to_axis_angle(_axis_angle_to_quat(rotvec)), rotvec, atol=1e-9)

    poses = 0.3 * np.sin(np.linspace(0, 6, 61))[:, None] * np.ones((1, 165))
    expr = np.linspace(0, 1, 61)[:, None] * np.ones((1, 100))
    same_p, same_e = resample_motion(poses, expr, 30.0, 30.0)
    assert same_p is poses and same_e is expr
    up_p, up_e = resample_motion(poses, expr, 30.0, 60.0)
    assert up_p.shape == (121, 165) and up_e.shape == (121, 100)
    assert np.allclose(up_p[::2], poses, atol=1e-9)  # original frames are kept
    assert np.allclose(up_e[1], 0.5 * (expr[0] + expr[1]))
    # a slerp midpoint of two rotations about the same axis is the mean angle
    assert np.allclose(up_p[1], 0.5 * (poses[0] + poses[1]), atol=1e-9)
    down_p, _ = resample_motion(up_p, up_e, 60.0, 30.0)
    assert np.allclose(down_p, poses, atol=1e-9)


def test_windows_have_the_right_shapes_stride_and_exclude_the_holdout(tmp_path):
    write_take(tmp_path, "long", 6.0, seed=0)
    write_take(tmp_path, "short", 4.0, seed=1, audio_seconds=4.5)  # audio longer than motion: motion decides
    data = build_training_data([tmp_path], SPEC, 30.0, window=32, stride=8, holdout_seconds=1.5)
    assert [s["name"] for s in data.sources] == ["long", "short"]
    assert [s["frames"] for s in data.sources] == [180, 120]
    assert [s["train_frames"] for s in data.sources] == [135, 75]
    # windows start every 8 frames and end inside the training part of their take
    for k, stop in ((0, 135), (1, 75)):
        starts = data.train.index[data.train.index[:, 0] == k, 1]
        assert list(starts) == list(range(0, stop - 32 + 1, 8))
        assert starts.max() + 32 <= stop
    val_starts = data.val.index[:, 1]
    assert len(data.val) > 0 and val_starts.min() >= 75
    vec, mel, hub, known = data.train.gather([0, 1, len(data.train) - 1])
    assert vec.shape == (3, 32, SHOW.dim) and mel.shape == (3, 32, 128) and hub is None and known is None
    assert vec.dtype == np.float32 and mel.dtype == np.float32
    # statistics are those of the training frames only
    raw = np.concatenate([show_vector_from_take(*_arrays(tmp_path / f"{n}.npz"))[:stop]
                          for n, stop in (("long", 135), ("short", 75))])
    assert np.allclose(data.mean, raw.mean(0), atol=1e-5)
    assert np.allclose(data.std, np.maximum(raw.std(0), STD_FLOOR), rtol=1e-4)
    # and the windows hold the normalised vectors of the take
    first = (show_vector_from_take(*_arrays(tmp_path / "long.npz"))[:32] - data.mean) / data.std
    assert np.allclose(data.train.gather([0])[0][0], first, atol=1e-5)


def _arrays(path):
    with np.load(path) as z:
        return z["poses"], z["expressions"]


def test_holdout_longer_than_the_take_is_a_clear_error(tmp_path):
    write_take(tmp_path, "a", 2.0)
    with pytest.raises(BadInput, match="holdout-seconds|training"):
        build_training_data([tmp_path], SPEC, 30.0, window=32, holdout_seconds=5.0)
    with pytest.raises(BadInput, match="window"):
        window_starts(0, 10, 0, 1)


def test_motion_at_another_frame_rate_is_resampled(tmp_path):
    write_take(tmp_path, "a", 3.0, fps=60.0)
    data = build_training_data([tmp_path], SPEC, 30.0, window=16, stride=4, holdout_seconds=0.0)
    assert data.sources[0]["frames"] == 90
    assert len(data.val) == 0


@pytest.mark.skipif(not BEAT2.exists(), reason="shared BEAT2 sample not available")
def test_real_beat2_take_loads(tmp_path):
    data = build_training_data([BEAT2], SPEC, 30.0, window=88, stride=44, holdout_seconds=10.0)
    src = data.sources[0]
    assert src["frames"] == 1906 and src["train_frames"] == 1606
    assert len(data.val) == 5  # 300 held-out frames, windows of 88 every 44
    assert np.all(data.std >= STD_FLOOR) and np.isfinite(data.mean).all()
