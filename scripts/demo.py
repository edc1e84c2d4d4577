"""The demo `python3 build.py demo` runs (inside the project's .venv, where `bpy` and `sheg` are installed).

Installs the built extension zip into an isolated Blender user folder, builds a scene with the stand-in SMPL-X rig
and face and a sound strip of the bundled speech clip, generates a take with the embedded default model, and writes
out/demo.blend, out/demo_take.npz, out/demo_contact_sheet.png (and out/demo.mp4 when ffmpeg is on PATH).

    python scripts/demo.py --out out --zip dist/sheg-0.1.0.zip [--model MODEL_DIR] [--seed 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEECH = os.path.join(ROOT, "assets", "speech", "arctic_a0007.wav")
MODULE = "bl_ext.user_default.sheg"


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=os.path.join(ROOT, "out"))
    p.add_argument("--zip", required=True, help="the built extension zip")
    p.add_argument("--model", default=None, help="model folder (default: the embedded default model)")
    p.add_argument("--audio", default=SPEECH)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--frames", type=int, default=8, help="frames on the contact sheet")
    return p.parse_args()


def setup_scene(bpy, api, audio):
    scene = bpy.context.scene
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    scene.render.fps, scene.render.fps_base = 30, 1.0
    seq = scene.sequence_editor_create()
    seq.strips.new_sound("speech", audio, 1, 1)
    armature, face = api.create_rig()
    # camera in front of the stand-in (Blender: -Y is the figure's front, Z up), soft studio light
    cam_data = bpy.data.cameras.new("Camera")
    cam_data.lens = 65
    cam = bpy.data.objects.new("Camera", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (0.0, -3.6, 1.25)
    cam.rotation_euler = (1.5708, 0.0, 0.0)
    scene.camera = cam
    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.color_type = "OBJECT"
    shading.show_shadows = True
    shading.show_cavity = True
    scene.render.resolution_x, scene.render.resolution_y = 360, 480
    scene.render.image_settings.file_format = "PNG"
    return scene, armature, face


def render_frames(bpy, scene, frames, folder):
    paths = []
    for i, frame in enumerate(frames):
        scene.frame_set(frame)
        scene.render.filepath = os.path.join(folder, f"frame_{i:03d}.png")
        bpy.ops.render.render(write_still=True)
        paths.append(scene.render.filepath)
    return paths


def contact_sheet(bpy, paths, labels, out_png, columns=4):
    """Tile rendered PNGs into one image with Blender's own image API (no extra packages)."""
    import numpy as np

    tiles = []
    for path in paths:
        img = bpy.data.images.load(path)
        w, h = img.size
        tiles.append(np.array(img.pixels[:], dtype=np.float32).reshape(h, w, 4))
        bpy.data.images.remove(img)
    h, w = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    sheet = np.ones((rows * h, columns * w, 4), dtype=np.float32)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        # Blender images are stored bottom row first: row 0 of the sheet is its bottom
        y0 = (rows - 1 - r) * h
        sheet[y0:y0 + h, c * w:(c + 1) * w] = tile
        sheet[y0:y0 + h, c * w:c * w + 2, :3] = 0.6  # thin separators
        sheet[y0:y0 + 2, c * w:(c + 1) * w, :3] = 0.6
    image = bpy.data.images.new("contact_sheet", columns * w, rows * h, alpha=True)
    image.pixels.foreach_set(sheet.ravel())
    image.filepath_raw = out_png
    image.file_format = "PNG"
    image.save()
    bpy.data.images.remove(image)


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    user = os.path.join(ROOT, ".cache", "blender-demo-user")
    shutil.rmtree(user, ignore_errors=True)
    os.environ["BLENDER_USER_RESOURCES"] = user  # never the user's own Blender config; set before importing bpy
    import bpy
    import addon_utils
    import importlib

    result = bpy.ops.extensions.package_install_files(filepath=os.path.abspath(args.zip), repo="user_default",
                                                      enable_on_install=True)
    if result != {"FINISHED"}:
        raise SystemExit(f"installing {args.zip} failed: {result}")
    addon_utils.enable(MODULE, default_set=True)
    api = importlib.import_module(f"{MODULE}.api")
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.backend_mode, prefs.python_path, prefs.device = "CUSTOM", sys.executable, "CPU"

    scene, armature, face = setup_scene(bpy, api, os.path.abspath(args.audio))
    info = api.generate(strip="speech", armature=armature, face_mesh=face, model=args.model, seed=args.seed)
    start, count = info["start_frame"], info["frames"]
    scene.frame_start, scene.frame_end = start, start + count - 1
    print(f"[demo] generated take '{info.get('name')}' with {count} frames from frame {start}")

    blend = os.path.join(args.out, "demo.blend")
    take_npz = os.path.join(args.out, "demo_take.npz")
    takes = importlib.import_module(f"{MODULE}.takes")
    takes.export_take(bpy.context, armature, info["name"], take_npz)
    bpy.ops.wm.save_as_mainfile(filepath=blend, compress=True)

    with tempfile.TemporaryDirectory() as tmp:
        picks = [start + round(i * (count - 1) / (args.frames - 1)) for i in range(args.frames)]
        paths = render_frames(bpy, scene, picks, tmp)
        sheet = os.path.join(args.out, "demo_contact_sheet.png")
        contact_sheet(bpy, paths, [f"frame {f}" for f in picks], sheet)
        made = [blend, take_npz, sheet]
        if shutil.which("ffmpeg"):
            frames_dir = os.path.join(tmp, "all")
            os.makedirs(frames_dir)
            scene.render.resolution_percentage = 50
            render_frames(bpy, scene, range(start, start + count), frames_dir)
            mp4 = os.path.join(args.out, "demo.mp4")
            subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-framerate", str(scene.render.fps), "-i",
                            os.path.join(frames_dir, "frame_%03d.png"), "-i", os.path.abspath(args.audio),
                            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", mp4], check=True)
            made.append(mp4)
    print("[demo] made:")
    for path in made:
        if os.path.exists(path):
            print(f"  {os.path.relpath(path, ROOT)}")


if __name__ == "__main__":
    main()
