"""Metrics and the skeleton: synthetic signals behave, onsets match librosa's, the add-on's table is identical."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from sheg.evaluation import metrics

from sheg.motion import skeleton

HERE = Path(__file__).resolve()
ADDON_SMPLX = HERE.parents[2] / "addon" / "core" / "smplx.py"
SHARED = HERE.parents[3] / "shared" / "data"
MEAN_VEL = SHARED / "emage" / "mean_vel_smplxflame_30.npy"
BEAT2 = SHARED / "beat2" / "2_scott_0_1_1"
FPS = 30.0
SR = 16000


def speech_like(seconds: float, rate_hz: float = 3.0, seed: int = 0) -> np.ndarray:
    """Noise bursts `rate_hz` times a second: clear, regularly spaced onsets."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    gate = (np.sin(2 * np.pi * rate_hz * np.arange(n) / SR) > 0.5).astype(np.float32)
    return (0.1 * gate * rng.standard_normal(n)).astype(np.float32)


def moving_poses(seconds: float, seed: int = 0) -> np.ndarray:
    """(T, 165) smooth arm and spine motion with speed minima once or twice a second."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * FPS)) / FPS
    poses = np.zeros((len(t), 55, 3))
    for j in metrics.UPPER_BODY_JOINTS:
        poses[:, j] = 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 1.0) * t[:, None] + rng.uniform(0, 6, 3))
    return poses.reshape(len(t), -1)


# ------------------------------------------------------------------------------------------------- skeleton


def test_skeleton_table_is_consistent():
    assert len(skeleton.JOINT_NAMES) == len(skeleton.PARENTS) == skeleton.NUM_JOINTS == 55
    assert all(p < j for j, p in enumerate(skeleton.PARENTS))  # parents come first
    assert skeleton.REST_JOINTS.shape == (55, 3)
    assert np.allclose(skeleton.REST_JOINTS[0], 0.0)
    left = [i for i, n in enumerate(skeleton.JOINT_NAMES) if n.startswith("left_")]
    right = [skeleton.JOINT_NAMES.index("right_" + skeleton.JOINT_NAMES[i][5:]) for i in left]
    assert np.allclose(skeleton.REST_JOINTS[left] * (-1, 1, 1), skeleton.REST_JOINTS[right])


@pytest.mark.skipif(not ADDON_SMPLX.exists(), reason="the add-on folder is not in this checkout")
def test_skeleton_matches_the_addon_table():
    spec = importlib.util.spec_from_file_location("addon_smplx_for_test", ADDON_SMPLX)
    addon = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(addon)  # imports no bpy
    assert tuple(addon.JOINT_NAMES) == skeleton.JOINT_NAMES
    assert tuple(addon.PARENTS) == skeleton.PARENTS
    assert np.array_equal(np.asarray(addon.STANDIN_REST_JOINTS, dtype=np.float64), skeleton.REST_JOINTS)
    # the two sides of the process boundary must also agree on the ARKit weight order of BEAT models
    from sheg.motion.layouts import ARKIT_NAMES

    assert tuple(addon.ARKIT_NAMES) == ARKIT_NAMES


def test_rodrigues_matches_known_rotations():
    r = skeleton.axis_angle_to_matrix(np.array([[0.0, 0.0, np.pi / 2], [0.0, 0.0, 0.0], [1e-10, 0.0, 0.0]]))
    assert np.allclose(r[0], [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    assert np.allclose(r[1], np.eye(3)) and np.allclose(r[2], np.eye(3), atol=1e-9)
    rng = np.random.default_rng(0)
    mats = skeleton.axis_angle_to_matrix(rng.normal(size=(100, 3)))
    assert np.allclose(mats @ np.swapaxes(mats, -1, -2), np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(mats), 1.0)


def test_forward_kinematics_rest_pose_and_bone_lengths():
    rest = skeleton.forward_kinematics(np.zeros((2, 165)))
    assert rest.shape == (2, 55, 3) and np.allclose(rest[0], skeleton.REST_JOINTS)
    posed = skeleton.forward_kinematics(np.random.default_rng(0).normal(size=(5, 55, 3)) * 0.5)
    parents = np.array(skeleton.PARENTS[1:])
    bone = lambda p: np.linalg.norm(p[:, 1:] - p[:, parents], axis=-1)  # noqa: E731
    assert np.allclose(bone(posed), bone(rest[:1]), atol=1e-12)  # rotations keep bone lengths
    # bending the left elbow +90 degrees about y, (x, y, z) -> (z, y, -x), moves the wrist, not the shoulder
    poses = np.zeros((1, 55, 3))
    poses[0, 18] = (0.0, np.pi / 2, 0.0)
    bent = skeleton.forward_kinematics(poses)[0]
    assert np.allclose(bent[16], skeleton.REST_JOINTS[16])
    forearm = skeleton.REST_JOINTS[20] - skeleton.REST_JOINTS[18]
    assert np.allclose(bent[20] - bent[18], [forearm[2], forearm[1], -forearm[0]], atol=1e-12)
    with pytest.raises(ValueError, match="poses must be"):
        skeleton.forward_kinematics(np.zeros((3, 10)))


# ------------------------------------------------------------------------------------------------- onsets


def test_numpy_onsets_match_librosa_envelope_and_peaks():
    librosa = pytest.importorskip("librosa")
    wave = speech_like(4.0)
    ours = metrics.onset_envelope(wave, SR)
    ref = librosa.onset.onset_strength(y=wave, sr=SR, hop_length=512)  # spectral flux only: no numba
    assert ours.shape == ref.shape
    assert np.allclose(ours, ref, atol=1e-4 * ref.max())
    times = metrics.onset_times(wave, SR)
    # bursts start at (1/12 + k) / 3 s: every burst has an onset soon after it starts, and no onset is elsewhere
    starts = (1.0 / 12 + np.arange(12)) / 3.0
    lag = times[:, None] - starts[None, :]
    assert np.all(((lag > -0.02) & (lag < 0.1)).any(axis=1))
    assert np.all(((lag > -0.02) & (lag < 0.1)).any(axis=0))
    assert len(metrics.onset_times(np.zeros(SR, dtype=np.float32), SR)) == 0


def test_pick_peaks_rules():
    # windows are x[n - pre : n + post]: pre 1, post 2 look one frame to each side
    x = np.array([0.0, 1.0, 0.0, 0.0, 0.5, 0.0, 0.9, 1.0, 0.0])
    assert list(metrics.pick_peaks(x, 1, 2, 1, 2, 0.1, 0)) == [1, 4, 7]
    assert list(metrics.pick_peaks(x, 1, 2, 1, 2, 0.35, 0)) == [1, 7]  # 0.5 is not 0.35 above its mean 0.167
    assert list(metrics.pick_peaks(x, 1, 2, 1, 2, 0.1, 3)) == [1, 7]  # wait: frames 2..4 after a peak are skipped
    assert list(metrics.pick_peaks(x, 1, 1, 1, 1, 0.1, 0)) == [1, 4, 6]  # post 1: the right neighbour is not seen


# ------------------------------------------------------------------------------------------------- BC


def test_beat_consistency_static_pose_is_zero_and_motion_is_positive():
    mean_speed = np.full(55, 0.1)
    wave = speech_like(10.0)
    static = skeleton.forward_kinematics(np.zeros((300, 165)))
    assert metrics.beat_consistency(static, wave, SR, FPS, mean_speed) == 0.0
    moving = skeleton.forward_kinematics(moving_poses(10.0))
    bc = metrics.beat_consistency(moving, wave, SR, FPS, mean_speed)
    assert 0.2 < bc <= 1.0
    # silence has no onsets: BC is undefined
    assert np.isnan(metrics.beat_consistency(moving, np.zeros_like(wave), SR, FPS, mean_speed))
    with pytest.raises(ValueError, match="too short"):
        metrics.beat_consistency(moving[:100], wave, SR, FPS, mean_speed)


def test_motion_beats_are_speed_minima_above_threshold():
    t = np.arange(300) / FPS
    positions = np.zeros((300, 55, 3))
    positions[:, 20, 0] = 0.1 * np.sin(2 * np.pi * 1.0 * t)  # speed minima twice a second, at the extremes
    speed = np.full(55, 0.1)
    beats = metrics.motion_beats(positions, FPS, speed, 60, 240, joints=(20,), threshold=0.0)[0]
    # |cos| minima at t = 0.25 + k/2 s; relative to frame 60 (2 s): frames 7.5, 22.5, ... -> found within a frame
    expected = np.arange(7.5, 180, 15)
    assert len(beats) == len(expected)
    assert np.all(np.abs(beats - expected) <= 1)
    # near-zero speed at the minima: a high threshold removes them all
    assert len(metrics.motion_beats(positions, FPS, speed, 60, 240, joints=(20,), threshold=5.0)[0]) == 0


@pytest.mark.skipif(not (MEAN_VEL.exists() and BEAT2.with_suffix(".npz").exists()), reason="shared data absent")
def test_beat_consistency_on_real_beat2_matches_the_reference_measurement():
    from sheg.data.audio import load_audio

    with np.load(BEAT2.with_suffix(".npz")) as z:
        poses = z["poses"][:900]  # the first 30 s keep the test fast
    wave = load_audio(str(BEAT2.with_suffix(".wav")), SR)[: 30 * SR]
    positions = skeleton.forward_kinematics(poses)
    mean_speed = np.load(MEAN_VEL)
    bc = metrics.beat_consistency(positions, wave, SR, FPS, mean_speed)
    assert 0.7 < bc < 0.9  # the reference measurement on the whole take was 0.789 (facts §C.2)
    jittered = positions + np.random.default_rng(0).normal(0, 0.003, positions.shape)
    assert metrics.beat_consistency(jittered, wave, SR, FPS, mean_speed) > bc  # BC rewards jitter (known flaw)
    assert metrics.jerk_stats(jittered, FPS)["jerk_mean"] > 10 * metrics.jerk_stats(positions, FPS)["jerk_mean"]


# ------------------------------------------------------------------------------------------------- others


def test_l1div_and_sample_diversity():
    static = np.ones((50, 55, 3))
    assert metrics.l1_div(static) == 0.0
    moving = skeleton.forward_kinematics(moving_poses(2.0))
    assert metrics.l1_div(moving) > 0.0
    # two coordinates alternating +-1 around 0: |x - mean| = 1 each
    x = np.zeros((4, 1, 3))
    x[:, 0, 0] = [1, -1, 1, -1]
    x[:, 0, 1] = [-1, 1, -1, 1]
    assert metrics.l1_div(x) == pytest.approx(2.0)
    a, b = np.zeros((10, 2, 3)), np.ones((12, 2, 3))
    assert metrics.sample_diversity([a, a]) == 0.0
    assert metrics.sample_diversity([a, b]) == pytest.approx(6.0)  # 6 coordinates 1 m apart, cut to 10 frames
    assert metrics.sample_diversity([a, b, a]) == pytest.approx(4.0)  # pairs: 6, 0, 6
    with pytest.raises(ValueError, match="two samples"):
        metrics.sample_diversity([a])


def test_jerk_of_constant_velocity_is_zero_and_jitter_raises_it():
    t = np.arange(60) / FPS
    positions = np.zeros((60, 55, 3))
    positions[:, :, 0] = 0.5 * t[:, None]  # uniform motion
    assert np.allclose(metrics.jerk(positions, FPS), 0.0, atol=1e-9)
    positions[:, :, 1] = t[:, None] ** 3  # y = t^3: jerk 6 m/s^3 exactly
    stats = metrics.jerk_stats(positions, FPS)
    assert stats["jerk_mean"] == pytest.approx(6.0) and stats["jerk_p95"] == pytest.approx(6.0)
    smooth = skeleton.forward_kinematics(moving_poses(4.0))
    noisy = smooth + np.random.default_rng(0).normal(0, 0.002, smooth.shape)
    assert metrics.jerk_stats(noisy, FPS)["jerk_mean"] > 5 * metrics.jerk_stats(smooth, FPS)["jerk_mean"]
    assert np.isnan(metrics.jerk_stats(smooth[:3], FPS)["jerk_mean"])


def test_seam_jerk_sees_a_step_at_the_seam():
    smooth = skeleton.forward_kinematics(moving_poses(6.0))
    broken = smooth.copy()
    broken[100:] += 0.01  # a 1 cm jump where a new window starts
    clean = metrics.seam_jerk(smooth, FPS, [100])
    jumpy = metrics.seam_jerk(broken, FPS, [100])
    assert clean["seam_ratio"] < 3.0
    assert jumpy["seam_ratio"] > 10.0
    assert jumpy["within_jerk"] == pytest.approx(clean["within_jerk"])
    assert np.isnan(metrics.seam_jerk(smooth, FPS, [])["seam_jerk"])


def test_correlation_and_jaw_energy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=100)
    assert metrics.pearson(x, x) == pytest.approx(1.0)
    assert metrics.pearson(x, -2 * x + 3) == pytest.approx(-1.0)
    assert np.isnan(metrics.pearson(np.ones(10), x[:10]))
    # a jaw that opens with the audio energy correlates strongly
    wave = speech_like(4.0, rate_hz=1.5)
    frames = 120
    rms = metrics.audio_rms(wave, SR, FPS, frames)
    assert rms.shape == (frames,) and rms.max() > 10 * max(rms.min(), 1e-9)
    poses = np.zeros((frames, 165))
    poses[:, 66] = 0.2 * rms / rms.max()  # jaw x rotation
    assert metrics.jaw_energy_correlation(poses, wave, SR, FPS) == pytest.approx(1.0)
    assert metrics.jaw_energy_correlation(poses, wave, SR, FPS, mode="magnitude") == pytest.approx(1.0)
    assert np.isnan(metrics.jaw_energy_correlation(np.zeros((frames, 165)), wave, SR, FPS))
    # against a captured jaw: the common length, sign kept
    longer = np.zeros((frames + 7, 165))
    longer[:frames, 66] = poses[:, 66] * 3.0 + 0.01
    assert metrics.jaw_reference_correlation(poses, longer[:frames]) == pytest.approx(1.0)
    longer[:frames, 66] *= -1.0
    assert metrics.jaw_reference_correlation(poses, longer) == pytest.approx(-1.0)  # the 7 extra frames unused


def test_format_table():
    table = metrics.format_table([{"row": "GT", "BC": 0.78912, "jerk": 28.71, "n": 3},
                                  {"row": "gen|1", "BC": float("nan"), "extra": 1e-6}])
    lines = table.splitlines()
    assert lines[0] == "| row | BC | jerk | n | extra |"
    assert lines[1] == "|---|---|---|---|---|"
    assert lines[2] == "| GT | 0.7891 | 28.71 | 3 |  |"
    assert lines[3] == "| gen\\|1 | n/a |  |  | 1.000e-06 |"
    assert metrics.format_table([]) == ""


def test_jaw_silence_ratio_sees_a_mouth_that_stays_open_in_a_pause():
    sr, fps = 16000, 30.0
    t = np.arange(6 * sr) / sr
    wave = (0.3 * np.sin(2 * np.pi * 200 * t) * (np.sin(2 * np.pi * 4 * t) > -0.5)).astype(np.float32)
    wave[2 * sr:4 * sr] = 0.0  # a 2 s pause inside speech
    frames = 180
    silent = metrics.silent_frames(wave, sr, fps, frames)
    assert silent[66:114].all() and not silent[:55].any() and not silent[125:].any()
    poses = np.zeros((frames, 165))
    poses[:, 66] = 0.2  # jaw x: open all the time
    assert metrics.jaw_silence_ratio(poses, wave, sr, fps) == pytest.approx(1.0)
    poses[silent, 66] = 0.01  # closes in the pause
    assert metrics.jaw_silence_ratio(poses, wave, sr, fps) == pytest.approx(0.05)
    assert np.isnan(metrics.jaw_silence_ratio(poses, wave[:2 * sr], sr, fps))  # no pause: no figure
