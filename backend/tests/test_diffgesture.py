"""DiffGesture network, training helpers, model folders, official-checkpoint import and long-audio generation.

Tiny configs (hidden 32, 2 blocks, 20 diffusion steps) keep everything on the CPU in a few seconds; the official
sizes are only built to check parameter names and shapes.
"""

import argparse
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import soundfile as sf
import torch

from sheg.nets.diffgesture import DiffGestureConfig, DiffGestureDenoiser, DiffGestureNet, seed_context
from sheg.io.diffgesture_dir import diffgesture_meta, import_diffgesture, load_diffgesture_dir, save_diffgesture_dir
from sheg.train.diffgesture import diffgesture_training_loss, make_training_windows
from sheg.inference.diffgesture_model import load_diffgesture_model
from sheg.diffusion.gaussian import NoiseSchedule, randn
from sheg.errors import BadInput, Cancelled, CheckpointError
from sheg.io.safe_unpickle import Placeholder, UnsafePickle, placeholder_state, restricted_loads, safe_torch_load
from sheg.diffusion.samplers import ddpm_sample, guided
from sheg.motion.ted import TED10, generated_joints

torch.set_num_threads(1)

SR, FPS = 16000, 15


def tiny_config(**overrides):
    values = dict(pose_dim=27, hidden=32, depth=2, heads=4, diffusion_steps=20)
    values.update(overrides)
    return DiffGestureConfig(**values)


def tiny_net(seed=0, **overrides):
    torch.manual_seed(seed)
    return DiffGestureNet(tiny_config(**overrides)).eval()


def speech(seconds, seed=0):
    """A voiced-like test signal: a few harmonics with a syllable-rate envelope, float32 at 16 kHz."""
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    wave = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((140, 280, 420, 900)))
    wave *= 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    return (0.2 * wave + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    net = tiny_net()
    meta = diffgesture_meta(net.config, "ted10", TED10.mean_dir_vec, name="tiny-diffgesture", source="random")
    return save_diffgesture_dir(tmp_path_factory.mktemp("dg") / "model", net, meta)


@pytest.fixture(scope="module")
def model(model_dir):
    return load_diffgesture_model(model_dir, "cpu")


# -- the network -----------------------------------------------------------------------------------------------------

def official_spec(pose_dim, hidden, depth=8, n_poses=34):
    """Names and shapes of an official PoseDiffusion state_dict (pose_diffusion.py, diffusion_util.py, timm Block)."""
    ctx = 32 + pose_dim + 1
    spec = {"null_cond_emb": (1, ctx)}
    for idx, out, inp in ((0, 16, 1), (3, 32, 16), (6, 64, 32), (9, 32, 64)):
        spec[f"audio_encoder.feat_extractor.{idx}.weight"] = (out, inp, 15)
        spec[f"audio_encoder.feat_extractor.{idx}.bias"] = (out,)
    for idx, ch in ((1, 16), (4, 32), (7, 64)):
        for name in ("weight", "bias", "running_mean", "running_var"):
            spec[f"audio_encoder.feat_extractor.{idx}.{name}"] = (ch,)
        spec[f"audio_encoder.feat_extractor.{idx}.num_batches_tracked"] = ()
    n, h = "diffusion_net.net.", hidden
    spec.update({n + "linear.weight": (h, pose_dim + 3 + ctx), n + "linear.bias": (h,),
                 n + "pos_embedding": (1, n_poses, h)})
    for group in ("blocks", "decoder_blocks"):
        for i in range(depth // 2):
            p = f"{n}{group}.{i}."
            spec.update({p + "norm1.weight": (h,), p + "norm1.bias": (h,), p + "attn.qkv.weight": (3 * h, h),
                         p + "attn.qkv.bias": (3 * h,), p + "attn.proj.weight": (h, h), p + "attn.proj.bias": (h,),
                         p + "norm2.weight": (h,), p + "norm2.bias": (h,), p + "mlp.fc1.weight": (4 * h, h),
                         p + "mlp.fc1.bias": (4 * h,), p + "mlp.fc2.weight": (h, 4 * h), p + "mlp.fc2.bias": (h,)})
    for norm in ("norm", "decoder_norm"):
        spec[f"{n}{norm}.weight"] = spec[f"{n}{norm}.bias"] = (h,)
    spec.update({n + "out.0.weight": (h // 2, h), n + "out.0.bias": (h // 2,), n + "out.2.weight": (pose_dim, h // 2),
                 n + "out.2.bias": (pose_dim,)})
    for name in ("betas", "alphas", "alpha_bars", "sigmas_flex", "sigmas_inflex"):
        spec[f"diffusion_net.var_sched.{name}"] = (501,)
    return spec


def random_state_dict(spec, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.tensor(7, dtype=torch.long) if k.endswith("num_batches_tracked") else
                torch.rand(shape, generator=g) * 0.1 + (1.0 if k.endswith("running_var") else 0.0))
            for k, shape in spec.items()}


@pytest.mark.parametrize("config, params", [(DiffGestureConfig.official_ted(), 6.46e6),
                                            (DiffGestureConfig.official_expressive(), 25.6e6)], ids=["ted", "expr"])
def test_official_names_load_strictly(config, params):
    net = DiffGestureNet(config)
    spec = official_spec(config.pose_dim, config.hidden)
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == spec
    assert abs(sum(p.numel() for p in net.parameters()) - params) / params < 0.01
    state = random_state_dict(spec)
    net.load_state_dict(state, strict=True)
    assert torch.equal(net.null_cond_emb, state["null_cond_emb"])


def test_official_schedule_buffers_and_time_signal():
    net = tiny_net()
    sched = net.diffusion_net.var_sched
    assert sched.betas.shape == (21,) and float(sched.betas[0]) == 0.0
    ours = NoiseSchedule(20)
    np.testing.assert_allclose(sched.betas[1:].numpy(), ours.betas, rtol=1e-6)  # official t = ours + 1
    np.testing.assert_allclose(sched.alpha_bars[1:].numpy(), ours.alphas_cumprod, rtol=1e-5)
    np.testing.assert_allclose(sched.sigmas_inflex[2:].numpy() ** 2, ours.posterior_variance[1:], rtol=1e-3)
    x = torch.randn(1, 34, 27)
    seed, flag = seed_context(None, 1, net.config)
    feat = torch.randn(1, 34, 32)
    with torch.no_grad():
        a, b = net(x, torch.tensor([0]), seed, flag, feat), net(x, torch.tensor([19]), seed, flag, feat)
        assert not torch.allclose(a, b)
        with pytest.raises(BadInput, match="0-based"):
            net(x, torch.tensor([20]), seed, flag, feat)


def test_wav_encoder_gives_one_feature_per_frame():
    net = DiffGestureNet(DiffGestureConfig.official_ted()).eval()
    assert net.config.audio_samples == 36267
    with torch.no_grad():
        assert net.encode_audio(torch.randn(2, 36267)).shape == (2, 34, 32)
        assert net.encode_audio(torch.randn(1, 36266)).shape == (1, 34, 32)  # the official generate_gestures length


def test_output_head_is_linear():
    head = tiny_net().diffusion_net.net.out
    assert head[1].negative_slope == 1.0  # the official LeakyReLU(True) quirk
    h = torch.randn(5, 32)
    with torch.no_grad():
        np.testing.assert_allclose(head(-h) + head(h), 2 * head(torch.zeros(1, 32)).expand(5, -1), atol=1e-5)


def test_null_context_replaces_seed_flag_and_audio():
    net = tiny_net()
    x, t = torch.randn(2, 34, 27), torch.tensor([3, 3])
    seed_a, flag_a = seed_context(torch.randn(2, 4, 27), 2, net.config)
    seed_b, flag_b = seed_context(None, 2, net.config)
    feat_a, feat_b = torch.randn(2, 34, 32), torch.randn(2, 34, 32)
    null = torch.tensor([True, False])
    with torch.no_grad():
        out_a = net(x, t, seed_a, flag_a, feat_a, null)
        out_b = net(x, t, seed_b, flag_b, feat_b, null)
    torch.testing.assert_close(out_a[0], out_b[0])  # the null item ignores its context
    assert not torch.allclose(out_a[1], out_b[1])
    assert flag_a[:, :4].eq(1).all() and flag_a[:, 4:].eq(0).all() and not flag_b.any()
    with pytest.raises(BadInput, match="seed poses"):
        seed_context(torch.zeros(1, 5, 27), 1, net.config)


def test_guidance_one_is_the_conditional_pass_and_batched_cfg_matches_guided():
    net = tiny_net()
    seed, flag = seed_context(torch.randn(1, 4, 27), 1, net.config)
    feat = torch.randn(1, 34, 32)
    x, t = torch.randn(3, 34, 27), torch.tensor([5, 5, 5])
    with torch.no_grad():
        plain = DiffGestureDenoiser(net, seed, flag, feat, guidance=1.0)
        torch.testing.assert_close(plain(x, t), net(x, t, seed.expand(3, -1, -1), flag.expand(3, -1, -1),
                                                    feat.expand(3, -1, -1)))
        batched = DiffGestureDenoiser(net, seed, flag, feat, guidance=1.15)
        composed = guided(batched.cond, batched.uncond, 1.15)
        torch.testing.assert_close(batched(x, t), composed(x, t), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(batched(x, t), plain(x, t))


# -- training helpers ------------------------------------------------------------------------------------------------

def test_training_loss_backpropagates_through_every_part():
    net = tiny_net().train()
    schedule = NoiseSchedule(20)
    g = torch.Generator().manual_seed(0)
    batch = {"poses": 0.1 * torch.randn(3, 34, 27, generator=g), "audio": torch.randn(3, 36267, generator=g)}
    out = diffgesture_training_loss(net, batch, schedule, generator=torch.Generator().manual_seed(1))
    assert out["loss"].dim() == 0 and math.isfinite(out["loss"].item())
    out["loss"].backward()
    for name in ("audio_encoder.feat_extractor.0.weight", "diffusion_net.net.linear.weight",
                 "diffusion_net.net.out.2.weight"):
        assert net.get_parameter(name).grad.abs().sum() > 0, name
    again = diffgesture_training_loss(net, batch, schedule, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(again["loss"], out["loss"])  # the generator fixes t, noise and the null mask
    with pytest.raises(BadInput, match="schedule has"):
        diffgesture_training_loss(net, batch, NoiseSchedule(500))


def test_make_training_windows_follows_the_official_cutting():
    frames, dim = 60, 27
    dirs = np.tile(np.arange(frames, dtype=np.float32)[:, None], (1, dim))
    audio = np.arange(50000, dtype=np.float32)  # shorter than the 4 s clip: the last window runs past it
    mean = np.full(dim, 0.5, np.float32)
    out = make_training_windows(dirs, audio, mean)
    assert out["poses"].shape == (3, 34, dim) and out["audio"].shape == (3, 36267)  # floor((60 - 34) / 10) + 1
    assert out["poses"][1, 0, 0] == 10 - 0.5 and out["poses"][2, 33, 5] == 53 - 0.5
    assert out["audio"][1, 0] == math.floor(10 / 60 * len(audio))
    last = out["audio"][2]  # runs past the clip: mirrored like np.pad(..., 'symmetric')
    start = math.floor(20 / 60 * len(audio))
    assert last[len(audio) - start - 1] == len(audio) - 1 and last[len(audio) - start] == len(audio) - 1
    assert make_training_windows(dirs[:20], audio, mean)["poses"].shape == (0, 34, dim)


# -- model folders and official checkpoints ---------------------------------------------------------------------------

def test_model_folder_round_trip(model_dir, tmp_path):
    net, meta = load_diffgesture_dir(model_dir)
    assert meta["arch"] == "diffgesture" and meta["layout"] == "ted10" and meta["fps"] == 15
    assert meta["stats"]["mean_dir_vec"] == pytest.approx(TED10.mean_dir_vec, abs=1e-6)
    reference = tiny_net()
    for k, v in reference.state_dict().items():
        torch.testing.assert_close(net.state_dict()[k], v)
    wrong = DiffGestureNet(tiny_config(hidden=16, heads=4))
    bad_meta = diffgesture_meta(wrong.config, "ted10", TED10.mean_dir_vec, name="x")
    folder = save_diffgesture_dir(tmp_path / "wrong", wrong, bad_meta)
    meta_path = folder / "model.json"
    meta_path.write_text(meta_path.read_text().replace('"hidden": 16', '"hidden": 32'))
    with pytest.raises(CheckpointError, match="wrong-shaped"):
        load_diffgesture_dir(folder)
    with pytest.raises(CheckpointError, match="must agree"):
        save_diffgesture_dir(tmp_path / "x", tiny_net(), diffgesture_meta(tiny_config(), "ted43", [0.0] * 27,
                                                                         name="x"))


def _register_official_modules():
    """Stand-ins for the official `model.vocab.Vocab` class, importable only while the checkpoint is written."""
    package, vocab = types.ModuleType("model"), types.ModuleType("model.vocab")

    class Vocab:
        def __init__(self, name, words, dim=4):
            self.name, self.word2index = name, {w: i for i, w in enumerate(words)}
            self.index2word = dict(enumerate(words))
            self.word_embedding_weights = np.arange(len(words) * dim, dtype=np.float32).reshape(len(words), dim)

        def __setstate__(self, state):  # would leave a trace if unpickling ran the real class
            open(os.environ["SHEG_TEST_MARKER"], "w").close()
            self.__dict__.update(state)

    Vocab.__module__, Vocab.__qualname__ = "model.vocab", "Vocab"
    vocab.Vocab, package.vocab = Vocab, vocab
    sys.modules["model"], sys.modules["model.vocab"] = package, vocab
    return Vocab


def write_official_checkpoint(path, net, mean, zip_format=True):
    Vocab = _register_official_modules()
    try:
        cfg = net.config
        args = argparse.Namespace(
            name="pose_diffusion", model="pose_diffusion", pose_dim=cfg.pose_dim, diff_hidden_dim=cfg.hidden,
            block_depth=cfg.depth, n_poses=34, n_pre_poses=4, classifier_free=True, null_cond_prob=0.1,
            motion_resampling_framerate=15, mean_dir_vec=[list(mean)], train_data_path=["data/ted_dataset/lmdb_train"],
            input_context="audio")
        checkpoint = {"args": args, "epoch": 499, "lang_model": Vocab("words", ["<pad>", "hello", "world"]),
                      "speaker_model": Vocab("speakers", ["a", "b"]), "pose_dim": cfg.pose_dim,
                      "state_dict": net.state_dict()}
        torch.save(checkpoint, path, _use_new_zipfile_serialization=zip_format)
    finally:
        del sys.modules["model.vocab"], sys.modules["model"]


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_import_official_checkpoint_without_running_its_code(tmp_path, monkeypatch, zip_format):
    marker = tmp_path / "ran"
    monkeypatch.setenv("SHEG_TEST_MARKER", str(marker))
    net = tiny_net(seed=4)
    mean = np.asarray(TED10.mean_dir_vec) * 0.9
    ckpt = tmp_path / "pose_diffusion_checkpoint_499.bin"
    write_official_checkpoint(ckpt, net, mean, zip_format)
    with pytest.raises(Exception):  # plain safe loading refuses the foreign classes
        torch.load(ckpt, weights_only=True)
    obj = safe_torch_load(ckpt)
    assert isinstance(obj["lang_model"], Placeholder) and not marker.exists()
    lang = placeholder_state(obj["lang_model"])
    assert (lang["module"], lang["name"]) == ("model.vocab", "Vocab")
    np.testing.assert_array_equal(obj["lang_model"].word_embedding_weights, np.arange(12).reshape(3, 4))
    assert obj["args"].pose_dim == 27 and obj["lang_model"].word2index["world"] == 2

    folder = import_diffgesture(ckpt, tmp_path / "imported")
    loaded, meta = load_diffgesture_dir(folder)
    assert meta["layout"] == "ted10" and meta["source"]["epoch"] == 499 and meta["guidance_scale"] == 1.15
    np.testing.assert_allclose(meta["stats"]["mean_dir_vec"], mean, atol=1e-6)
    assert loaded.config.hidden == 32 and loaded.config.depth == 2
    for k, v in net.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v)
    assert not marker.exists()


class _Shell:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_malicious_checkpoints_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    ckpt = tmp_path / "evil.bin"
    torch.save({"state_dict": {}, "args": _Shell(f"touch {marker}")}, ckpt)
    with pytest.raises(CheckpointError, match=r"refusing to load (posix|os|nt)\.system"):
        import_diffgesture(ckpt, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()
    for payload in (pickle.dumps(_Shell(f"touch {marker}")),
                    b"cbuiltins\neval\n(Vprint('x')\ntR.",  # eval via REDUCE
                    b"ctorch\nload\n(V/nonexistent\ntR.",  # a torch function outside the allowlist
                    # an array rebuilt as a foreign (placeholder) type
                    b"cnumpy.core.multiarray\n_reconstruct\n(cmodel.vocab\nVocab\n(I0\ntVb\ntR."):
        with pytest.raises(UnsafePickle):
            restricted_loads(payload)
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="no DiffGesture checkpoint file"):
        import_diffgesture(tmp_path / "missing.bin", tmp_path / "out")
    (tmp_path / "notes.bin").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable"):
        import_diffgesture(tmp_path / "notes.bin", tmp_path / "out")


# -- generation ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("long_mode, steps", [("chain", None), ("chain", 5), ("foppas", 5)],
                         ids=["chain-ddpm", "chain-ddim", "foppas"])
@pytest.mark.parametrize("seconds", [0.7, 5.0], ids=["short", "long"])
def test_long_generation_gives_the_audio_frame_count(model, long_mode, steps, seconds):
    wave = speech(seconds)
    frames = len(wave) * FPS // SR
    events = []
    vec = model.sample(wave, frames, seed=1, steps=steps, long_mode=long_mode, jumps=2, progress=events.append)
    assert vec.shape == (frames, 27) and np.isfinite(vec).all()
    windows = 1 if frames <= 34 else 3
    assert events[-1]["windows"] == windows and events[-1]["fraction"] == pytest.approx(1.0)
    assert all(a["fraction"] <= b["fraction"] for a, b in zip(events, events[1:]))


def test_chain_seeds_and_crossfades_like_the_official_script(model):
    wave = speech(4.5)
    frames = len(wave) * FPS // SR  # 67 frames: windows at 0, 30, 60
    out = model.sample(wave, frames, seed=3, long_mode="chain")
    cfg, gen = model.config, torch.Generator().manual_seed(3)
    seeds, raws = torch.zeros(1, 4, 27), []
    with torch.no_grad():
        for k in range(3):
            a0 = 30 * k * SR // FPS
            piece = np.pad(wave[a0:a0 + 36267], (0, max(0, a0 + 36267 - len(wave))))
            feat = model.net.encode_audio(torch.from_numpy(piece)[None])
            denoiser = DiffGestureDenoiser(model.net, *seed_context(seeds, 1, cfg), feat, guidance=1.15)
            x = ddpm_sample(denoiser, randn((1, 34, 27), gen), model.schedule, gen, stabilizer="smooth")
            raws.append(x[0].numpy())
            seeds = x[:, -4:]
    w = np.array([0.2, 0.4, 0.6, 0.8])[:, None]
    expected = np.concatenate([raws[0][:30], raws[0][30:] * (1 - w) + raws[1][:4] * w, raws[1][4:30],
                               raws[1][30:] * (1 - w) + raws[2][:4] * w, raws[2][4:]])[:frames]
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_generate_writes_a_take(model, tmp_path):
    path = tmp_path / "speech.wav"
    sf.write(path, speech(2.5), SR)
    take = model.generate(str(path), seed=2, steps=4)
    assert take.frames == 37 and take.fps == 15.0
    assert take.arrays["poses"].shape == (37, 165) and not take.arrays["expressions"].any()
    np.testing.assert_array_equal(take.arrays["generated_joints"], generated_joints(TED10))
    assert take.vector.shape == (37, 27) and take.meta["long_mode"] == "chain" and len(take.meta["audio_sha256"]) == 64
    again = model.generate((speech(2.5), SR), seed=2, steps=4)
    np.testing.assert_allclose(again.arrays["poses"], take.arrays["poses"], atol=1e-5)  # a seed reproduces a take
    take.save(str(tmp_path / "take.npz"))
    assert model.summary()["arch"] == "diffgesture" and model.model_id == "tiny-diffgesture"


def test_generate_rejects_bad_options_and_cancels(model):
    wave = (speech(1.0), SR)
    for kwargs, message in (({"style": 2}, "no speaker styles"), ({"long_mode": "loop"}, "long_mode"),
                            ({"steps": 21}, "between 1 and 20"), ({"overlap": 6}, "chain mode overlaps"),
                            ({"stabilizer": "wobbly"}, "unknown stabilizer")):
        with pytest.raises(BadInput, match=message):
            model.generate(wave, **kwargs)
    with pytest.raises(BadInput, match="too short"):
        model.generate((np.zeros(100, np.float32), SR))

    def cancel(event):
        if event.get("stage") == "sampling":
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        model.generate(wave, progress=cancel)


def test_sheg_load_model_dispatches_on_arch(model_dir, tmp_path):
    import sheg

    model = sheg.load_model(str(model_dir), device="cpu")
    assert type(model).__name__ == "DiffGestureModel"
    take = model.generate((speech(2.5), SR), seed=0, steps=4)
    assert take.frames == int(2.5 * FPS) and take.arrays["poses"].shape[1] == 165


def test_bench_reports_diffgesture_figures(model_dir, capsys):
    from sheg.bench import run_bench

    torch.manual_seed(0)
    rows = run_bench([str(model_dir)], seconds=3.0, device="cpu", steps=4)
    row = rows[0]
    # 45 frames at 15 fps: windows of 34 with 4 seed frames -> 2 windows, 4 DDIM steps each, CFG in one batch
    assert row["frames"] == 45 and row["calls"] == 2 * 4
    assert row["frames_per_s"] > 0 and 0.2 < row["overhead"] < 20
    assert "tiny-diffgesture" in capsys.readouterr().out
