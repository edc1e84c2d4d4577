"""SMPL-X rigs in Blender: build the stand-in armature + body + face, or the exact rig from the user's SMPL-X model
file (core.rigfile), find SMPL-X bones and face shape keys.

Bone rest frames follow the official SMPL-X add-on: head at the joint ((x, y, z)_SMPL-X -> Blender (x, -z, y)),
tail straight up (+Z), roll 0, so every bone's local axes are the SMPL-X axes and an axis-angle becomes the pose
bone's quaternion directly. Both rigs stand with their soles on the armature's origin (stand-in pelvis 0.96 m up).
"""

from __future__ import annotations

import bpy
import numpy as np

from .core import quaternions, rigfile, smplx, standin

_BONE_LENGTH = 0.1         # body bones, as the official add-on
_SMALL_BONE_LENGTH = 0.03  # fingers, jaw and eyes: same direction, only shorter so they stay readable
_EXPRESSION_SLIDER = 10.0  # real data reaches +-6; Blender clamps shape-key values to the slider range


def _object_mode(context) -> None:
    obj = context.view_layer.objects.active
    if obj is not None and obj.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")


def _new_mesh_object(name, mesh_geo: standin.StandinMesh, lift: np.ndarray, armature, color, created):
    mesh = bpy.data.meshes.new(name)
    created.append(mesh)
    verts = smplx.smplx_to_blender(mesh_geo.vertices) + lift
    mesh.from_pydata(verts.tolist(), [], mesh_geo.faces)
    mesh.validate()
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    material = bpy.data.materials.new(name)
    created.append(material)
    material.diffuse_color = color
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    created.append(obj)
    for joint, (indices, weights) in mesh_geo.groups.items():
        group = obj.vertex_groups.new(name=joint)
        if np.all(weights == 1.0):
            group.add(indices.tolist(), 1.0, "REPLACE")
        else:
            for i, w in zip(indices.tolist(), weights.tolist()):
                if w > 0.0:
                    group.add([i], w, "REPLACE")
    obj.parent = armature
    modifier = obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature
    return obj


def _add_expression_keys(obj, face_geo: standin.StandinMesh, lift: np.ndarray) -> None:
    obj.shape_key_add(name="Basis", from_mix=False)
    basis = smplx.smplx_to_blender(face_geo.vertices) + lift
    for k, delta in enumerate(face_geo.shape_deltas):
        block = obj.shape_key_add(name=smplx.EXPRESSION_KEY_FORMAT.format(k), from_mix=False)
        block.slider_min, block.slider_max = -_EXPRESSION_SLIDER, _EXPRESSION_SLIDER
        block.value = 0.0  # shape_key_add leaves new keys at 1.0: the rest face must be neutral
        coords = basis + smplx.smplx_to_blender(delta)
        block.data.foreach_set("co", coords.astype(np.float32).ravel())


def _build_bones(armature_data, heads: np.ndarray) -> None:
    """Edit-mode part: root + 55 bones, tails straight up, roll 0, parents from the SMPL-X kintree."""
    edit_bones = armature_data.edit_bones
    root = edit_bones.new("root")
    root.head, root.tail, root.roll = (0.0, 0.0, 0.0), (0.0, 0.0, _BONE_LENGTH), 0.0
    bones = []
    for j, name in enumerate(smplx.JOINT_NAMES):
        bone = edit_bones.new(name)
        small = j >= smplx.JAW  # jaw, eyes, fingers
        bone.head = heads[j].tolist()
        bone.tail = (heads[j] + (0.0, 0.0, _SMALL_BONE_LENGTH if small else _BONE_LENGTH)).tolist()
        bone.roll = 0.0
        parent = smplx.PARENTS[j]
        bone.parent = root if parent < 0 else bones[parent]
        bone.use_connect = False
        bones.append(bone)


def _new_model_mesh(name, model: rigfile.ModelRig, lift: np.ndarray, armature, created, with_expressions: bool):
    """The model's own mesh: vertex groups from its skinning weights and, optionally, Basis + Exp### shape keys."""
    mesh = bpy.data.meshes.new(name)
    created.append(mesh)
    basis = smplx.smplx_to_blender(model.vertices) + lift
    mesh.from_pydata(basis.tolist(), [], model.faces.tolist())
    mesh.validate()
    mesh.polygons.foreach_set("use_smooth", np.ones(len(mesh.polygons), dtype=bool))
    material = bpy.data.materials.new(name)
    created.append(material)
    material.diffuse_color = (0.8, 0.66, 0.58, 1.0)
    mesh.materials.append(material)
    obj = bpy.data.objects.new(name, mesh)
    created.append(obj)
    groups = rigfile.vertex_groups(model.weights)
    for joint in smplx.JOINT_NAMES:  # every joint gets its group, in joint order, even one that moves nothing
        group = obj.vertex_groups.new(name=joint)
        if joint in groups:
            for indices, weight in rigfile.runs_of_equal_weight(*groups[joint]):
                group.add(indices.tolist(), weight, "REPLACE")
    if with_expressions:
        obj.shape_key_add(name="Basis", from_mix=False)
        for k, delta in enumerate(model.expressions):
            block = obj.shape_key_add(name=smplx.EXPRESSION_KEY_FORMAT.format(k), from_mix=False)
            block.slider_min, block.slider_max = -_EXPRESSION_SLIDER, _EXPRESSION_SLIDER
            block.value = 0.0
            block.data.foreach_set("co", (basis + smplx.smplx_to_blender(delta)).astype(np.float32).ravel())
    obj.parent = armature
    modifier = obj.modifiers.new("Armature", "ARMATURE")
    modifier.object = armature
    return obj


def create_smplx_rig(context, name: str = "SMPLX-neutral", with_face: bool = True,
                     model: rigfile.ModelRig | None = None):
    """SMPL-X armature (root + 55 bones, quaternion rotations) at the 3D cursor. Returns (armature_obj, face_obj or
    None).

    model None: the stand-in, with a body mesh and, optionally, a face mesh with shape keys Basis + Exp000..Exp099.
    model (core.rigfile.ModelRig, from the user's SMPL-X model file): bones at its exact rest joints and one mesh
    `<name>-mesh` with its vertices, faces, skinning weights (55 vertex groups) and, with_face, its expression shape
    keys; that mesh is also the face returned.

    Nothing is left behind on failure. The armature becomes the active, only selected object.
    """
    if not name.strip():
        raise ValueError("rig name is empty; give the armature a name")
    _object_mode(context)
    view_layer = context.view_layer
    collection = context.collection or context.scene.collection
    if model is None:
        lift = np.array([0.0, 0.0, smplx.STANDIN_PELVIS_HEIGHT])
        heads = smplx.smplx_to_blender(smplx.STANDIN_REST_JOINTS) + lift
    else:
        lift = np.array([0.0, 0.0, rigfile.ground_offset(model.vertices)])
        heads = smplx.smplx_to_blender(model.joints) + lift
    created = []
    previous_active = view_layer.objects.active
    try:
        armature_data = bpy.data.armatures.new(name)
        created.append(armature_data)
        armature = bpy.data.objects.new(name, armature_data)
        created.append(armature)
        armature.location = context.scene.cursor.location
        armature.show_in_front = True
        collection.objects.link(armature)  # edit bones need the object in the view layer
        view_layer.objects.active = armature
        bpy.ops.object.mode_set(mode="EDIT")
        try:
            _build_bones(armature_data, heads)
        finally:
            bpy.ops.object.mode_set(mode="OBJECT")
        for pose_bone in armature.pose.bones:
            pose_bone.rotation_mode = "QUATERNION"

        if model is not None:
            mesh = _new_model_mesh(f"{name}-mesh", model, lift, armature, created, with_face)
            collection.objects.link(mesh)
            face = mesh if with_face else None
            armature["sheg_smplx_model"] = model.source_file  # provenance for the user: which model file
            armature["sheg_smplx_model_sha256"] = model.source_sha256
        else:
            face = _build_standin_meshes(name, lift, armature, with_face, collection, created)
    except BaseException:
        _remove(created)
        if previous_active is not None and previous_active.name in view_layer.objects:
            view_layer.objects.active = previous_active
        raise
    for obj in view_layer.objects:
        obj.select_set(obj == armature)
    view_layer.objects.active = armature
    return armature, face


def _build_standin_meshes(name, lift, armature, with_face, collection, created):
    """The stand-in's body mesh and, with_face, its face mesh with expression keys; returns the face or None."""
    body = _new_mesh_object(f"{name}-body", standin.body_mesh(), lift, armature, (0.72, 0.72, 0.75, 1.0), created)
    collection.objects.link(body)
    face = None
    if with_face:
        face_geo = standin.face_mesh()
        face = _new_mesh_object(f"{name}-face", face_geo, lift, armature, (0.85, 0.68, 0.6, 1.0), created)
        _add_expression_keys(face, face_geo, lift)
        collection.objects.link(face)
    return face


def _remove(created) -> None:
    """Remove datablocks made by a failed build, newest first."""
    collections = {bpy.types.Object: bpy.data.objects, bpy.types.Mesh: bpy.data.meshes,
                   bpy.types.Armature: bpy.data.armatures, bpy.types.Material: bpy.data.materials}
    for block in reversed(created):
        for kind, store in collections.items():
            if isinstance(block, kind):
                try:
                    store.remove(block)
                except ReferenceError:
                    pass


def find_smplx_bones(armature_obj) -> dict:
    """SMPL-X joint name -> pose bone name for the joints this armature has.

    Accepts the official names, eyes with or without `_smplhf`, any case, and a shared prefix (e.g. `SMPLX_pelvis`).
    Raises ValueError when the key body bones (pelvis, spine, neck, head, arms) are not all there.
    """
    if armature_obj is None or getattr(armature_obj, "type", None) != "ARMATURE":
        label = getattr(armature_obj, "name", "nothing")
        raise ValueError(f"'{label}' is not an armature; pick the SMPL-X armature (or create a stand-in rig)")
    names = [b.name for b in armature_obj.pose.bones]
    by_lower = {n.lower(): n for n in names}
    prefix = next((n[:-len("pelvis")] for n in names if n.lower().endswith("pelvis")), "").lower()
    found = {}
    for joint in smplx.JOINT_NAMES:
        for candidate in (joint,) + smplx.ALTERNATE_NAMES.get(joint, ()):
            bone = by_lower.get(candidate) or by_lower.get(prefix + candidate)
            if bone is not None:
                found[joint] = bone
                break
    missing = [j for j in smplx.KEY_JOINTS if j not in found]
    if missing:
        raise ValueError(f"armature '{armature_obj.name}' has no SMPL-X bones ({', '.join(missing[:3])}"
                         f"{'...' if len(missing) > 3 else ''} missing); use an SMPL-X rig or create a stand-in rig")
    return found


def bone_frames(armature_obj, bone_names: dict) -> dict:
    """SMPL-X joint name -> (4,) quaternion c of the bone's rest frame in SMPL-X axes, only where c is not identity
    (identity for the stand-in and the official add-on's rigs; takes conjugate rotations by c elsewhere)."""
    to_smplx = smplx.SMPLX_TO_BLENDER.T
    frames = {}
    for joint, bone_name in bone_names.items():
        rest = np.array(armature_obj.data.bones[bone_name].matrix_local.to_3x3(), dtype=np.float64)
        rest /= np.linalg.norm(rest, axis=0, keepdims=True)
        q = quaternions.matrix_to_quat(to_smplx @ rest)
        if not np.allclose(q, (1.0, 0.0, 0.0, 0.0), atol=1e-6):
            frames[joint] = q
    return frames


def find_expression_keys(mesh_obj, kind: str | None = None) -> dict:
    """Face shape keys. kind "exp": expression index -> key name (Exp000..); kind "arkit": ARKit name -> key name
    (case-insensitive); None: the Exp keys if the mesh has any, else the ARKit ones. ValueError if there are none."""
    if mesh_obj is None or getattr(mesh_obj, "type", None) != "MESH":
        label = getattr(mesh_obj, "name", "nothing")
        raise ValueError(f"'{label}' is not a mesh; pick the face mesh with Exp000.. or ARKit shape keys")
    key = mesh_obj.data.shape_keys
    blocks = [b.name for b in key.key_blocks] if key is not None else []
    found = {}
    if kind in (None, "exp"):
        found = {int(m.group(1)): n for n in blocks if (m := smplx.EXPRESSION_KEY_PATTERN.fullmatch(n))}
    if kind == "arkit" or (kind is None and not found):
        by_lower = {n.lower(): n for n in blocks}
        found = {a: by_lower[a.lower()] for a in smplx.ARKIT_NAMES if a.lower() in by_lower}
    if kind not in (None, "exp", "arkit"):
        raise ValueError(f"unknown shape key kind '{kind}' (use 'exp' or 'arkit')")
    if not found:
        what = {"exp": "Exp000..", "arkit": "ARKit"}.get(kind, "Exp000.. or ARKit")
        raise ValueError(f"mesh '{mesh_obj.name}' has no {what} shape keys; pick the face mesh of the SMPL-X rig")
    return found
