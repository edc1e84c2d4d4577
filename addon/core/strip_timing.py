"""Where a sound strip is audible on the timeline and which part of its sound file that is.

Blender (blenkernel/sound.cc, `BKE_sound_move_scene_sound_defaults`) plays a sound strip from its left handle
`frame_final_start` to its right handle `frame_final_end` (exclusive), skipping
`(frame_offset_start + animation_offset_start) / fps - sound_offset` seconds into the file; a negative skip means
the sound starts that many seconds after the left handle (leading silence). Scene fps is `fps / fps_base`.
Pure maths: no bpy, unit-tested in blender_tests/unit/test_strip_timing.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class StripTiming:
    start_frame: int  # timeline frame of the first audible frame (the strip's left handle)
    end_frame: int  # first frame after the audible range (the right handle)
    first_sample_second: float  # position in the sound file at start_frame, seconds; < 0: leading silence
    duration_seconds: float  # audible length, seconds
    scene_fps: float  # frames per second of the scene (fps / fps_base)

    def sample_range(self, sample_rate: float) -> tuple[int, int]:
        """(first sample index in the file, number of samples) at `sample_rate` Hz; the first may be negative."""
        first = int(round(self.first_sample_second * sample_rate))
        count = int(round(self.duration_seconds * sample_rate))
        return first, count


def scene_fps(fps: float, fps_base: float = 1.0) -> float:
    if fps <= 0 or fps_base <= 0:
        raise ValueError(f"scene frame rate must be positive, got fps={fps} fps_base={fps_base}")
    return float(fps) / float(fps_base)


def strip_audible_range(*, frame_final_start: int, frame_final_end: int, frame_offset_start: float,
                        sound_offset: float, fps: float, fps_base: float = 1.0,
                        animation_offset_start: float = 0.0) -> StripTiming:
    """The audible range of a sound strip (all frame arguments in timeline frames, sound_offset in seconds)."""
    rate = scene_fps(fps, fps_base)
    frames = int(frame_final_end) - int(frame_final_start)
    if frames <= 0:
        raise ValueError(f"the sound strip has zero length (frames {frame_final_start}..{frame_final_end}): "
                         "extend it in the Sequencer")
    skip = (float(frame_offset_start) + float(animation_offset_start)) / rate - float(sound_offset)
    return StripTiming(start_frame=int(frame_final_start), end_frame=int(frame_final_end),
                       first_sample_second=skip, duration_seconds=frames / rate, scene_fps=rate)


def whole_file_timing(start_frame: int, duration_seconds: float, fps: float, fps_base: float = 1.0) -> StripTiming:
    """A plain audio file placed at `start_frame`: the whole file is audible."""
    rate = scene_fps(fps, fps_base)
    if duration_seconds <= 0:
        raise ValueError("the audio file is empty: choose a file with sound in it")
    end = int(start_frame) + int(np.ceil(duration_seconds * rate - 1e-9))
    return StripTiming(start_frame=int(start_frame), end_frame=end, first_sample_second=0.0,
                       duration_seconds=float(duration_seconds), scene_fps=rate)


def extract_range(samples: np.ndarray, first: int, count: int) -> np.ndarray:
    """samples[first:first+count] of a mono signal (N,), with silence (zeros) where the range leaves the signal."""
    samples = np.asarray(samples)
    out = np.zeros(count, dtype=np.float32)
    lo = max(first, 0)
    hi = min(first + count, len(samples))
    if hi > lo:
        out[lo - first:hi - first] = samples[lo:hi]
    return out


def mix_to_mono(data: np.ndarray) -> np.ndarray:
    """(N, C) or (N,) float samples -> (N,) float32, the mean of the channels."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        return data
    if data.ndim != 2:
        raise ValueError(f"audio samples must be (N,) or (N, channels), got shape {data.shape}")
    return data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
