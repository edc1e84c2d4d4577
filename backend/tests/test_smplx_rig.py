"""The user's SMPL-X model file -> rig .npz (sheg.io.smplx_rig, `sheg smplx-rig`), read with the real `smplx` package
from a synthetic model file that has the real keys and layout."""

import json
import os
import sys

import numpy as np
import pytest

from fake_smplx_model import PARENTS, expression_deltas, fake_smplx_arrays, write_fake_smplx_model
from sheg.errors import BadInput
from sheg.io.take import sha256_of
from sheg_cli import run_cli

pytest.importorskip("smplx", reason="the optional `smplx` package is not installed (pip install smplx==0.1.28)")
from sheg.io.smplx_rig import FORMAT, export_rig  # noqa: E402


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz")
    return path, write_fake_smplx_model(path)


@pytest.fixture(scope="module")
def rig(model_file, tmp_path_factory):
    path, _ = model_file
    out = str(tmp_path_factory.mktemp("rig") / "rig.npz")
    summary = export_rig(path, out)
    with np.load(out, allow_pickle=False) as z:
        return summary, {k: z[k] for k in z.files}


def test_rest_joints_are_the_regressed_template(model_file, rig):
    _, arrays = model_file
    summary, data = rig
    assert data["joints"].shape == (55, 3) and data["joints"].dtype == np.float64
    np.testing.assert_allclose(data["joints"], arrays["J_regressor"] @ arrays["v_template"], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(data["parents"], PARENTS)
    assert list(data["joint_names"][:3]) == ["pelvis", "left_hip", "right_hip"]
    assert data["joint_names"][23] == "left_eye_smplhf" and data["joint_names"][54] == "right_thumb3"
    assert summary == {"out": summary["out"], "source_file": "SMPLX_NEUTRAL.npz", "gender": "neutral",
                       "vertices": 300, "faces": 570, "expressions": 100}


def test_mesh_weights_and_expressions_are_the_files(model_file, rig):
    path, arrays = model_file
    _, data = rig
    np.testing.assert_allclose(data["vertices"], arrays["v_template"], atol=1e-6, rtol=0)
    np.testing.assert_array_equal(data["faces"], arrays["f"].astype(np.int32))
    assert data["faces"].dtype == np.int32
    assert data["weights"].shape == (300, 55) and data["weights"].dtype == np.float32
    np.testing.assert_allclose(data["weights"], arrays["weights"], atol=1e-7)
    np.testing.assert_allclose(data["weights"].sum(axis=1), 1.0, atol=1e-6)
    assert data["expressions"].shape == (100, 300, 3) and data["expressions"].dtype == np.float32
    np.testing.assert_allclose(data["expressions"], expression_deltas(arrays), atol=1e-9, rtol=1e-6)
    # provenance: which file, exactly
    assert data["format"] == FORMAT and int(data["format_version"]) == 1
    assert data["source_file"] == "SMPLX_NEUTRAL.npz" and data["source_sha256"] == sha256_of(path)
    assert data["gender"] == "neutral" and data["smplx_version"] == "0.1.28"


def test_folder_and_gender_pick_the_file_and_old_files_give_ten_expressions(tmp_path):
    female = fake_smplx_arrays(rows=6, cols=8, seed=3, num_expressions=10)  # SMPL-X v1.0: 10 + 10 directions
    female["shapedirs"] = female["shapedirs"][:, :, 290:]
    np.savez(str(tmp_path / "SMPLX_FEMALE.npz"), **female)
    out = str(tmp_path / "rig.npz")
    summary = export_rig(str(tmp_path), out, gender="female")
    assert summary["gender"] == "female" and summary["expressions"] == 10 and summary["vertices"] == 48
    with np.load(out) as z:
        np.testing.assert_allclose(z["expressions"], np.transpose(female["shapedirs"][:, :, 10:20], (2, 0, 1)),
                                   atol=1e-9, rtol=1e-6)
    with pytest.raises(BadInput, match="no SMPLX_MALE.npz in the folder"):
        export_rig(str(tmp_path), out, gender="male")


def _without(arrays, *keys):
    return {k: v for k, v in arrays.items() if k not in keys}


@pytest.mark.parametrize("case", ["missing", "text", "no-keys", "smplh", "nan", "weights"])
def test_bad_model_files_are_one_line_errors_and_write_nothing(tmp_path, case):
    arrays = fake_smplx_arrays(rows=4, cols=5)
    path = str(tmp_path / "SMPLX_NEUTRAL.npz")
    expected = {
        "missing": "SMPL-X model file not found",
        "text": "is not an .npz archive",
        "no-keys": "is not an SMPL-X model file: it has no lmk_faces_idx, lmk_bary_coords",
        "smplh": r"J_regressor has shape \(52, 20\), expected \(55, 20\)",
        "nan": "v_template has NaN",
        "weights": "skinning weights of vertex 7 sum to 2.0000",
    }[case]
    if case == "text":
        with open(path, "w") as f:
            f.write("not a model\n")
    elif case == "no-keys":
        np.savez(path, **_without(arrays, "lmk_faces_idx", "lmk_bary_coords"))
    elif case == "smplh":
        np.savez(path, **{**arrays, "J_regressor": arrays["J_regressor"][:52]})
    elif case == "nan":
        arrays["v_template"][3, 1] = np.nan
        np.savez(path, **arrays)
    elif case == "weights":
        arrays["weights"][7] *= 2.0
        np.savez(path, **arrays)
    out = str(tmp_path / "rig.npz")
    with pytest.raises(BadInput, match=expected) as info:
        export_rig(path, out)
    assert "\n" not in str(info.value)
    assert os.listdir(tmp_path) == ([] if case == "missing" else ["SMPLX_NEUTRAL.npz"])


def test_without_the_smplx_package_the_error_says_how_to_install_it(model_file, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "smplx", None)  # `import smplx` raises ImportError, as when not installed
    with pytest.raises(BadInput) as info:
        export_rig(model_file[0], str(tmp_path / "rig.npz"))
    assert str(info.value) == ("the SMPL-X model file needs the `smplx` package in the backend Python: "
                               "pip install smplx==0.1.28 (non-commercial licence)")
    assert os.listdir(tmp_path) == []


def test_cli_writes_the_rig_and_prints_json(model_file, tmp_path):
    out = str(tmp_path / "rig.npz")
    proc = run_cli("smplx-rig", model_file[0], "-o", out, "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["vertices"] == 300 and summary["expressions"] == 100 and summary["out"] == os.path.abspath(out)
    with np.load(out) as z:
        assert z["joints"].shape == (55, 3)


def test_cli_bad_file_exit_2_one_line(tmp_path):
    bad = tmp_path / "SMPLX_NEUTRAL.npz"
    bad.write_text("hello")
    out = str(tmp_path / "rig.npz")
    proc = run_cli("smplx-rig", str(bad), "-o", out)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sheg: error: SMPLX_NEUTRAL.npz is not an .npz archive")
    assert not os.path.exists(out)
