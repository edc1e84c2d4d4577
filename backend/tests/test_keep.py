"""Constrained regeneration: the sampler's inpainting (any denoiser), the kept entries of a take (frames x parts),
Model.generate(keep=...) and `sheg generate --keep`."""

import math
import os

import numpy as np
import pytest
import torch

import sheg
from sheg.diffusion.gaussian import NoiseSchedule
from sheg.diffusion.samplers import foppas_sample
from sheg.errors import BadInput
from sheg.evaluation.metrics import seam_jerk
from sheg.inference.keep import keep_constraint, parse_frame_ranges, parse_parts
from sheg.io.take import read_take
from sheg.motion.layouts import PARTS, SHOW, SHOW_GESTURE_JOINTS, show_part_channels
from sheg.motion.skeleton import forward_kinematics
from sheg.testing import make_tiny_model_dir
from sheg_cli import run_cli

torch.set_num_threads(1)
SPEECH = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "speech", "arctic_a0007.wav")
LEFT_ARM = [13, 16, 18, 20]


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model_dir(str(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return sheg.load_model(tiny_model_dir, device="cpu")


def _denoiser(dim, seed=0):
    weight = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)) / math.sqrt(dim)
    return lambda x_t, t: 0.5 * torch.tanh(x_t @ weight) * (1.0 + t.float().view(-1, 1, 1) / 1000.0)


def test_sampler_inpaints_any_denoiser_and_holds_the_kept_values_exactly():
    schedule, frames, dim = NoiseSchedule(), 40, 5
    keep = torch.randn(1, frames, dim, generator=torch.Generator().manual_seed(3))
    mask = torch.zeros(1, frames, dim, dtype=torch.bool)
    mask[:, 5:9] = True          # inside the first window (no overlap prefix there)
    mask[:, 20:30, 1:3] = True   # across a window seam, two channels only
    denoiser = _denoiser(dim)

    def run(**kw):
        return foppas_sample(lambda a, b: denoiser, frames, dim, schedule, window=16, overlap=4, steps=6,
                             jump_n_sample=2, generator=torch.Generator().manual_seed(1), **kw)

    free, kept = run(), run(keep=keep, keep_mask=mask)
    assert torch.equal(kept[mask], keep[mask])
    assert (kept[~mask] - free[~mask]).abs().mean() > 1e-3  # the rest is generated around the kept values
    with pytest.raises(BadInput, match="keep and keep_mask"):
        run(keep=keep[:, :10], keep_mask=mask[:, :10])


def test_parts_map_to_the_channels_of_the_show_vector():
    arm = show_part_channels(["left_arm"])
    slots = [SHOW_GESTURE_JOINTS.index(j) for j in LEFT_ARM]
    assert arm.tolist() == sorted(3 * s + k for s in slots for k in range(3))
    assert show_part_channels(["face"]).tolist() == list(range(SHOW.gesture_dim, SHOW.dim))  # jaw + expressions
    assert show_part_channels(["body"]).tolist() == list(range(SHOW.gesture_dim))
    every = np.concatenate([show_part_channels([p]) for p in PARTS if p not in ("face", "body")])
    assert sorted(every.tolist()) == list(range(SHOW.dim))  # the parts tile the vector
    with pytest.raises(ValueError, match="unknown body part 'tail'"):
        show_part_channels(["tail"])


def test_frame_ranges_and_part_lists_parse_with_one_line_errors():
    assert parse_frame_ranges("0:30, 120:180") == [(0, 30), (120, 180)]
    assert parse_parts("left_arm,face") == ["left_arm", "face"]
    for bad in ("120", "a:b", "1:2:3"):
        with pytest.raises(BadInput, match="START:STOP"):
            parse_frame_ranges(bad)
    with pytest.raises(BadInput, match="unknown body part 'wing'"):
        parse_parts("left_arm,wing")


def test_restore_is_exact_on_kept_entries_and_fades_the_seam_offset():
    frames = 60
    arrays = {"poses": np.zeros((frames, 165), np.float32), "expressions": np.ones((frames, 100), np.float32),
              "fps": 30.0}
    c = keep_constraint(SHOW, 30.0, frames, arrays, [(20, 40)], ["face"])
    generated = np.zeros((frames, SHOW.dim), np.float32)
    out = c.restore(generated)
    np.testing.assert_array_equal(out[c.mask], c.values[c.mask])
    expr = out[:, SHOW.gesture_dim + 3]
    assert 0.0 < expr[19] < 1.0 and 0.0 < expr[40] < 1.0        # faded into the generated side
    assert expr[:12].max() == 0.0 and expr[48:].max() == 0.0     # and gone 8 frames away
    assert np.abs(np.diff(expr)).max() < 0.5                     # no step at the seam
    np.testing.assert_array_equal(out[:, :SHOW.gesture_dim], 0.0)  # other channels untouched
    with pytest.raises(BadInput, match="outside the new take's frames"):
        keep_constraint(SHOW, 30.0, frames, arrays, [(50, 70)], None)
    with pytest.raises(BadInput, match="at 30 fps but the model generates 15 fps"):
        keep_constraint(SHOW, 15.0, frames, arrays, None, None)


def test_generate_keeps_frames_and_parts_exactly(tiny_model):
    old = tiny_model.generate(SPEECH, seed=1, steps=4)
    new = tiny_model.generate(SPEECH, seed=2, steps=4, keep=old, keep_frames=[(30, 60)])
    a, b = old.arrays["poses"], new.arrays["poses"]
    assert np.abs(a[30:60] - b[30:60]).max() <= 1e-5
    np.testing.assert_array_equal(old.arrays["expressions"][30:60], new.arrays["expressions"][30:60])
    assert np.abs(a[:25] - b[:25]).mean() > 1e-3 and np.abs(a[65:] - b[65:]).mean() > 1e-3
    assert new.meta["kept_frames"] == 30
    arm = tiny_model.generate(SPEECH, seed=2, steps=4, keep=old, keep_parts=["left_arm"])
    pa, pb = a.reshape(-1, 55, 3), arm.arrays["poses"].reshape(-1, 55, 3)
    np.testing.assert_array_equal(pa[:, LEFT_ARM], pb[:, LEFT_ARM])
    assert np.abs(pa[:, [14, 17, 19, 21]] - pb[:, [14, 17, 19, 21]]).mean() > 1e-3


def test_regenerate_gesture_from_an_edited_face(tiny_model):
    old = tiny_model.generate(SPEECH, seed=1, steps=4)
    edited = dict(old.arrays, fps=old.fps)
    edited["expressions"] = old.arrays["expressions"] + np.linspace(0, 0.5, old.frames)[:, None].astype(np.float32)
    new = tiny_model.generate(SPEECH, seed=1, steps=4, keep=edited, keep_parts=["face"])
    np.testing.assert_array_equal(new.arrays["expressions"], edited["expressions"])
    body = [3 * j + k for j in SHOW_GESTURE_JOINTS for k in range(3)]
    assert np.abs(new.arrays["poses"][:, body] - old.arrays["poses"][:, body]).mean() > 1e-4  # conditioned anew


def test_default_model_seam_jerk_is_that_of_generated_motion():
    model = sheg.load_model(None, device="cpu")
    old = model.generate(SPEECH, seed=1)
    new = model.generate(SPEECH, seed=2, keep=old, keep_frames=[(40, 80)])
    assert np.abs(new.arrays["poses"][40:80] - old.arrays["poses"][40:80]).max() <= 1e-5
    positions = forward_kinematics(new.arrays["poses"].reshape(-1, 55, 3))
    assert seam_jerk(positions, new.fps, [40, 80])["seam_ratio"] <= 1.5


def test_cli_keep_round_trip_and_one_line_errors(tiny_model_dir, tmp_path):
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    assert run_cli("generate", SPEECH, "-o", first, "--model", tiny_model_dir, "--steps", "3",
                   "--quiet").returncode == 0
    proc = run_cli("generate", SPEECH, "-o", second, "--model", tiny_model_dir, "--steps", "3", "--seed", "4",
                   "--quiet", "--keep", first, "--keep-frames", "10:40", "--keep-parts", "left_arm,face")
    assert proc.returncode == 0, proc.stderr
    a, b = read_take(str(first)), read_take(str(second))
    pa, pb = a["poses"].reshape(-1, 55, 3), b["poses"].reshape(-1, 55, 3)
    np.testing.assert_array_equal(pa[10:40][:, LEFT_ARM], pb[10:40][:, LEFT_ARM])
    np.testing.assert_array_equal(a["expressions"][10:40], b["expressions"][10:40])
    assert np.abs(pa[:, 14] - pb[:, 14]).mean() > 1e-3
    for extra, message in ((["--keep-frames", "10:40"], "need --keep"),
                           (["--keep", first, "--keep-parts", "tail"], "unknown body part 'tail'"),
                           (["--keep", first, "--keep-frames", "10:9999"], "outside the new take's frames"),
                           (["--keep", tmp_path / "none.npz"], "take to keep not found")):
        out = tmp_path / "bad.npz"
        proc = run_cli("generate", SPEECH, "-o", out, "--model", tiny_model_dir, "--steps", "2", "--quiet", *extra)
        assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert not out.exists()
