"""A tiny synthetic SMPL-X model file with the real keys and layout that `smplx` 0.1.28 reads (no SMPL-X data).

Shared by backend/tests/test_smplx_rig.py and the Blender tests (imported by path). Values are random but valid: a
clean grid surface shaped roughly like a standing body, 55 joints on the real SMPL-X kintree, skinning weights
summing to 1, 300 shape + 100 expression directions.
"""

from __future__ import annotations

import numpy as np

PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 15, 15, 15,
           20, 25, 26, 20, 28, 29, 20, 31, 32, 20, 34, 35, 20, 37, 38,
           21, 40, 41, 21, 43, 44, 21, 46, 47, 21, 49, 50, 21, 52, 53)
NUM_BETAS, NUM_EXPRESSIONS = 300, 100


def fake_smplx_arrays(rows: int = 20, cols: int = 15, seed: int = 0, num_expressions: int = NUM_EXPRESSIONS) -> dict:
    """Arrays of an SMPL-X .npz with V = rows * cols vertices (default 300)."""
    rng = np.random.default_rng(seed)
    v = rows * cols
    # a cylinder-ish grid: height along Y from -1.2 (soles) to 0.5 (head top), around the body in X/Z
    height = np.linspace(-1.2, 0.5, rows)[:, None].repeat(cols, axis=1)
    angle = np.linspace(0.0, 2.0 * np.pi, cols, endpoint=False)[None, :].repeat(rows, axis=0)
    v_template = np.stack([0.2 * np.sin(angle), height, 0.12 * np.cos(angle)], axis=-1).reshape(v, 3)
    v_template += rng.normal(scale=0.005, size=v_template.shape)
    faces = []
    for r in range(rows - 1):
        for c in range(cols):
            a, b = r * cols + c, r * cols + (c + 1) % cols
            faces += [(a, b, b + cols), (a, b + cols, a + cols)]
    j_regressor = rng.random((55, v)) * (rng.random((55, v)) < 0.05)
    j_regressor[np.arange(55), rng.integers(0, v, 55)] += 1.0  # no empty row
    j_regressor /= j_regressor.sum(axis=1, keepdims=True)
    weights = np.zeros((v, 55))
    for i in range(v):
        joints = rng.choice(55, size=4, replace=False)
        weights[i, joints] = rng.dirichlet(np.ones(4))
    weights[:5] = 0.0
    weights[:5, 15] = 1.0  # some rigid vertices, as the real model has
    return {
        "v_template": v_template,
        "f": np.asarray(faces, dtype=np.uint32),
        "shapedirs": rng.normal(scale=1e-3, size=(v, 3, NUM_BETAS + num_expressions)),
        "posedirs": rng.normal(scale=1e-3, size=(v, 3, 54 * 9)),
        "J_regressor": j_regressor,
        "kintree_table": np.stack([np.array(PARENTS, dtype=np.int64) % (2 ** 32), np.arange(55)]).astype(np.uint32),
        "weights": weights,
        "hands_componentsl": rng.normal(size=(45, 45)), "hands_componentsr": rng.normal(size=(45, 45)),
        "hands_meanl": rng.normal(scale=0.1, size=45), "hands_meanr": rng.normal(scale=0.1, size=45),
        "lmk_faces_idx": rng.integers(0, len(faces), 51).astype(np.int64),
        "lmk_bary_coords": rng.dirichlet(np.ones(3), 51),
        "vt": rng.random((v, 2)), "ft": np.asarray(faces, dtype=np.uint32),
    }


def write_fake_smplx_model(path: str, **kwargs) -> dict:
    """Write the arrays to `path` (an .npz) and return them."""
    arrays = fake_smplx_arrays(**kwargs)
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return arrays


def expression_deltas(arrays: dict, count: int = NUM_EXPRESSIONS) -> np.ndarray:
    """(K, V, 3) the file's expression directions, as SMPL-X defines them (shapedirs after the 300 shape ones)."""
    return np.transpose(arrays["shapedirs"][:, :, NUM_BETAS:NUM_BETAS + count], (2, 0, 1))
