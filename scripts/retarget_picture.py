"""The README's retarget picture: the BEAT2 take on the stand-in SMPL-X rig (left) and retargeted onto a Rigify rig
generated from Blender's human metarig (right), three frames, rendered headless with Workbench.

    .venv/bin/python scripts/retarget_picture.py [--out docs/retarget_rigify.png]

The Rigify rig gets a plain skin (one tapered tube per DEF- bone, weighted to it) so Workbench has something to draw.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEAT2 = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "beat2", "2_scott_0_1_1.npz"))
_SKINNED = ("DEF-spine", "DEF-shoulder", "DEF-upper_arm", "DEF-forearm", "DEF-hand", "DEF-f_", "DEF-thumb",
            "DEF-thigh", "DEF-shin", "DEF-foot", "DEF-palm")


def skin(bpy, rig_obj):
    """One mesh of tubes along the rig's body DEF- bones, each rigidly weighted to its bone."""
    import numpy as np

    from addon.core import standin

    verts, faces, groups = [], [], []
    for bone in rig_obj.data.bones:
        if not bone.name.startswith(_SKINNED):
            continue
        head, tail = np.array(bone.head_local), np.array(bone.tail_local)
        radius = 0.012 if bone.name.startswith(("DEF-f_", "DEF-thumb", "DEF-palm")) else 0.045
        if bone.name.startswith("DEF-spine"):
            radius = 0.09 if bone.name < "DEF-spine.004" else 0.05
        if bone.name == "DEF-spine.006":
            head, tail, radius = head, head + (tail - head) * 1.2, 0.09
        tube_verts, tube_faces = standin._tube(head, tail, radius, radius * 0.8)
        offset = len(verts)
        verts += tube_verts.tolist()
        faces += [tuple(i + offset for i in f) for f in tube_faces]
        groups.append((bone.name, list(range(offset, offset + len(tube_verts)))))
    mesh = bpy.data.meshes.new("rigify-skin")
    mesh.from_pydata(verts, [], faces)
    obj = bpy.data.objects.new("rigify-skin", mesh)
    bpy.context.scene.collection.objects.link(obj)
    for name, indices in groups:
        obj.vertex_groups.new(name=name).add(indices, 1.0, "REPLACE")
    obj.parent = rig_obj
    obj.modifiers.new("Armature", "ARMATURE").object = rig_obj
    obj.color = (0.55, 0.7, 0.85, 1.0)
    return obj


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "docs", "retarget_rigify.png"))
    parser.add_argument("--frames", default="300,620,1240")
    args = parser.parse_args()
    os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="sheg-picture-"))
    sys.path[:0] = [ROOT, os.path.join(ROOT, "scripts"), os.path.join(ROOT, "blender_tests")]
    import bpy

    import retarget_rigs
    from addon import retarget, rig, takes
    from demo import contact_sheet, render_frames

    bpy.ops.wm.read_factory_settings(use_empty=True)
    context = bpy.context
    scene = context.scene
    scene.render.fps = 30
    context.scene.cursor.location = (-0.55, 0.0, 0.0)
    source, face = rig.create_smplx_rig(context)
    context.scene.cursor.location = (0.0, 0.0, 0.0)
    takes.import_take(context, BEAT2, armature=source, face_mesh=face, start_frame=1)
    metarig, rigify_rig = retarget_rigs.rigify_rigs(context, generate=True)
    metarig.hide_render = True
    rigify_rig.location = (0.55, 0.0, 0.0)
    info = retarget.retarget_take(context, source, takes.list_takes(source)[-1]["name"], rigify_rig)
    print(f"retargeted onto '{rigify_rig.name}': {info['joints']} bones; {info['unmapped_line']}")
    skin(bpy, rigify_rig)
    for obj in (source, rigify_rig):
        obj.hide_render = True

    cam = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    cam.data.lens = 38
    scene.collection.objects.link(cam)
    cam.location, cam.rotation_euler = (0.0, -4.6, 1.0), (1.5708, 0.0, 0.0)
    scene.camera = cam
    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light, shading.color_type, shading.show_shadows = "STUDIO", "OBJECT", True
    scene.render.resolution_x, scene.render.resolution_y = 480, 400
    scene.render.image_settings.file_format = "PNG"
    frames = [int(f) for f in args.frames.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        paths = render_frames(bpy, scene, frames, folder)
        contact_sheet(bpy, paths, [str(f) for f in frames], os.path.abspath(args.out), columns=len(paths))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
