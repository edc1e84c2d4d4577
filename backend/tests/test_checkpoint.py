"""Model folders, official DiffSHEG checkpoint import (synthesized full-size checkpoints) and statistics."""

import json
import shutil

import numpy as np
import pytest
import torch

from official_format import (SHARED_DATA, listing_path, rewrite_official_tar, write_official_stats,
                             write_official_tar)
from sheg.io.checkpoint import (MODEL_JSON, MODEL_WEIGHTS, import_diffsheg, load_model_dir, official_stats,
                             read_model_meta, read_official_checkpoint, save_model_dir)
from sheg.errors import BadInput, CheckpointError
from sheg.nets.unieg import UniEG, UniEGConfig

torch.set_num_threads(1)

needs_listing = pytest.mark.skipif(not listing_path("show").is_file(), reason="../shared/docs not available")
STATS = SHARED_DATA / "diffsheg_stats"
needs_stats = pytest.mark.skipif(not STATS.is_dir(), reason="../shared/data/diffsheg_stats not available")


def tiny_model(seed=0, **overrides):
    torch.manual_seed(seed)
    values = dict(gesture_dim=9, expression_dim=6, audio_dim=8, style_dim=3, classifier_free=True, latent_dim=32,
                  ff_size=64, num_layers=2, num_heads=4, aud_latent_dim=16, hubert_dim=12, hubert_latent=8)
    values.update(overrides)
    return UniEG(UniEGConfig(**values)).eval()


def tiny_meta(net_dim=15, speakers=3):
    return {
        "name": "tiny", "layout": "show", "fps": 30, "window": 88, "overlap": 10,
        "audio": {"sample_rate": 18000, "hop_length": 600, "n_fft": 2048, "n_mels": 8, "power": 2.0, "log": False,
                  "hubert": {"model": "facebook/hubert-large-ls960-ft", "sample_rate": 16000}},
        "stats": {"mean": np.zeros(net_dim, np.float32), "std": np.ones(net_dim, np.float32)},
        "speakers": [f"s{i}" for i in range(speakers)], "default_style": 0, "guidance_scale": 1.15,
        "sampler": {"steps": 25, "jump_length": 3, "jump_n_sample": 5}, "source": "test", "license": "test",
    }


def assert_same_weights(model, state_dict):
    mine = model.state_dict()
    assert mine.keys() == state_dict.keys()
    for k, v in state_dict.items():
        assert torch.equal(mine[k], v), k


# ---------------------------------------------------------------------------------------------------------------
# model folders


def test_model_folder_round_trip(tmp_path):
    model = tiny_model()
    folder = save_model_dir(tmp_path / "m", model, tiny_meta())
    assert sorted(p.name for p in folder.iterdir()) == [MODEL_JSON, MODEL_WEIGHTS]
    loaded, meta = load_model_dir(folder)
    assert_same_weights(loaded, model.state_dict())
    assert not loaded.training and loaded.count_parameters() == model.count_parameters()
    assert meta["format"] == "sheg-model" and meta["format_version"] == 1 and meta["arch"] == "unieg"
    assert UniEGConfig.from_dict(meta["config"]) == model.config
    assert meta["stats"]["std"] == [1.0] * 15
    assert read_model_meta(folder / MODEL_JSON) == meta
    x = torch.randn(1, 12, 15)
    args = dict(t=torch.tensor([3]), x0_coeffs=(1.0, 0.5), mel=torch.rand(1, 12, 8), hubert=torch.randn(1, 12, 12))
    with torch.no_grad():
        assert torch.equal(loaded(x, **args), model(x, **args))
    # half-precision storage loads back as float32
    save_model_dir(tmp_path / "h", model, tiny_meta(), dtype=torch.float16)
    half, _ = load_model_dir(tmp_path / "h")
    assert half.encoder_ges.out.weight.dtype == torch.float32
    assert torch.allclose(half.encoder_ges.out.weight, model.encoder_ges.out.weight, atol=1e-3)


def test_model_folder_replaces_a_previous_model_but_not_other_folders(tmp_path):
    save_model_dir(tmp_path / "m", tiny_model(0), tiny_meta())
    save_model_dir(tmp_path / "m", tiny_model(1), tiny_meta())
    assert_same_weights(load_model_dir(tmp_path / "m")[0], tiny_model(1).state_dict())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="holds other files"):
        save_model_dir(tmp_path / "docs", tiny_model(), tiny_meta())
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "m"]  # no temporary leftovers


def test_failed_save_leaves_nothing(tmp_path):
    bad = tiny_meta()
    bad["stats"]["mean"] = [0.0] * 3
    with pytest.raises(CheckpointError, match="stats.mean must be a list of 15"):
        save_model_dir(tmp_path / "m", tiny_model(), bad)
    incomplete = tiny_meta()
    del incomplete["speakers"], incomplete["sampler"]
    with pytest.raises(CheckpointError, match="missing keys speakers, sampler"):
        save_model_dir(tmp_path / "m", tiny_model(), incomplete)
    assert list(tmp_path.iterdir()) == []


def test_broken_model_folders_raise_checkpoint_error(tmp_path):
    folder = save_model_dir(tmp_path / "m", tiny_model(), tiny_meta())
    with pytest.raises(CheckpointError, match="no model folder"):
        load_model_dir(tmp_path / "nothing")

    text = (folder / MODEL_JSON).read_text()
    (folder / MODEL_JSON).write_text(text[: len(text) // 2])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model_dir(folder)

    doc = json.loads(text)
    doc["config"]["latent_dim"] = 64
    (folder / MODEL_JSON).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"does not match the UniEG network: .*wrong-shaped"):
        load_model_dir(folder)

    doc = json.loads(text)
    doc["config"]["num_layers"] = 3
    (folder / MODEL_JSON).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=r"\d+ missing: encoder_exp.temporal_decoder_blocks.2"):
        load_model_dir(folder)

    doc["config"]["num_layers"] = 2
    doc["config"]["flavour"] = "x"
    (folder / MODEL_JSON).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="unknown UniEG config keys: flavour"):
        load_model_dir(folder)

    (folder / MODEL_JSON).write_text(text)
    data = (folder / MODEL_WEIGHTS).read_bytes()
    (folder / MODEL_WEIGHTS).write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_model_dir(folder)
    (folder / MODEL_WEIGHTS).unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_model_dir(folder)


# ---------------------------------------------------------------------------------------------------------------
# statistics


@needs_stats
def test_official_show_stats_from_the_real_file():
    raw = np.load(STATS / "SHOW" / "talkshow_mean_std.npy", allow_pickle=True).item()  # trusted shared file
    for path in (STATS / "SHOW" / "talkshow_mean_std.npy", STATS / "SHOW", STATS):
        mean, std = official_stats("show", path)
        assert mean.shape == std.shape == (232,) and mean.dtype == std.dtype == np.float32
    pm, ps = raw["pose_mean"], raw["pose_std"]
    # spine1 = SMPL-X body joint 3 sits at 12 + 3*(3-1) in the TalkSHOW vector; joints 12..21 at 45:75
    np.testing.assert_allclose(mean[0:3], pm[18:21], rtol=1e-6)
    np.testing.assert_allclose(std[6:9], ps[36:39], rtol=1e-6)
    np.testing.assert_allclose(mean[9:39], pm[45:75], rtol=1e-6)
    np.testing.assert_allclose(std[39:129], ps[75:165], rtol=1e-6)
    np.testing.assert_allclose(mean[129:132], pm[0:3], rtol=1e-6)
    np.testing.assert_allclose(std[129:132], pm[0:3], rtol=1e-6)  # the official jaw-std quirk
    np.testing.assert_allclose(std[132:], raw["expression_std"], rtol=1e-6)
    np.testing.assert_allclose(std[129:132], [0.0476, 0.0097, 0.0042], atol=1e-4)


@needs_stats
def test_official_beat_stats_from_the_real_folder():
    mean, std = official_stats("beat", STATS / "BEAT")
    assert mean.shape == std.shape == (192,)
    np.testing.assert_allclose(mean[:141], np.load(STATS / "BEAT" / "axis_angle_mean.npy"), rtol=1e-6)
    np.testing.assert_allclose(std[141:], np.load(STATS / "BEAT" / "json_std.npy"), rtol=1e-6)
    assert np.array_equal(official_stats("beat", STATS / "BEAT" / "json_mean.npy")[0], mean)  # a file: its folder


def test_bad_statistics_raise_clear_errors(tmp_path):
    with pytest.raises(BadInput, match="no statistics at"):
        official_stats("show", tmp_path / "missing.npy")
    with pytest.raises(BadInput, match="no talkshow_mean_std.npy"):
        official_stats("show", tmp_path)
    with pytest.raises(BadInput, match="no axis_angle_mean.npy"):
        official_stats("beat", tmp_path)
    with pytest.raises(BadInput, match="unknown profile 'ted'"):
        official_stats("ted", tmp_path)
    np.save(tmp_path / "talkshow_mean_std.npy", {"pose_mean": np.zeros(55), "pose_std": np.ones(55),
                                                 "expression_mean": np.zeros(100), "expression_std": np.ones(100)})
    with pytest.raises(BadInput, match=r"pose_mean has shape \(55,\), expected \(165,\)"):
        official_stats("show", tmp_path)
    write_official_stats(tmp_path / "beat", "beat")
    np.save(tmp_path / "beat" / "json_std.npy", np.zeros(51))
    with pytest.raises(BadInput, match="zero or negative"):
        official_stats("beat", tmp_path / "beat")


def test_stats_pickle_is_restricted_to_numpy(tmp_path):
    import pickle

    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "talkshow_mean_std.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(np.array(Payload(), dtype=object), f, protocol=3)
    with pytest.raises(BadInput, match="refusing to load builtins.print"):
        official_stats("show", tmp_path)


# ---------------------------------------------------------------------------------------------------------------
# official checkpoints (full size: ~620 MB each, written once per module)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    folder = tmp_path_factory.mktemp("official")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)  # do not leave GBs in pytest's kept temp folders


@pytest.fixture(scope="module")
def show_tar(work):
    if not listing_path("show").is_file():
        pytest.skip("../shared/docs not available")
    return write_official_tar(work / "ckpt_e2599.tar", "show", seed=1)


@pytest.fixture(scope="module")
def beat_tar(work):
    if not listing_path("beat").is_file():
        pytest.skip("../shared/docs not available")
    return write_official_tar(work / "fgd_best.tar", "beat", seed=2, module_prefix=True)  # a DDP-saved checkpoint


@pytest.mark.parametrize("profile", ["show", "beat"])
def test_import_official_checkpoint(profile, request, work):
    tar = request.getfixturevalue(f"{profile}_tar")
    stats = write_official_stats(work / f"stats_{profile}", profile)
    out = import_diffsheg(tar, profile, stats, work / f"model_{profile}")
    try:
        model, meta = load_model_dir(out)
        assert_same_weights(model, read_official_checkpoint(tar))
        raw = torch.load(tar, map_location="cpu", weights_only=False, mmap=True)["encoder"]  # file written above
        assert torch.equal(model.state_dict()["encoder_ges.out.weight"], raw[("module." if profile == "beat" else "")
                                                                            + "encoder_ges.out.weight"])
        show = profile == "show"
        assert model.config == (UniEGConfig.official_show() if show else UniEGConfig.official_beat())
        assert (meta["layout"], meta["fps"], meta["window"], meta["overlap"]) == (
            (profile, 30, 88, 10) if show else (profile, 15, 34, 4))
        assert meta["audio"]["hop_length"] == (600 if show else 1200) and meta["audio"]["sample_rate"] == 18000
        assert meta["audio"]["hubert"] == {"model": "facebook/hubert-large-ls960-ft", "sample_rate": 16000}
        assert meta["speakers"] == (["chemistry", "conan", "oliver", "seth"] if show else [str(i) for i in range(1, 31)])
        assert (meta["default_style"], meta["guidance_scale"]) == ((0, 1.15) if show else (1, 1.0))
        assert meta["sampler"] == {"steps": 25, "jump_length": 3, "jump_n_sample": 5 if show else 2}
        assert meta["source"]["file"] == tar.name and len(meta["source"]["sha256"]) == 64
        assert meta["source"]["epoch"] == 2599 and "BSD-3-Clause" in meta["license"]
        mean, std = official_stats(profile, stats)
        assert np.array_equal(np.float32(meta["stats"]["mean"]), mean)
        assert np.array_equal(np.float32(meta["stats"]["std"]), std)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_wrong_profile_is_named(show_tar, beat_tar, work):
    stats = write_official_stats(work / "stats_beat2", "beat")
    with pytest.raises(CheckpointError, match="4 style slots and a classifier-free .* profile 'show'"):
        import_diffsheg(show_tar, "beat", stats, work / "wrong")
    show_stats = write_official_stats(work / "stats_show2", "show")
    with pytest.raises(CheckpointError, match="official BEAT checkpoint: import it with profile 'beat'"):
        import_diffsheg(beat_tar, "show", show_stats, work / "wrong")
    assert not (work / "wrong").exists()


@pytest.mark.parametrize("problem", ["missing", "wrong-shaped", "unexpected"])
def test_mismatched_official_checkpoint_is_named(problem, show_tar, work):
    def edit(sd):
        if problem == "missing":
            del sd["encoder_ges.temporal_decoder_blocks.3.ffn.linear1.bias"]
        elif problem == "wrong-shaped":
            sd["encoder_exp.out.weight"] = torch.zeros(100, 512)
        else:
            sd["encoder_ges.text_encoder.weight"] = torch.zeros(2)
        return sd

    broken = rewrite_official_tar(show_tar, work / f"{problem}.tar", edit)
    try:
        expected = {
            "missing": r"1 missing: encoder_ges.temporal_decoder_blocks.3.ffn.linear1.bias",
            "wrong-shaped": r"1 wrong-shaped \(file vs network\): encoder_exp.out.weight \(100, 512\) vs \(103, 512\)",
            "unexpected": r"1 unexpected: encoder_ges.text_encoder.weight",
        }[problem]
        with pytest.raises(CheckpointError, match=f"{problem}.tar does not match the UniEG network: {expected}"):
            import_diffsheg(broken, "show", write_official_stats(work / "stats_show3", "show"), work / "bad")
        assert not (work / "bad").exists()
    finally:
        broken.unlink()


def test_truncated_official_checkpoint(show_tar, work):
    cut = work / "cut.tar"
    with open(show_tar, "rb") as src:
        cut.write_bytes(src.read(5_000_000))
    with pytest.raises(CheckpointError, match="cut.tar is a truncated or damaged PyTorch checkpoint .*ckpt_e2599.tar"):
        read_official_checkpoint(cut)


@pytest.mark.parametrize("kind", ["wav", "text", "html", "empty", "npy", "gzip"])
def test_non_checkpoint_files_are_described(kind, tmp_path):
    import gzip
    import wave

    path = tmp_path / f"file.{kind}"
    if kind == "wav":
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\0\0" * 1600)
    elif kind == "text":
        path.write_text("these are not the weights you are looking for\n" * 20)
    elif kind == "html":
        path.write_text("<!DOCTYPE html><html><body>Google Drive - virus scan warning</body></html>")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "npy":
        np.save(path, np.zeros(3))
        path = path.with_suffix(".npy")
    else:
        path.write_bytes(gzip.compress(b"data"))
    described = {"wav": "a WAV audio file", "text": "a text file", "html": "an HTML page", "empty": "an empty file",
                 "npy": "a NumPy .npy file", "gzip": "a gzip archive"}[kind]
    with pytest.raises(CheckpointError, match=f"is {described}.*not a PyTorch checkpoint: expected an official "
                                              "DiffSHEG checkpoint such as ckpt_e2599.tar"):
        read_official_checkpoint(path)


def test_torch_files_that_are_not_official_checkpoints(tmp_path):
    torch.save({"model": {"w": torch.zeros(1)}, "epoch": 3}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"without an 'encoder' entry \(it holds: epoch, model\)"):
        read_official_checkpoint(tmp_path / "other.pt")

    torch.save({"encoder": {"w": torch.zeros(1)}, "opt": torch.optim.SGD}, tmp_path / "pickled.tar")
    with pytest.raises(CheckpointError, match=r"holds Python objects \(torch.optim.sgd.SGD\) that safe loading"):
        read_official_checkpoint(tmp_path / "pickled.tar")

    torch.save({"encoder": {"w": torch.zeros(1)}}, tmp_path / "legacy.tar", _use_new_zipfile_serialization=False)
    assert list(read_official_checkpoint(tmp_path / "legacy.tar")) == ["w"]  # old non-zip format still reads

    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        read_official_checkpoint(tmp_path / "absent.tar")


# ---------------------------------------------------------------------------------------------------------------
# one-step import: detected profile, statistics straight from data.tar.gz, JSON progress (what the add-on runs)


@pytest.fixture(scope="module")
def data_archive(work):
    from official_format import write_official_archive

    show = write_official_stats(work / "archive_show", "show")
    beat = write_official_stats(work / "archive_beat", "beat")
    return write_official_archive(work / "data.tar.gz", show, beat), show, beat


@pytest.mark.parametrize("profile", ["show", "beat"])
def test_cli_detects_the_profile_and_reads_the_stats_from_data_tar_gz(profile, request, work, data_archive):
    from sheg_cli import run_cli

    tar = request.getfixturevalue(f"{profile}_tar")
    archive, show_stats, beat_stats = data_archive
    out = work / f"detected_{profile}"
    proc = run_cli("import-diffsheg", tar, "--stats", archive, "-o", out, "--json")
    try:
        assert proc.returncode == 0, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        fractions = [e["fraction"] for e in events if e["event"] == "progress"]
        assert len(fractions) >= 4 and fractions == sorted(fractions)
        done = events[-1]
        assert done["event"] == "done" and done["profile"] == profile and done["out"] == str(out)
        assert done["fps"] == (30 if profile == "show" else 15) and "non-commercial" in done["license"]
        meta = read_model_meta(out)
        mean, std = official_stats(profile, show_stats if profile == "show" else beat_stats)
        assert np.array_equal(np.float32(meta["stats"]["mean"]), mean)
        assert np.array_equal(np.float32(meta["stats"]["std"]), std)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def test_wrong_or_damaged_files_are_one_line_and_write_nothing(work, show_tar, data_archive):
    from sheg_cli import run_cli

    archive = data_archive[0]
    damaged = work / "damaged.tar"
    damaged.write_bytes(show_tar.read_bytes()[:5_000_000])
    not_stats = work / "not_stats.tar.gz"
    import tarfile

    with tarfile.open(not_stats, "w:gz") as t:
        t.add(__file__, "readme.py")
    cases = [(damaged, archive, "damaged.tar is a truncated or damaged PyTorch checkpoint"),
             (archive, archive, "data.tar.gz is a gzip archive (unpack it first), not a PyTorch checkpoint"),
             (show_tar, not_stats, "not_stats.tar.gz holds no talkshow_mean_std.npy")]
    for ckpt, stats, message in cases:
        out = work / "never"
        proc = run_cli("import-diffsheg", ckpt, "--stats", stats, "-o", out, "--json")
        assert proc.returncode == 2 and not out.exists(), proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr, proc.stderr


def test_a_checkpoint_of_neither_profile_is_named(work):
    from sheg.io.checkpoint import detect_profile

    state = {"encoder_exp.pid_embed.0.weight": torch.zeros(2048, 7)}
    with pytest.raises(CheckpointError, match="7 style slots and no classifier-free .* matches neither"):
        detect_profile(state, "x.tar")
    with pytest.raises(CheckpointError, match="no encoder_exp.pid_embed.0.weight"):
        detect_profile({}, "x.tar")
