"""The exact-rig file (addon/core/rigfile.py): reading and checking the rig .npz, vertex groups, and the real
`sheg smplx-rig` run in the backend Python. Pure, no bpy."""

import glob
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "addon"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "backend", "tests"))
from core import rigfile, smplx  # noqa: E402
from fake_smplx_model import expression_deltas, write_fake_smplx_model  # noqa: E402


def _rig_arrays(num_vertices=6, num_expressions=3, **overrides):
    rng = np.random.default_rng(0)
    weights = rng.random((num_vertices, 55)).astype(np.float32)
    weights /= weights.sum(axis=1, keepdims=True)
    data = {"format": np.array(rigfile.FORMAT), "format_version": np.array(1),
            "joints": rng.normal(size=(55, 3)), "parents": np.array(smplx.PARENTS, dtype=np.int32),
            "vertices": rng.normal(size=(num_vertices, 3)), "faces": np.array([[0, 1, 2], [3, 4, 5]], dtype=np.int32),
            "weights": weights, "expressions": rng.normal(size=(num_expressions, num_vertices, 3)).astype(np.float32),
            "source_file": np.array("SMPLX_FEMALE.npz"), "source_sha256": np.array("ab" * 32),
            "gender": np.array("female")}
    data.update(overrides)
    return {k: v for k, v in data.items() if v is not None}


def _save(tmp_path, **arrays):
    path = str(tmp_path / "rig.npz")
    np.savez(path, **arrays)
    return path


def test_reads_a_rig_file(tmp_path):
    arrays = _rig_arrays()
    rig = rigfile.read_rig(_save(tmp_path, **arrays))
    np.testing.assert_array_equal(rig.joints, arrays["joints"])
    np.testing.assert_array_equal(rig.vertices, arrays["vertices"])
    np.testing.assert_array_equal(rig.expressions, arrays["expressions"])
    assert rig.faces.dtype == np.int32 and rig.weights.dtype == np.float32 and rig.num_vertices == 6
    assert (rig.gender, rig.source_file, rig.source_sha256) == ("female", "SMPLX_FEMALE.npz", "ab" * 32)


@pytest.mark.parametrize("change,message", [
    ({"format": np.array("other")}, "is not a SHEG SMPL-X rig"),
    ({"format_version": np.array(2)}, "has format version 2; this add-on reads 1: update the add-on"),
    ({"weights": None}, "has no weights"),
    ({"joints": np.zeros((52, 3))}, r"joints has shape \(52, 3\), expected \(55, 3\)"),
    ({"parents": np.array((-1,) + smplx.PARENTS[:-1], dtype=np.int32)}, "is not the SMPL-X kintree"),
    ({"faces": np.array([[0, 1, 6]], dtype=np.int32)}, "faces must be .* indexing the 6 vertices"),
    ({"faces": np.array([[0.0, 1.0, 2.0]])}, "faces must be .* integer triangles"),
    ({"weights": np.ones((5, 55), np.float32)}, r"weights has shape \(5, 55\), expected \(6, 55\)"),
    ({"expressions": np.zeros((101, 6, 3), np.float32)}, r"expressions has shape \(101, 6, 3\)"),
    ({"vertices": np.full((6, 3), np.nan)}, "vertices has NaN"),
], ids=["format", "version", "missing", "joints", "parents", "face-range", "face-type", "weights", "expressions",
        "nan"])
def test_bad_rig_files_are_one_line_errors_naming_the_model(tmp_path, change, message):
    with pytest.raises(ValueError, match=message) as info:
        rigfile.read_rig(_save(tmp_path, **_rig_arrays(**change)))
    assert "\n" not in str(info.value)
    assert "format" in change or str(info.value).startswith("rig from SMPLX_FEMALE.npz")


def test_unreadable_and_missing_rig_files(tmp_path):
    text = tmp_path / "rig.npz"
    text.write_text("no")
    with pytest.raises(ValueError, match="cannot read the rig file rig.npz"):
        rigfile.read_rig(str(text))
    with pytest.raises(ValueError, match="rig file not found"):
        rigfile.read_rig(str(tmp_path / "none.npz"))


def test_vertex_groups_and_equal_weight_runs_rebuild_the_weights():
    rng = np.random.default_rng(1)
    weights = np.zeros((40, 55), np.float32)
    weights[:20, 3] = 1.0
    weights[20:, 3] = 0.25
    weights[20:, 9] = rng.dirichlet(np.ones(2), 20)[:, 0] * 0.75
    weights[20:, 12] = 0.75 - weights[20:, 9]
    groups = rigfile.vertex_groups(weights)
    assert list(groups) == ["spine1", "spine3", "neck"]
    rebuilt = np.zeros_like(weights)
    calls = 0
    for name, (indices, values) in groups.items():
        for run, weight in rigfile.runs_of_equal_weight(indices, values):
            rebuilt[run, smplx.JOINT_INDEX[name]] = weight
            calls += 1
    np.testing.assert_array_equal(rebuilt, weights)
    assert calls == 2 + 20 + 20  # spine1: the 1.0 run and the 0.25 run


def test_ground_offset_puts_the_soles_on_the_origin():
    vertices = np.array([[0.0, -1.25, 0.1], [0.0, 0.4, 0.0]])
    assert rigfile.ground_offset(vertices) == 1.25


def test_failure_messages_are_the_backends_line():
    stderr = "Traceback...\nsheg: error: SMPLX_X.npz is not an SMPL-X model file: it has no f\n"
    assert rigfile.failure_message(2, stderr, "/m/SMPLX_X.npz") == \
        "SMPLX_X.npz is not an SMPL-X model file: it has no f"
    old = "usage: sheg ...\nsheg: error: argument COMMAND: invalid choice: 'smplx-rig' (choose from 'generate')\n"
    assert "backend is too old" in rigfile.failure_message(2, old, "m.npz")
    assert "has no `sheg` package" in rigfile.failure_message(1, "/usr/bin/python: No module named sheg\n", "m.npz")
    assert rigfile.failure_message(-9, "", "/m/model.npz") == \
        "reading the SMPL-X model file model.npz failed: exit code -9"


@pytest.fixture(scope="module")
def smplx_backend(backend_python):
    probe = subprocess.run([backend_python, "-c", "import smplx"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("the backend Python has no `smplx` package (pip install smplx==0.1.28)")
    return backend_python


def _temp_rigs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), rigfile.TEMP_PREFIX + "*")))


def test_rig_from_a_model_file_through_the_backend(smplx_backend, tmp_path):
    model_file = str(tmp_path / "SMPLX_MALE.npz")
    arrays = write_fake_smplx_model(model_file, rows=8, cols=6, seed=4)
    before = _temp_rigs()
    rig = rigfile.rig_from_model_file(smplx_backend, model_file)
    assert _temp_rigs() == before  # the derived data does not stay on disk
    np.testing.assert_allclose(rig.joints, arrays["J_regressor"] @ arrays["v_template"], atol=1e-6, rtol=0)
    np.testing.assert_allclose(rig.expressions, expression_deltas(arrays), atol=1e-9, rtol=1e-6)
    assert rig.num_vertices == 48 and rig.gender == "male" and rig.source_file == "SMPLX_MALE.npz"


def test_a_broken_model_file_gives_the_backends_one_line(smplx_backend, tmp_path):
    model_file = tmp_path / "SMPLX_NEUTRAL.npz"
    model_file.write_bytes(b"PK\x03\x04 damaged")
    before = _temp_rigs()
    with pytest.raises(ValueError) as info:
        rigfile.rig_from_model_file(smplx_backend, str(model_file))
    assert str(info.value).startswith("SMPLX_NEUTRAL.npz is not an .npz archive")
    assert _temp_rigs() == before
    with pytest.raises(ValueError, match="SMPL-X model file not found"):
        rigfile.rig_from_model_file(smplx_backend, str(tmp_path / "none.npz"))
    with pytest.raises(ValueError, match="backend Python not found"):
        rigfile.rig_from_model_file(str(tmp_path / "python"), str(model_file))
