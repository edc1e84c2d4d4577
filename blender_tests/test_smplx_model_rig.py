"""Create SMPL-X Rig from the user's own SMPL-X model file, inside real Blender with the BUILT extension installed.

The model file is synthetic (backend/tests/fake_smplx_model.py: the real keys and layout, random values) and is read
by the real backend Python with the real `smplx` package (`python -m sheg smplx-rig`), as for a user.
"""

from __future__ import annotations

import glob
import importlib
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import bpy  # noqa: I001

from conftest import ADDON_MODULE, REPO_ROOT, SHARED_DIR

sys.path.insert(0, os.path.join(REPO_ROOT, "backend", "tests"))
from fake_smplx_model import PARENTS, expression_deltas, write_fake_smplx_model  # noqa: E402

AXIS_CHANGE = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # SMPL-X -> Blender: (x, -z, y)
BEAT2 = os.path.join(SHARED_DIR, "data", "beat2", "2_scott_0_1_1.npz")


def addon_module(name: str):
    return importlib.import_module(f"{ADDON_MODULE}.{name}")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("smplx") / "SMPLX_NEUTRAL.npz")
    return path, write_fake_smplx_model(path, seed=7)


@pytest.fixture
def smplx_prefs(prefs, backend_python):
    """Preferences with a Custom backend Python that has `smplx`; no model file set yet."""
    probe = subprocess.run([backend_python, "-c", "import smplx"], capture_output=True, text=True, timeout=120)
    if probe.returncode != 0:
        pytest.skip("the backend Python has no `smplx` package (pip install smplx==0.1.28)")
    prefs.backend_mode, prefs.python_path = "CUSTOM", backend_python
    return prefs


@pytest.fixture
def names(addon):
    return addon_module("core.smplx").JOINT_NAMES


def _lift(arrays) -> np.ndarray:
    return np.array([0.0, 0.0, -arrays["v_template"][:, 1].min()])  # soles on the armature's origin


def _data_counts():
    return {kind: len(getattr(bpy.data, kind)) for kind in ("objects", "meshes", "armatures", "materials",
                                                             "shape_keys", "actions")}


@pytest.fixture(autouse=True)
def private_tempdir(tmp_path, monkeypatch):
    """The add-on's temporary rig folders go to this test's own folder, so other processes using /tmp at the same
    time (another test run, another Blender) cannot make the leftover check fail."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))


def _temp_rigs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "sheg-rig-*")))


def test_create_rig_builds_the_exact_rig_from_the_model_file(scene, smplx_prefs, model_file, names):
    path, arrays = model_file
    smplx_prefs.smplx_model_path = path
    before = _temp_rigs()
    assert bpy.ops.sheg.create_rig() == {"FINISHED"}
    assert _temp_rigs() == before
    armature, mesh = scene.sheg.armature, scene.sheg.face_mesh
    assert (armature.name, mesh.name) == ("SMPLX-neutral", "SMPLX-neutral-mesh")
    assert armature["sheg_smplx_model"] == "SMPLX_NEUTRAL.npz"

    # bones: exact rest joints, SMPL-X hierarchy, every rest frame the SMPL-X axes (as the stand-in's)
    bones = armature.data.bones
    assert len(bones) == 56 and bones[0].name == "root"
    heads = np.array([list(bones[n].head_local) for n in names])
    np.testing.assert_allclose(heads, (arrays["J_regressor"] @ arrays["v_template"]) @ AXIS_CHANGE.T + _lift(arrays),
                               atol=1e-5, rtol=0)
    for j, name in enumerate(names):
        assert bones[name].parent.name == ("root" if PARENTS[j] < 0 else names[PARENTS[j]])
        np.testing.assert_allclose(np.array(bones[name].matrix_local.to_3x3()), AXIS_CHANGE, atol=1e-6)
        assert armature.pose.bones[name].rotation_mode == "QUATERNION"

    # the model's mesh, skinned by 55 vertex groups with the file's weights
    data = mesh.data
    assert mesh.parent == armature and mesh.modifiers["Armature"].object == armature
    assert len(data.vertices) == 300 and len(data.polygons) == len(arrays["f"])
    co = np.empty(3 * len(data.vertices))
    data.vertices.foreach_get("co", co)
    np.testing.assert_allclose(co.reshape(-1, 3), arrays["v_template"] @ AXIS_CHANGE.T + _lift(arrays), atol=1e-6)
    assert [g.name for g in mesh.vertex_groups] == list(names)
    weights = np.zeros((300, 55))
    for vertex in data.vertices:
        for element in vertex.groups:
            weights[vertex.index, element.group] = element.weight
    np.testing.assert_allclose(weights, arrays["weights"], atol=1e-6)

    # expression shape keys: Basis + Exp000..Exp099, neutral, deltas = the file's expression directions
    blocks = data.shape_keys.key_blocks
    assert [b.name for b in blocks] == ["Basis"] + [f"Exp{k:03d}" for k in range(100)]
    assert all(b.value == 0.0 and (b.slider_min, b.slider_max) == (-10.0, 10.0) for b in blocks[1:])
    basis = np.empty(3 * len(data.vertices))
    blocks["Basis"].data.foreach_get("co", basis)
    deltas = expression_deltas(arrays)
    for k in (0, 1, 50, 99):
        key_co = np.empty_like(basis)
        blocks[f"Exp{k:03d}"].data.foreach_get("co", key_co)
        np.testing.assert_allclose((key_co - basis).reshape(-1, 3), deltas[k] @ AXIS_CHANGE.T, atol=1e-6)
    rig = addon_module("rig")
    assert rig.find_smplx_bones(armature) == {n: n for n in names}
    assert rig.find_expression_keys(mesh) == {k: f"Exp{k:03d}" for k in range(100)}


def _short_beat2_take(tmp_path, frames=45):
    if not os.path.isfile(BEAT2):
        pytest.skip(f"shared BEAT2 data not found at {BEAT2}")
    with np.load(BEAT2) as z:
        short = {k: z[k][:frames] for k in ("poses", "trans", "expressions")}
        short.update(betas=z["betas"], gender=z["gender"], mocap_frame_rate=z["mocap_frame_rate"])
    path = str(tmp_path / "beat2_short.npz")
    np.savez(path, **short)
    return path, short


def _rodrigues(aa: np.ndarray) -> np.ndarray:
    """(J, 3) axis-angle -> (J, 3, 3) rotation matrices, float64."""
    angle = np.linalg.norm(aa, axis=-1, keepdims=True)
    axis = aa / np.maximum(angle, 1e-12)
    x, y, z = axis[:, 0], axis[:, 1], axis[:, 2]
    k = np.zeros((len(aa), 3, 3))
    k[:, 0, 1], k[:, 0, 2], k[:, 1, 0], k[:, 1, 2], k[:, 2, 0], k[:, 2, 1] = -z, y, z, -x, -y, x
    s, c = np.sin(angle)[:, :, None], np.cos(angle)[:, :, None]
    return np.eye(3) + s * k + (1.0 - c) * (k @ k)


def _skinned(arrays, pose_aa, expressions, trans_offset):
    """Linear blend skinning in numpy (SMPL-X axes): the file's template + expression offsets, posed by
    forward kinematics of the axis-angles, moved by the pelvis offset; then into Blender axes."""
    rest_joints = arrays["J_regressor"] @ arrays["v_template"]
    vertices = arrays["v_template"] + np.tensordot(expressions, expression_deltas(arrays), axes=1)
    local = _rodrigues(pose_aa)
    rotation, position = np.zeros((55, 3, 3)), np.zeros((55, 3))
    for j in range(55):
        p = PARENTS[j]
        rotation[j] = local[j] if p < 0 else rotation[p] @ local[j]
        position[j] = rest_joints[j] if p < 0 else position[p] + rotation[p] @ (rest_joints[j] - rest_joints[p])
    per_joint = np.einsum("jab,jvb->jva", rotation, vertices[None] - rest_joints[:, None]) + position[:, None]
    posed = np.einsum("vj,jva->va", arrays["weights"], per_joint) + trans_offset
    return posed @ AXIS_CHANGE.T + _lift(arrays)


def test_a_take_poses_the_exact_rig_like_smplx_skinning(scene, smplx_prefs, model_file, tmp_path):
    path, arrays = model_file
    api = addon_module("api")
    armature, mesh = api.create_rig(model_file=path)
    scene.render.fps, scene.render.fps_base = 30, 1.0
    take_path, take = _short_beat2_take(tmp_path)
    info = api.import_take(take_path, armature=armature, face_mesh=mesh, start_frame=1, keys="dense", smoothing=0.0)
    assert info["frames"] == 45 and info["joints"] == 55 and info["expressions"] == 100
    for frame in (1, 30):
        scene.frame_set(frame)
        k = frame - 1
        values = [mesh.data.shape_keys.key_blocks[f"Exp{i:03d}"].value for i in range(100)]
        np.testing.assert_allclose(values, take["expressions"][k], atol=1e-5)
        evaluated = mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
        deformed = evaluated.to_mesh()
        co = np.empty(3 * len(deformed.vertices))
        deformed.vertices.foreach_get("co", co)
        evaluated.to_mesh_clear()
        expected = _skinned(arrays, take["poses"][k].reshape(55, 3).astype(np.float64),
                            take["expressions"][k].astype(np.float64), take["trans"][k] - take["trans"][0])
        np.testing.assert_allclose(co.reshape(-1, 3), expected, atol=2e-5)
    assert np.abs(expected - (arrays["v_template"] @ AXIS_CHANGE.T + _lift(arrays))).max() > 0.05  # really posed


def test_an_empty_model_file_argument_still_gives_the_stand_in(scene, smplx_prefs, model_file):
    smplx_prefs.smplx_model_path = model_file[0]
    armature, face = addon_module("api").create_rig(model_file="")
    assert face.name == "SMPLX-neutral-face" and "SMPLX-neutral-body" in bpy.data.objects
    assert "sheg_smplx_model" not in armature


@pytest.mark.parametrize("case", ["missing", "corrupt", "not-smplx"])
def test_a_bad_model_file_is_one_line_and_changes_nothing(scene, smplx_prefs, tmp_path, case):
    path = tmp_path / "SMPLX_NEUTRAL.npz"
    if case == "corrupt":
        path.write_bytes(b"PK\x03\x04" + bytes(200))
    elif case == "not-smplx":
        np.savez(str(path), v_template=np.zeros((10, 3)), f=np.zeros((2, 3), np.uint32))
    message = {"missing": "SMPL-X model file not found: ", "corrupt": "SMPLX_NEUTRAL.npz is not an .npz archive",
               "not-smplx": "SMPLX_NEUTRAL.npz is not an SMPL-X model file: it has no shapedirs, posedirs"}[case]
    smplx_prefs.smplx_model_path = str(path)
    counts, temps = _data_counts(), _temp_rigs()
    with pytest.raises(ValueError) as info:
        addon_module("api").create_rig()
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    if case == "corrupt":  # the operator reports the same line as an error and cancels
        with pytest.raises(RuntimeError, match=message):
            bpy.ops.sheg.create_rig()
    assert _data_counts() == counts and _temp_rigs() == temps
    assert scene.sheg.armature is None and scene.sheg.face_mesh is None


class _Probe:
    """Records labels and operators a draw() call makes."""

    def __init__(self, drawn):
        self.drawn = drawn
        self.use_property_split = self.use_property_decorate = False

    def __getattr__(self, name):
        if name in ("column", "row", "box"):
            return lambda *a, **k: self
        return lambda *a, **k: None

    def operator(self, idname, **kwargs):
        self.drawn.append(idname)
        return type("Props", (), {})()

    def label(self, text="", **kwargs):
        self.drawn.append("label:" + text)


class _PanelStandIn:
    def __init__(self, layout, target=None):
        self.layout, self._target = layout, target

    def __getattr__(self, name):
        return getattr(self._target, name)


def test_panel_and_preferences_say_which_rig_will_be_created(scene, smplx_prefs, model_file):
    drawn = []
    bpy.types.SHEG_PT_main.draw(_PanelStandIn(_Probe(drawn)), bpy.context)
    assert "sheg.create_rig" in drawn and any(d.startswith("label:Stand-in rig") for d in drawn)
    smplx_prefs.smplx_model_path = model_file[0]
    drawn.clear()
    bpy.types.SHEG_PT_main.draw(_PanelStandIn(_Probe(drawn)), bpy.context)
    assert "label:Exact rig from SMPLX_NEUTRAL.npz" in drawn
    drawn.clear()
    type(smplx_prefs).draw(_PanelStandIn(_Probe(drawn), smplx_prefs), bpy.context)
    assert any(d.startswith("label:Create SMPL-X Rig: exact rig from this file") for d in drawn)


def test_math_helper_is_a_rotation():
    r = _rodrigues(np.array([[0.0, 0.0, math.pi / 2]]))[0]
    np.testing.assert_allclose(r @ [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], atol=1e-12)
