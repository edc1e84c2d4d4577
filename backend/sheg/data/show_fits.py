"""SMPL-X fits of talk-show video (SHOW / TalkSHOW `.pkl`) as motion: the 21 body joints, jaw, eyes and 100
expressions at 30 fps, read without running code from the file.

The pickles hold numpy arrays plus logged losses as torch tensors; `io.safe_unpickle.DataUnpickler` rebuilds the
arrays and turns every torch object into an inert placeholder. What the fits do not give:
- hands: 12 PCA coefficients a hand (flat_hand_mean False) whose decoding needs the licensed SMPL-X model's
  `hands_mean`, which is not available: the hand joints are marked unknown (training masks them out), not invented;
- the root: `global_orient` is the camera-space orientation of the fit; as the SHOW authors do, every frame gets the
  first frame's, so the captured camera shake does not become body motion.
"""

from __future__ import annotations

import numpy as np

from sheg.errors import BadInput
from sheg.motion.layouts import NUM_EXPRESSIONS, NUM_SMPLX_JOINTS

SHOW_FPS = 30.0
HAND_JOINTS = tuple(range(25, 55))  # SMPL-X left (25-39) and right (40-54) fingers
_REQUIRED = {"global_orient": 3, "body_pose_axis": 63, "jaw_pose": 3, "leye_pose": 3, "reye_pose": 3,
             "expression": NUM_EXPRESSIONS}


def read_show_fit(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """poses (T, 165) float64 with zero hands, expressions (T, 100) float64, known joints (55,) bool (hands False)."""
    from sheg.io.safe_unpickle import DataUnpickler, UnsafePickle

    try:
        with open(path, "rb") as f:
            fit = DataUnpickler(f).load()
    except UnsafePickle as exc:
        raise BadInput(f"{path}: {exc}") from None
    except Exception as exc:  # truncated or not a pickle at all
        raise BadInput(f"cannot read {path} as a SHOW fit ({type(exc).__name__}: {str(exc)[:80]}): expected a "
                       f"TalkSHOW/SHOW .pkl of SMPL-X parameters") from None
    if not isinstance(fit, dict):
        raise BadInput(f"{path} is not a SHOW fit: it holds a {type(fit).__name__}, not a dict of SMPL-X parameters")
    missing = [k for k in _REQUIRED if not isinstance(fit.get(k), np.ndarray)]
    if missing:
        raise BadInput(f"{path} is not a SHOW fit: it has no {', '.join(missing)} array")
    frames = len(fit["expression"])
    parts = {}
    for key, width in _REQUIRED.items():
        value = np.asarray(fit[key], dtype=np.float64)
        if value.size != frames * width:
            raise BadInput(f"{path}: {key} has shape {value.shape}, expected ({frames}, {width})")
        parts[key] = value.reshape(frames, width)
    if frames < 1:
        raise BadInput(f"{path} has no frames")
    root = np.repeat(parts["global_orient"][:1], frames, axis=0)
    hands = np.zeros((frames, 3 * len(HAND_JOINTS)))
    poses = np.concatenate([root, parts["body_pose_axis"], parts["jaw_pose"], parts["leye_pose"],
                            parts["reye_pose"], hands], axis=1)
    if not (np.isfinite(poses).all() and np.isfinite(parts["expression"]).all()):
        raise BadInput(f"{path} contains NaN or infinite values")
    known = np.ones(NUM_SMPLX_JOINTS, bool)
    known[list(HAND_JOINTS)] = False
    return poses, parts["expression"], known
