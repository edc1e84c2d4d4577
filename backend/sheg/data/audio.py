"""Audio in: decode any file to mono at a given rate, and the features the models read.

Mel features follow the official DiffSHEG recipe (DIFFSHEG_FACTS §2, §11): 128-band *power* mel spectrogram (no log),
librosa defaults otherwise (n_fft 2048, Hann, centred frames with zero padding, Slaney filters, fmax = sr/2), at
18 kHz with hop 600 (30 frames/s, SHOW) or 1200 (15 frames/s, BEAT). The motion has one frame per mel frame, and the
final centred frame is dropped, so a clip of N samples gives N // hop frames.

HuBERT features (optional, `sheg[hubert]`): the last hidden state of HuBERT-large, fed 16 kHz audio normalised over
the whole clip, in the official code's 20-s windows, and interpolated linearly (align_corners=True) to the motion
frames.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sheg.errors import BadInput, ShegError

# Seconds of audio read and resampled per block: bounds the memory of decoding a long file.
_BLOCK_SECONDS = 30.0
# Mel frames computed per chunk: bounds the STFT's memory on long audio.
_MEL_CHUNK_FRAMES = 4096


@dataclass(frozen=True)
class AudioFeatureSpec:
    """How a model wants its audio. Stored in model.json under `audio`."""

    sample_rate: int = 18000
    hop_length: int = 600
    n_fft: int = 2048
    n_mels: int = 128
    power: float = 2.0
    log: bool = False
    hubert: dict | None = None  # {"model": id or folder, "sample_rate": 16000 (22050 reproduces the official bug)}
    # None: the mel as computed. "utterance": log-mel standardised over the clip (see normalize_utterance), so a
    # voice, a microphone or a recording level the model never heard reads like the ones it was trained on.
    normalize: str | None = None

    @property
    def fps(self) -> float:
        return self.sample_rate / self.hop_length

    @classmethod
    def from_dict(cls, d: dict) -> "AudioFeatureSpec":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        spec = cls(**known)
        if spec.normalize not in NORMALIZATIONS:
            raise BadInput(f"audio.normalize must be one of {', '.join(map(str, NORMALIZATIONS))}, got "
                           f"{spec.normalize!r}")
        if spec.normalize == "utterance" and not spec.log:
            raise BadInput("audio.normalize 'utterance' standardises log-mel: it needs audio.log true")
        return spec

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


NORMALIZATIONS = (None, "utterance")
# "utterance" takes the log of mel + this share of the clip's loudest mel value (80 dB below it) instead of a fixed
# 1e-6, so a recording played louder or softer gives exactly the same features.
UTTERANCE_FLOOR = 1e-8
# Floor of the spread used by normalize_utterance, in natural-log units: a clip of digital silence (every band at
# the same floor) has no spread at all and must not be divided by zero.
UTTERANCE_STD_FLOOR = 0.5


def normalize_utterance(log_mel: np.ndarray) -> np.ndarray:
    """Cepstral-style mean and variance normalisation of a clip's log-mel (T, n_mels): every band minus its mean
    over the clip, all bands divided by one spread (the clip's std over all values), so the relative loudness of
    bands and frames stays. A constant gain or a microphone's tilt (an offset per band in log units) vanishes."""
    centred = log_mel - log_mel.mean(axis=0, keepdims=True)
    spread = max(float(centred.std()), UTTERANCE_STD_FLOOR)
    return (centred / spread).astype(np.float32)


def true_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[(start, stop)] of every run of consecutive True values in a 1-D bool array, in order."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.asarray(mask, dtype=np.int8), [0]])))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def pause_frames(wave: np.ndarray, hop_length: int, frames: int, level: float = 0.05,
                 min_frames: int = 9) -> np.ndarray:
    """(frames,) bool: motion frames inside a pause, where frame k covers samples [k hop, (k+1) hop). A pause is a
    run of at least `min_frames` frames whose RMS is below `level` times the clip's 95th-percentile frame RMS."""
    usable = min(frames, len(wave) // hop_length)
    rms = np.zeros(frames)
    if usable:
        blocks = np.asarray(wave[:usable * hop_length]).reshape(usable, hop_length)  # a view: long audio is not copied
        rms[:usable] = np.sqrt(np.einsum("ij,ij->i", blocks, blocks, dtype=np.float64) / hop_length)
    quiet = rms <= level * max(float(np.percentile(rms, 95)), 1e-9)
    out = np.zeros(frames, bool)
    for start, stop in true_runs(quiet):
        if stop - start >= min_frames:
            out[start:stop] = True
    return out


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise BadInput(f"audio file not found: {path} (check the path)")
    if os.path.isdir(path):
        raise BadInput(f"{path} is a folder, not an audio file")
    if os.path.getsize(path) == 0:
        raise BadInput(f"audio file is empty (0 bytes): {path}")


def load_audio(path: str, sample_rate: int) -> np.ndarray:
    """Decode `path` (wav, flac, ogg, mp3, anything libsndfile or librosa reads), mix to mono, resample.

    Returns float32 samples (N,) at `sample_rate`. Long files are read and resampled block by block, so memory stays
    close to the size of the output.
    """
    path = os.fspath(path)
    _check_file(path)
    try:
        import soundfile as sf

        info = sf.info(path)
    except Exception:
        info = None
    if info is not None and info.frames > 0:
        return _load_blocks(path, info, sample_rate)
    return _load_with_librosa(path, sample_rate)


def _load_blocks(path: str, info, sample_rate: int) -> np.ndarray:
    import soundfile as sf
    import soxr

    block = max(1, int(_BLOCK_SECONDS * info.samplerate))
    out_len = int(np.ceil(info.frames * sample_rate / info.samplerate)) + 16
    out = np.empty(out_len, dtype=np.float32)
    filled = 0
    resampler = None if info.samplerate == sample_rate else soxr.ResampleStream(
        info.samplerate, sample_rate, 1, dtype="float32", quality="HQ")
    try:
        with sf.SoundFile(path) as f:
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                last = len(data) < block
                mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
                chunk = mono if resampler is None else resampler.resample_chunk(mono, last=last)
                if filled + len(chunk) > len(out):
                    out = np.concatenate([out, np.empty(len(chunk), dtype=np.float32)])
                out[filled:filled + len(chunk)] = chunk
                filled += len(chunk)
                if last:
                    break
    except sf.LibsndfileError as exc:
        raise BadInput(f"cannot decode audio file {path}: {exc} (is it a complete, supported audio file?)") from None
    wave = out[:filled]
    if not np.all(np.isfinite(wave)):
        raise BadInput(f"audio file {path} contains NaN or infinite samples")
    return wave


def _load_with_librosa(path: str, sample_rate: int) -> np.ndarray:
    import warnings

    import librosa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wave, _ = librosa.load(path, sr=sample_rate, mono=True)
    except Exception as exc:  # audioread/soundfile raise many types; all mean "not decodable"
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"cannot decode {path} as audio ({msg}); use wav, flac, ogg or mp3") from None
    if wave.size == 0:
        raise BadInput(f"audio file {path} holds no samples")
    return wave.astype(np.float32, copy=False)


def num_motion_frames(num_samples: int, hop_length: int) -> int:
    """Motion frames for a clip: one per hop, the final centred mel frame dropped (official inference)."""
    return num_samples // hop_length


def mel_features(wave: np.ndarray, spec: AudioFeatureSpec, frames: int | None = None) -> np.ndarray:
    """Mel features (T, n_mels) float32 of a mono waveform already at `spec.sample_rate`.

    Identical to librosa.feature.melspectrogram(center=True, pad_mode="constant")[:, :T].T, computed in chunks so a
    two-hour file needs no multi-GB STFT.
    """
    import librosa

    if frames is None:
        frames = num_motion_frames(len(wave), spec.hop_length)
    if frames < 1:
        raise BadInput(
            f"audio is too short: {len(wave) / spec.sample_rate:.3f} s gives no motion frame at "
            f"{spec.fps:g} fps (needs at least {spec.hop_length / spec.sample_rate:.3f} s)")
    half = spec.n_fft // 2
    basis = librosa.filters.mel(sr=spec.sample_rate, n_fft=spec.n_fft, n_mels=spec.n_mels).astype(np.float32)
    window = np.hanning(spec.n_fft + 1)[:-1].astype(np.float32)  # periodic Hann, as scipy/librosa use
    out = np.empty((frames, spec.n_mels), dtype=np.float32)
    for f0 in range(0, frames, _MEL_CHUNK_FRAMES):
        f1 = min(frames, f0 + _MEL_CHUNK_FRAMES)
        # Frame k covers padded[k*hop : k*hop + n_fft], with padded = [zeros(half), wave, zeros(half)].
        a, b = f0 * spec.hop_length - half, (f1 - 1) * spec.hop_length + half
        seg = np.zeros(b - a, dtype=np.float32)
        lo, hi = max(a, 0), min(b, len(wave))
        if hi > lo:
            seg[lo - a:hi - a] = wave[lo:hi]
        idx = np.arange(f1 - f0)[:, None] * spec.hop_length + np.arange(spec.n_fft)[None, :]
        frames_td = seg[idx] * window  # (F, n_fft)
        mag = np.abs(np.fft.rfft(frames_td, axis=1)).astype(np.float32)  # (F, n_fft/2+1)
        if spec.power != 1.0:
            mag = mag ** spec.power
        mel = mag @ basis.T  # (F, n_mels)
        if spec.log and spec.normalize is None:
            mel = np.log(mel + 1e-6)
        out[f0:f1] = mel
    if spec.normalize == "utterance":
        out = normalize_utterance(np.log(out + UTTERANCE_FLOOR * max(float(out.max()), 1e-30)))
    return out


# HuBERT's convolutional front end is one big kernel of 400 samples with a stride of 320 (50 frames/s at 16 kHz).
HUBERT_KERNEL, HUBERT_STRIDE = 400, 320
# Long audio goes through HuBERT in windows of this many output frames, as in the official code.
HUBERT_WINDOW_FRAMES = 1000


def hubert_windows(num_samples: int, window_frames: int = HUBERT_WINDOW_FRAMES) -> list[tuple[int, int]]:
    """The [start, stop) sample ranges the official DiffSHEG code feeds HuBERT (`get_hubert_from_16k_speech_long`):
    windows of 320,080 samples (exactly 1,000 output frames) every 320,000 samples, so consecutive windows overlap
    by kernel - stride = 80 samples and their frames join without a gap or a repeat; then the rest, when it holds at
    least one kernel. A clip shorter than one window is one range."""
    step = HUBERT_STRIDE * window_frames
    length = step - HUBERT_STRIDE + HUBERT_KERNEL
    full = num_samples // step
    ranges = [(i * step, min(num_samples, i * step + length)) for i in range(full)]
    if num_samples - full * step >= HUBERT_KERNEL or not ranges:
        ranges.append((full * step, num_samples))
    return ranges


def hubert_features(wave_16k: np.ndarray, frames: int, model: str, device: str = "cpu",
                    window_frames: int = HUBERT_WINDOW_FRAMES) -> np.ndarray:
    """HuBERT-large last hidden state (frames, 1024) float32, interpolated to the motion frames.

    `model` is a local folder or a Hugging Face model id (the user's machine downloads it; this project never does in
    its tests). As in the official code, the whole clip is normalised at once by the model's feature extractor and
    then fed in the windows of `hubert_windows` (20 s each at 16 kHz); clips up to 20 s are one window.
    """
    try:
        import torch
        import torch.nn.functional as F
        from transformers import HubertModel, Wav2Vec2FeatureExtractor
    except ImportError:
        raise ShegError("HuBERT features need the `transformers` package: pip install 'sheg[hubert]'") from None
    try:
        extractor = Wav2Vec2FeatureExtractor.from_pretrained(model)
        net = HubertModel.from_pretrained(model).to(device).eval()
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShegError(
            f"HuBERT model not available from '{model}' ({first}); download facebook/hubert-large-ls960-ft "
            f"to a folder and pass it with --hubert FOLDER") from None
    wave = np.asarray(wave_16k, dtype=np.float32)
    if len(wave) < HUBERT_KERNEL:  # shorter than HuBERT's first conv kernel: pad so it yields a frame
        wave = np.pad(wave, (0, HUBERT_KERNEL - len(wave)))
    values = extractor(wave, sampling_rate=16000, return_tensors="np").input_values[0].astype(np.float32)
    pieces = []
    with torch.inference_mode():
        for start, stop in hubert_windows(len(values), window_frames):
            inputs = torch.from_numpy(values[start:stop])[None].to(device)
            pieces.append(net(inputs).last_hidden_state[0].float().cpu())
    feats = torch.cat(pieces, dim=0)  # (H, 1024) at 50 Hz
    feats = F.interpolate(feats.T[None], size=frames, mode="linear", align_corners=True)[0].T
    return feats.numpy().astype(np.float32)
