"""Geometry of the stand-in SMPL-X body and face, numpy only (no SMPL-X data: the project's own simple shapes).

Body: one tapered 8-sided tube per bone segment, each vertex rigidly bound to one joint. Face: an ellipsoid head bound
to `head` and (lower front part, smoothly) `jaw`, with 100 smooth expression deltas (Gaussian bumps along the
surface normal) for the shape keys Exp000..Exp099. All coordinates are SMPL-X (Y up, metres), as STANDIN_REST_JOINTS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import smplx

SIDES = 8  # tube cross-section
EXPRESSION_AMPLITUDE = 0.004  # metres of displacement per unit expression coefficient at a bump's centre


@dataclass
class StandinMesh:
    vertices: np.ndarray   # (V, 3) float64, SMPL-X coordinates
    faces: list            # polygons as tuples of vertex indices
    groups: dict           # joint name -> ((n,) vertex indices, (n,) weights in 0..1)
    shape_deltas: np.ndarray | None = None  # (K, V, 3) per-shape-key offsets from the basis


def _frame(direction: np.ndarray):
    """Two unit vectors perpendicular to `direction` (and to each other)."""
    d = direction / np.linalg.norm(direction)
    helper = np.array([0.0, 0.0, 1.0]) if abs(d[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    u = np.cross(d, helper)
    u /= np.linalg.norm(u)
    return u, np.cross(d, u)


def _tube(start, end, r0, r1):
    """Vertices (2*SIDES+2, 3) and faces of a capped tapered tube from start to end."""
    start, end = np.asarray(start, float), np.asarray(end, float)
    u, v = _frame(end - start)
    angles = np.arange(SIDES) * (2.0 * np.pi / SIDES)
    ring = np.cos(angles)[:, None] * u + np.sin(angles)[:, None] * v  # (SIDES, 3)
    verts = np.concatenate([start + r0 * ring, end + r1 * ring, [start, end]])
    faces = [(i, (i + 1) % SIDES, SIDES + (i + 1) % SIDES, SIDES + i) for i in range(SIDES)]
    faces += [((i + 1) % SIDES, i, 2 * SIDES) for i in range(SIDES)]
    faces += [(SIDES + i, SIDES + (i + 1) % SIDES, 2 * SIDES + 1) for i in range(SIDES)]
    return verts, faces


# joint -> (end joint name or an offset from the joint, start radius, end radius)
_SEGMENTS = {
    "pelvis": ("spine1", 0.135, 0.13), "spine1": ("spine2", 0.13, 0.135), "spine2": ("spine3", 0.135, 0.145),
    "spine3": ("neck", 0.145, 0.07), "neck": ("head", 0.055, 0.055), "head": ((0.0, 0.15, -0.01), 0.07, 0.06),
    "left_eye_smplhf": ((0.0, 0.0, 0.035), 0.014, 0.012), "right_eye_smplhf": ((0.0, 0.0, 0.035), 0.014, 0.012),
}
_LIMB_RADII = {"hip": (0.075, 0.05), "knee": (0.05, 0.036), "ankle": (0.036, 0.033), "foot": (0.03, 0.02),
               "collar": (0.05, 0.05), "shoulder": (0.05, 0.04), "elbow": (0.04, 0.03), "wrist": (0.03, 0.034)}
_ENDS = {"hip": "knee", "knee": "ankle", "ankle": "foot", "collar": "shoulder", "shoulder": "elbow", "elbow": "wrist",
         "wrist": "middle1"}


def _segment(j: int, joints: np.ndarray):
    """(start, end, r0, r1) of joint j's segment, or None (jaw: the face mesh carries it)."""
    name = smplx.JOINT_NAMES[j]
    start = joints[j]
    if name == "jaw":
        return None
    if name in _SEGMENTS:
        end, r0, r1 = _SEGMENTS[name]
        end = joints[smplx.JOINT_INDEX[end]] if isinstance(end, str) else start + np.asarray(end)
        if name == "pelvis":
            start = start + np.array([0.0, -0.08, 0.0])
        return start, end, r0, r1
    side, part = name.split("_", 1)
    if part in _ENDS:
        end = joints[smplx.JOINT_INDEX[f"{side}_{_ENDS[part]}"]]
        return start, end, *_LIMB_RADII[part]
    if part == "foot":
        return start, start + np.array([0.0, -0.01, 0.07]), *_LIMB_RADII[part]
    # finger joint: to its child, or past the tip along the last phalanx
    kids = smplx.children_of(j)
    if kids:
        end = joints[kids[0]]
    else:
        end = start + (start - joints[smplx.PARENTS[j]]) * 0.8
    radius = 0.011 if "thumb" in part else 0.009
    return start, end, radius, radius * 0.85


def body_mesh(joints: np.ndarray = smplx.STANDIN_REST_JOINTS) -> StandinMesh:
    """Tapered tubes for every joint's segment, rigidly weighted (1.0) to that joint."""
    all_verts, all_faces, groups = [], [], {}
    offset = 0
    for j in range(smplx.NUM_JOINTS):
        seg = _segment(j, joints)
        if seg is None:
            continue
        verts, faces = _tube(*seg)
        all_verts.append(verts)
        all_faces += [tuple(i + offset for i in f) for f in faces]
        groups[smplx.JOINT_NAMES[j]] = (np.arange(offset, offset + len(verts)), np.ones(len(verts)))
        offset += len(verts)
    return StandinMesh(np.concatenate(all_verts), all_faces, groups)


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def face_mesh(joints: np.ndarray = smplx.STANDIN_REST_JOINTS, segments: int = 32, rings: int = 24,
              num_expressions: int = smplx.NUM_EXPRESSIONS) -> StandinMesh:
    """Ellipsoid head around the head joint, weighted to head/jaw, with (K, V, 3) smooth expression deltas."""
    centre = joints[smplx.JOINT_INDEX["head"]] + np.array([0.0, 0.075, 0.02])
    radii = np.array([0.085, 0.115, 0.095])
    # UV sphere: poles on the Y axis
    lat = np.linspace(0.0, np.pi, rings + 1)[1:-1]
    lon = np.arange(segments) * (2.0 * np.pi / segments)
    unit = np.stack([np.sin(lat)[:, None] * np.sin(lon)[None, :],
                     np.repeat(np.cos(lat)[:, None], segments, axis=1),
                     np.sin(lat)[:, None] * np.cos(lon)[None, :]], axis=-1).reshape(-1, 3)
    unit = np.concatenate([unit, [[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]]])
    verts = centre + unit * radii
    top, bottom = len(unit) - 2, len(unit) - 1
    faces = []
    for r in range(rings - 2):
        for s in range(segments):
            a, b = r * segments + s, r * segments + (s + 1) % segments
            faces.append((a, a + segments, b + segments, b))
    last = (rings - 2) * segments
    faces += [(top, s, (s + 1) % segments) for s in range(segments)]
    faces += [(bottom, last + (s + 1) % segments, last + s) for s in range(segments)]

    rel = verts - centre
    # lower front of the head follows the jaw, blended over a few centimetres so the mouth corner bends smoothly
    jaw_weight = _smoothstep(-0.02, -0.06, rel[:, 1]) * _smoothstep(-0.02, 0.04, rel[:, 2])
    everything = np.arange(len(verts))
    groups = {"head": (everything, 1.0 - jaw_weight), "jaw": (everything, jaw_weight)}

    normals = rel / (radii * radii)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return StandinMesh(verts, faces, groups, _expression_deltas(unit, normals, num_expressions))


def _expression_deltas(unit: np.ndarray, normals: np.ndarray, count: int) -> np.ndarray:
    """(count, V, 3): expression k pushes the surface along its normal with a Gaussian bump centred on the front of
    the face; early coefficients are broad (like a PCA basis), later ones local; signs alternate."""
    k = np.arange(count)
    # centres spread over the front half (unit sphere, z > 0) with a golden-angle spiral
    height = 1.0 - (k + 0.5) / count * 1.6          # y in [-0.6, 1.0)
    around = k * np.pi * (3.0 - np.sqrt(5.0))
    ring = np.sqrt(np.clip(1.0 - height * height, 0.0, 1.0))
    centres = np.stack([ring * np.sin(around) * 0.8, height, np.abs(ring * np.cos(around)) + 0.2], axis=1)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    sigma = 0.55 - 0.35 * k / max(count - 1, 1)     # on the unit sphere, radians-ish
    dist2 = np.sum((unit[None, :, :] - centres[:, None, :]) ** 2, axis=-1)  # (K, V)
    bump = np.exp(-0.5 * dist2 / (sigma[:, None] ** 2))
    sign = np.where(k % 2 == 0, 1.0, -1.0)[:, None]
    return (EXPRESSION_AMPLITUDE * sign * bump)[:, :, None] * normals[None, :, :]
