"""Takes artists can clean up, inside the real `bpy` module (Blender 5.0): reduced keys, smoothing, tweak layers, bake.

Imports the add-on modules straight from the checkout (as test_rig_takes.py does); every test starts from an empty
factory scene. Most tests use a 240-frame slice of the BEAT2 take; the key/file-size figures use the whole take
(blender_tests/bench_take_cleanup.py prints them).
"""

from __future__ import annotations

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
from addon import keywriter, rig, take_layers, takes  # noqa: E402
from addon.core import channels, keyreduce, quaternions, smplx, takefile  # noqa: E402

BEAT2 = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "beat2", "2_scott_0_1_1.npz"))
TOL = {"rotation_tolerance_deg": 1.0, "location_tolerance": 0.001, "shape_tolerance": 0.01}  # the defaults


@pytest.fixture
def context():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.context.scene.render.fps, bpy.context.scene.render.fps_base = 30, 1.0
    return bpy.context


@pytest.fixture
def standin(context):
    return rig.create_smplx_rig(context)


@pytest.fixture(scope="module")
def beat2_arrays():
    if not os.path.isfile(BEAT2):
        pytest.skip(f"shared BEAT2 data not found at {BEAT2}")
    with np.load(BEAT2, allow_pickle=True) as data:
        return {k: data[k] for k in data.files}


def _slice(arrays, frames=240, first=300):
    part = {k: (v[first:first + frames] if k in ("poses", "expressions", "trans") else v) for k, v in arrays.items()}
    return takefile.take_from_arrays(part)


def _bag(action, slot_type):
    slot = next(s for s in action.slots if s.target_id_type == slot_type)
    return action.layers[0].strips[0].channelbag(slot)


def _evaluated(armature, face):
    """Evaluated pose after frame_set: (bones, 4) quaternions, (bones, 3) locations, (keys,) shape-key values."""
    bones = armature.pose.bones
    q = np.empty(4 * len(bones), dtype=np.float32)
    loc = np.empty(3 * len(bones), dtype=np.float32)
    bones.foreach_get("rotation_quaternion", q)
    bones.foreach_get("location", loc)
    blocks = face.data.shape_keys.key_blocks
    values = np.empty(len(blocks), dtype=np.float32)
    blocks.foreach_get("value", values)
    return q.reshape(-1, 4).astype(np.float64), loc.reshape(-1, 3).astype(np.float64), values.astype(np.float64)


def _flat(state):
    return np.concatenate([part.ravel() for part in state])


def _angle_deg(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return np.degrees(2.0 * np.arccos(np.clip(np.abs(np.sum(a * b, axis=-1)), 0.0, 1.0)))


def _key_snapshot(action):
    """Every key's co and handles of every F-curve of `action` (to prove it unchanged)."""
    out = {}
    for slot in action.slots:
        for fc in action.layers[0].strips[0].channelbag(slot).fcurves:
            arrays = []
            for name in ("co", "handle_left", "handle_right"):
                buf = np.empty(2 * len(fc.keyframe_points), dtype=np.float32)
                fc.keyframe_points.foreach_get(name, buf)
                arrays.append(buf)
            out[(slot.identifier, fc.data_path, fc.array_index)] = np.concatenate(arrays)
    return out


def _assert_grouped_by_body_part(action):
    for slot in action.slots:
        for fc in action.layers[0].strips[0].channelbag(slot).fcurves:
            kind, target, _ = channels.parse_path(fc.data_path)
            expected = smplx.EXPRESSIONS_GROUP if kind == "key" else smplx.BODY_PART[smplx.JOINT_INDEX[target]]
            assert fc.group is not None and fc.group.name == expected, fc.data_path


# --- the evaluation model is Blender's ----------------------------------------------------------------------------

def test_blender_evaluates_exactly_the_modelled_curve(context):
    """Keys + handles written with foreach_set (Hermite handles at large frames, over-long handles that Blender
    shortens, LINEAR and CONSTANT segments): FCurve.evaluate == keyreduce.evaluate_fcurve within 1e-5."""
    rng = np.random.default_rng(0)
    action = bpy.data.actions.new("model")
    slot = action.slots.new(id_type="OBJECT", name="probe")
    bag = action.layers.new("Layer").strips.new(type="KEYFRAME").channelbag(slot, ensure=True)
    cases = []
    for base in (1.0, 17000.0):  # float32 handle times round visibly near frame 17000
        kx = base + np.cumsum(rng.integers(1, 23, size=40)).astype(np.float64)
        ky = rng.normal(size=40)
        lx, ly, rx, ry = keyreduce.hermite_handles(kx, ky, rng.normal(scale=0.3, size=40))
        ipo = np.full(40, keyreduce.INTERPOLATION_BEZIER)
        cases.append((kx, ky, lx, ly, rx, ry, ipo))
    kx, ky, lx, ly, rx, ry, ipo = (np.array(a, dtype=np.float64) for a in cases[0])
    rx[5] = kx[6] + 7.0          # right handle reaching past the next key: Blender shortens it
    lx[9] = kx[8] - 4.0          # left handle reaching past the previous key
    ipo[12], ipo[13] = keyreduce.INTERPOLATION_LINEAR, keyreduce.INTERPOLATION_CONSTANT
    cases.append((kx, ky, lx, ly, rx, ry, ipo.astype(int)))
    for index, (kx, ky, lx, ly, rx, ry, ipo) in enumerate(cases):
        fc = bag.fcurves.new("location", index=index)
        points = fc.keyframe_points
        points.add(len(kx))
        for name, xs, ys in (("co", kx, ky), ("handle_left", lx, ly), ("handle_right", rx, ry)):
            flat = np.empty(2 * len(xs), dtype=np.float32)
            flat[0::2], flat[1::2] = xs, ys
            points.foreach_set(name, flat)
        points.foreach_set("handle_left_type", np.full(len(kx), keyreduce.HANDLE_FREE, dtype=np.int32))
        points.foreach_set("handle_right_type", np.full(len(kx), keyreduce.HANDLE_FREE, dtype=np.int32))
        points.foreach_set("interpolation", np.asarray(ipo, dtype=np.int32))
        times = np.concatenate([np.arange(kx[0] - 3, kx[-1] + 4), np.arange(kx[0], kx[-1], 0.37)])
        blender = np.array([fc.evaluate(float(t)) for t in times])
        model = keyreduce.evaluate_fcurve(kx, ky, lx, ly, rx, ry, ipo, times)
        np.testing.assert_allclose(model, blender, atol=1e-5, rtol=0, err_msg=f"case {index}")


def test_reduced_curves_are_what_blender_plays_even_after_handle_realignment(context, standin, beat2_arrays):
    armature, face = standin
    info = takes.apply_take(context, _slice(beat2_arrays), armature=armature, face_mesh=face, start_frame=1,
                            name="slice", keys="reduced")
    frames = np.arange(1, info["end_frame"] + 1, dtype=np.float64)
    action = bpy.data.actions[info["action"]]
    worst = 0.0
    for slot_type in ("OBJECT", "KEY"):
        for fc in list(_bag(action, slot_type).fcurves)[::7]:
            blender = np.array([fc.evaluate(float(f)) for f in frames])
            worst = max(worst, float(np.abs(keywriter.sample_fcurve(fc, frames) - blender).max()))
            assert {k.handle_left_type for k in fc.keyframe_points} == {"ALIGNED"}
            assert {k.interpolation for k in fc.keyframe_points} == {"BEZIER"}
            fc.keyframe_points.handles_recalc()  # what an edit triggers: ALIGNED handles are realigned
            again = np.array([fc.evaluate(float(f)) for f in frames])
            assert np.abs(again - blender).max() < 1e-5, fc.data_path
    assert worst < 1e-5


# --- reduced keys ---------------------------------------------------------------------------------------------------

def test_reduced_take_stays_within_tolerance_in_the_evaluated_pose(context, standin, beat2_arrays):
    armature, face = standin
    take = _slice(beat2_arrays)
    info = takes.apply_take(context, take, armature=armature, face_mesh=face, start_frame=1, name="slice",
                            keys="reduced")
    assert info["keys_mode"] == "reduced" and info["dense_keys"] == 240 * 323
    assert info["keys"] < info["dense_keys"] / 2
    assert info["max_rotation_error_deg"] <= 1.0 and info["max_shape_error"] <= 0.01
    action = bpy.data.actions[info["action"]]
    assert action["sheg_keys"] == "reduced" and action["sheg_rotation_tolerance_deg"] == 1.0
    _assert_grouped_by_body_part(action)
    assert sum(len(fc.keyframe_points) for t in ("OBJECT", "KEY") for fc in _bag(action, t).fcurves) == info["keys"]

    rows = [armature.pose.bones.find(n) for n in smplx.JOINT_NAMES]
    expected_q = quaternions.axis_angle_to_quat(take.poses)          # (T, 55, 4)
    expected_loc = take.trans - take.trans[0]
    exp_rows = [face.data.shape_keys.key_blocks.find(f"Exp{i:03d}") for i in range(100)]
    worst = np.zeros(3)
    for k in range(take.frames):
        context.scene.frame_set(1 + k)
        q, loc, values = _evaluated(armature, face)
        worst = np.maximum(worst, [_angle_deg(q[rows], expected_q[k]).max(),
                                   np.linalg.norm(loc[rows[0]] - expected_loc[k]),
                                   np.abs(values[exp_rows] - take.expressions[k]).max()])
    assert worst[0] <= 1.0 + 1e-4 and worst[1] <= 0.001 + 1e-6 and worst[2] <= 0.01 + 1e-6, worst


def test_whole_beat2_take_reduced_vs_dense_keys_errors_and_file_size(context, beat2_arrays, tmp_path):
    """The whole take at the default tolerances: worst error over all frames (FCurve.evaluate) within tolerance,
    and the key and file-size figures. The issue's target of >= 5x fewer keys / >= 4x smaller files is NOT met by
    this take: its expressions jitter by ~0.06 per frame against a 0.01 tolerance (see the bench script)."""
    figures = {}
    for keys in ("dense", "reduced"):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        context = bpy.context
        context.scene.render.fps = 30
        armature, face = rig.create_smplx_rig(context)
        figures[keys] = takes.import_take(context, BEAT2, armature=armature, face_mesh=face, start_frame=1,
                                          keys=keys)
        figures[keys]["action_ref"] = bpy.data.actions[figures[keys]["action"]]
        path = str(tmp_path / f"{keys}.blend")
        if keys == "dense":
            dense_values = {(t, fc.data_path, fc.array_index): np.array([k.co.y for k in fc.keyframe_points])
                            for t in ("OBJECT", "KEY") for fc in _bag(figures[keys]["action_ref"], t).fcurves}
        else:
            frames = np.arange(1, 1907, dtype=np.float64)
            worst = {"quaternion": 0.0, "vector": 0.0, "scalar": 0.0}
            for t in ("OBJECT", "KEY"):
                bag = _bag(figures[keys]["action_ref"], t)
                for path_, kind, members in channels.channel_groups(
                        [channels.Channel(fc.data_path, fc.array_index, "", None) for fc in bag.fcurves]):
                    got = np.stack([[bag.fcurves.find(path_, index=c.index).evaluate(float(f)) for f in frames]
                                    for c in members], axis=1)
                    want = np.stack([dense_values[(t, path_, c.index)] for c in members], axis=1)
                    worst[kind] = max(worst[kind], float(keyreduce.group_error(kind, got, want).max()))
            assert worst["quaternion"] <= 1.0 and worst["vector"] <= 0.001 and worst["scalar"] <= 0.01, worst
        bpy.ops.wm.save_as_mainfile(filepath=str(tmp_path / f"{keys}.blend"), compress=False)
        figures[keys]["size"] = os.path.getsize(path)
    ratio = figures["dense"]["keys"] / figures["reduced"]["keys"]
    size_ratio = figures["dense"]["size"] / figures["reduced"]["size"]
    print(f"\nBEAT2 whole take: dense {figures['dense']['keys']} keys, reduced {figures['reduced']['keys']} "
          f"({ratio:.2f}x); files {figures['dense']['size']} / {figures['reduced']['size']} bytes "
          f"({size_ratio:.2f}x); worst {worst}")
    assert figures["dense"]["keys"] == 1906 * 323
    assert ratio >= 2.5 and size_ratio >= 2.4  # what this take allows at the default tolerances


def test_reduce_take_rewrites_an_existing_take_in_place(context, standin, beat2_arrays):
    armature, face = standin
    info = takes.apply_take(context, _slice(beat2_arrays), armature=armature, face_mesh=face, start_frame=5,
                            name="edit")
    action = bpy.data.actions[info["action"]]
    frames = np.arange(5, 245, dtype=np.float64)
    before = {(t, fc.data_path, fc.array_index): (keywriter.sample_fcurve(fc, frames), fc.group.name)
              for t in ("OBJECT", "KEY") for fc in _bag(action, t).fcurves}
    result = takes.reduce_take(context, armature, "edit")
    assert result["keys_before"] == 240 * 323 and result["keys"] < result["keys_before"] / 2
    assert result["fcurves"] == 323 and result["skipped"] == []
    after = {(t, fc.data_path, fc.array_index): (keywriter.sample_fcurve(fc, frames), fc.group.name)
             for t in ("OBJECT", "KEY") for fc in _bag(action, t).fcurves}
    assert after.keys() == before.keys()
    assert all(after[k][1] == before[k][1] for k in before)  # groups kept
    for t in ("OBJECT", "KEY"):
        for path, kind, members in channels.channel_groups(
                [channels.Channel(p, i, "", None) for (tt, p, i) in before if tt == t]):
            got = np.stack([after[(t, path, c.index)][0] for c in members], axis=1)
            want = np.stack([before[(t, path, c.index)][0] for c in members], axis=1)
            bound = channels.group_tolerance(kind, path, **TOL)
            assert keyreduce.group_error(kind, got, want).max() <= bound, path
    assert takes.list_takes(armature)[0]["keys"] == "reduced"
    out = os.path.join(tempfile.mkdtemp(), "back.npz")
    takes.export_take(context, armature, "edit", out)  # export samples the Bezier curves
    assert takefile.read_take(out).frames == 240


def test_smoothing_and_bad_key_options(context, standin, beat2_arrays):
    armature, face = standin
    take = _slice(beat2_arrays, frames=90)
    info = takes.apply_take(context, take, armature=armature, face_mesh=face, start_frame=1, name="smooth",
                            smoothing=0.6)
    assert info["keys"] == info["dense_keys"] == 90 * 323
    bag = _bag(bpy.data.actions[info["action"]], "OBJECT")
    q = np.stack([[k.co.y for k in bag.fcurves.find(channels.rotation_path("right_wrist"), index=i).keyframe_points]
                  for i in range(4)], axis=1)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-6)
    raw = quaternions.axis_angle_to_quat(take.poses[:, smplx.JOINT_INDEX["right_wrist"]])
    assert 0.01 < _angle_deg(q, raw).max() < 20.0  # smoothed, not destroyed
    actions = len(bpy.data.actions)
    for bad, message in (({"keys": "sparse"}, "unknown keys"), ({"rotation_tolerance_deg": 0.0}, "positive"),
                         ({"smoothing": 1.5}, "between 0")):
        with pytest.raises(ValueError, match=message):
            takes.apply_take(context, take, armature=armature, face_mesh=face, start_frame=1, name="bad", **bad)
    assert len(bpy.data.actions) == actions


# --- tweak layers and bake -----------------------------------------------------------------------------------------

def _take_values(action, slot_type, data_path, count, frame):
    bag = _bag(action, slot_type)
    return np.array([bag.fcurves.find(data_path, index=i).evaluate(frame) for i in range(count)])


def test_tweak_layer_keys_offset_the_pose_exactly_and_leave_the_take_alone(context, standin, beat2_arrays):
    armature, face = standin
    info = takes.apply_take(context, _slice(beat2_arrays, frames=60), armature=armature, face_mesh=face,
                            start_frame=1, name="take", keys="reduced")
    take_action = bpy.data.actions[info["action"]]
    snapshot = _key_snapshot(take_action)
    layer = take_layers.add_tweak_layer(context, armature, "take")
    key = face.data.shape_keys
    assert armature.animation_data.use_tweak_mode and key.animation_data.use_tweak_mode
    assert armature.animation_data.action.name == layer["action"] == key.animation_data.action.name
    assert [t.name for t in armature.animation_data.nla_tracks] == ["take", "take tweak 1"]
    assert armature.animation_data.nla_tracks[1].strips[0].blend_type == "ADD"

    # the artist poses frame 20 and keys it: the layer stores the offset, frame 20 shows the pose
    scene = context.scene
    scene.frame_set(20)
    pelvis, elbow = armature.pose.bones["pelvis"], armature.pose.bones["left_elbow"]
    posed_loc = np.array(pelvis.location) + [0.05, -0.02, 0.01]
    posed_q = np.array(Quaternion((0.3, 1.0, 0.2), 0.4))
    posed_exp = key.key_blocks["Exp003"].value + 0.3
    pelvis.location = posed_loc
    pelvis.keyframe_insert("location", frame=20)
    elbow.rotation_quaternion = posed_q
    elbow.keyframe_insert("rotation_quaternion", frame=20)
    key.key_blocks["Exp003"].value = posed_exp
    key.key_blocks["Exp003"].keyframe_insert("value", frame=20)
    scene.frame_set(21)
    scene.frame_set(20)
    np.testing.assert_allclose(pelvis.location, posed_loc, atol=1e-6)
    np.testing.assert_allclose(elbow.rotation_quaternion, posed_q, atol=1e-6)
    assert key.key_blocks["Exp003"].value == pytest.approx(posed_exp, abs=1e-6)

    # at every frame: evaluated = take + layer (component-wise for quaternions, as Blender's ADD does)
    tweak = bpy.data.actions[layer["action"]]
    for frame in (1, 7, 20, 33, 60):
        scene.frame_set(frame)
        for path, owner_value, width, slot in (
                (channels.location_path("pelvis"), np.array(pelvis.location), 3, "OBJECT"),
                (channels.rotation_path("left_elbow"), np.array(elbow.rotation_quaternion), 4, "OBJECT"),
                (channels.shape_key_path("Exp003"), np.array([key.key_blocks["Exp003"].value]), 1, "KEY")):
            expected = (_take_values(take_action, slot, path, width, frame)
                        + _take_values(tweak, slot, path, width, frame))
            np.testing.assert_allclose(owner_value, expected, atol=1e-6, err_msg=f"{path} @ {frame}")
    after = _key_snapshot(take_action)  # the take's action is untouched, key for key
    assert after.keys() == snapshot.keys() and all(np.array_equal(after[k], snapshot[k]) for k in snapshot)


def test_combine_tweak_layer_rotates_by_the_keyed_quaternion(context, standin, beat2_arrays):
    armature, face = standin
    info = takes.apply_take(context, _slice(beat2_arrays, frames=40), armature=armature, start_frame=1,
                            name="take", parts="body")
    layer = take_layers.add_tweak_layer(context, armature, "take", blend_type="COMBINE", enter_tweak_mode=False)
    assert not armature.animation_data.use_tweak_mode
    tweak = bpy.data.actions[layer["action"]]
    bag = tweak.layers[0].strips[0].channelbag(tweak.slots[0])
    offset = np.array(Quaternion((0.0, 0.0, 1.0), 0.3))
    for i in range(4):
        fc = bag.fcurves.new(channels.rotation_path("right_elbow"), index=i, group_name="Right Arm")
        fc.keyframe_points.insert(1, offset[i])
    take_action = bpy.data.actions[info["action"]]
    for frame in (3, 25):
        context.scene.frame_set(frame)
        base = _take_values(take_action, "OBJECT", channels.rotation_path("right_elbow"), 4, frame)
        expected = quaternions.quat_multiply(base / np.linalg.norm(base), offset)
        got = np.array(armature.pose.bones["right_elbow"].rotation_quaternion)
        np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("keys", ["dense", "reduced"])
def test_bake_merges_take_and_tweaks_into_one_editable_take(context, standin, beat2_arrays, keys):
    armature, face = standin
    takes.apply_take(context, _slice(beat2_arrays, frames=60), armature=armature, face_mesh=face, start_frame=1,
                     name="take", keys="reduced")
    take_layers.add_tweak_layer(context, armature, "take")
    scene = context.scene
    for frame, shift in ((10, 0.04), (40, -0.03)):
        scene.frame_set(frame)
        bone = armature.pose.bones["right_wrist"]
        bone.rotation_quaternion = (Quaternion(bone.rotation_quaternion) @ Quaternion((1, 0, 0), 0.5)).normalized()
        bone.keyframe_insert("rotation_quaternion", frame=frame)
        armature.pose.bones["pelvis"].location.z += shift
        armature.pose.bones["pelvis"].keyframe_insert("location", frame=frame)
        face.data.shape_keys.key_blocks["Exp010"].value += 0.5
        face.data.shape_keys.key_blocks["Exp010"].keyframe_insert("value", frame=frame)
    before = []
    for frame in range(1, 61):
        scene.frame_set(frame)
        before.append(_evaluated(armature, face))
    info = take_layers.bake_take(context, armature, "take", keys=keys)
    assert not armature.animation_data.use_tweak_mode
    tracks = armature.animation_data.nla_tracks
    assert [(t.name, t.mute) for t in tracks] == [("take", True), ("take tweak 1", True), ("take baked", False)]
    assert [t.mute for t in face.data.shape_keys.animation_data.nla_tracks] == [True, True, False]
    baked = bpy.data.actions[info["action"]]
    _assert_grouped_by_body_part(baked)
    assert takes.list_takes(armature)[-1]["baked_from"] == "take" and baked["sheg_keys"] == keys
    worst = np.zeros(3)
    for frame in range(1, 61):
        scene.frame_set(frame)
        now, then = _evaluated(armature, face), before[frame - 1]
        if keys == "dense":
            assert np.abs(_flat(now) - _flat(then)).max() < 1e-4, frame
        worst = np.maximum(worst, [_angle_deg(now[0], then[0]).max(), np.abs(now[1] - then[1]).max(),
                                   np.abs(now[2] - then[2]).max()])
    assert worst[0] <= 1.0 + 1e-4 and worst[1] <= 0.001 + 1e-6 and worst[2] <= 0.01 + 1e-6, worst


def test_remove_take_takes_its_tweak_layers_along(context, standin, beat2_arrays):
    armature, face = standin
    takes.apply_take(context, _slice(beat2_arrays, frames=30), armature=armature, face_mesh=face, start_frame=1,
                     name="take")
    layer = take_layers.add_tweak_layer(context, armature, "take")
    takes.remove_take(armature, "take")
    assert len(armature.animation_data.nla_tracks) == 0 and len(face.data.shape_keys.animation_data.nla_tracks) == 0
    assert layer["action"] not in bpy.data.actions and "take" not in bpy.data.actions


# --- operators ------------------------------------------------------------------------------------------------------

@pytest.fixture
def registered(context):
    from addon import operators_takes, panel, panel_takes, props

    classes = (*props.classes, *panel.classes, *operators_takes.classes, *panel_takes.classes)
    for cls in classes:
        bpy.utils.register_class(cls)
    props.register()
    yield
    props.unregister()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)


def test_operators_reduce_tweak_finish_and_bake(context, standin, beat2_arrays, registered):
    armature, face = standin
    context.scene.sheg.armature = armature
    takes.apply_take(context, _slice(beat2_arrays, frames=45), armature=armature, face_mesh=face, start_frame=1,
                     name="op take")
    assert bpy.ops.sheg.reduce_take_keys(take_name="op take", rotation_tolerance=2.0) == {"FINISHED"}
    action = bpy.data.actions["op take"]
    assert action["sheg_keys"] == "reduced" and action["sheg_rotation_tolerance_deg"] == 2.0
    assert bpy.ops.sheg.reduce_take_keys("INVOKE_DEFAULT", take_name="op take") == {"FINISHED"}
    assert action["sheg_rotation_tolerance_deg"] == 1.0
    assert bpy.ops.sheg.add_tweak_layer() == {"FINISHED"}  # empty name: the newest take
    assert armature.animation_data.use_tweak_mode
    assert bpy.ops.sheg.finish_tweak() == {"FINISHED"}
    assert not armature.animation_data.use_tweak_mode and not bpy.ops.sheg.finish_tweak.poll()
    assert bpy.ops.sheg.bake_take(take_name="op take", keys="REDUCED") == {"FINISHED"}
    assert [t["name"] for t in takes.list_takes(armature)] == ["op take", "op take baked"]
    _draw_panel(context)
    context.scene.sheg.armature = None
    assert not bpy.ops.sheg.bake_take.poll()
    _draw_panel(context)


class _Layout:
    """Stands in for a UILayout so the panel's draw logic runs headless: every call returns another stand-in."""

    def __init__(self, calls):
        self.calls = calls

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append((name, args, kwargs))
            return _Layout(self.calls)
        return call


def _draw_panel(context):
    from addon import panel_takes

    calls = []
    panel = type("PanelStandIn", (), {"layout": _Layout(calls)})()
    panel_takes.SHEG_PT_take_cleanup.draw(panel, context)
    assert calls  # drew something
    return calls


@pytest.mark.worker
def test_generate_writes_reduced_keys_when_asked(installed_extension, backend_python, tiny_model_dir, speech_wav):
    """The key options reach the take writer through the add-on's public API."""
    import importlib

    import addon_utils

    bpy.ops.wm.read_factory_settings(use_empty=True)
    addon_utils.enable("bl_ext.user_default.sheg", default_set=True)
    api = importlib.import_module("bl_ext.user_default.sheg.api")
    prefs = bpy.context.preferences.addons["bl_ext.user_default.sheg"].preferences
    prefs.backend_mode, prefs.python_path, prefs.device = "CUSTOM", backend_python, "CPU"
    bpy.context.scene.sequence_editor_create().strips.new_sound("speech", speech_wav, 1, 1)
    armature, face = api.create_rig()
    dense = api.generate(strip="speech", armature=armature, face_mesh=face, model=tiny_model_dir, seed=1, steps=2)
    reduced = api.generate(strip="speech", armature=armature, face_mesh=face, model=tiny_model_dir, seed=1, steps=2,
                           keys="reduced", rotation_tolerance_deg=5.0)
    assert reduced["keys_mode"] == "reduced" and dense["keys_mode"] == "dense"
    assert reduced["max_rotation_error_deg"] <= 5.0 + 1e-6
    with pytest.raises(ValueError, match="unknown option"):
        api.generate(strip="speech", armature=armature, model=tiny_model_dir, key_density="x")
