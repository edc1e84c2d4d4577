"""Extractor-free metrics of generated motion (DATA_AND_METRICS_FACTS.md §C.7).

- Beat consistency (BC), BEAT2/EMAGE protocol: audio onsets vs local minima of normalised joint speed.
- L1div (EMAGE), and sample diversity: mean pairwise L1 between several samples for one audio.
- Jerk statistics of joint positions (m/s^3), and the jerk at FOPPAS window seams vs within windows.
- Jaw opening vs audio RMS energy correlation (a lip-sync proxy).

Only numpy, scipy and librosa's filters are used. Onsets are computed in numpy (a spectral-flux envelope identical
to librosa.onset.onset_strength, and librosa's peak-picking rules) because librosa's peak picker runs through numba,
which has crashed in this environment and is not available inside Blender.

Positions are (T, 55, 3) metres (see sheg.motion.skeleton.forward_kinematics); audio is a mono float waveform.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.signal import argrelextrema

from sheg.data.audio import AudioFeatureSpec, mel_features, true_runs

# Joints whose speed minima count as motion beats in BEAT2/EMAGE's BC: spine1-3, neck, collars, head, shoulders,
# elbows, wrists.
UPPER_BODY_JOINTS = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)
JAW_JOINT = 22

# EMAGE evaltools settings.
BC_SAMPLE_RATE = 16000  # onsets are detected on 16 kHz audio
BC_HOP = 512
BC_SIGMA = 0.3  # seconds; 0.3 for BEAT2 (EMAGE uses 0.5 for TalkSHOW)
BC_ORDER = 7  # neighbours on each side a speed minimum must undercut
BC_THRESHOLD = 0.1  # minimum normalised speed at a beat (EMAGE 2024 scripts used 0.3)
BC_SKIP_SECONDS = 2.0  # first and last seconds left out


# ----------------------------------------------------------------------------------------------------------------
# audio onsets


def onset_envelope(wave: np.ndarray, sr: int, hop_length: int = BC_HOP, n_fft: int = 2048,
                   n_mels: int = 128) -> np.ndarray:
    """Spectral-flux onset strength (F,) of a mono wave, as librosa.onset.onset_strength with its defaults.

    mel power spectrogram (centred frames) -> dB (ref 1, top_db 80) -> positive first difference -> mean over
    bands, shifted right by 1 + n_fft // (2 hop) frames so frame k describes time k * hop / sr.
    """
    wave = np.asarray(wave, dtype=np.float32)
    frames = 1 + len(wave) // hop_length
    spec = AudioFeatureSpec(sample_rate=int(sr), hop_length=hop_length, n_fft=n_fft, n_mels=n_mels, power=2.0)
    mel = mel_features(wave, spec, frames).T.astype(np.float64)  # (n_mels, F)
    db = 10.0 * np.log10(np.maximum(1e-10, mel))
    db = np.maximum(db, db.max() - 80.0)
    flux = np.maximum(0.0, db[:, 1:] - db[:, :-1]).mean(axis=0)  # (F - 1,)
    shift = 1 + n_fft // (2 * hop_length)
    return np.concatenate([np.zeros(shift), flux])[:frames]


def pick_peaks(x: np.ndarray, pre_max: int, post_max: int, pre_avg: int, post_avg: int, delta: float,
               wait: int) -> np.ndarray:
    """Indices of peaks of x (librosa.util.peak_pick's rule, in numpy).

    A frame n is a peak if x[n] is the maximum of x[n - pre_max : n + post_max], at least `delta` above the mean of
    x[n - pre_avg : n + post_avg], and more than `wait` frames after the previous peak.
    """
    x = np.asarray(x, dtype=np.float64)
    n_frames = len(x)
    peaks = []
    n = 0
    while n < n_frames:
        if n == 0:
            lo_max, lo_avg = 0, 0  # librosa special-cases the first frame: only the frames after it count
        else:
            lo_max, lo_avg = max(0, n - pre_max), max(0, n - pre_avg)
        if x[n] == x[lo_max:min(n + post_max, n_frames)].max() and \
                x[n] >= x[lo_avg:min(n + post_avg, n_frames)].mean() + delta:
            peaks.append(n)
            n += wait + 1
        else:
            n += 1
    return np.asarray(peaks, dtype=np.int64)


def onset_times(wave: np.ndarray, sr: int, hop_length: int = BC_HOP) -> np.ndarray:
    """Onset times in seconds, as librosa.onset.onset_detect(y, sr, hop_length, units='time') with its defaults."""
    env = onset_envelope(wave, sr, hop_length)
    env = env - env.min()
    env = env / (env.max() + np.finfo(env.dtype).tiny)
    if not env.any() or not np.all(np.isfinite(env)):
        return np.zeros(0)
    frames_per = lambda seconds: int(math.ceil(seconds * sr // hop_length))  # noqa: E731 (librosa's rounding)
    peaks = pick_peaks(env, pre_max=frames_per(0.03), post_max=frames_per(0.0) + 1, pre_avg=frames_per(0.10),
                       post_avg=frames_per(0.10) + 1, delta=0.07, wait=frames_per(0.03))
    return peaks * hop_length / float(sr)


def _resample(wave: np.ndarray, sr: int, target: int) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32)
    if int(sr) == int(target):
        return wave
    import librosa

    return librosa.resample(wave, orig_sr=int(sr), target_sr=int(target)).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# beat consistency


def joint_speeds(positions: np.ndarray, fps: float) -> np.ndarray:
    """Speed (T, J) in m/s per joint: central differences inside, one-sided at both ends (EMAGE)."""
    p = np.asarray(positions, dtype=np.float64)
    if len(p) < 2:
        return np.zeros(p.shape[:2])
    vel = np.empty_like(p)
    vel[1:-1] = (p[2:] - p[:-2]) * (fps / 2.0)
    vel[0] = (p[1] - p[0]) * fps
    vel[-1] = (p[-1] - p[-2]) * fps
    return np.linalg.norm(vel, axis=-1)


def motion_beats(positions: np.ndarray, fps: float, mean_speed: np.ndarray, start: int, stop: int,
                 joints=UPPER_BODY_JOINTS, order: int = BC_ORDER, threshold: float = BC_THRESHOLD,
                 emage_mask_offset: bool = True) -> list[np.ndarray]:
    """Per joint, frames (relative to `start`) of local speed minima in [start, stop) with normalised speed > threshold.

    mean_speed: (55,) per-joint mean speed of the dataset (EMAGE's mean_vel_smplxflame_30.npy) that normalises the
    speeds. emage_mask_offset=True reproduces EMAGE's code, which tests the threshold at the *unshifted* frame index
    (the minimum's index within the slice, read in the whole sequence); False tests it at the minimum itself.
    """
    speed = joint_speeds(positions, fps) / np.asarray(mean_speed, dtype=np.float64)[None, : positions.shape[1]]
    beats = []
    for j in joints:
        minima = argrelextrema(speed[start:stop, j], np.less, order=order)[0]
        at = minima if emage_mask_offset else minima + start
        at_ok = at < len(speed)
        keep = np.zeros(len(minima), dtype=bool)
        keep[at_ok] = speed[at[at_ok], j] > threshold
        beats.append(minima[keep])
    return beats


def beat_consistency(positions: np.ndarray, wave: np.ndarray, sr: int, fps: float, mean_speed: np.ndarray, *,
                     sigma: float = BC_SIGMA, order: int = BC_ORDER, threshold: float = BC_THRESHOLD,
                     skip_seconds: float = BC_SKIP_SECONDS, joints=UPPER_BODY_JOINTS,
                     emage_mask_offset: bool = True) -> float:
    """Beat consistency of motion with audio (BEAT2/EMAGE protocol), in [0, 1]; nan when the audio has no onset.

    positions (T, 55, 3) metres at `fps`; wave mono at `sr` (resampled to 16 kHz for onsets). The first and last
    `skip_seconds` are left out of both. For each joint in `joints`, the score is the mean over audio onsets of
    exp(-d^2 / (2 sigma^2)), d the distance (s) to the nearest motion beat of that joint; a joint without beats
    scores 0; the result is the mean over `joints`.
    """
    positions = np.asarray(positions, dtype=np.float64)
    skip = int(round(skip_seconds * fps))
    start, stop = skip, len(positions) - skip
    if stop - start < 2:
        raise ValueError(f"motion of {len(positions) / fps:.2f} s is too short for beat consistency: it needs more "
                         f"than {2 * skip_seconds:g} s (the first and last {skip_seconds:g} s are left out)")
    wave16 = _resample(wave, sr, BC_SAMPLE_RATE)
    a0 = int(round(start / fps * BC_SAMPLE_RATE))
    a1 = int(round(stop / fps * BC_SAMPLE_RATE))
    onsets = onset_times(wave16[a0:a1], BC_SAMPLE_RATE)  # seconds from `start`
    if len(onsets) == 0:
        return float("nan")
    beats = motion_beats(positions, fps, mean_speed, start, stop, joints, order, threshold, emage_mask_offset)
    total = 0.0
    for beat_frames in beats:
        if len(beat_frames) == 0:
            continue
        motion_t = beat_frames / float(fps)
        nearest = np.abs(onsets[:, None] - motion_t[None, :]).min(axis=1)
        total += float(np.mean(np.exp(-nearest ** 2 / (2.0 * sigma ** 2))))
    return total / len(joints)


# ----------------------------------------------------------------------------------------------------------------
# diversity


def l1_div(positions: np.ndarray) -> float:
    """EMAGE L1div: sum over frames and coordinates of |x - mean over frames| / T (metres summed over coordinates)."""
    x = np.asarray(positions, dtype=np.float64).reshape(len(positions), -1)
    x = x - x[:1]  # relative to the first frame: a still pose gives exactly 0
    return float(np.abs(x - x.mean(axis=0, keepdims=True)).sum() / max(1, len(x)))


def sample_diversity(samples) -> float:
    """Mean pairwise L1 between samples for one audio: mean over pairs of (1/T) sum_t sum_d |a - b|.

    samples: >= 2 arrays (T, J, 3) (or (T, D)); they are cut to the shortest. Same units as l1_div.
    """
    arrays = [np.asarray(s, dtype=np.float64).reshape(len(s), -1) for s in samples]
    if len(arrays) < 2:
        raise ValueError("sample diversity needs at least two samples (use --seeds 2 or more)")
    frames = min(len(a) for a in arrays)
    dists = [np.abs(a[:frames] - b[:frames]).sum() / max(1, frames) for a, b in itertools.combinations(arrays, 2)]
    return float(np.mean(dists))


# ----------------------------------------------------------------------------------------------------------------
# smoothness


def jerk(positions: np.ndarray, fps: float, joints=UPPER_BODY_JOINTS) -> np.ndarray:
    """Jerk magnitude (T - 3, len(joints)) in m/s^3: |third forward difference| * fps^3; row i spans frames i..i+3."""
    p = np.asarray(positions, dtype=np.float64)[:, list(joints)]
    if len(p) < 4:
        return np.zeros((0, p.shape[1]))
    third = np.diff(p, n=3, axis=0)  # repeated differences: exactly 0 for a still joint
    return np.linalg.norm(third, axis=-1) * float(fps) ** 3


def jerk_stats(positions: np.ndarray, fps: float, joints=UPPER_BODY_JOINTS) -> dict:
    """{'jerk_mean', 'jerk_p95'} over all frames and `joints`, m/s^3 (nan for fewer than 4 frames)."""
    j = jerk(positions, fps, joints)
    if j.size == 0:
        return {"jerk_mean": float("nan"), "jerk_p95": float("nan")}
    return {"jerk_mean": float(j.mean()), "jerk_p95": float(np.percentile(j, 95))}


def seam_jerk(positions: np.ndarray, fps: float, seams, joints=UPPER_BODY_JOINTS) -> dict:
    """Jerk at window seams vs within windows (m/s^3).

    seams: frame indices s where the output switches from one sampler window to the next (frame s - 1 from the
    earlier window, frame s from the later one; for FOPPAS the later windows' start frames). Jerk rows whose 4-frame
    stencil contains the step s - 1 -> s (rows s - 3 .. s - 1) are seam rows, all others within-window rows.
    Returns {'seam_jerk', 'within_jerk', 'seam_ratio'} (nan where a group is empty).
    """
    j = jerk(positions, fps, joints).mean(axis=1)  # (T - 3,) averaged over joints
    is_seam = np.zeros(len(j), dtype=bool)
    for s in seams:
        lo, hi = max(0, int(s) - 3), min(len(j), int(s))
        is_seam[lo:hi] = True
    seam = float(j[is_seam].mean()) if is_seam.any() else float("nan")
    within = float(j[~is_seam].mean()) if (~is_seam).any() else float("nan")
    ratio = seam / within if within > 0 and not math.isnan(seam) else float("nan")
    return {"seam_jerk": seam, "within_jerk": within, "seam_ratio": ratio}


# ----------------------------------------------------------------------------------------------------------------
# lip-sync proxy


def audio_rms(wave: np.ndarray, sr: int, fps: float, frames: int) -> np.ndarray:
    """RMS energy (frames,) of the audio in a window of 2 / fps seconds centred on each motion frame k / fps."""
    wave = np.asarray(wave, dtype=np.float64)
    half = max(1, int(round(sr / fps)))
    centres = np.round(np.arange(frames) * sr / fps).astype(np.int64)
    csum = np.concatenate([[0.0], np.cumsum(wave ** 2)])
    lo = np.clip(centres - half, 0, len(wave))
    hi = np.clip(centres + half, 0, len(wave))
    count = np.maximum(hi - lo, 1)
    return np.sqrt((csum[hi] - csum[lo]) / count)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two equal-length series; nan if either is constant or shorter than 2."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if len(a) != len(b):
        raise ValueError(f"correlation needs equal lengths, got {len(a)} and {len(b)}")
    if len(a) < 2:
        return float("nan")
    a = a - a.mean()
    b = b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    if denom <= 1e-12 * max(1.0, len(a)):
        return float("nan")
    return float((a * b).sum() / denom)


def jaw_opening(poses: np.ndarray, mode: str = "x") -> np.ndarray:
    """Jaw opening (T,) in radians from SMPL-X poses (T, 165) or (T, 55, 3): the jaw's x rotation (mode 'x', the
    SMPL-X mouth-opening axis) or its rotation angle (mode 'magnitude')."""
    jaw = np.asarray(poses, dtype=np.float64).reshape(len(poses), -1, 3)[:, JAW_JOINT]
    if mode == "x":
        return jaw[:, 0]
    if mode == "magnitude":
        return np.linalg.norm(jaw, axis=-1)
    raise ValueError(f"jaw opening mode must be 'x' or 'magnitude', got {mode!r}")


def jaw_energy_correlation(poses: np.ndarray, wave: np.ndarray, sr: int, fps: float, mode: str = "x") -> float:
    """Pearson correlation, at the motion fps, of jaw opening and audio RMS energy (over the common length)."""
    opening = jaw_opening(poses, mode)
    frames = min(len(opening), int(len(wave) * fps / sr))
    return pearson(opening[:frames], audio_rms(wave, sr, fps, frames))


def jaw_reference_correlation(poses: np.ndarray, reference: np.ndarray, mode: str = "x") -> float:
    """Pearson correlation of the jaw opening of poses and of a reference take of the same audio (common length):
    whether the mouth opens where the captured speaker's did."""
    a, b = jaw_opening(poses, mode), jaw_opening(reference, mode)
    frames = min(len(a), len(b))
    return pearson(a[:frames], b[:frames])


SILENCE_LEVEL = 0.05  # RMS below this share of the clip's 95th-percentile RMS is silence
SILENCE_MIN_SECONDS = 0.5  # shorter pauses are part of speaking
SILENCE_MARGIN_SECONDS = 0.1  # the mouth may still be closing just after speech stops (and opening before)


def silent_frames(wave: np.ndarray, sr: int, fps: float, frames: int) -> np.ndarray:
    """(frames,) bool: motion frames inside a pause of at least SILENCE_MIN_SECONDS, less a margin at each end."""
    rms = audio_rms(wave, sr, fps, frames)
    quiet = rms <= SILENCE_LEVEL * max(float(np.percentile(rms, 95)), 1e-9)
    out = np.zeros(frames, bool)
    margin, shortest = int(round(SILENCE_MARGIN_SECONDS * fps)), int(round(SILENCE_MIN_SECONDS * fps))
    for start, stop in true_runs(quiet):
        if stop - start >= shortest:
            out[start + margin:stop - margin] = True
    return out


def jaw_silence_ratio(poses: np.ndarray, wave: np.ndarray, sr: int, fps: float) -> float:
    """Mean jaw opening in the pauses / median jaw opening while speaking (0: the mouth closes when nobody speaks);
    nan when the audio has no pause of SILENCE_MIN_SECONDS."""
    opening = jaw_opening(poses)
    frames = min(len(opening), int(len(wave) * fps / sr))
    opening = opening[:frames]
    silent = silent_frames(wave, sr, fps, frames)
    rms = audio_rms(wave, sr, fps, frames)
    speaking = rms > SILENCE_LEVEL * max(float(np.percentile(rms, 95)), 1e-9)
    if not silent.any() or not speaking.any():
        return float("nan")
    speech_median = float(np.median(opening[speaking]))
    if abs(speech_median) < 1e-9:
        return float("nan")
    return float(np.mean(opening[silent]) / speech_median)


# ----------------------------------------------------------------------------------------------------------------
# report


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if math.isnan(value):
            return "n/a"
        if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
            return f"{value:.3e}"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value).replace("|", "\\|")


def format_table(rows) -> str:
    """Markdown table of dict rows; columns in order of first appearance, missing cells left empty."""
    rows = list(rows)
    if not rows:
        return ""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)
