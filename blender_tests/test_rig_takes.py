"""The stand-in SMPL-X rig and takes as Actions + NLA tracks, inside the real `bpy` module (Blender 5.0).

Imports addon.rig / addon.takes straight from the checkout (not the installed extension) so these tests need no
build; every test starts from an empty factory scene.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile

import numpy as np
import pytest

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="sheg-blender-user-"))  # before bpy
bpy = pytest.importorskip("bpy")
from mathutils import Quaternion  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
from addon import rig, takes  # noqa: E402
from addon.core import channels, quaternions, smplx, takefile  # noqa: E402

BEAT2 = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "beat2", "2_scott_0_1_1.npz"))
AXIS_CHANGE = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # SMPL-X -> Blender: (x, -z, y)
UPPER_BODY = (3, 6, 9, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22) + tuple(range(25, 55))  # SHOW model + jaw


@pytest.fixture
def context():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context


@pytest.fixture
def standin(context):
    return rig.create_smplx_rig(context)


@pytest.fixture(scope="module")
def beat2_take():
    if not os.path.isfile(BEAT2):
        pytest.skip(f"shared BEAT2 data not found at {BEAT2}")
    return takefile.read_take(BEAT2)


def _set_fps(scene, fps, base=1.0):
    scene.render.fps, scene.render.fps_base = fps, base


def _pose_quats(armature):
    return np.array([list(armature.pose.bones[n].rotation_quaternion) for n in smplx.JOINT_NAMES])


def _assert_same_rotations(got, expected, atol=1e-5):
    """(J, 4) quaternions equal up to sign, joint by joint."""
    err = np.minimum(np.abs(got - expected).max(axis=1), np.abs(got + expected).max(axis=1))
    assert err.max() < atol, f"joint {smplx.JOINT_NAMES[int(err.argmax())]} off by {err.max():.2e}"


def _slerp(a, b, t):
    """Textbook float64 slerp along the short arc, row by row ((J, 4) quaternions, scalar t); written here so the
    test does not trust the add-on's own. (mathutils' slerp works in float32: too coarse for a 1e-5 check.)"""
    out = []
    for qa, qb in zip(a, b):
        if np.dot(qa, qb) < 0:
            qb = -qb
        theta = math.acos(min(1.0, float(np.dot(qa, qb))))
        if theta < 1e-9:
            out.append(qa)
            continue
        out.append((math.sin((1 - t) * theta) * qa + math.sin(t * theta) * qb) / math.sin(theta))
    return np.array(out)


def _channelbag(action, slot_type):
    slot = next(s for s in action.slots if s.target_id_type == slot_type)
    return action.layers[0].strips[0].channelbag(slot)


def _upper_body_take(frames=90, fps=30.0):
    rng = np.random.default_rng(1)
    mask = np.zeros(55, bool)
    mask[list(UPPER_BODY)] = True
    poses = (rng.normal(size=(frames, 55, 3)) * 0.2).astype(np.float32)
    poses[:, ~mask] = 0.0
    return takefile.take_from_arrays({"poses": poses, "expressions": rng.normal(size=(frames, 100)),
                                      "trans": np.zeros((frames, 3)), "mocap_frame_rate": np.array(fps),
                                      "generated_joints": mask, "model_id": np.array("show-test"),
                                      "seed": np.array(11), "audio_file": np.array("/tmp/speech.wav")})


# --- the rig ---------------------------------------------------------------------------------------------------------

def test_stand_in_rig_has_the_smplx_skeleton_and_face_keys(standin):
    armature, face = standin
    bones = armature.data.bones
    assert [b.name for b in bones][:1] == ["root"] and len(bones) == 56
    for j, name in enumerate(smplx.JOINT_NAMES):
        parent = smplx.PARENTS[j]
        assert bones[name].parent.name == ("root" if parent < 0 else smplx.JOINT_NAMES[parent])
        assert armature.pose.bones[name].rotation_mode == "QUATERNION"
    assert rig.find_smplx_bones(armature) == {n: n for n in smplx.JOINT_NAMES}
    names = [k.name for k in face.data.shape_keys.key_blocks]
    assert names == ["Basis"] + [f"Exp{i:03d}" for i in range(100)]
    assert rig.find_expression_keys(face) == {i: f"Exp{i:03d}" for i in range(100)}
    assert all(k.value == 0.0 for k in face.data.shape_keys.key_blocks[1:])  # neutral at rest
    # heads at the stand-in joints, converted (x, y, z) -> (x, -z, y) and lifted so the soles touch the origin
    heads = np.array([list(bones[n].head_local) for n in smplx.JOINT_NAMES])
    expected = smplx.STANDIN_REST_JOINTS @ AXIS_CHANGE.T + [0.0, 0.0, smplx.STANDIN_PELVIS_HEIGHT]
    np.testing.assert_allclose(heads, expected, atol=1e-6)


def test_every_bone_rest_frame_is_the_smplx_axis_change(standin):
    armature, _ = standin
    for bone in armature.data.bones:
        np.testing.assert_allclose(np.array(bone.matrix_local.to_3x3()), AXIS_CHANGE, atol=1e-6,
                                   err_msg=bone.name)
    assert rig.bone_frames(armature, rig.find_smplx_bones(armature)) == {}


def test_pose_quaternions_reproduce_smplx_forward_kinematics(context, standin):
    """pose_bone.rotation_quaternion = quat(axis-angle) gives the joint positions SMPL-X's kinematic chain gives."""
    armature, _ = standin
    rng = np.random.default_rng(0)
    aa = rng.normal(size=(55, 3)) * 0.4
    for name, q in zip(smplx.JOINT_NAMES, quaternions.axis_angle_to_quat(aa)):
        armature.pose.bones[name].rotation_quaternion = q.tolist()
    context.view_layer.update()
    rest = smplx.STANDIN_REST_JOINTS
    global_rot = [None] * 55
    posed = np.zeros((55, 3))
    for j in range(55):
        local = np.array(Quaternion(quaternions.axis_angle_to_quat(aa[j]).tolist()).to_matrix())
        p = smplx.PARENTS[j]
        global_rot[j] = local if p < 0 else global_rot[p] @ local
        posed[j] = rest[j] if p < 0 else posed[p] + global_rot[p] @ (rest[j] - rest[p])
    expected = posed @ AXIS_CHANGE.T + [0.0, 0.0, smplx.STANDIN_PELVIS_HEIGHT]
    got = np.array([list(armature.pose.bones[n].head) for n in smplx.JOINT_NAMES])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_stand_in_is_visible_in_a_workbench_render_and_expressions_deform_the_face(context, standin, tmp_path):
    armature, face = standin
    scene = context.scene
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -5.0, 0.9)
    camera.rotation_euler = (math.radians(90), 0.0, 0.0)
    scene.camera = camera
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = 64
    scene.render.resolution_percentage = 100
    scene.render.film_transparent = True
    scene.render.filepath = str(tmp_path / "standin.png")
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(scene.render.filepath)
    alpha = np.array(image.pixels[:]).reshape(64, 64, 4)[..., 3]
    covered = float((alpha > 0.5).mean())
    assert 0.03 < covered < 0.6, f"the body covers {covered:.1%} of the frame"

    def face_vertices():
        mesh = face.evaluated_get(context.evaluated_depsgraph_get()).to_mesh()
        co = np.empty(3 * len(mesh.vertices))
        mesh.vertices.foreach_get("co", co)
        return co.reshape(-1, 3)

    neutral = face_vertices()
    face.data.shape_keys.key_blocks["Exp010"].value = 2.0
    context.view_layer.update()
    moved = np.linalg.norm(face_vertices() - neutral, axis=1)
    assert moved.max() > 0.004 and (moved > 1e-4).sum() > 20  # visible, and smooth over a region


def test_find_bones_accepts_plain_eye_names_and_rejects_other_rigs(context):
    data = bpy.data.armatures.new("other")
    obj = bpy.data.objects.new("other", data)
    context.scene.collection.objects.link(obj)
    context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    for name in ("Hips", "Spine"):
        bone = data.edit_bones.new(name)
        bone.tail = (0, 0, 1)
    bpy.ops.object.mode_set(mode="OBJECT")
    with pytest.raises(ValueError, match="has no SMPL-X bones"):
        rig.find_smplx_bones(obj)
    with pytest.raises(ValueError, match="not an armature"):
        rig.find_smplx_bones(None)

    armature, face = rig.create_smplx_rig(context, name="meshcapade", with_face=False)
    assert face is None
    armature.data.bones["left_eye_smplhf"].name = "left_eye"
    assert rig.find_smplx_bones(armature)["left_eye_smplhf"] == "left_eye"


# --- takes -----------------------------------------------------------------------------------------------------------

def test_beat2_import_at_30fps_reproduces_the_file(context, standin, beat2_take):
    armature, face = standin
    _set_fps(context.scene, 30)
    info = takes.import_take(context, BEAT2, armature=armature, face_mesh=face, start_frame=1)
    assert info["frames"] == 1906 and info["end_frame"] == 1906 and info["joints"] == 55
    assert info["expressions"] == 100 and info["fcurves"] == 55 * 4 + 3 + 100
    trans = beat2_take.trans
    for frame in (1, 2, 777, 1906):
        context.scene.frame_set(frame)
        k = frame - 1
        _assert_same_rotations(_pose_quats(armature), quaternions.axis_angle_to_quat(beat2_take.poses[k]))
        np.testing.assert_allclose(armature.pose.bones["pelvis"].location, trans[k] - trans[0], atol=1e-6)
        values = [face.data.shape_keys.key_blocks[f"Exp{i:03d}"].value for i in range(100)]
        np.testing.assert_allclose(values, beat2_take.expressions[k], atol=1e-5)
    # the pelvis head moves through space as SMPL-X's trans says, in Blender axes
    context.scene.frame_set(1)
    start = np.array(armature.pose.bones["pelvis"].head)
    context.scene.frame_set(1001)
    np.testing.assert_allclose(np.array(armature.pose.bones["pelvis"].head) - start,
                               AXIS_CHANGE @ (trans[1000] - trans[0]), atol=1e-5)


@pytest.mark.parametrize("fps,base", [(24, 1.0), (30, 1.001)], ids=["24", "29.97"])
def test_beat2_import_lands_at_the_right_times(context, standin, beat2_take, fps, base):
    armature, _ = standin
    _set_fps(context.scene, fps, base)
    rate = fps / base
    info = takes.import_take(context, BEAT2, armature=armature, start_frame=10, parts="body")
    assert info["frames"] == math.floor(63.5 * rate + 1e-6) + 1
    source = quaternions.axis_angle_to_quat(beat2_take.poses)  # (T, 55, 4)
    for frame in (10, 11, 12, 13, 17, 1000, info["end_frame"]):
        context.scene.frame_set(frame)
        u = (frame - 10) / rate * 30.0  # fractional take frame at this scene frame's time
        lo = min(int(math.floor(u + 1e-9)), 1905)
        hi = min(lo + 1, 1905)
        expected = _slerp(source[lo], source[hi], u - lo)
        got = _pose_quats(armature)
        body = [j for j in range(55) if j not in smplx.FACE_JOINTS]
        _assert_same_rotations(got[body], expected[body])
    bag = _channelbag(bpy.data.actions[info["action"]], "OBJECT")
    last_keys = {fc.keyframe_points[-1].co[0] for fc in bag.fcurves}
    assert last_keys == {float(info["end_frame"])}


def test_upper_body_take_keys_only_its_generated_bones(context, standin):
    armature, face = standin
    _set_fps(context.scene, 30)
    info = takes.apply_take(context, _upper_body_take(), armature=armature, face_mesh=face, start_frame=1,
                            name="upper")
    bag = _channelbag(bpy.data.actions[info["action"]], "OBJECT")
    keyed = {channels.parse_path(fc.data_path)[1] for fc in bag.fcurves}
    assert keyed == {smplx.JOINT_NAMES[j] for j in UPPER_BODY}
    assert all(fc.data_path.endswith("rotation_quaternion") for fc in bag.fcurves)  # no trans: pelvis not generated
    context.scene.frame_set(40)
    for name in ("pelvis", "left_knee", "right_foot", "left_eye_smplhf"):
        assert tuple(armature.pose.bones[name].rotation_quaternion) == (1.0, 0.0, 0.0, 0.0)
        assert tuple(armature.pose.bones[name].location) == (0.0, 0.0, 0.0)


def test_fcurves_are_bulk_linear_and_grouped_by_body_part(context, standin):
    armature, face = standin
    info = takes.apply_take(context, _upper_body_take(), armature=armature, face_mesh=face, start_frame=1,
                            name="groups")
    action = bpy.data.actions[info["action"]]
    bone_bag, key_bag = _channelbag(action, "OBJECT"), _channelbag(action, "KEY")
    for fc in bone_bag.fcurves:
        joint = channels.parse_path(fc.data_path)[1]
        assert fc.group is not None and fc.group.name == smplx.BODY_PART[smplx.JOINT_INDEX[joint]], fc.data_path
        assert {k.interpolation for k in fc.keyframe_points} == {"LINEAR"}
    middle = bone_bag.fcurves[0].keyframe_points[40]  # handles were recalculated: ready for Bezier editing
    assert middle.co.x - 1.0 < middle.handle_left.x < middle.co.x < middle.handle_right.x < middle.co.x + 1.0
    assert {fc.group.name for fc in key_bag.fcurves} == {"Expressions"} and len(key_bag.fcurves) == 100
    assert {g.name for g in bone_bag.groups} <= set(smplx.GROUP_NAMES)
    assert action["sheg_model_id"] == "show-test" and action["sheg_seed"] == 11
    assert action["sheg_audio_file"] == "/tmp/speech.wav" and action["sheg_take_fps"] == 30.0
    assert action["sheg_parts"] == "both"


def test_existing_animation_stays_untouched(context, standin):
    armature, _ = standin
    bone = armature.pose.bones["left_knee"]
    for frame, angle in ((1, 0.0), (20, 0.5)):
        bone.rotation_quaternion = Quaternion((1, 0, 0), angle)
        bone.keyframe_insert("rotation_quaternion", frame=frame)
    own = armature.animation_data.action
    before = [(fc.data_path, fc.array_index, [tuple(k.co) for k in fc.keyframe_points])
              for fc in _channelbag(own, "OBJECT").fcurves]
    slot_before = armature.animation_data.action_slot
    takes.apply_take(context, _upper_body_take(), armature=armature, start_frame=1, name="new")
    assert armature.animation_data.action == own and armature.animation_data.action_slot == slot_before
    after = [(fc.data_path, fc.array_index, [tuple(k.co) for k in fc.keyframe_points])
             for fc in _channelbag(own, "OBJECT").fcurves]
    assert after == before
    assert len(armature.animation_data.nla_tracks) == 1


def test_two_takes_make_two_tracks_that_can_be_listed_soloed_and_removed(context, standin):
    armature, face = standin
    first = takes.apply_take(context, _upper_body_take(), armature=armature, face_mesh=face, start_frame=1,
                             name="take A")
    second = takes.apply_take(context, _upper_body_take(), armature=armature, face_mesh=face, start_frame=200,
                              name="take B")
    tracks = armature.animation_data.nla_tracks
    assert [t.name for t in tracks] == ["take A", "take B"]
    assert [t.name for t in face.data.shape_keys.animation_data.nla_tracks] == ["take A", "take B"]
    assert tracks[1].strips[0].frame_start == 200 and tracks[1].strips[0].action_slot.target_id_type == "OBJECT"
    assert armature.animation_data.action is None and face.data.shape_keys.animation_data.action is None
    listed = takes.list_takes(armature)
    assert [t["name"] for t in listed] == ["take A", "take B"]
    assert listed[0]["model_id"] == "show-test" and listed[0]["joints"] == len(UPPER_BODY)

    takes.solo_take(armature, "take A")
    assert [t.is_solo for t in tracks] == [True, False]
    assert [t.is_solo for t in face.data.shape_keys.animation_data.nla_tracks] == [True, False]
    takes.solo_take(armature, "take A", solo=False)
    assert not any(t.is_solo for t in tracks)

    takes.remove_take(armature, first["action"])
    assert [t.name for t in tracks] == ["take B"] and first["action"] not in bpy.data.actions
    assert [t.name for t in face.data.shape_keys.animation_data.nla_tracks] == ["take B"]
    assert second["action"] in bpy.data.actions
    with pytest.raises(ValueError, match="has no take 'take A'"):
        takes.remove_take(armature, "take A")


def test_export_writes_the_take_back_including_artist_edits(context, standin, tmp_path):
    armature, face = standin
    _set_fps(context.scene, 30)
    source = _upper_body_take()
    info = takes.apply_take(context, source, armature=armature, face_mesh=face, start_frame=5, name="edit me")
    out = str(tmp_path / "back.npz")
    takes.export_take(context, armature, "edit me", out)
    back = takefile.read_take(out)
    assert back.frames == source.frames and back.fps == 30.0 and back.model_id == "show-test" and back.seed == 11
    np.testing.assert_array_equal(back.generated_joints, source.generated_joints)
    _assert_same_rotations(quaternions.axis_angle_to_quat(back.poses.reshape(-1, 3)),
                           quaternions.axis_angle_to_quat(source.poses.reshape(-1, 3)))
    np.testing.assert_allclose(back.expressions, source.expressions, atol=1e-5)

    # an artist changes one key of the jaw's w curve: the export follows the edited curve
    bag = _channelbag(bpy.data.actions[info["action"]], "OBJECT")
    jaw_w = bag.fcurves.find(channels.rotation_path("jaw"), index=0)
    jaw_w.keyframe_points[10].co.y = 0.0
    jaw_w.keyframe_points[10].interpolation = "BEZIER"
    jaw_w.update()
    takes.export_take(context, armature, "edit me", out)
    edited = takefile.read_take(out)
    w = quaternions.axis_angle_to_quat(edited.poses[10, smplx.JAW])[0]
    assert abs(w) < 0.2  # w 0 (then renormalized): a large rotation where the take had a small one
    np.testing.assert_allclose(edited.poses[30], back.poses[30], atol=1e-6)


def test_bad_input_changes_nothing(context, standin):
    armature, face = standin
    take = _upper_body_take()
    actions_before = len(bpy.data.actions)
    with pytest.raises(ValueError, match="not an armature"):
        takes.apply_take(context, take, armature=face, start_frame=1, name="x")
    body = bpy.data.objects[f"{armature.name}-body"]
    with pytest.raises(ValueError, match="no Exp000.. or ARKit shape keys"):
        takes.apply_take(context, take, armature=armature, face_mesh=body, start_frame=1, name="x")
    with pytest.raises(ValueError, match="unknown parts"):
        takes.apply_take(context, take, armature=armature, start_frame=1, name="x", parts="legs")
    legs_only = _upper_body_take()
    legs_only.generated_joints = np.zeros(55, bool)
    with pytest.raises(ValueError, match="drives nothing"):
        takes.apply_take(context, legs_only, armature=armature, start_frame=1, name="x")
    with pytest.raises(ValueError, match="outside Blender's frame range"):
        takes.apply_take(context, take, armature=armature, face_mesh=face, start_frame=1_048_570, name="x")
    assert len(bpy.data.actions) == actions_before
    assert armature.animation_data is None and face.data.shape_keys.animation_data is None
    with pytest.raises(ValueError, match="not found"):
        takes.import_take(context, "/nonexistent/take.npz", armature=armature)


def test_a_failure_after_the_action_exists_is_rolled_back(context, standin, monkeypatch):
    """Fault injection: the face Key's NLA push fails after the action and the armature track exist (as it would for
    a Key Blender refuses to animate). Nothing of the take may remain."""
    armature, face = standin
    real_push = takes._push_to_nla

    def push_then_fail_on_the_key(owner, action, slot, start_frame):
        if slot.target_id_type == "KEY":
            raise RuntimeError("cannot animate this Key")
        return real_push(owner, action, slot, start_frame)

    monkeypatch.setattr(takes, "_push_to_nla", push_then_fail_on_the_key)
    with pytest.raises(RuntimeError, match="cannot animate"):
        takes.apply_take(context, _upper_body_take(), armature=armature, face_mesh=face, start_frame=1, name="x")
    assert len(bpy.data.actions) == 0
    assert armature.animation_data is None and face.data.shape_keys.animation_data is None


def test_linked_rigs_are_refused_with_a_clear_message(context, standin, tmp_path):
    armature, _ = standin
    name = armature.name
    library = str(tmp_path / "rig.blend")
    bpy.data.libraries.write(library, {armature})
    bpy.ops.wm.read_factory_settings(use_empty=True)
    with bpy.data.libraries.load(library, link=True) as (source, linked):
        linked.objects = [n for n in source.objects if n == name]
    linked_armature = linked.objects[0]
    context.scene.collection.objects.link(linked_armature)
    with pytest.raises(ValueError, match="is linked from the library.*library override"):
        takes.apply_take(context, _upper_body_take(), armature=linked_armature, start_frame=1, name="x")
    assert len(bpy.data.actions) == 0
