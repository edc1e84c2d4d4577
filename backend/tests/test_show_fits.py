"""SHOW/TalkSHOW fits (.pkl) as training data: read in place from ../shared/data/show without running code, hands
marked unknown and left out of the statistics and the loss."""

import glob
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from sheg.data.audio import AudioFeatureSpec
from sheg.data.show_fits import HAND_JOINTS, read_show_fit
from sheg.data.windows import build_training_data, find_takes, read_motion
from sheg.diffusion.gaussian import NoiseSchedule, diffusion_loss
from sheg.errors import BadInput
from sheg.motion.layouts import SHOW, show_known_channels

SHOW_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "show"
FITS = sorted(glob.glob(str(SHOW_DIR / "*" / "*" / "*.pkl")) + glob.glob(str(SHOW_DIR / "conan_tfg" / "*.pkl")))
needs_show = pytest.mark.skipif(not FITS, reason="the shared SHOW fits are not available")


@needs_show
def test_every_shared_fit_reads_with_its_parameters_in_smplx_order():
    for path in FITS:
        poses, expressions, known = read_show_fit(path)
        frames = len(poses)
        assert poses.shape == (frames, 165) and expressions.shape == (frames, 100) and frames >= 60
        joints = poses.reshape(frames, 55, 3)
        assert np.all(joints[:, list(HAND_JOINTS)] == 0) and not known[list(HAND_JOINTS)].any() and known[:25].all()
        np.testing.assert_array_equal(joints[:, 0], np.repeat(joints[:1, 0], frames, axis=0))  # root fixed
        assert np.abs(joints[:, 1:22]).max() > 0.05 and np.abs(joints[:, 22]).max() > 0.01  # body and jaw move


@needs_show
def test_the_fit_values_are_the_files_own():
    """Against the arrays as DataUnpickler rebuilds them (torch objects inert), independent of the reader's layout."""
    from sheg.io.safe_unpickle import DataUnpickler

    path = FITS[0]
    with open(path, "rb") as f:
        fit = DataUnpickler(f).load()
    poses, expressions, _ = read_show_fit(path)
    np.testing.assert_allclose(poses[:, 3:66], fit["body_pose_axis"], atol=1e-7)
    np.testing.assert_allclose(poses[:, 66:69], fit["jaw_pose"], atol=1e-7)
    np.testing.assert_allclose(expressions, fit["expression"], atol=1e-7)


def test_bad_fits_are_one_line_errors_and_never_run_code(tmp_path):
    class Marker:
        def __reduce__(self):
            return (open, (str(tmp_path / "PWNED"), "w"))

    cases = {"truncated.pkl": b"\x80\x04\x95", "list.pkl": pickle.dumps([1, 2]),
             "no-jaw.pkl": pickle.dumps({"expression": np.zeros((5, 100), np.float32)}),
             "code.pkl": pickle.dumps({"expression": Marker()})}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadInput) as info:
            read_show_fit(str(tmp_path / name))
        assert "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_known_channels_follow_the_known_joints():
    known = np.ones(55, bool)
    known[list(HAND_JOINTS)] = False
    channels = show_known_channels(known)
    assert channels.shape == (SHOW.dim,) and channels[:39].all() and not channels[39:129].any() and channels[129:].all()
    assert show_known_channels(np.ones(55, bool)).all()


@needs_show
def test_training_data_mixes_takes_and_fits_with_hands_masked(tmp_path):
    oliver = sorted(glob.glob(str(SHOW_DIR / "oliver" / "*" / "*.pkl")))[:2]
    pairs = find_takes([str(SHOW_DIR / "oliver")])
    assert len(pairs) == 4 and all(p.endswith(".pkl") and a.endswith(".wav") for p, a in pairs)
    spec = AudioFeatureSpec(sample_rate=18000, hop_length=600, n_fft=2048, n_mels=128)
    data = build_training_data(oliver, spec, fps=30.0, window=32, stride=16, holdout_seconds=2.0)
    vec, mel, hub, known = data.train.gather([0, 1])
    assert known.shape == (2, 1, SHOW.dim) and known[:, 0, :39].all() and not known[:, 0, 39:129].any()
    # hand values no take holds: mean 0, std 1 (untouched by the zeros the reader puts there)
    assert np.all(data.mean[39:129] == 0) and np.all(data.std[39:129] == 1)
    assert read_motion(oliver[0]).fps == 30.0


@needs_show
def test_the_jaw_of_fits_can_be_left_out_of_the_loss_and_captured_jaws_stay(tmp_path):
    from test_train import write_take

    write_take(tmp_path, "captured", 3.0, seed=3)
    fit = sorted(glob.glob(str(SHOW_DIR / "oliver" / "*" / "*.pkl")))[0]
    spec = AudioFeatureSpec(sample_rate=18000, hop_length=600, n_fft=2048, n_mels=128)
    jaw = slice(SHOW.gesture_dim, SHOW.gesture_dim + 3)
    kept = build_training_data([fit, str(tmp_path)], spec, fps=30.0, window=32, stride=16, holdout_seconds=1.0)
    left = build_training_data([fit, str(tmp_path)], spec, fps=30.0, window=32, stride=16, holdout_seconds=1.0,
                               show_jaw=False)
    known = {t.name: t.known for t in left.train.takes}
    fit_name = os.path.splitext(os.path.basename(fit))[0]
    assert not known[fit_name][jaw].any() and known[fit_name][:39].all() and known[fit_name][132:].all()
    assert known["captured"] is None  # the captured take keeps every value, its jaw too
    assert {t.name: t.known for t in kept.train.takes}[fit_name][jaw].all()
    # the jaw's statistics now come from the captured take alone
    captured = build_training_data([str(tmp_path)], spec, fps=30.0, window=32, stride=16, holdout_seconds=1.0)
    assert np.allclose(left.mean[jaw], captured.mean[jaw]) and not np.allclose(kept.mean[jaw], captured.mean[jaw])


@needs_show
def test_fine_tuning_starts_from_a_model_and_keeps_its_normalisation(tmp_path):
    from sheg.cli import build_parser
    from sheg.io.checkpoint import load_model_dir, read_model_meta

    clips = sorted(glob.glob(str(SHOW_DIR / "oliver" / "*" / "*.pkl")))

    def train(*argv):
        args = build_parser().parse_args(["train", *map(str, argv), "--config", "tiny", "--batch", "4",
                                          "--holdout-seconds", "2", "--log-every", "1", "--val-every", "0",
                                          "--threads", "1", "--device", "cpu"])
        return args.func(args)

    base, tuned = tmp_path / "base", tmp_path / "tuned"
    assert train(clips[0], "-o", base, "--steps", "2") == 0
    # zero steps from --init-from: the very weights and statistics of the starting model
    assert train(clips[1], "-o", tuned, "--steps", "0", "--init-from", base, "--no-show-jaw") == 0
    a, _ = load_model_dir(str(base), "cpu")
    b, _ = load_model_dir(str(tuned), "cpu")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert read_model_meta(tuned)["stats"] == read_model_meta(base)["stats"]
    settings = read_model_meta(tuned)["source"]["settings"]
    assert settings["init_from"] == str(base) and settings["show_jaw"] is False
    assert train(clips[1], "-o", tmp_path / "more", "--steps", "2", "--init-from", base) == 0
    c, _ = load_model_dir(str(tmp_path / "more"), "cpu")
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    with pytest.raises(BadInput, match="--init-from .*no readable model.json"):
        train(clips[1], "-o", tmp_path / "x", "--steps", "1", "--init-from", tmp_path / "missing")


def test_the_loss_ignores_unknown_values():
    schedule = NoiseSchedule(1000)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 8, 6, generator=gen)
    noise = torch.randn(2, 8, 6, generator=gen)
    t = torch.tensor([10, 500])
    known = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0]).reshape(1, 1, 6)

    def denoiser(x_t, tt):
        return x_t * 0.3

    base = diffusion_loss(denoiser, x0, schedule, t=t, noise=noise, known=known)
    changed = x0.clone()
    changed[..., 4:] += 5.0  # what the file does not hold may be anything
    again = diffusion_loss(denoiser, changed, schedule, t=t, noise=noise, known=known)
    for term in ("eps_mse", "velocity", "huber"):
        assert torch.allclose(base[term], again[term], atol=1e-6), term
    # with every value known the mask changes nothing
    full = diffusion_loss(denoiser, x0, schedule, t=t, noise=noise)
    ones = diffusion_loss(denoiser, x0, schedule, t=t, noise=noise, known=torch.ones(1, 1, 6))
    for term in ("loss", "eps_mse", "velocity", "huber"):
        assert torch.allclose(full[term], ones[term], atol=1e-6), term


@needs_show
def test_train_on_fits_and_score_against_a_fit_without_its_hands(tmp_path, capsys):
    """`sheg train` on two oliver fits (tiny config, a few steps), then `sheg eval` with a fit as the reference:
    the rows leave out the hands, which the reference does not hold."""
    from sheg.cli import build_parser
    from sheg.io.checkpoint import read_model_meta

    clips = sorted(glob.glob(str(SHOW_DIR / "oliver" / "*" / "*.pkl")))
    out = tmp_path / "model"
    args = build_parser().parse_args(["train", clips[0], clips[1], "-o", str(out), "--config", "tiny", "--batch",
                                      "4", "--steps", "3", "--holdout-seconds", "2", "--log-every", "1",
                                      "--val-every", "0", "--threads", "1", "--device", "cpu"])
    assert args.func(args) == 0
    assert len(read_model_meta(out)["stats"]["mean"]) == SHOW.dim
    args = build_parser().parse_args(["eval", str(out), "--audio", clips[2][:-4] + ".wav", "--reference", clips[2],
                                      "--seeds", "1", "--steps", "2", "--device", "cpu"])
    assert args.func(args) == 0
    table = capsys.readouterr().out.strip().splitlines()
    assert any("reference (ground truth)" in line for line in table)


MEAN_VEL = SHOW_DIR.parent / "emage" / "mean_vel_smplxflame_30.npy"


@needs_show
def test_eval_scores_a_set_of_clips_with_the_others_as_mismatched_audio(tiny_model_dir, capsys):
    from sheg.cli import build_parser

    args = build_parser().parse_args(["eval", tiny_model_dir, "--clips", str(SHOW_DIR / "oliver"), "--seeds", "1",
                                      "--steps", "2", "--device", "cpu", "--mean-vel", str(MEAN_VEL), "--json"])
    assert args.func(args) == 0
    import json

    rows = json.loads(capsys.readouterr().out)
    labels = [r["take"] for r in rows]
    assert len(labels) == 2 * 4 + 2 and labels[-2:] == ["4 clips: generated", "4 clips: reference"]
    for row in rows:
        assert np.isclose(row["BC gap"], row["BC"] - row["BC mismatched audio"])
        assert row["speed mean (m/s)"] >= 0
    # the generated jaw is also compared with the captured speaker's (the reference has no such row of its own)
    assert all(-1.0 <= r["jaw-reference corr"] <= 1.0 for r in rows if "generated" in r["take"])
    assert all("jaw-reference corr" not in r for r in rows if "reference" in r["take"])
    with pytest.raises(BadInput, match="--audio FILE .* or --clips FOLDER"):
        bad = build_parser().parse_args(["eval", tiny_model_dir, "--device", "cpu"])
        bad.func(bad)
