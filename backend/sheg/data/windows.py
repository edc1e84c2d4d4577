"""Training data: SMPL-X takes with their speech, cut into fixed-length windows of network vectors and mel frames.

A take is an `.npz` with BEAT2/AMASS keys — `poses` (T, 165) axis-angle in SMPL-X joint order, `expressions`
(T, 100) (optional: zeros when absent), `mocap_frame_rate` or `mocap_framerate` — next to a `.wav` (or .flac/.ogg/
.mp3) of the same name holding the speech. Motion is resampled to the model's fps (slerp for rotations, linear for
expressions), audio is turned into mel frames at the same rate (sheg.data.audio), and each frame into the layout's
network vector (sheg.motion.layouts; SMPL-X takes feed the SHOW layout).

Speakers: a data argument `NAME=PATH` names the speaker of the takes under PATH (one style slot each, in the order
they first appear); a plain PATH belongs to speaker "default".

Splitting: the last `holdout_seconds` of every take are held out for validation; training windows never touch them.
With `holdout_speaker`, that speaker's takes are validation data as a whole (never trained on, no style slot, not in
the statistics): how a model is judged on a voice it never heard.
Statistics: mean and std of the network vector over all training frames; a std below STD_FLOOR is raised to it
(see there).
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
from dataclasses import dataclass, field

import numpy as np

from sheg.data.audio import AudioFeatureSpec, load_audio, mel_features, num_motion_frames
from sheg.data.show_fits import SHOW_FPS, read_show_fit
from sheg.errors import BadInput
from sheg.motion.layouts import (JAW_JOINT, NUM_EXPRESSIONS, NUM_SMPLX_JOINTS, SHOW, Layout, show_known_channels,
                                 show_vector_from_take)
from sheg.motion.skeleton import mirror_poses

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
# Floor for the per-dimension std used to normalise. Dimensions that move less than 0.01 (0.57 degrees for a
# rotation, 1 % of a unit FLAME coefficient) carry no visible motion; dividing them by their tiny std would turn
# capture noise into unit-variance targets (BEAT2's jaw y/z rotations have std 0.002 rad). Every other dimension of
# BEAT2 has std >= 0.013 and is normalised as usual.
STD_FLOOR = 1e-2


@dataclass
class Take:
    """One take at the model's fps: vectors (T, D) raw network vectors, mel (T, A), hubert (T, H) or None."""

    name: str
    vectors: np.ndarray
    mel: np.ndarray
    hubert: np.ndarray | None = None
    fingerprint: str = ""
    known: np.ndarray | None = None  # (D,) bool: the vector values the file holds (None: all); training masks the rest
    speaker: int = 0  # style slot; -1 for a held-out speaker (validated with the mean of all styles)

    @property
    def frames(self) -> int:
        return len(self.vectors)


@dataclass
class WindowSet:
    """Windows into a list of takes: `index` (W, 2) rows of (take number, start frame); all windows are N frames."""

    takes: list
    index: np.ndarray
    window: int

    def __len__(self) -> int:
        return len(self.index)

    def gather(self, rows) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Stack windows `rows` -> vectors (B, N, D), mel (B, N, A), hubert (B, N, H) or None, and the known
        values (B, 1, D) float32 1/0, or None when every take holds all of them (copies)."""
        n = self.window
        picks = [(self.takes[k], s) for k, s in self.index[np.asarray(rows, dtype=np.int64)]]
        vec = np.stack([t.vectors[s:s + n] for t, s in picks])
        mel = np.stack([t.mel[s:s + n] for t, s in picks])
        hub = None if picks[0][0].hubert is None else np.stack([t.hubert[s:s + n] for t, s in picks])
        known = None
        if any(t.known is not None for t, _ in picks):
            dim = vec.shape[-1]
            known = np.stack([np.ones(dim, np.float32) if t.known is None else t.known.astype(np.float32)
                              for t, _ in picks])[:, None, :]
        return vec, mel, hub, known

    def speakers(self, rows) -> np.ndarray:
        """Style slot (B,) int64 of windows `rows` (-1: a held-out speaker)."""
        return np.asarray([self.takes[k].speaker for k, _ in self.index[np.asarray(rows, dtype=np.int64)]],
                          dtype=np.int64)

    def speaker_balanced_weights(self) -> np.ndarray:
        """(W,) pick probabilities that give every speaker the same share of the batches, however many windows
        each has (a speaker with a minute of data would otherwise outweigh one with seconds)."""
        slots = self.speakers(range(len(self)))
        _, inverse, counts = np.unique(slots, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
        return weights / weights.sum()


@dataclass
class TrainingData:
    """Normalised training and validation windows plus the statistics used to normalise them."""

    train: WindowSet
    val: WindowSet
    mean: np.ndarray
    std: np.ndarray
    sources: list = field(default_factory=list)  # [{"name", "frames", "train_frames", "fingerprint", "speaker"}]
    speakers: list = field(default_factory=lambda: ["default"])  # the style slots' names, in slot order


# ----------------------------------------------------------------------------------------------------------------
# finding and reading takes


def _audio_for(npz_path: str) -> str | None:
    stem = os.path.splitext(npz_path)[0]
    for ext in AUDIO_EXTENSIONS:
        if os.path.isfile(stem + ext):
            return stem + ext
    return None


MOTION_EXTENSIONS = (".npz", ".pkl")  # SMPL-X take files; SHOW/TalkSHOW fits (data.show_fits)


def find_takes(paths) -> list[tuple[str, str]]:
    """(motion file, audio) pairs from files and folders (folders: every .npz and SHOW .pkl inside, sorted,
    recursively)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    pairs = []
    for path in map(os.fspath, paths):
        if os.path.isdir(path):
            found = sorted(f for ext in MOTION_EXTENSIONS
                           for f in glob.glob(os.path.join(path, "**", "*" + ext), recursive=True))
            if not found:
                raise BadInput(f"no takes in folder {path}: expected .npz takes or SHOW .pkl fits with their audio")
            missing = [f for f in found if _audio_for(f) is None]
            if missing:
                raise BadInput(f"{len(missing)} take(s) in {path} have no audio next to them (e.g. {missing[0]}): "
                               f"put a same-named .wav beside each take")
            pairs += [(f, _audio_for(f)) for f in found]
        elif os.path.isfile(path):
            if not path.lower().endswith(MOTION_EXTENSIONS):
                raise BadInput(f"{path} is not a take: pass .npz takes or SHOW .pkl fits (with a same-named .wav) "
                               f"or folders of them")
            audio = _audio_for(path)
            if audio is None:
                raise BadInput(f"take {path} has no audio: put {os.path.splitext(path)[0]}.wav beside it")
            pairs.append((path, audio))
        else:
            raise BadInput(f"training data not found: {path}")
    names = [os.path.splitext(os.path.basename(p))[0] for p, _ in pairs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise BadInput(f"two takes are named {dup}: give every take a unique file name")
    return pairs


DEFAULT_SPEAKER = "default"


def split_speaker(arg: str) -> tuple[str, str]:
    """'NAME=PATH' -> (NAME, PATH); a plain path -> ('default', path). NAME is letters, digits, '_', '-' or '.'."""
    arg = os.fspath(arg)
    name, sep, path = arg.partition("=")
    if sep and name and all(c.isalnum() or c in "_-." for c in name) and not os.path.exists(arg):
        return name, path
    return DEFAULT_SPEAKER, arg


def find_speaker_takes(args) -> list[tuple[str, str, str]]:
    """(speaker, motion file, audio) for data arguments `NAME=PATH` or `PATH` (see find_takes)."""
    if isinstance(args, (str, os.PathLike)):
        args = [args]
    found = []
    for arg in args:
        speaker, path = split_speaker(arg)
        found += [(speaker, motion, audio) for motion, audio in find_takes([path])]
    names = [os.path.splitext(os.path.basename(motion))[0] for _, motion, _ in found]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise BadInput(f"two takes are named {dup}: give every take a unique file name")
    return found


def _file_fingerprint(*paths: str) -> str:
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


@dataclass
class Motion:
    """A motion file as training and evaluation read it: poses (T, 165) and expressions (T, 100) float64 at `fps`;
    `known_joints` (55,) marks the joints the file really holds (a SHOW fit has no usable hands)."""

    poses: np.ndarray
    expressions: np.ndarray
    fps: float
    known_joints: np.ndarray


def read_motion(path: str) -> Motion:
    """A take file (.npz: BEAT2 / AMASS / SHEG keys) or a SHOW fit (.pkl, see show_fits)."""
    if path.lower().endswith(".pkl"):
        poses, expressions, known = read_show_fit(path)
        return Motion(poses, expressions, SHOW_FPS, known)
    poses, expr, fps = _read_npz_motion(path)
    return Motion(poses, expr, fps, np.ones(NUM_SMPLX_JOINTS, bool))


def _read_npz_motion(npz_path: str) -> tuple[np.ndarray, np.ndarray, float]:
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:
        raise BadInput(f"cannot read take {npz_path}: {exc} (expected an .npz with poses and mocap_frame_rate)") \
            from None
    if "poses" not in data:
        raise BadInput(f"take {npz_path} has no 'poses' array (expected SMPL-X poses (T, 165))")
    poses = np.asarray(data["poses"], dtype=np.float64)
    poses = poses.reshape(len(poses), -1)
    if poses.shape[1] != 165:
        raise BadInput(f"take {npz_path}: poses has {poses.shape[1]} values a frame, expected 165 (55 joints x 3)")
    fps = data.get("mocap_frame_rate", data.get("mocap_framerate"))
    if fps is None:
        raise BadInput(f"take {npz_path} has no mocap_frame_rate (or mocap_framerate)")
    fps = float(fps)
    if not fps > 0:
        raise BadInput(f"take {npz_path} has frame rate {fps}; it must be positive")
    if "expressions" in data:
        expr = np.asarray(data["expressions"], dtype=np.float64).reshape(len(poses), -1)[:, :NUM_EXPRESSIONS]
        if expr.shape[1] < NUM_EXPRESSIONS:
            expr = np.pad(expr, ((0, 0), (0, NUM_EXPRESSIONS - expr.shape[1])))
    else:
        print(f"sheg: note: {os.path.basename(npz_path)} has no expressions; using neutral (zero) expressions",
              file=sys.stderr)
        expr = np.zeros((len(poses), NUM_EXPRESSIONS))
    if not (np.all(np.isfinite(poses)) and np.all(np.isfinite(expr))):
        raise BadInput(f"take {npz_path} contains NaN or infinite values")
    return poses, expr, fps


# ----------------------------------------------------------------------------------------------------------------
# resampling


def _axis_angle_to_quat(r: np.ndarray) -> np.ndarray:
    angle = np.linalg.norm(r, axis=-1, keepdims=True)
    half = 0.5 * angle
    # sin(a/2)/a -> 1/2 for small a
    scale = np.where(angle > 1e-8, np.sin(half) / np.maximum(angle, 1e-12), 0.5)
    return np.concatenate([np.cos(half), r * scale], axis=-1)  # (..., 4) w, x, y, z


def _quat_to_axis_angle(q: np.ndarray) -> np.ndarray:
    q = q * np.where(q[..., :1] < 0, -1.0, 1.0)  # w >= 0: the rotation angle in [0, pi]
    sin_half = np.linalg.norm(q[..., 1:], axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, q[..., :1])
    scale = np.where(sin_half > 1e-8, angle / np.maximum(sin_half, 1e-12), 2.0)
    return q[..., 1:] * scale


def resample_motion(poses: np.ndarray, expressions: np.ndarray, fps_in: float, fps_out: float):
    """Resample a take to fps_out: (T, 165) poses by per-joint quaternion slerp, (T, E) expressions linearly.

    Output frame k sits at time k / fps_out; frames past the last input frame's time are not produced.
    """
    if abs(fps_in - fps_out) < 1e-6:
        return poses, expressions
    frames_in = len(poses)
    frames_out = int(np.floor((frames_in - 1) * fps_out / fps_in + 1e-9)) + 1
    pos = np.arange(frames_out) * (fps_in / fps_out)  # fractional input frame of each output frame
    i0 = np.minimum(np.floor(pos).astype(np.int64), frames_in - 1)
    i1 = np.minimum(i0 + 1, frames_in - 1)
    w = (pos - i0)[:, None]
    expr = expressions[i0] * (1.0 - w) + expressions[i1] * w

    q = _axis_angle_to_quat(poses.reshape(frames_in, -1, 3))  # (T, J, 4)
    q0, q1 = q[i0], q[i1]
    dot = (q0 * q1).sum(-1, keepdims=True)
    q1 = np.where(dot < 0, -q1, q1)  # shortest arc
    dot = np.abs(dot).clip(0.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    wj = w[:, None, :]  # (T', 1, 1)
    near = sin_theta < 1e-6
    a = np.where(near, 1.0 - wj, np.sin((1.0 - wj) * theta) / np.where(near, 1.0, sin_theta))
    b = np.where(near, wj, np.sin(wj * theta) / np.where(near, 1.0, sin_theta))
    qi = a * q0 + b * q1
    qi /= np.linalg.norm(qi, axis=-1, keepdims=True)
    return _quat_to_axis_angle(qi).reshape(frames_out, -1), expr


# ----------------------------------------------------------------------------------------------------------------
# loading


def load_takes(npz_path: str, audio_path: str, spec: AudioFeatureSpec, fps: float, layout: Layout = SHOW,
               hubert_model: str | None = None, hubert_rate: int = 16000, device: str = "cpu",
               mirror: bool = False, show_jaw: bool = True) -> list[Take]:
    """One take at `fps`: network vectors, mel frames (and HuBERT features when hubert_model is given).

    show_jaw False: a SHOW fit's jaw counts as unknown (left out of the loss, like its hands). Fitted to video, its
    y/z rotations jitter ten times more than motion capture's and its opening often dips below rest; mixed with
    BEAT2's captured jaw it taught the jaw to ignore the speech.

    mirror: also the take reflected left <-> right (skeleton.mirror_poses) on the same audio features, training
    data augmentation for speakers without a handedness. Its expressions stay as captured (the FLAME expression
    basis has no mirror map); the jaw is mirrored with the body."""
    if layout.name != "show":
        raise BadInput(f"training from SMPL-X takes needs the SHOW layout; layout '{layout.name}' is not supported")
    if abs(spec.fps - fps) > 1e-6:
        raise BadInput(f"the audio recipe gives {spec.fps:g} frames/s but the model runs at {fps:g} fps")
    motion = read_motion(npz_path)
    poses, expr = resample_motion(motion.poses, motion.expressions, motion.fps, fps)
    known_joints = motion.known_joints.copy()
    if not show_jaw and npz_path.lower().endswith(".pkl"):
        known_joints[JAW_JOINT] = False
    known = None if known_joints.all() else show_known_channels(known_joints)
    wave = load_audio(audio_path, spec.sample_rate)
    audio_frames = num_motion_frames(len(wave), spec.hop_length)
    frames = min(len(poses), audio_frames)
    name = os.path.splitext(os.path.basename(npz_path))[0]
    if frames < 1:
        raise BadInput(f"take {name} has no frame with both motion and audio")
    if abs(len(poses) - audio_frames) > fps:
        print(f"sheg: note: {name}: motion lasts {len(poses) / fps:.2f} s but audio {audio_frames / fps:.2f} s; "
              f"using the first {frames / fps:.2f} s", file=sys.stderr)
    vectors = show_vector_from_take(poses[:frames], expr[:frames]).astype(np.float32)
    mel = mel_features(wave, spec, frames)
    hub = None
    if hubert_model:
        from sheg.data.audio import hubert_features

        wave_h = load_audio(audio_path, hubert_rate)
        hub = hubert_features(wave_h, frames, hubert_model, device)
    take = Take(name=name, vectors=vectors, mel=mel, hubert=hub, fingerprint=_file_fingerprint(npz_path, audio_path),
                known=known)
    if not mirror:
        return [take]
    # The known joints of every source read here are left/right symmetric (all, or all but both hands).
    mirrored = show_vector_from_take(mirror_poses(poses[:frames]), expr[:frames]).astype(np.float32)
    return [take, Take(name=f"{name}~mirrored", vectors=mirrored, mel=mel, hubert=hub, fingerprint=take.fingerprint,
                       known=known)]


def split_frames(frames: int, fps: float, holdout_seconds: float) -> int:
    """First held-out frame of a take of `frames` frames: frames - round(holdout_seconds * fps), at least 0."""
    if holdout_seconds < 0:
        raise BadInput(f"--holdout-seconds must be >= 0, got {holdout_seconds}")
    return max(0, frames - int(round(holdout_seconds * fps)))


def window_starts(start: int, stop: int, window: int, stride: int) -> np.ndarray:
    """Start frames of the windows of `window` frames inside [start, stop), every `stride` frames."""
    if window < 1 or stride < 1:
        raise BadInput(f"window and stride must be >= 1 frame, got window {window}, stride {stride}")
    return np.arange(start, stop - window + 1, stride, dtype=np.int64)


def _windows(takes: list, ranges: list, window: int, stride: int) -> WindowSet:
    rows = [(k, s) for k, (lo, hi) in enumerate(ranges) for s in window_starts(lo, hi, window, stride)]
    index = np.asarray(rows, dtype=np.int64).reshape(-1, 2)
    return WindowSet(takes=takes, index=index, window=window)


def compute_stats(takes: list, train_stops: list, std_floor: float = STD_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (D,) float32 of the network vectors over the training frames [0, stop) of every take."""
    frames = np.concatenate([t.vectors[:stop] for t, stop in zip(takes, train_stops)], axis=0).astype(np.float64)
    if len(frames) == 0:
        raise BadInput("no training frames left after the hold-out: use shorter --holdout-seconds or more data")
    known = np.concatenate([np.broadcast_to(np.ones(frames.shape[1], bool) if t.known is None else t.known,
                                            (stop, frames.shape[1])) for t, stop in zip(takes, train_stops)])
    count = known.sum(axis=0)
    # Values no take holds (hands, when only SHOW fits are given) get mean 0, std 1: never trained, never sampled
    # from data, they stay at the model's normalised origin.
    mean = np.where(count > 0, (frames * known).sum(axis=0) / np.maximum(count, 1), 0.0)
    var = np.where(count > 0, (((frames - mean) * known) ** 2).sum(axis=0) / np.maximum(count, 1), 1.0)
    std = np.maximum(np.sqrt(var), std_floor)
    return mean.astype(np.float32), std.astype(np.float32)


def build_training_data(paths, spec: AudioFeatureSpec, fps: float, window: int, stride: int = 1,
                        holdout_seconds: float = 10.0, val_stride: int | None = None, layout: Layout = SHOW,
                        stats: tuple[np.ndarray, np.ndarray] | None = None, hubert_model: str | None = None,
                        hubert_rate: int = 16000, device: str = "cpu", mirror: bool = False,
                        holdout_speaker: str | None = None, show_jaw: bool = True, log=None) -> TrainingData:
    """Load the takes under `paths` (`NAME=PATH` names a speaker), split off the last `holdout_seconds` of each,
    normalise, and window them. holdout_speaker: validate on that speaker's takes only, whole (see the module).

    stats: (mean, std) to use instead of computing them (resuming must reuse the saved ones). mirror: also train on
    every take reflected left <-> right (`load_takes`); validation stays on the takes as captured. show_jaw: see
    `load_takes`.
    Training windows: every `stride` frames inside each take's training part. Validation windows: every
    `val_stride` (default window // 2) frames inside the held-out parts (none when they are shorter than a window).
    """
    log = log or (lambda msg: None)
    found = find_speaker_takes(paths)
    speakers = list(dict.fromkeys(s for s, _, _ in found if s != holdout_speaker))
    if holdout_speaker is not None and len(speakers) == len({s for s, _, _ in found}):
        raise BadInput(f"--holdout-speaker {holdout_speaker}: no data is named for that speaker (give it as "
                       f"{holdout_speaker}=PATH)")
    if not speakers:
        raise BadInput(f"every take belongs to the held-out speaker {holdout_speaker}: name other speakers' data too")
    captured, mirrored, held = [], [], []
    for speaker, npz, audio in found:
        heldout = speaker == holdout_speaker
        loaded = load_takes(npz, audio, spec, fps, layout, hubert_model, hubert_rate, device, mirror and not heldout,
                            show_jaw)
        for t in loaded:
            t.speaker = -1 if heldout else speakers.index(speaker)
        (held if heldout else captured).append(loaded[0])
        mirrored += loaded[1:]
        log(f"loaded {loaded[0].name} ({speaker}{', held out' if heldout else ''}): {loaded[0].frames} frames "
            f"({loaded[0].frames / fps:.1f} s)" + (" (+ mirrored)" if mirror and not heldout else ""))
    if holdout_speaker is not None:
        holdout_seconds = 0.0  # validation is the held-out speaker: every other frame trains
    # a mirrored take trains on the same frames as its captured one, validates on none; held-out takes only validate
    stops = [split_frames(t.frames, fps, holdout_seconds) for t in captured]
    read = list(zip(captured, stops)) + [(t, 0) for t in held]  # each file read, with its training frames
    takes = captured + mirrored + held
    stops = stops * (2 if mirror else 1) + [0] * len(held)
    val_ranges = ([(stop, t.frames) for t, stop in zip(captured, stops)] + [(0, 0)] * len(mirrored)
                  + [(0, t.frames) for t in held])
    if stats is None:
        mean, std = compute_stats(takes, stops)
    else:
        mean, std = (np.asarray(s, dtype=np.float32) for s in stats)
        if mean.shape != (layout.dim,) or std.shape != (layout.dim,):
            raise BadInput(f"statistics must have {layout.dim} values each, got {mean.shape} and {std.shape}")
    for t in takes:
        t.vectors = ((t.vectors - mean) / std).astype(np.float32)
    train = _windows(takes, [(0, stop) for stop in stops], window, stride)
    val = _windows(takes, val_ranges, window, val_stride or max(1, window // 2))
    if len(train) == 0:
        longest = max(stops) / fps
        raise BadInput(f"no training window of {window} frames fits: the longest training part is {longest:.2f} s "
                       f"after holding out {holdout_seconds:g} s per take; use more data, a shorter --window or "
                       f"--holdout-seconds")
    sources = [{"name": t.name, "frames": t.frames, "train_frames": stop, "fingerprint": t.fingerprint,
                "speaker": speakers[t.speaker] if t.speaker >= 0 else holdout_speaker} for t, stop in read]
    return TrainingData(train=train, val=val, mean=mean, std=std, sources=sources, speakers=speakers)
