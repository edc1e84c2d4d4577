"""ARKit face weights from an SMPL-X take's jaw joint, for takes that carry no ARKit weights (SHOW-layout models).

What is driven and how it was obtained. No data here pairs FLAME/SMPL-X parameters with ARKit weights of the same
frames (checked: shared/data/PROVENANCE.md lists BEAT2 SMPL-X+FLAME motion, SHOW fits, and only the mean/std of BEAT's
51 ARKit weights from DiffSHEG's statistics; DATA_AND_METRICS_FACTS.md: no BEAT ARKit JSON sample was found), so no
mapping is fitted and the 100 FLAME expression coefficients drive no ARKit key. Only `jawOpen` is derived, from the
jaw joint's opening angle (the chin's forward direction turned down about the jaw's left axis):

    jawOpen = clip(JAW_OPEN_PER_DEGREE * opening_degrees, 0, 1)

JAW_OPEN_PER_DEGREE is the one number this needs; it matches the first moment of the two corpora of the same
speakers speaking: the mean jawOpen of BEAT's ARKit training data (DiffSHEG's json_mean.npy: 0.17600) over the mean
opening of the BEAT2 take 2_scott_0_1_1 (1.1554 degrees over its 1906 frames, negative openings counted as 0), i.e.
0.15233 per degree (jawOpen 1 at 6.6 degrees; that take peaks at 3.4 degrees = 0.51). Matching the standard
deviations instead gives 0.1298 per degree (BEAT std 0.0946 / 0.729 degrees), a 15 % spread that says how exact the
scale is. jawLeft/jawRight are left undriven: that take's jaw yaw stays under 0.2 degrees and the same moment match
gives scales that disagree by a factor of 15 between the two sides, so it would be a guess.
"""

from __future__ import annotations

import numpy as np

from . import quaternions

JAW_OPEN_PER_DEGREE = 0.15233
DERIVED_NAMES = ("jawOpen",)


def jaw_opening_degrees(jaw_axis_angle: np.ndarray) -> np.ndarray:
    """(T, 3) SMPL-X jaw axis-angle -> (T,) opening angle in degrees (positive = mouth opening)."""
    forward = quaternions.rotate_vectors(quaternions.axis_angle_to_quat(jaw_axis_angle), np.array([0.0, 0.0, 1.0]))
    return np.degrees(np.arctan2(-forward[..., 1], forward[..., 2]))


def weights_from_jaw(jaw_axis_angle: np.ndarray) -> tuple:
    """(names, (T, len(names)) float32 weights in 0..1) of the ARKit keys derived from the jaw (DERIVED_NAMES)."""
    opening = jaw_opening_degrees(np.asarray(jaw_axis_angle, dtype=np.float64))
    jaw_open = np.clip(JAW_OPEN_PER_DEGREE * opening, 0.0, 1.0)
    return DERIVED_NAMES, jaw_open[:, None].astype(np.float32)
