"""Sound strip (or audio file) -> mono WAV for the backend, decoded by Blender's own `aud` (ffmpeg) module.

The WAV holds exactly what the strip plays: its audible range (handles, trims, sound offset) at the scene fps, with
silence where the strip runs past its sound. Timing maths lives in core/strip_timing.py.
"""

from __future__ import annotations

import os
import struct
import tempfile

import aud
import bpy
import numpy as np

from .core import strip_timing


# --- finding the strip and what is wrong with it -------------------------------------------------------------------

def all_strips_name(sed) -> str:
    """Name of the editor's collection of every strip: `strips_all` (4.4+), `sequences_all` before."""
    return "strips_all" if hasattr(sed, "strips_all") else "sequences_all"


def sound_strips(scene) -> list:
    sed = scene.sequence_editor
    if sed is None:
        return []
    return [s for s in getattr(sed, all_strips_name(sed)) if s.type == "SOUND"]


def find_sound_strip(scene, name: str = ""):
    """The named sound strip; else the active one; else the only selected one; else the only one. None if unclear."""
    sed = scene.sequence_editor
    if sed is None:
        return None
    if name:
        strip = getattr(sed, all_strips_name(sed)).get(name)
        return strip if strip is not None and strip.type == "SOUND" else None
    if sed.active_strip is not None and sed.active_strip.type == "SOUND":
        return sed.active_strip
    strips = sound_strips(scene)
    selected = [s for s in strips if s.select]
    if len(selected) == 1:
        return selected[0]
    return strips[0] if len(strips) == 1 else None


def sound_file_path(sound) -> str:
    return os.path.normpath(bpy.path.abspath(sound.filepath, library=sound.library))


def strip_problem(scene, strip) -> str | None:
    """One line saying why this strip cannot be used, or None."""
    if strip.mute:
        return f"The sound strip '{strip.name}' is muted: unmute it in the Sequencer"
    sed = scene.sequence_editor
    channels = getattr(sed, "channels", None)
    if channels is not None and 0 < strip.channel < len(channels) and channels[strip.channel].mute:
        return f"Channel {strip.channel} of the sound strip '{strip.name}' is muted"
    if strip.frame_final_end <= strip.frame_final_start:
        return f"The sound strip '{strip.name}' has zero length"
    if strip.sound is None:
        return f"The sound strip '{strip.name}' has no sound"
    if strip.sound.packed_file is None and not os.path.isfile(sound_file_path(strip.sound)):
        return f"Sound file not found: {sound_file_path(strip.sound)}"
    return None


def strip_timing_of(scene, strip) -> strip_timing.StripTiming:
    return strip_timing.strip_audible_range(
        frame_final_start=strip.frame_final_start, frame_final_end=strip.frame_final_end,
        frame_offset_start=strip.frame_offset_start, sound_offset=strip.sound_offset,
        animation_offset_start=_content_trim_start(strip), fps=scene.render.fps, fps_base=scene.render.fps_base)


def _content_trim_start(strip) -> float:
    # 5.0: animation_offset_start; 5.1 renames it content_trim_start
    for name in ("content_trim_start", "animation_offset_start"):
        if hasattr(strip, name):
            return float(getattr(strip, name))
    return 0.0


# --- decoding and writing ------------------------------------------------------------------------------------------

def _decode(path: str, until_seconds: float | None = None) -> tuple[np.ndarray, float]:
    """(samples (N,) float32 mono, sample rate Hz). Decoding from 0 is sample-exact (aud's seek is not)."""
    if not os.path.isfile(path):
        raise ValueError(f"audio file not found: {path}")
    try:
        sound = aud.Sound(path)
        rate = float(sound.specs[0])
        if until_seconds is not None:
            sound = sound.limit(0.0, max(until_seconds, 0.0) + 0.25)
        data = sound.data()
    except Exception as exc:  # aud raises its own error types
        raise ValueError(f"Blender cannot decode {os.path.basename(path)}: {exc}") from None
    if rate <= 0:
        raise ValueError(f"{os.path.basename(path)} has no audio stream")
    return strip_timing.mix_to_mono(data), rate


def write_wav(path: str, samples: np.ndarray, sample_rate: int, sample_format: str = "FLOAT") -> None:
    """Mono WAV: 'FLOAT' (32-bit IEEE float, lossless for decoded audio) or 'PCM16'."""
    samples = np.asarray(samples, dtype=np.float32).reshape(-1)
    if sample_format == "PCM16":
        payload = (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()
        fmt_tag, bits = 1, 16
    elif sample_format == "FLOAT":
        payload = samples.astype("<f4").tobytes()
        fmt_tag, bits = 3, 32
    else:
        raise ValueError(f"unknown WAV sample format {sample_format!r}: use 'FLOAT' or 'PCM16'")
    block = bits // 8
    header = b"RIFF" + struct.pack("<I", 36 + len(payload)) + b"WAVE"
    header += b"fmt " + struct.pack("<IHHIIHH", 16, fmt_tag, 1, int(sample_rate), int(sample_rate) * block, block,
                                    bits)
    header += b"data" + struct.pack("<I", len(payload))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header)
        f.write(payload)


def _strip_source_file(strip) -> tuple[str, str | None]:
    """(readable path, temporary file to delete or None); packed sounds are written out first."""
    sound = strip.sound
    if sound.packed_file is None:
        return sound_file_path(sound), None
    suffix = os.path.splitext(sound.filepath)[1] or ".wav"
    fd, tmp = tempfile.mkstemp(prefix="sheg-packed-", suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(sound.packed_file.data)
    return tmp, tmp


def export_strip_wav(context, strip, wav_path: str, sample_format: str = "FLOAT") -> tuple[int, float]:
    """Write the strip's audible range as a mono WAV; returns (start_frame, duration_seconds)."""
    scene = context.scene
    problem = strip_problem(scene, strip)
    if problem:
        raise ValueError(problem)
    timing = strip_timing_of(scene, strip)
    path, temporary = _strip_source_file(strip)
    try:
        samples, rate = _decode(path, until_seconds=timing.first_sample_second + timing.duration_seconds)
    finally:
        if temporary:
            os.remove(temporary)
    first, count = timing.sample_range(rate)
    write_wav(wav_path, strip_timing.extract_range(samples, first, count), int(rate), sample_format)
    return timing.start_frame, timing.duration_seconds


def export_file_wav(context, audio_path: str, wav_path: str, start_frame: int | None = None,
                    sample_format: str = "FLOAT") -> tuple[int, float]:
    """A whole audio file as a mono WAV placed at `start_frame` (default: the current frame)."""
    scene = context.scene
    samples, rate = _decode(bpy.path.abspath(audio_path))
    start = scene.frame_current if start_frame is None else int(start_frame)
    timing = strip_timing.whole_file_timing(start, len(samples) / rate, scene.render.fps, scene.render.fps_base)
    write_wav(wav_path, samples, int(rate), sample_format)
    return timing.start_frame, timing.duration_seconds
