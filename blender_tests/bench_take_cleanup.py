"""Figures of take cleanup: dense vs reduced keys of a generated take (what users clean up; default tolerances 1 deg,
1 mm, 0.01) and of the captured BEAT2 take (shape-key tolerance 0.01 and 0.05), the worst errors measured in Blender,
.blend sizes, what smoothing does, and how long reducing an 18,000-frame take takes.

    .venv/bin/sheg generate speech.wav -o generated.npz     # >= 60 s of real speech, the embedded default model
    .venv/bin/python blender_tests/bench_take_cleanup.py [--generated generated.npz] [--skip-synthetic]

A script, not a test: timings depend on the machine. Errors are measured on what Blender plays: the pose after
scene.frame_set at every frame (bone rotation angle, pelvis location, shape-key values) against the dense take.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="sheg-bench-"))  # before bpy

import bpy  # noqa: E402
import numpy as np  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from addon import rig, takes  # noqa: E402
from addon.core import channels, keyreduce, smplx  # noqa: E402

BEAT2 = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "beat2", "2_scott_0_1_1.npz"))


def _scene():
    bpy.ops.wm.read_factory_settings(use_empty=True)
    context = bpy.context
    context.scene.render.fps, context.scene.render.fps_base = 30, 1.0
    return context, *rig.create_smplx_rig(context)


def _pose_track(context, armature, face, frames):
    """(T, 55, 4) quaternions, (T, 3) pelvis location, (T, 100) expression values after frame_set."""
    rows = [armature.pose.bones.find(n) for n in smplx.JOINT_NAMES]
    exp_rows = [face.data.shape_keys.key_blocks.find(f"Exp{i:03d}") for i in range(100)]
    bones, blocks = armature.pose.bones, face.data.shape_keys.key_blocks
    q = np.empty(4 * len(bones), dtype=np.float32)
    loc = np.empty(3 * len(bones), dtype=np.float32)
    values = np.empty(len(blocks), dtype=np.float32)
    out_q, out_loc, out_exp = [], [], []
    for frame in frames:
        context.scene.frame_set(int(frame))
        bones.foreach_get("rotation_quaternion", q)
        bones.foreach_get("location", loc)
        blocks.foreach_get("value", values)
        out_q.append(q.reshape(-1, 4)[rows].copy())
        out_loc.append(loc.reshape(-1, 3)[rows[0]].copy())
        out_exp.append(values[exp_rows].copy())
    return np.array(out_q, np.float64), np.array(out_loc, np.float64), np.array(out_exp, np.float64)


def _import(path, keys, smoothing=0.0, parts="both", save_to=None, measure=False, shape_tolerance=0.01):
    context, armature, face = _scene()
    start = time.perf_counter()
    info = takes.import_take(context, path, armature=armature, face_mesh=face, start_frame=1, keys=keys,
                             smoothing=smoothing, parts=parts, shape_tolerance=shape_tolerance)
    info["seconds"] = time.perf_counter() - start
    if measure:
        info["pose"] = _pose_track(context, armature, face, range(1, info["end_frame"] + 1))
    if save_to:
        bpy.ops.wm.save_as_mainfile(filepath=save_to, compress=False)
        info["size"] = os.path.getsize(save_to)
    return info


def take_figures(path, out_dir, shape_tolerances=(0.01,), smoothing=(0.25, 0.5)):
    dense = _import(path, "dense", save_to=os.path.join(out_dir, "dense.blend"), measure=True)
    dq, dl, de = dense["pose"]
    first = None  # reduced keys at the first shape tolerance
    print(f"{os.path.basename(path)}: {dense['frames']} frames at 30 fps ({dense['frames'] / 30.0:.1f} s), "
          f"{dense['fcurves']} F-curves")
    print(f"  dense   keys {dense['keys']:>8}   .blend {dense['size'] / 1e6:7.2f} MB   write {dense['seconds']:.2f} s")
    for shape_tolerance in shape_tolerances:
        reduced = _import(path, "reduced", save_to=os.path.join(out_dir, "reduced.blend"), measure=True,
                          shape_tolerance=shape_tolerance)
        first = first if shape_tolerance != shape_tolerances[0] else reduced["keys"]
        rq, rl, re = reduced["pose"]
        angle = keyreduce.group_error("quaternion", rq.reshape(-1, 4), dq.reshape(-1, 4)).max()
        location = np.linalg.norm(rl - dl, axis=1).max()
        shape = np.abs(re - de).max()
        print(f"  reduced keys {reduced['keys']:>8}   .blend {reduced['size'] / 1e6:7.2f} MB   "
              f"write {reduced['seconds']:.2f} s   (1 deg / 1 mm / {shape_tolerance})")
        print(f"    ratio keys {dense['keys'] / reduced['keys']:.2f}x   file {dense['size'] / reduced['size']:.2f}x")
        print(f"    worst error after frame_set, all frames: rotation {angle:.4f} deg, pelvis {location * 1000:.3f} mm, "
              f"shape keys {shape:.5f}  (reduction's own: {reduced['max_rotation_error_deg']:.4f} deg, "
              f"{reduced['max_location_error'] * 1000:.3f} mm, {reduced['max_shape_error']:.5f})")
    body = _import(path, "reduced", parts="body")
    body_dense = body["dense_keys"]
    print(f"  body part only (parts='body'): dense {body_dense}, reduced {body['keys']} "
          f"-> {body_dense / body['keys']:.2f}x;  expressions alone ({shape_tolerances[0]}): "
          f"{(dense['keys'] - body_dense) / max(first - body['keys'], 1):.2f}x (approx.)")
    for strength in smoothing:
        smooth = _import(path, "reduced", smoothing=strength)
        print(f"  smoothing {strength}: reduced keys {smooth['keys']} -> {dense['keys'] / smooth['keys']:.2f}x "
              f"(errors measured against the smoothed take)")


def synthetic_figures():
    from bench_write_take import synthetic_take

    take = synthetic_take(18000, 30.0)
    plan = channels.build_channels(take, bone_names={n: n for n in smplx.JOINT_NAMES},
                                   expression_keys={i: f"Exp{i:03d}" for i in range(100)}, target_fps=30.0,
                                   start_frame=1)
    tol = {"rotation_tolerance_deg": 1.0, "location_tolerance": 0.001, "shape_tolerance": 0.01}
    for label, chans in (("55 bones + pelvis location", plan.bone_channels), ("100 expressions", plan.shape_channels)):
        groups = [(np.stack([c.values for c in m], axis=1), k, channels.group_tolerance(k, p, **tol))
                  for p, k, m in channels.channel_groups(chans)]
        start = time.perf_counter()
        result = keyreduce.reduce_groups(plan.frames, groups)
        seconds = time.perf_counter() - start
        keys = sum(len(r.frames) * g[0].shape[1] for r, g in zip(result, groups))
        print(f"  18,000 frames, {label}: reduce {seconds:.2f} s (numpy), "
              f"{len(plan.frames) * len(chans) / keys:.1f}x fewer keys")
    context, armature, face = _scene()
    start = time.perf_counter()
    info = takes.apply_take(context, take, armature=armature, face_mesh=face, start_frame=1, name="bench",
                            keys="reduced")
    print(f"  apply_take(keys='reduced') of the 18,000-frame take: {time.perf_counter() - start:.2f} s, "
          f"{info['keys']} keys")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generated", help="a take .npz generated by `sheg generate` (>= 60 s of speech)")
    parser.add_argument("--skip-synthetic", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out_dir:
        if args.generated:
            print("Generated take (default tolerances):")
            take_figures(args.generated, out_dir, smoothing=())
        if os.path.isfile(BEAT2):
            print("Captured BEAT2 take:")
            take_figures(BEAT2, out_dir, shape_tolerances=(0.01, 0.05))
        else:
            print(f"BEAT2 take not found at {BEAT2}")
    if not args.skip_synthetic:
        print("Synthetic take (bench_write_take.synthetic_take):")
        synthetic_figures()


if __name__ == "__main__":
    main()
