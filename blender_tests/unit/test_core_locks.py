"""Locked frames and parts of a regeneration (addon/core/locks.py): pure numpy."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "backend"))
from core import locks, resample  # noqa: E402
from sheg.motion import layouts  # noqa: E402


def test_scene_range_maps_to_take_frames_inclusive():
    at = resample.take_frames_in_scene(300, 30.0, 30.0, 1.0)   # take frame k at scene frame 1 + k
    assert locks.take_frame_ranges(at, 60, 120) == [[59, 120]]  # 61 frames, both ends locked
    at24 = resample.take_frames_in_scene(300, 30.0, 24.0, 10.0)  # a 24-fps scene: k at 10 + 0.8 k
    ranges = locks.take_frame_ranges(at24, 20, 30)
    (a, b), = ranges
    assert at24[a] >= 20 and at24[b - 1] <= 30 and at24[a - 1] < 20 and at24[b] > 30
    with pytest.raises(ValueError, match="outside the take"):
        locks.take_frame_ranges(at, 400, 500)


def test_part_names_are_the_backends():
    assert tuple(locks.LOCK_PARTS) == layouts.PARTS
    assert locks.check_parts(["left_arm", "face"]) == ["left_arm", "face"]
    with pytest.raises(ValueError, match="unknown body part 'tail'"):
        locks.check_parts(["tail"])
