"""How long a retarget of a long take takes: the synthetic 10-minute take of bench_write_take.py (18,000 frames at
30 fps, all 55 joints) on the stand-in rig, retargeted onto a CC-named A-pose rig (55 mapped bones, fingers too) and
a Mixamo-named FBX-style rig (52 bones). Target: <= 5 s.

    .venv/bin/python blender_tests/bench_retarget.py [--frames N] [--repeat R]

Prints the median wall time of retarget.retarget_take (reading the take's curves as they play, the rotation
transfer, bulk F-curve writing, NLA) and of the rotation transfer alone (core.retarget, numpy). A script, not a
test: timings depend on the machine.
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

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import retarget_rigs  # noqa: E402
from bench_write_take import synthetic_take  # noqa: E402
from addon import retarget, rig, takes  # noqa: E402
from addon.core import retarget as transfer  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=18000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    take = synthetic_take(args.frames, 30.0)
    bpy.ops.wm.read_factory_settings(use_empty=True)
    context = bpy.context
    context.scene.render.fps = 30
    source, _ = rig.create_smplx_rig(context, with_face=False)
    takes.apply_take(context, take, armature=source, start_frame=1, name="ten minutes")
    targets = {"cc": retarget_rigs.build_armature(context, "cc", retarget_rigs.cc_bones()),
               "mixamo": retarget_rigs.build_armature(context, "mixamo", retarget_rigs.mixamo_bones(),
                                                      fbx_axes=True)}
    for name, target in targets.items():
        totals, maths = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            info = retarget.retarget_take(context, source, "ten minutes", target)
            totals.append(time.perf_counter() - start)
            plan_start = time.perf_counter()
            plan = transfer.plan_retarget(info["bone_map"], retarget.target_rig(target),
                                          retarget.source_rest_joints(source))
            transfer.retarget_rotations(plan, take.poses)
            maths.append(time.perf_counter() - plan_start)
        print(f"{name}: {info['frames']} frames x {info['joints']} bones = {info['keys'] / 1e6:.2f} M keys")
        print(f"  rotation transfer (numpy): median {statistics.median(maths):.3f} s")
        print(f"  retarget_take total:       median {statistics.median(totals):.3f} s "
              f"(runs: {', '.join(f'{t:.3f}' for t in totals)}; target <= 5 s)")


if __name__ == "__main__":
    main()
