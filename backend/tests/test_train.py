"""`sheg train` on a tiny config: the loss falls, --resume continues exactly, DDP matches one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from sheg.cli import build_parser
from sheg.errors import BadInput

BACKEND = Path(__file__).resolve().parents[1]
COMMON = ["--config", "tiny", "--batch", "4", "--holdout-seconds", "1.5", "--log-every", "1", "--val-every", "0",
          "--threads", "1", "--device", "cpu"]


def write_take(folder: Path, name: str, seconds: float, seed: int) -> None:
    """Smooth random SMPL-X motion at 30 fps with noise-burst 'speech' at 16 kHz."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * 30)) / 30.0
    freq, phase = rng.uniform(0.3, 2.0, (1, 165)), rng.uniform(0, 6.3, (1, 165))
    poses = 0.2 * np.sin(2 * np.pi * freq * t[:, None] + phase)
    np.savez(folder / f"{name}.npz", poses=poses.astype(np.float32), expressions=poses[:, :100] * 3,
             mocap_frame_rate=np.array(30.0))
    n = int(seconds * 16000)
    gate = (np.sin(2 * np.pi * 3.0 * np.arange(n) / 16000) > 0.3).astype(np.float32)
    sf.write(folder / f"{name}.wav", 0.1 * gate * rng.standard_normal(n).astype(np.float32), 16000)


@pytest.fixture(scope="module")
def takes(tmp_path_factory):
    folder = tmp_path_factory.mktemp("takes")
    write_take(folder, "a", 5.0, seed=0)
    write_take(folder, "b", 4.0, seed=1)
    return folder


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train(argv) -> int:
    args = build_parser().parse_args(["train", *map(str, argv)])
    return args.func(args)


def weights(folder: Path) -> dict:
    return load_file(str(folder / "model.safetensors"))


def test_training_lowers_the_validation_loss_and_writes_a_loadable_model(takes, tmp_path):
    out = tmp_path / "model"
    assert train([takes, "-o", out, *COMMON, "--steps", "40", "--lr", "2e-3", "--val-every", "10"]) == 0
    history = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    val = [row["val_loss"] for row in history if "val_loss" in row]
    assert len(val) == 4
    assert val[-1] < val[0]
    train_eps = [row["eps_mse"] for row in history if "eps_mse" in row]
    assert np.mean(train_eps[-10:]) < np.mean(train_eps[:10])

    from sheg.inference.load import load_model

    model = load_model(str(out), device="cpu")
    meta = model.meta
    assert meta["layout"] == "show" and meta["fps"] == 30.0 and meta["window"] == 32
    assert meta["audio"]["log"] is True and meta["source"]["steps"] == 40
    assert len(meta["stats"]["std"]) == 232 and min(meta["stats"]["std"]) >= 1e-2
    wave = (0.1 * np.random.default_rng(0).standard_normal(18000 * 2)).astype(np.float32)
    take = model.generate((wave, 18000), seed=0, steps=2, jumps=1)
    assert take.frames == 60 and np.isfinite(take.arrays["poses"]).all()


def test_resume_continues_exactly(takes, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train([takes, "-o", straight, *COMMON, "--steps", "8"]) == 0
    assert train([takes, "-o", resumed, *COMMON, "--steps", "3"]) == 0
    state = torch.load(resumed / "train_state.pt", weights_only=True)
    assert state["step"] == 3
    assert train([takes, "-o", resumed, "--resume", "--steps", "8", "--threads", "1", "--val-every", "0"]) == 0
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    # the saved settings win; contradicting them is an error, not a silent change
    with pytest.raises(BadInput, match="--batch"):
        train([takes, "-o", resumed, "--resume", "--batch", "8"])
    with pytest.raises(BadInput, match="--resume"):
        train([takes, "-o", resumed, *COMMON])
    with pytest.raises(BadInput, match="nothing to resume"):
        train([takes, "-o", tmp_path / "new", "--resume"])


def test_bad_settings_are_clear_errors(takes, tmp_path):
    with pytest.raises(BadInput, match="HuBERT"):
        train([takes, "-o", tmp_path / "x", "--config", "official-show", "--steps", "1"])
    with pytest.raises(BadInput, match="window"):
        train([takes, "-o", tmp_path / "y", *COMMON, "--window", "400", "--steps", "1"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "other.txt").write_text("x")
    with pytest.raises(BadInput, match="not empty"):
        train([takes, "-o", tmp_path / "full", *COMMON, "--steps", "1"])


def test_two_process_ddp_matches_one_process(takes, tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert train([takes, "-o", single, *COMMON, "--steps", "4"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(BACKEND)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "sheg", "train", str(takes), "-o", str(ddp), *COMMON, "--steps", "4"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "over 2 processes" in result.stderr
    a, b = weights(single), weights(ddp)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5, rtol=1e-4), key


def test_eval_prints_the_metrics_table(takes, tmp_path, capsys):
    out = tmp_path / "model"
    assert train([takes, "-o", out, *COMMON, "--steps", "2"]) == 0
    mean_vel = tmp_path / "mean_vel.npy"
    np.save(mean_vel, np.full(55, 0.1, dtype=np.float32))
    args = build_parser().parse_args(["eval", str(out), "--audio", str(takes / "a.wav"), "--reference",
                                      str(takes / "a.npz"), "--seeds", "2", "--steps", "2",
                                      "--mean-vel", str(mean_vel), "--device", "cpu"])
    assert args.func(args) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert table[0].startswith("| take | BC | BC mismatched audio | L1div | jerk mean")
    labels = [line.split("|")[1].strip() for line in table[2:]]
    assert labels == ["generated seed 0", "generated seed 1", "generated, mean of 2", "static pose",
                      "reference (ground truth)"]
    static = dict(zip([c.strip() for c in table[0].split("|")], [c.strip() for c in table[5].split("|")]))
    assert static["BC"] == "0" and static["L1div"] == "0" and static["jerk mean (m/s^3)"] == "0"
    assert "diversity across seeds" in table[0]


DG_COMMON = ["--arch", "diffgesture", "--config", "tiny", "--batch", "4", "--holdout-seconds", "1.5",
             "--log-every", "1", "--val-every", "0", "--threads", "1", "--device", "cpu"]


def test_diffgesture_training_learns_resumes_exactly_and_generates(takes, tmp_path):
    from sheg.inference.load import load_model

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert train([takes, "-o", straight, *DG_COMMON, "--steps", "30", "--lr", "2e-3"]) == 0
    history = [json.loads(line) for line in (straight / "train_log.jsonl").read_text().splitlines()]
    eps = [row["eps_mse"] for row in history if "eps_mse" in row]
    assert len(eps) == 30 and np.mean(eps[-5:]) < 0.9 * np.mean(eps[:5])
    meta = json.loads((straight / "model.json").read_text())
    assert meta["arch"] == "diffgesture" and meta["layout"] == "ted43" and meta["source"]["steps"] == 30
    assert len(meta["stats"]["mean_dir_vec"]) == 126

    assert train([takes, "-o", resumed, *DG_COMMON, "--steps", "12", "--lr", "2e-3", "--name", "dg-test",
                  "--license", "test data"]) == 0
    assert train([takes, "-o", resumed, "--resume", "--steps", "30", "--threads", "1", "--val-every", "0"]) == 0
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    resumed_meta = json.loads((resumed / "model.json").read_text())
    assert (resumed_meta["name"], resumed_meta["license"]) == ("dg-test", "test data")  # kept across --resume

    model = load_model(str(straight), device="cpu")
    take = model.generate(str(takes / "a.wav"), seed=0, steps=5)
    assert take.arrays["poses"].shape == (75, 165) and np.isfinite(take.arrays["poses"]).all()
    assert take.arrays["generated_joints"].sum() > 20  # spine, arms, hands
    with pytest.raises(BadInput, match="window"):
        train([takes, "-o", tmp_path / "w", *DG_COMMON, "--window", "20", "--steps", "1"])
    with pytest.raises(BadInput, match="eps MSE alone: drop --loss-vel"):
        train([takes, "-o", tmp_path / "v", *DG_COMMON, "--loss-vel", "2", "--steps", "1"])


def test_eval_averages_several_mismatched_audio_files(takes, tmp_path):
    from sheg.evaluation.evaluate import evaluate
    from sheg.inference.load import load_model

    out = tmp_path / "model"
    assert train([takes, "-o", out, *COMMON, "--steps", "1"]) == 0
    mean_vel = tmp_path / "mean_vel.npy"
    np.save(mean_vel, np.full(55, 0.1, dtype=np.float32))
    model = load_model(str(out), device="cpu")

    def mismatched(others):
        rows = evaluate(model, str(takes / "a.wav"), seeds=(0,), other_audio=others, mean_vel=str(mean_vel), steps=2)
        return rows[0]["BC mismatched audio"]

    one, two = mismatched(str(takes / "b.wav")), mismatched([str(takes / "a.wav")])
    both = mismatched([str(takes / "b.wav"), str(takes / "a.wav")])
    assert np.isfinite(one) and both == pytest.approx((one + two) / 2)



def test_mirror_augmentation_reflects_the_body_and_keeps_validation_on_captured_takes(takes, tmp_path):
    from sheg.motion import skeleton
    from sheg.data.audio import AudioFeatureSpec
    from sheg.data.windows import build_training_data
    from sheg.nets.diffgesture import DiffGestureConfig
    from sheg.train.diffgesture import build_dir_vec_data

    rng = np.random.default_rng(0)
    poses = rng.normal(0.0, 0.4, (6, 165))
    mirrored = skeleton.mirror_poses(poses)
    assert np.array_equal(skeleton.mirror_poses(mirrored), poses)
    a, b = skeleton.forward_kinematics(poses), skeleton.forward_kinematics(mirrored)
    assert np.allclose(b[:, list(skeleton.MIRROR_JOINTS)] * (-1.0, 1.0, 1.0), a)  # a reflection of the body

    spec = AudioFeatureSpec(sample_rate=18000, hop_length=600, log=True)
    plain = build_training_data(takes, spec, 30.0, 32, 1, 1.5)
    both = build_training_data(takes, spec, 30.0, 32, 1, 1.5, mirror=True)
    assert len(both.train) == 2 * len(plain.train) and len(both.val) == len(plain.val)
    assert [s["name"] for s in both.sources] == [s["name"] for s in plain.sources]
    dg = DiffGestureConfig(pose_dim=126, hidden=32, depth=2, heads=4)
    plain_dg = build_dir_vec_data(takes, dg, "ted43", 1.5)
    both_dg = build_dir_vec_data(takes, dg, "ted43", 1.5, mirror=True)
    assert len(both_dg.train) == 2 * len(plain_dg.train) and len(both_dg.val) == len(plain_dg.val)
    assert train([takes, "-o", tmp_path / "run", *COMMON, "--mirror", "--steps", "1"]) == 0
    assert json.loads((tmp_path / "run" / "model.json").read_text())["source"]["settings"]["mirror"] is True
