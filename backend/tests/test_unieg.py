"""UniEG network: official names/shapes, data flow, classifier-free guidance, gradients, lengths."""

import math

import numpy as np
import pytest
import torch

from official_format import PROJECT_ROOT, listing_path, official_shapes
from sheg.errors import BadInput
from sheg.nets.unieg import UniEG, UniEGConfig, periodic_sinusoid, timestep_embedding

torch.set_num_threads(1)

G, E, A, S = 9, 6, 8, 3  # tiny gesture / expression / mel / speaker sizes


def tiny_config(**overrides) -> UniEGConfig:
    values = dict(gesture_dim=G, expression_dim=E, audio_dim=A, style_dim=S, classifier_free=True, latent_dim=32,
                  ff_size=64, num_layers=2, num_heads=4, aud_latent_dim=16, hubert_dim=12, hubert_latent=8)
    values.update(overrides)
    return UniEGConfig(**values)


def tiny_model(seed=0, **overrides) -> UniEG:
    """A tiny UniEG with every weight perturbed, so zero-initialized output layers do not hide any path."""
    torch.manual_seed(seed)
    model = UniEG(tiny_config(**overrides))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_()
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 2.0)
    return model.eval()


def inputs(B=2, T=20, seed=1, hubert_dim=12):
    gen = torch.Generator().manual_seed(seed)
    return dict(
        x_t=torch.randn(B, T, G + E, generator=gen),
        t=torch.randint(0, 1000, (B,), generator=gen),
        x0_coeffs=(1 + torch.rand(B, 1, 1, generator=gen), torch.rand(B, 1, 1, generator=gen)),
        mel=torch.rand(B, T, A, generator=gen),
        hubert=torch.randn(B, T, hubert_dim, generator=gen),
        style=torch.nn.functional.one_hot(torch.randint(0, S, (B,), generator=gen), S).float(),
    )


needs_listing = pytest.mark.skipif(not listing_path("show").is_file(), reason="../shared/docs not available")


# ---------------------------------------------------------------------------------------------------------------
# official structure


@needs_listing
@pytest.mark.parametrize("profile, params", [("show", 155_779_775), ("beat", 155_416_560)], ids=["show", "beat"])
def test_official_config_has_official_names_shapes_and_size(profile, params):
    with torch.device("meta"):
        model = UniEG(getattr(UniEGConfig, f"official_{profile}")())
    got = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert got == list(official_shapes(profile).items())  # same names, shapes and order
    assert model.count_parameters() == params
    header = listing_path(profile).read_text().splitlines()[1]
    assert header.endswith(f"(trainable): {params}")


def test_config_round_trip_and_errors():
    cfg = UniEGConfig.official_show()
    assert UniEGConfig.from_dict(cfg.to_dict()) == cfg
    assert (cfg.net_dim, cfg.pe_length) == (232, 1200)
    assert UniEGConfig.official_beat().net_dim == 192
    with pytest.raises(BadInput, match="unknown UniEG config keys: colour"):
        UniEGConfig.from_dict({**cfg.to_dict(), "colour": 1})
    partial = cfg.to_dict()
    del partial["style_dim"]
    with pytest.raises(BadInput, match="style_dim"):
        UniEGConfig.from_dict(partial)
    with pytest.raises(BadInput, match="num_heads"):
        tiny_config(num_heads=5)
    with pytest.raises(BadInput, match="classifier_free"):
        tiny_config(classifier_free=1)


def test_positional_encoding_matches_recomputation_and_wraps_every_600_frames():
    model = UniEG(tiny_config())
    pe = model.encoder_ges.PE.pe
    assert pe.shape == (1, 1200, 32)
    pos = np.arange(600)[:, None]
    freq = np.exp(np.arange(0, 32, 2) * (-math.log(10000.0) / 32))
    ref = np.zeros((600, 32))
    ref[:, 0::2] = np.sin(pos * freq)
    ref[:, 1::2] = np.cos(pos * freq)
    np.testing.assert_allclose(pe[0, :600].numpy(), ref, atol=1e-4)  # float32 phases up to 600 rad
    assert torch.equal(pe[0, 600:], pe[0, :600])
    assert torch.equal(periodic_sinusoid(600, 32, 1200), pe)
    assert torch.equal(model.encoder_exp.PE.pe, pe)


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0, 7]), 8)
    freqs = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    assert torch.allclose(emb[1], torch.cat([torch.cos(7 * freqs), torch.sin(7 * freqs)]))
    assert torch.equal(emb[0], torch.tensor([1.0, 1, 1, 1, 0, 0, 0, 0]))


# ---------------------------------------------------------------------------------------------------------------
# building blocks against written-out formulas


def test_linear_attention_softmax_over_features_for_q_and_over_time_for_k():
    model = tiny_model()
    block = model.encoder_ges.temporal_decoder_blocks[0].sa_block
    x, emb = torch.randn(2, 11, 32), torch.randn(2, 128)
    xn = block.norm(x)
    heads = []
    for h in range(4):
        cols = slice(8 * h, 8 * h + 8)
        q = block.query(xn)[..., cols].softmax(-1)  # (B, T, 8)
        k = block.key(xn)[..., cols].softmax(1)
        v = block.value(xn)[..., cols]
        heads.append(q @ (k.transpose(1, 2) @ v))
    y = torch.cat(heads, -1)
    scale, shift = block.proj_out.emb_layers(emb)[:, None].chunk(2, -1)
    expected = x + block.proj_out.out_layers(block.proj_out.norm(y) * (1 + scale) + shift)
    with torch.no_grad():
        assert torch.allclose(block(x, block.proj_out.modulation(emb)), expected, atol=1e-5)


def test_fusion_block_is_feat_proj_of_concat_plus_residual():
    model = tiny_model()
    layer = model.encoder_exp.temporal_decoder_blocks[1]
    h, cond, emb = torch.randn(2, 5, 32), torch.randn(2, 5, 24), torch.randn(2, 128)
    with torch.no_grad():
        fused = layer.feat_proj(torch.cat([h, cond], -1)) + h
        mods = layer.modulations(emb)
        expected = layer.ffn(layer.sa_block(fused, mods[0]), mods[1])
        assert torch.allclose(layer(h, mods, cond), expected, atol=1e-6)


def test_audio_encoder_doubles_mel_and_audio_embedding_keeps_raw_mel():
    model = tiny_model()
    with torch.no_grad():  # silence both stylized residual branches: only the doubling is left
        model.encoder_aud.sa_block.proj_out.out_layers[2].weight.zero_()
        model.encoder_aud.sa_block.proj_out.out_layers[2].bias.zero_()
        model.encoder_aud.ffn.proj_out.out_layers[2].weight.zero_()
        model.encoder_aud.ffn.proj_out.out_layers[2].bias.zero_()
        mel = torch.rand(2, 7, A)
        assert torch.equal(model.encoder_aud(mel, model.encoder_aud.modulations(torch.randn(2, 128))), 2 * mel)
        seen = {}
        model.encoder_exp.audio_proj.register_forward_hook(lambda m, args, out: seen.setdefault("a", args[0]))
        model(**{**inputs(T=7), "mel": mel})
        assert torch.equal(seen["a"], torch.cat([mel, 2 * mel], -1))


# ---------------------------------------------------------------------------------------------------------------
# forward behaviour


@pytest.mark.parametrize("cfg", [True, False], ids=["classifier-free", "plain"])
def test_forward_shape_and_determinism(cfg):
    model = tiny_model(classifier_free=cfg)
    with torch.no_grad():
        a = model(**inputs(B=3, T=17))
        b = model(**inputs(B=3, T=17))
        c = tiny_model(classifier_free=cfg)(**inputs(B=3, T=17))
    assert a.shape == (3, 17, G + E) and torch.isfinite(a).all()
    assert torch.equal(a, b) and torch.equal(a, c)


def test_style_defaults_to_speaker_zero_and_accepts_indices():
    model = tiny_model()
    args = inputs(B=2)
    with torch.no_grad():
        zero = model(**{**args, "style": None})
        assert torch.equal(zero, model(**{**args, "style": torch.tensor([[1.0, 0, 0], [1.0, 0, 0]])}))
        assert torch.equal(model(**{**args, "style": torch.tensor([2, 1])}),
                           model(**{**args, "style": torch.tensor([[0.0, 0, 1], [0.0, 1, 0]])}))
        assert not torch.allclose(zero, model(**{**args, "style": 2}))


def test_guidance_one_is_the_plain_conditional_pass():
    model = tiny_model()
    args = inputs()
    with torch.no_grad():
        plain = model(**args)
        assert torch.equal(model(**args, guidance_scale=1.0), plain)
        assert torch.allclose(model(**args, null_mask=torch.zeros(2, dtype=torch.bool)), plain, atol=1e-6)


def test_guidance_expression_branch_is_uncond_plus_scale_times_difference():
    model, s = tiny_model(), 1.7
    args = inputs(B=3)
    with torch.no_grad():
        guided = model(**args, guidance_scale=s)
        cond = model(**args)
        uncond = model(**args, null_mask=torch.ones(3, dtype=torch.bool))
    expected = uncond[..., G:] + s * (cond[..., G:] - uncond[..., G:])
    assert torch.allclose(guided[..., G:], expected, atol=1e-5)
    assert not torch.allclose(guided, cond, atol=1e-3)


def test_guidance_gesture_branch_when_x0_estimate_does_not_depend_on_eps():
    # with c2 = 0, x̂0_E = c1 x_t^E is the same in the guided and plain passes, so the gesture branch must be
    # exactly uncond + s (cond - uncond) as well
    model, s = tiny_model(), 1.3
    args = inputs(B=2)
    args["x0_coeffs"] = (args["x0_coeffs"][0], torch.zeros(2, 1, 1))
    with torch.no_grad():
        guided = model(**args, guidance_scale=s)
        cond = model(**args)
        uncond = model(**args, null_mask=torch.ones(2, dtype=torch.bool))
    assert torch.allclose(guided, uncond + s * (cond - uncond), atol=1e-5)


def test_guidance_gesture_branch_is_conditioned_on_the_guided_expression_estimate():
    model, s = tiny_model(), 1.25
    a = inputs(B=2)
    c1, c2 = a["x0_coeffs"]
    x_g, x_e = a["x_t"][..., :G], a["x_t"][..., G:]
    with torch.no_grad():
        guided = model(**a, guidance_scale=s)
        uncond = model(**a, null_mask=torch.ones(2, dtype=torch.bool))
        t_sin = timestep_embedding(a["t"], 32)
        aud_mods = model.encoder_aud.modulations(model.time_embed(t_sin))
        audio_emb = torch.cat([a["mel"], model.encoder_aud(a["mel"], aud_mods)], -1)
        x0_e = c1 * x_e - c2 * guided[..., G:]  # official: x̂0_E from the guided eps_E
        ges_mods = model.encoder_ges.modulations(t_sin, a["style"], guided=False)
        cond_g = model.encoder_ges(x_g, ges_mods, audio_emb, a["hubert"], x0_e)
    expected = uncond[..., :G] + s * (cond_g - uncond[..., :G])
    assert torch.allclose(guided[..., :G], expected, atol=1e-5)


def test_null_rows_ignore_the_conditions_and_rows_are_independent():
    model = tiny_model()
    args = inputs(B=4)
    mask = torch.tensor([True, False, True, False])
    with torch.no_grad():
        mixed = model(**args, null_mask=mask)
        plain = model(**args)
        null = model(**args, null_mask=torch.ones(4, dtype=torch.bool))
        other_audio = model(**{**args, "mel": torch.rand(4, 20, A), "hubert": torch.randn(4, 20, 12)},
                            null_mask=torch.ones(4, dtype=torch.bool))
        single = model(**{k: (v[1:2] if torch.is_tensor(v) else tuple(c[1:2] for c in v)) for k, v in args.items()})
    assert torch.allclose(mixed[mask], null[mask], atol=1e-6)
    assert torch.allclose(mixed[~mask], plain[~mask], atol=1e-6)
    assert torch.allclose(null, other_audio, atol=1e-6)  # audio, HuBERT and x̂0_E all sit in the replaced input
    assert torch.allclose(single, plain[1:2], atol=1e-5)


def test_gesture_loss_does_not_train_the_expression_branch_but_reaches_the_audio_encoder():
    model = tiny_model()
    out = model(**inputs())
    out[..., :G].square().sum().backward()
    exp_grads = [p.grad for p in model.encoder_exp.parameters()]
    assert all(g is None or not g.any() for g in exp_grads)
    assert all(p.grad is not None and p.grad.any() for p in model.encoder_aud.parameters())
    assert model.encoder_ges.joint_embed.weight.grad.any()
    model.zero_grad(set_to_none=True)
    model(**inputs())[..., G:].square().sum().backward()  # the expression loss does train it
    assert model.encoder_exp.joint_embed.weight.grad.any()


def test_without_hubert():
    model = tiny_model(use_hubert=False)
    names = model.state_dict().keys()
    assert not any("hubert" in n for n in names)
    assert model.encoder_exp.temporal_decoder_blocks[0].feat_proj[0].weight.shape == (32 + 16,)
    assert model.encoder_ges.temporal_decoder_blocks[0].feat_proj[0].weight.shape == (32 + 16 + E,)
    args = {**inputs(), "hubert": None}
    with torch.no_grad():
        out = model(**args)
        guided = model(**args, guidance_scale=1.2)
    assert out.shape == (2, 20, G + E) and torch.isfinite(guided).all()


@pytest.mark.parametrize("T", [1, 2, 88, 599, 600, 601, 700])
def test_any_window_length(T):
    model = tiny_model()
    with torch.no_grad():
        out = model(**inputs(B=1, T=T), guidance_scale=1.15)
    assert out.shape == (1, T, G + E) and torch.isfinite(out).all()


def test_bad_arguments_raise_clear_errors():
    model = tiny_model()
    args = inputs()
    with pytest.raises(BadInput, match="window length 1201"):
        model(**inputs(B=1, T=1201))
    with pytest.raises(BadInput, match="mel must be"):
        model(**{**args, "mel": args["mel"][:, :5]})
    with pytest.raises(BadInput, match="needs HuBERT"):
        model(**{**args, "hubert": None})
    with pytest.raises(BadInput, match="x_t must be"):
        model(**{**args, "x_t": args["x_t"][..., :-1]})
    with pytest.raises(BadInput, match="style index"):
        model(**{**args, "style": 5})
    with pytest.raises(BadInput, match="without classifier-free"):
        tiny_model(classifier_free=False)(**args, guidance_scale=1.5)
    with pytest.raises(BadInput, match="not both"):
        model(**args, guidance_scale=1.5, null_mask=torch.zeros(2, dtype=torch.bool))


def test_import_sheg_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, sheg; assert 'torch' not in sys.modules, 'torch imported by sheg'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PROJECT_ROOT / "backend")


def test_modulation_cache_gives_identical_outputs_and_reuses_work():
    model = tiny_model().eval()
    calls = []
    model.encoder_exp.time_embed.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        plain = [model(**{**inputs(T=9), "t": torch.full((2,), t)}) for t in (900, 500, 900)]
        calls.clear()
        with model.modulation_cache():
            cached = [model(**{**inputs(T=9), "t": torch.full((2,), t)}) for t in (900, 500, 900)]
    assert len(calls) == 2  # the third call (t=900 again) reuses the first one's modulations
    for a, b in zip(plain, cached):
        assert torch.equal(a, b)
