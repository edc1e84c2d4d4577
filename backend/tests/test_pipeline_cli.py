"""End to end through the public surfaces: sheg.load_model().generate, the `sheg` CLI and `sheg worker`."""

import json
import os
import time

import numpy as np
import pytest
import soundfile as sf

import sheg
from sheg.errors import BadInput, DeviceError
from sheg_cli import SPEECH, run_cli, write_wave

@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return sheg.load_model(tiny_model_dir, device="cpu")


def test_generate_speech_file(tiny_model):
    take = tiny_model.generate(SPEECH, seed=1)
    assert take.frames == 120 and take.fps == 30.0  # 4.0 s at 30 fps
    assert take.arrays["poses"].shape == (120, 165) and take.arrays["expressions"].shape == (120, 100)
    assert np.isfinite(take.arrays["poses"]).all()
    assert take.meta["audio_sha256"] and take.meta["seed"] == 1


def test_same_seed_same_take_different_seed_differs(tiny_model):
    audio = (np.random.default_rng(0).standard_normal(18000 * 3).astype(np.float32) * 0.1, 18000)
    a = tiny_model.generate(audio, seed=5).vector
    b = tiny_model.generate(audio, seed=5).vector
    c = tiny_model.generate(audio, seed=6).vector
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1e-3


@pytest.mark.parametrize("frames", [1, 31, 32, 33, 60, 61, 200], ids=lambda f: f"{f}frames")
def test_output_length_equals_audio_frames_around_window_boundaries(tiny_model, frames):
    # tiny model: window 32, overlap 4 -> stride 28; 1 frame = 600 samples at 18 kHz
    samples = frames * 600 + 599
    take = tiny_model.generate((np.full(samples, 0.01, dtype=np.float32), 18000), seed=0, steps=3)
    assert take.frames == frames


def test_bad_arguments(tiny_model):
    audio = (np.zeros(18000, dtype=np.float32), 18000)
    with pytest.raises(BadInput, match="style"):
        tiny_model.generate(audio, style=7)
    with pytest.raises(BadInput, match="overlap"):
        tiny_model.generate(audio, overlap=40)
    with pytest.raises(BadInput, match="too short"):
        tiny_model.generate((np.zeros(100, dtype=np.float32), 18000))


def test_cuda_absent_is_a_clear_error(tiny_model_dir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(DeviceError, match="CUDA"):
        sheg.load_model(tiny_model_dir, device="cuda")


def test_cli_generate_json_summary(tiny_model_dir, tmp_path):
    out = tmp_path / "take.npz"
    proc = run_cli("generate", SPEECH, "-o", str(out), "--model", tiny_model_dir, "--seed", "2", "--steps", "3",
                   "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["takes"][0]["frames"] == 120 and os.path.exists(out)
    with np.load(out) as z:
        assert z["poses"].shape == (120, 165) and float(z["mocap_frame_rate"]) == 30.0


def test_cli_generate_with_a_beat_model_writes_the_take_and_its_arkit_json(tmp_path):
    from sheg.motion.layouts import ARKIT_NAMES, BEAT_JOINT_NAMES

    model = tmp_path / "beat"
    made = run_cli("make-test-model", model, "--layout", "beat")
    assert made.returncode == 0, made.stderr
    out = tmp_path / "take.npz"
    proc = run_cli("generate", SPEECH, "-o", out, "--model", model, "--steps", "3", "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr  # it used to fail here, after writing the npz
    summary = json.loads(proc.stdout)["takes"][0]
    json_path = tmp_path / "take_arkit.json"
    assert summary["files"] == [str(out), str(json_path)]
    assert (summary["frames"], summary["fps"]) == (60, 15.0)  # 4.0 s at 15 fps
    with np.load(out) as z:
        weights, names = z["arkit_weights"], list(z["arkit_names"])
        assert z["beat_poses"].shape == (60, 47, 3) and list(z["beat_joint_names"]) == list(BEAT_JOINT_NAMES)
        assert float(z["mocap_frame_rate"]) == 15.0
    doc = json.loads(json_path.read_text())
    assert doc["names"] == names == list(ARKIT_NAMES) and doc["fps"] == 15.0 and len(doc["frames"]) == 60
    assert [f["time"] for f in doc["frames"][:3]] == [0.0, 1 / 15, 2 / 15]
    np.testing.assert_allclose([f["weights"] for f in doc["frames"]], weights, atol=1e-6)
    assert np.ptp(weights, axis=0).min() > 0  # real generated values, not a constant


def test_cli_several_files_into_folder(tiny_model_dir, tmp_path):
    a = write_wave(tmp_path / "a.wav", 1.5)
    b = write_wave(tmp_path / "b.flac".replace(".flac", ".wav"), 2.0)
    out = tmp_path / "takes"
    proc = run_cli("generate", a, b, "-o", str(out), "--model", tiny_model_dir, "--steps", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(out)) == ["a.npz", "b.npz"]


def test_worker_protocol_generate_cancel_errors_shutdown(worker, tiny_model_dir, tmp_path):
    hello, _ = worker.until(worker.send(cmd="hello"))
    assert hello["event"] == "hello" and hello["protocol"] == 1 and "cpu" in hello["devices"]
    loaded, _ = worker.until(worker.send(cmd="load", model=tiny_model_dir, device="cpu"))
    assert loaded["event"] == "loaded" and loaded["model"]["fps"] == 30.0

    out = tmp_path / "take.npz"
    done, events = worker.until(worker.send(cmd="generate", audio=SPEECH, out=str(out), seed=3, steps=3))
    assert done["event"] == "done" and done["frames"] == 120, done
    progress = [e for e in events if e["event"] == "progress" and e["stage"] == "sampling"]
    assert progress and progress[-1]["fraction"] == pytest.approx(1.0)
    assert os.path.exists(out)

    # errors are answered, the worker stays alive
    err, _ = worker.until(worker.send(cmd="generate", audio=str(tmp_path / "none.wav"), out=str(tmp_path / "x.npz")))
    assert err["event"] == "error" and "not found" in err["message"]
    bogus, _ = worker.until(worker.send(cmd="fly"))
    assert bogus["event"] == "error"

    # cancel a long generation: it ends as cancelled and writes nothing
    long_audio = write_wave(tmp_path / "long.wav", 60.0)
    cancelled_out = tmp_path / "cancelled.npz"
    gid = worker.send(cmd="generate", audio=long_audio, out=str(cancelled_out), steps=25, jumps=5)
    while True:
        event = worker.read()
        if event.get("event") == "progress" and event.get("stage") == "sampling":
            break
    t0 = time.time()
    cancel_id = worker.send(cmd="cancel")
    final, events = worker.until(gid)
    # The running generate stops at its next sampling step (each well under a second on an idle machine; the
    # count, not the seconds, is what holds on a loaded one): at most one more step is reported after the ack.
    acked = next(i for i, e in enumerate(events) if e.get("id") == cancel_id)
    steps_after = [e for e in events[acked + 1:] if e.get("event") == "progress"]
    assert final["event"] == "cancelled" and len(steps_after) <= 1 and time.time() - t0 < 10.0, steps_after
    assert not cancelled_out.exists() and not any(p.name.startswith(".sheg-") for p in tmp_path.iterdir())

    bye, _ = worker.until(worker.send(cmd="shutdown"))
    assert bye["event"] == "bye"
    assert worker.proc.wait(timeout=10) == 0


def copy_with_sampler(model_dir, out_dir, **sampler) -> str:
    """A copy of a model folder with keys of its model card's `sampler` set."""
    import shutil

    shutil.copytree(model_dir, out_dir)
    meta = json.loads((out_dir / "model.json").read_text())
    meta["sampler"].update(sampler)
    (out_dir / "model.json").write_text(json.dumps(meta))
    return str(out_dir)


def test_lowpass_removes_frame_jitter_and_keeps_the_length(tiny_model_dir, tmp_path):
    from sheg.inference.base import lowpass

    smooth_dir = copy_with_sampler(tiny_model_dir, tmp_path / "smooth", lowpass_hz=4.0)
    audio = (np.random.default_rng(2).standard_normal(18000 * 3).astype(np.float32) * 0.1, 18000)
    raw = sheg.load_model(tiny_model_dir, device="cpu").generate(audio, seed=1, steps=4)
    smooth = sheg.load_model(smooth_dir, device="cpu").generate(audio, seed=1, steps=4)
    assert smooth.vector.shape == raw.vector.shape and smooth.meta["lowpass_hz"] == 4.0
    assert np.allclose(smooth.vector, lowpass(raw.vector, raw.fps, 4.0), atol=1e-6)
    jerk = lambda v: np.abs(np.diff(v, 3, axis=0)).mean()  # noqa: E731
    assert jerk(smooth.vector) < 0.2 * jerk(raw.vector)
    # zero phase: a slow sine passes without delay or loss
    t = np.arange(300) / 30.0
    slow = np.sin(2 * np.pi * 0.5 * t)[:, None].astype(np.float32)
    assert np.abs(lowpass(slow, 30.0, 4.0) - slow)[20:-20].max() < 1e-2
    with pytest.raises(BadInput, match="lowpass_hz"):
        lowpass(slow, 30.0, 20.0)


def test_clip_x0_bounds_the_motion_in_normalized_units(tiny_model_dir, tmp_path):
    clipped_dir = copy_with_sampler(tiny_model_dir, tmp_path / "clipped", clip_x0=0.5)
    audio = (np.random.default_rng(2).standard_normal(18000 * 2).astype(np.float32) * 0.1, 18000)
    free = sheg.load_model(tiny_model_dir, device="cpu").generate(audio, seed=1, steps=4).vector
    clipped = sheg.load_model(clipped_dir, device="cpu").generate(audio, seed=1, steps=4).vector
    # tiny model stats: mean 0, std 0.1 -> |x| <= 0.05 (the final DDIM step returns the clipped x0 at t = 0)
    assert np.abs(clipped).max() <= 0.05 + 1e-4 < np.abs(free).max()
