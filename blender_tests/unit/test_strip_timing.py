"""Sound strip timing maths (addon/core/strip_timing.py): pure, no bpy."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import strip_timing as st  # noqa: E402


@pytest.mark.parametrize("fps,fps_base", [(24, 1.0), (25, 1.0), (30, 1.0), (60, 1.0), (30000, 1001.0)],
                         ids=["24", "25", "30", "60", "29.97"])
def test_untrimmed_strip_plays_the_file_from_its_start(fps, fps_base):
    rate = fps / fps_base
    t = st.strip_audible_range(frame_final_start=101, frame_final_end=101 + 96, frame_offset_start=0,
                               sound_offset=0.0, fps=fps, fps_base=fps_base)
    assert t.start_frame == 101 and t.end_frame == 197
    assert t.first_sample_second == 0.0
    assert t.duration_seconds == pytest.approx(96 / rate)
    assert t.scene_fps == pytest.approx(rate)


@pytest.mark.parametrize("fps", [24, 25, 30, 60], ids=lambda f: f"{f}fps")
def test_left_trim_skips_into_the_file(fps):
    # strip content starts at frame 91; its left handle was dragged 10 frames right -> audible from 101
    t = st.strip_audible_range(frame_final_start=101, frame_final_end=131, frame_offset_start=10,
                               sound_offset=0.0, fps=fps)
    assert t.first_sample_second == pytest.approx(10 / fps)
    first, count = t.sample_range(16000)
    assert first == round(10 / fps * 16000)
    assert count == round(30 / fps * 16000)


def test_sound_offset_delays_the_sound_and_content_trim_adds_to_the_skip():
    t = st.strip_audible_range(frame_final_start=1, frame_final_end=25, frame_offset_start=0, sound_offset=0.5,
                               fps=24)
    assert t.first_sample_second == pytest.approx(-0.5)  # half a second of silence first
    t = st.strip_audible_range(frame_final_start=1, frame_final_end=25, frame_offset_start=12, sound_offset=0.25,
                               fps=24, animation_offset_start=12)
    assert t.first_sample_second == pytest.approx(24 / 24 - 0.25)


def test_zero_length_and_bad_fps_are_clear_errors():
    with pytest.raises(ValueError, match="zero length"):
        st.strip_audible_range(frame_final_start=10, frame_final_end=10, frame_offset_start=0, sound_offset=0,
                               fps=24)
    with pytest.raises(ValueError, match="frame rate"):
        st.strip_audible_range(frame_final_start=1, frame_final_end=10, frame_offset_start=0, sound_offset=0,
                               fps=0)


def test_whole_file_timing_rounds_the_end_frame_up():
    t = st.whole_file_timing(5, 4.01, fps=25)
    assert t.end_frame == 5 + 101
    assert t.duration_seconds == pytest.approx(4.01)
    with pytest.raises(ValueError, match="empty"):
        st.whole_file_timing(1, 0.0, fps=25)


def test_extract_range_pads_with_silence_on_both_sides():
    signal = np.arange(1, 11, dtype=np.float32)
    np.testing.assert_array_equal(st.extract_range(signal, 2, 3), [3, 4, 5])
    np.testing.assert_array_equal(st.extract_range(signal, -2, 4), [0, 0, 1, 2])
    np.testing.assert_array_equal(st.extract_range(signal, 8, 4), [9, 10, 0, 0])
    np.testing.assert_array_equal(st.extract_range(signal, 20, 2), [0, 0])


def test_mix_to_mono_averages_channels():
    stereo = np.array([[1.0, 3.0], [2.0, 4.0]], dtype=np.float32)
    np.testing.assert_allclose(st.mix_to_mono(stereo), [2.0, 3.0])
    assert st.mix_to_mono(np.ones((5, 1))).shape == (5,)
    with pytest.raises(ValueError, match="shape"):
        st.mix_to_mono(np.ones((2, 2, 2)))
