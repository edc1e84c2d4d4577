"""How long writing a long take takes: a synthetic 10-minute take (18,000 frames at 30 fps, all 55 joints + trans +
100 expressions = 323 F-curves, 5.8 M keys) applied to the stand-in rig in a 30 fps scene. Target: <= 2 s.

    /work/main/.venv/bin/python blender_tests/bench_write_take.py [--frames N] [--scene-fps F] [--repeat R]

Prints the median wall time of takes.apply_take (channel maths + bulk F-curve writing + NLA) and of the channel
maths alone. A script, not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="sheg-bench-"))  # before bpy

import bpy  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from addon import rig, takes  # noqa: E402
from addon.core import channels, takefile  # noqa: E402


def synthetic_take(frames: int, fps: float) -> takefile.Take:
    """Smooth random motion: low-frequency sines per joint axis, so continuity/resampling do real work."""
    rng = np.random.default_rng(0)
    t = np.arange(frames)[:, None] / fps
    freq = rng.uniform(0.1, 1.5, size=(1, 165))
    phase = rng.uniform(0, 2 * np.pi, size=(1, 165))
    poses = (0.4 * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)
    expressions = np.sin(2 * np.pi * rng.uniform(0.2, 3.0, size=(1, 100)) * t).astype(np.float32)
    trans = np.cumsum(rng.normal(scale=1e-3, size=(frames, 3)), axis=0)
    return takefile.take_from_arrays({"poses": poses, "expressions": expressions, "trans": trans,
                                      "mocap_frame_rate": np.array(fps)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=18000)
    parser.add_argument("--take-fps", type=float, default=30.0)
    parser.add_argument("--scene-fps", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    take = synthetic_take(args.frames, args.take_fps)
    write_times, math_times = [], []
    for _ in range(args.repeat):
        bpy.ops.wm.read_factory_settings(use_empty=True)
        context = bpy.context
        context.scene.render.fps = args.scene_fps
        armature, face = rig.create_smplx_rig(context)

        start = time.perf_counter()
        channels.build_channels(take, bone_names=rig.find_smplx_bones(armature),
                                expression_keys=rig.find_expression_keys(face), target_fps=float(args.scene_fps),
                                start_frame=1)
        math_times.append(time.perf_counter() - start)

        start = time.perf_counter()
        info = takes.apply_take(context, take, armature=armature, face_mesh=face, start_frame=1, name="bench")
        write_times.append(time.perf_counter() - start)

    print(f"take: {args.frames} frames at {args.take_fps:g} fps -> scene {args.scene_fps} fps: {info['frames']} keys "
          f"x {info['fcurves']} F-curves = {info['keys'] / 1e6:.2f} M keys")
    print(f"channel maths (numpy): median {statistics.median(math_times):.3f} s")
    print(f"apply_take total:      median {statistics.median(write_times):.3f} s "
          f"(runs: {', '.join(f'{t:.3f}' for t in write_times)}; target <= 2 s)")


if __name__ == "__main__":
    main()
