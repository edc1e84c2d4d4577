"""The user's own SMPL-X model file -> a rig .npz from which the Blender add-on builds the exact SMPL-X rig.

The model is read with the `smplx` package (an optional dependency, `pip install smplx==0.1.28`). Model files and
`smplx` are licensed non-commercial with no redistribution: this project never ships either; the rig .npz stays on
the user's machine (the add-on writes it to a temporary folder and deletes it once the rig is built).

Rig .npz (format "sheg-smplx-rig", format_version 1), SMPL-X coordinates (Y up, metres), neutral shape (betas 0):
  joint_names  (55,) str      the kinematic joints, smplx order
  parents      (55,) int32    the file's kintree (-1 for the pelvis)
  joints       (55, 3) f64    rest joints = J_regressor @ v_template
  vertices     (V, 3) f64     v_template (T-pose, flat hands)
  faces        (F, 3) int32   triangles
  weights      (V, 55) f32    linear-blend-skinning weights, dense, each row sums to 1
  expressions  (K, V, 3) f32  vertex offsets per unit expression coefficient (K = 100, or 10 for SMPL-X v1.0 files)
  source_file, source_sha256, gender, smplx_version   provenance
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import zipfile

import numpy as np

from sheg.errors import BadInput
from sheg.io.take import atomic_write, sha256_of

FORMAT = "sheg-smplx-rig"
FORMAT_VERSION = 1
NUM_JOINTS = 55
SMPLX_PIN = "smplx==0.1.28"
GENDERS = ("neutral", "male", "female")
# What smplx 0.1.28 reads from an SMPL-X file (SMPL + SMPL-H + SMPL-X constructors, no face contour).
REQUIRED_KEYS = ("v_template", "f", "shapedirs", "posedirs", "J_regressor", "kintree_table", "weights",
                 "hands_componentsl", "hands_componentsr", "hands_meanl", "hands_meanr", "lmk_faces_idx",
                 "lmk_bary_coords")
_GENDER_IN_NAME = re.compile(r"smplx_(neutral|male|female)", re.IGNORECASE)


def _import_smplx():
    try:
        import smplx
    except ImportError:
        raise BadInput("the SMPL-X model file needs the `smplx` package in the backend Python: "
                       f"pip install {SMPLX_PIN} (non-commercial licence)") from None
    return smplx


def _joint_names() -> list:
    from smplx.joint_names import JOINT_NAMES

    return list(JOINT_NAMES[:NUM_JOINTS])


def _smplx_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("smplx")
    except metadata.PackageNotFoundError:
        return "unknown"


def resolve_model_file(model_path: str, gender: str | None = None) -> tuple[str, str]:
    """(file, gender): a file is used as it is (gender from its name, SMPLX_FEMALE.npz -> female, else `gender` or
    neutral); a folder must hold SMPLX_<GENDER>.npz (or .pkl) for `gender` (default neutral)."""
    if gender is not None and gender not in GENDERS:
        raise BadInput(f"unknown gender '{gender}': use one of {', '.join(GENDERS)}")
    if not model_path:
        raise BadInput("no SMPL-X model file given: download SMPLX_NEUTRAL.npz from smpl-x.is.tue.mpg.de")
    if os.path.isdir(model_path):
        gender = gender or "neutral"
        for ext in ("npz", "pkl"):
            candidate = os.path.join(model_path, f"SMPLX_{gender.upper()}.{ext}")
            if os.path.isfile(candidate):
                return candidate, gender
        raise BadInput(f"no SMPLX_{gender.upper()}.npz in the folder {model_path}: point to the model file itself")
    if not os.path.isfile(model_path):
        raise BadInput(f"SMPL-X model file not found: {model_path} (download SMPLX_NEUTRAL.npz from "
                       "smpl-x.is.tue.mpg.de and set its path)")
    found = _GENDER_IN_NAME.search(os.path.basename(model_path))
    return model_path, (found.group(1).lower() if found else gender or "neutral")


def _check_npz_keys(path: str) -> None:
    """Fail early, in one line, when the file is no .npz or lacks what smplx reads (lists the archive only)."""
    name = os.path.basename(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = set(archive.files)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        raise BadInput(f"{name} is not an .npz archive (damaged or a different file): use SMPLX_NEUTRAL.npz "
                       "from smpl-x.is.tue.mpg.de") from None
    missing = [k for k in REQUIRED_KEYS if k not in keys]
    if missing:
        raise BadInput(f"{name} is not an SMPL-X model file: it has no {', '.join(missing)} "
                       "(SMPL, SMPL+H, MANO and FLAME files do not work; use SMPLX_NEUTRAL.npz)")


def _load(smplx, path: str, gender: str, num_expressions: int):
    name = os.path.basename(path)
    ext = "pkl" if path.lower().endswith(".pkl") else "npz"
    try:
        # smplx prints its warnings on stdout, which belongs to the caller (JSON output, the add-on)
        with contextlib.redirect_stdout(sys.stderr):
            # smplx.create would take the model type from the file name: the class itself accepts any name.
            return smplx.SMPLX(path, ext=ext, gender=gender, num_expression_coeffs=num_expressions, use_pca=False,
                               flat_hand_mean=True, batch_size=1)
    except AttributeError as exc:  # smplx reads the file's arrays as attributes of a Struct
        key = re.search(r"attribute '(\w+)'", str(exc))
        what = f"it has no '{key.group(1)}'" if key else str(exc).splitlines()[0]
        raise BadInput(f"{name} is not an SMPL-X model file: {what}") from None
    except ModuleNotFoundError as exc:  # old .pkl files pickle chumpy objects
        raise BadInput(f"{name} needs the Python module '{exc.name}' to unpickle: use the .npz version of the "
                       "SMPL-X model") from None
    except Exception as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadInput(f"cannot read {name} as an SMPL-X model ({type(exc).__name__}: {detail})") from None


def _arrays_from_model(model, name: str, num_expressions: int) -> dict:
    """The rig arrays from a loaded smplx.SMPLX, validated."""
    v_template = model.v_template.detach().cpu().numpy().astype(np.float64)
    j_regressor = model.J_regressor.detach().cpu().numpy().astype(np.float64)
    weights = model.lbs_weights.detach().cpu().numpy().astype(np.float32)
    parents = model.parents.detach().cpu().numpy().astype(np.int32)
    faces = np.asarray(model.faces).astype(np.int64)
    expr_dirs = model.expr_dirs.detach().cpu().numpy()  # (V, 3, K)
    num_verts = len(v_template)
    if v_template.ndim != 2 or v_template.shape[1] != 3 or num_verts < 4:
        raise BadInput(f"{name}: v_template has shape {v_template.shape}, expected (V, 3) vertices")
    if j_regressor.shape != (NUM_JOINTS, num_verts):
        raise BadInput(f"{name}: J_regressor has shape {j_regressor.shape}, expected ({NUM_JOINTS}, {num_verts}); "
                       "is it an SMPL or SMPL+H file? Use SMPLX_NEUTRAL.npz")
    if weights.shape != (num_verts, NUM_JOINTS):
        raise BadInput(f"{name}: weights has shape {weights.shape}, expected ({num_verts}, {NUM_JOINTS})")
    if parents.shape != (NUM_JOINTS,) or any(not 0 <= parents[j] < j for j in range(1, NUM_JOINTS)):
        raise BadInput(f"{name}: kintree_table is not a 55-joint tree with parents before children")
    if faces.ndim != 2 or faces.shape[1] != 3 or len(faces) == 0 or faces.min() < 0 or faces.max() >= num_verts:
        raise BadInput(f"{name}: f must hold (F, 3) triangles indexing the {num_verts} vertices")
    if expr_dirs.ndim != 3 or expr_dirs.shape[:2] != (num_verts, 3) or expr_dirs.shape[2] == 0:
        raise BadInput(f"{name}: shapedirs holds no expression directions after the shape ones")
    for key, array in (("v_template", v_template), ("J_regressor", j_regressor), ("weights", weights),
                       ("shapedirs", expr_dirs)):
        if not np.all(np.isfinite(array)):
            raise BadInput(f"{name}: {key} has NaN or infinite values (damaged file): download it again")
    sums = weights.sum(axis=1)
    if np.abs(sums - 1.0).max() > 1e-3 or weights.min() < -1e-6:
        bad = int(np.abs(sums - 1.0).argmax())
        raise BadInput(f"{name}: skinning weights of vertex {bad} sum to {sums[bad]:.4f}, expected 1")
    expressions = np.ascontiguousarray(np.transpose(expr_dirs[:, :, :num_expressions], (2, 0, 1)), np.float32)
    return {
        "joints": j_regressor @ v_template,
        "parents": parents,
        "vertices": v_template,
        "faces": faces.astype(np.int32),
        "weights": weights,
        "expressions": expressions,
    }


def export_rig(model_path: str, out_npz: str, *, gender: str | None = None, num_expressions: int = 100) -> dict:
    """Read an SMPL-X model file with `smplx` and write the rig .npz (see the module docstring) atomically.

    Returns a summary {out, source_file, gender, vertices, faces, expressions}. Raises BadInput (one line) when
    `smplx` is missing or the file is missing, damaged or not an SMPL-X model; nothing is written then.
    """
    if not 1 <= int(num_expressions) <= 100:
        raise BadInput(f"num_expressions must be 1..100, got {num_expressions}")
    path, gender = resolve_model_file(model_path, gender)
    name = os.path.basename(path)
    if path.lower().endswith(".npz"):
        _check_npz_keys(path)
    elif not path.lower().endswith(".pkl"):
        raise BadInput(f"{name} is not an SMPL-X model file (expected SMPLX_NEUTRAL.npz)")
    smplx = _import_smplx()
    model = _load(smplx, path, gender, int(num_expressions))
    arrays = _arrays_from_model(model, name, int(num_expressions))
    content = {
        "format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION),
        "joint_names": np.array(_joint_names()),
        **arrays,
        "source_file": np.array(name), "source_sha256": np.array(sha256_of(path)), "gender": np.array(gender),
        "smplx_version": np.array(_smplx_version()),
    }

    def _write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **content)

    atomic_write(out_npz, _write)
    return {"out": os.path.abspath(out_npz), "source_file": name, "gender": gender,
            "vertices": int(len(arrays["vertices"])), "faces": int(len(arrays["faces"])),
            "expressions": int(len(arrays["expressions"]))}
