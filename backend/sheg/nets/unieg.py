"""UniEG: DiffSHEG's unified expression-gesture diffusion transformer (CVPR 2024).

Parameter names and shapes are those of the official `UniDiffuser` state_dict, so official checkpoints load strictly.
The network predicts the diffusion noise eps of a (B, T, G+E) motion window laid out gesture-first `[G | E]`.
Data flow of one call:

1. `encoder_aud` (one linear-attention layer at mel width, stylized by the top-level `time_embed(t)`) turns the mel
   (B, T, A) into a mid-level audio feature; `audio_emb = [mel | encoder_aud(mel)]` (B, T, 2A).
2. The expression branch `encoder_exp` predicts eps_E from x_t^E, conditioned on `[audio_proj(audio_emb) | HuBERT]`.
3. Its clean estimate x̂0_E = c1 * x_t^E - c2 * eps_E (eps_E detached: the gesture loss never trains the expression
   branch) is appended to the gesture branch's condition: `[audio_proj(audio_emb) | HuBERT | x̂0_E]`.
4. The gesture branch `encoder_ges` predicts eps_G; the output is `[eps_G | eps_E]`.

Each branch embeds its input, adds a fixed sinusoidal positional encoding, then runs `num_layers` layers of
"fusion -> linear self-attention -> FFN". The fusion is `h = feat_proj([h | cond]) + h`; attention and FFN outputs
go through a StylizationBlock (scale/shift from `time_embed(t) + pid_embed(one-hot speaker)`).

This module knows nothing of noise schedules: the caller passes x0_coeffs = (sqrt(1/abar_t), sqrt(1/abar_t - 1)).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from sheg.errors import BadInput

__all__ = ["UniEGConfig", "UniEG", "timestep_embedding", "periodic_sinusoid"]


@dataclass(kw_only=True)
class UniEGConfig:
    """Sizes of a UniEG network. `official_show()` / `official_beat()` give the published checkpoints' values."""

    gesture_dim: int  # G: gesture part of the network vector (SHOW 129 axis-angle, BEAT 141 axis-angle)
    expression_dim: int  # E: expression part (SHOW 103 = jaw 3 + 100 FLAME coeffs, BEAT 51 ARKit weights)
    audio_dim: int = 128  # A: mel bins per frame; encoder_aud runs at this width, audio_emb is 2A wide
    style_dim: int  # S: length of the one-hot speaker (style) vector (SHOW 4, BEAT 30)
    latent_dim: int = 512  # D: width of both motion branches; time embeddings are 4D wide
    ff_size: int = 1024  # hidden width of every FFN (also of encoder_aud's FFN)
    num_layers: int = 8  # fusion/attention/FFN layers per branch
    num_heads: int = 8  # heads of the linear attention (in the branches and in encoder_aud)
    aud_latent_dim: int = 256  # width of audio_proj(audio_emb), the audio part of each layer's condition
    use_hubert: bool = True  # condition on HuBERT features through a per-branch conv encoder
    hubert_dim: int = 1024  # HuBERT feature width (hubert-large last_hidden_state)
    hubert_latent: int = 128  # width of hubert_encoder's output, the HuBERT part of each layer's condition
    classifier_free: bool  # has a learned null_cond_emb per branch (trained with condition dropout; SHOW only)
    pe_period: int = 600  # period (frames) of the sinusoidal positional encoding; the buffer holds it repeated
    dropout: float = 0.0  # dropout inside StylizationBlock / FFN (the official model is built with 0)

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise BadInput(f"UniEGConfig.{f.name} must be a positive integer, got {value!r}")
            if f.type in ("bool", bool) and not isinstance(value, bool):
                raise BadInput(f"UniEGConfig.{f.name} must be true or false, got {value!r}")
        if self.latent_dim % self.num_heads or self.audio_dim % self.num_heads:
            raise BadInput(
                f"UniEGConfig: num_heads {self.num_heads} must divide latent_dim {self.latent_dim} "
                f"and audio_dim {self.audio_dim}"
            )
        if self.latent_dim % 2:
            raise BadInput(f"UniEGConfig.latent_dim must be even (sinusoidal embeddings), got {self.latent_dim}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise BadInput(f"UniEGConfig.dropout must be in [0, 1), got {self.dropout!r}")

    @classmethod
    def official_show(cls) -> "UniEGConfig":
        """The SHOW (TalkSHOW) checkpoint ckpt_e2599.tar: 129 + 103 dims, 4 speakers, classifier-free."""
        return cls(gesture_dim=129, expression_dim=103, style_dim=4, classifier_free=True)

    @classmethod
    def official_beat(cls) -> "UniEGConfig":
        """The BEAT checkpoint fgd_best.tar: 141 + 51 dims, 30 speaker slots, no classifier-free guidance."""
        return cls(gesture_dim=141, expression_dim=51, style_dim=30, classifier_free=False)

    @property
    def net_dim(self) -> int:
        """Length of the network vector [gesture | expression]."""
        return self.gesture_dim + self.expression_dim

    @property
    def pe_length(self) -> int:
        """Frames covered by the positional-encoding buffer (official: period repeated past 600 frames = 1200)."""
        return self.pe_period * (600 // self.pe_period + 1)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "UniEGConfig":
        """Inverse of `to_dict`; unknown or missing keys raise BadInput naming them."""
        if not isinstance(data, dict):
            raise BadInput(f"a UniEG config must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadInput(f"unknown UniEG config keys: {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:  # a missing required field
            raise BadInput(f"incomplete UniEG config: {exc}") from None


# ----------------------------------------------------------------------------------------------------------------
# fixed embeddings


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of diffusion indices: (B,) -> (B, dim) laid out [cos(t f) | sin(t f)], float32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def periodic_sinusoid(period: int, dim: int, length: int) -> torch.Tensor:
    """Positional encoding (1, length, dim): interleaved sin/cos of one period of frames, tiled to `length`."""
    position = torch.arange(period, dtype=torch.float32)[:, None]
    div_term = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(period, dim)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    repeats = -(-length // period)
    return pe.repeat(repeats, 1)[:length].unsqueeze(0)


class PeriodicPositionalEncoding(nn.Module):
    """Holds the `pe` buffer (saved in official checkpoints) and adds its first T rows: (B, T, D) -> (B, T, D)."""

    def __init__(self, dim: int, period: int, length: int):
        super().__init__()
        self.register_buffer("pe", periodic_sinusoid(period, dim, length))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.pe[:, : h.shape[1]]


# ----------------------------------------------------------------------------------------------------------------
# layers


def _zero_init(layer: nn.Linear) -> nn.Linear:
    # residual branches start as identity (MotionDiffuse / official init); only matters for training from scratch
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class StylizationBlock(nn.Module):
    """out = Linear(Dropout(SiLU(LN(h) * (1 + scale) + shift))), (scale, shift) = Linear(SiLU(emb)).

    h (B, T, D), emb (B, 4D) -> (B, T, D). The output Linear starts at zero.
    """

    def __init__(self, dim: int, time_embed_dim: int, dropout: float):
        super().__init__()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(time_embed_dim, 2 * dim))
        self.norm = nn.LayerNorm(dim)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Dropout(dropout), _zero_init(nn.Linear(dim, dim)))

    def modulation(self, emb: torch.Tensor) -> torch.Tensor:
        """(B, 4D) -> (B, 1, 2D) = [scale | shift]; depends only on (t, speaker), so samplers may cache it."""
        return self.emb_layers(emb).unsqueeze(1)

    def forward(self, h: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        scale, shift = mod.chunk(2, dim=-1)  # each (B, 1, D)
        return self.out_layers(self.norm(h) * (1 + scale) + shift)


class LinearSelfAttention(nn.Module):
    """Efficient (linear) self-attention with a shared pre-LayerNorm, as in MotionDiffuse.

    Per head, q is softmaxed over its features and k over time; context = k^T v is (d x d), y = q context.
    Cost is linear in T. x (B, T, D), mod (B, 1, 2D) -> x + stylize(y) (B, T, D).
    """

    def __init__(self, dim: int, num_heads: int, time_embed_dim: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.LayerNorm(dim)
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.proj_out = StylizationBlock(dim, time_embed_dim, dropout)

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        xn = self.norm(x)
        q = self.query(xn).view(B, T, self.num_heads, -1).softmax(dim=-1)  # (B, T, H, d) over features
        k = self.key(xn).view(B, T, self.num_heads, -1).softmax(dim=1)  # (B, T, H, d) over time
        v = self.value(xn).view(B, T, self.num_heads, -1)  # (B, T, H, d)
        context = torch.einsum("bthd,bthl->bhdl", k, v)  # (B, H, d, d)
        y = torch.einsum("bthd,bhdl->bthl", q, context).reshape(B, T, D)
        return x + self.proj_out(y, mod)


class FFN(nn.Module):
    """x + stylize(Linear(Dropout(GELU(Linear(x))))) without pre-norm; the second Linear starts at zero."""

    def __init__(self, dim: int, ffn_dim: int, time_embed_dim: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = _zero_init(nn.Linear(ffn_dim, dim))
        self.activation = nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.proj_out = StylizationBlock(dim, time_embed_dim, dropout)

    def forward(self, x: torch.Tensor, mod: torch.Tensor) -> torch.Tensor:
        y = self.linear2(self.dropout(self.activation(self.linear1(x))))
        return x + self.proj_out(y, mod)


class TransformerLayer(nn.Module):
    """Fusion residual block -> linear self-attention -> FFN (official `LinearTemporalDiffusionTransformerLayer`).

    With `cond_dim` the layer fuses a per-frame condition: `h = feat_proj([h | cond]) + h`, feat_proj =
    LN -> Linear(P, 2D) -> SiLU -> Linear(2D, D), P = D + cond_dim. Without it (encoder_aud) the same residual
    has nothing to add and doubles the input, as the official code does.
    """

    def __init__(self, dim: int, ffn_dim: int, num_heads: int, time_embed_dim: int, dropout: float,
                 cond_dim: int | None = None):
        super().__init__()
        self.feat_proj = None
        if cond_dim is not None:
            fused = dim + cond_dim
            self.feat_proj = nn.Sequential(
                nn.LayerNorm(fused), nn.Linear(fused, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim)
            )
        self.sa_block = LinearSelfAttention(dim, num_heads, time_embed_dim, dropout)
        self.ffn = FFN(dim, ffn_dim, time_embed_dim, dropout)

    def modulations(self, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Style modulations of the attention and FFN outputs for emb (N, 4D): two (N, 1, 2D) tensors."""
        return self.sa_block.proj_out.modulation(emb), self.ffn.proj_out.modulation(emb)

    def forward(self, h: torch.Tensor, mods: tuple[torch.Tensor, torch.Tensor], cond: torch.Tensor | None = None,
                null_emb: torch.Tensor | None = None, null_mask: torch.Tensor | None = None,
                guided: bool = False) -> torch.Tensor:
        """h (N, T, D), mods from `modulations(emb)`, cond (B, T, C) -> (N, T, D).

        null_mask (N,) bool: rows whose whole fusion input [h | cond] is replaced by null_emb (1, P) (training).
        guided: h holds 2B rows, the first B unconditional (null_emb), the last B conditioned on cond (B rows).
        """
        if self.feat_proj is None:
            h = h + h  # official quirk: encoder_aud sees 2 * mel
        elif guided:
            B = cond.shape[0]
            fused_null = self.feat_proj(null_emb).expand(B, h.shape[1], -1)  # one vector for all null rows
            fused_cond = self.feat_proj(torch.cat([h[B:], cond], dim=-1))
            h = h + torch.cat([fused_null, fused_cond], dim=0)
        else:
            fused = self.feat_proj(torch.cat([h, cond], dim=-1))
            if null_mask is not None:
                fused = torch.where(null_mask[:, None, None], self.feat_proj(null_emb)[None], fused)
            h = h + fused
        h = self.sa_block(h, mods[0])
        return self.ffn(h, mods[1])


class MotionBranch(nn.Module):
    """One UniEG branch (official `MotionTransformer`): predicts eps for its part of the vector.

    Condition per frame: [audio_proj(audio_emb) | hubert_encoder(hubert) (if used) | extra (gesture branch: x̂0_E)].
    """

    def __init__(self, cfg: UniEGConfig, input_dim: int, extra_cond_dim: int = 0):
        super().__init__()
        D, time_embed_dim = cfg.latent_dim, 4 * cfg.latent_dim
        cond_dim = cfg.aud_latent_dim + (cfg.hubert_latent if cfg.use_hubert else 0) + extra_cond_dim
        if cfg.classifier_free:
            self.null_cond_emb = nn.Parameter(torch.randn(1, D + cond_dim))  # replaces the whole [h | cond]
        else:
            self.register_parameter("null_cond_emb", None)
        self.PE = PeriodicPositionalEncoding(D, cfg.pe_period, cfg.pe_length)
        self.joint_embed = nn.Linear(input_dim, D)
        self.audio_proj = nn.Linear(2 * cfg.audio_dim, cfg.aud_latent_dim)
        self.hubert_encoder = None
        if cfg.use_hubert:
            self.hubert_encoder = nn.Sequential(
                nn.Conv1d(cfg.hubert_dim, cfg.hubert_latent, 3, padding=1, bias=False),
                nn.BatchNorm1d(cfg.hubert_latent),
                nn.GELU(),
                nn.Conv1d(cfg.hubert_latent, cfg.hubert_latent, 3, padding=1, bias=False),
            )
        self.time_embed = nn.Sequential(nn.Linear(D, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim))
        self.pid_embed = nn.Sequential(
            nn.Linear(cfg.style_dim, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        self.temporal_decoder_blocks = nn.ModuleList(
            TransformerLayer(D, cfg.ff_size, cfg.num_heads, time_embed_dim, cfg.dropout, cond_dim)
            for _ in range(cfg.num_layers)
        )
        self.out = nn.Linear(D, input_dim)

    def modulations(self, t_sin: torch.Tensor, style: torch.Tensor, guided: bool) -> list:
        """Per-layer style modulations from the timestep sinusoid (B, D) and speaker one-hot (B, S)."""
        emb = self.time_embed(t_sin) + self.pid_embed(style)  # (B, 4D) time + speaker style
        if guided:
            emb = torch.cat([emb, emb])
        return [block.modulations(emb) for block in self.temporal_decoder_blocks]

    def forward(self, x: torch.Tensor, mods: list, audio_emb: torch.Tensor,
                hubert: torch.Tensor | None, extra: torch.Tensor | None = None,
                null_mask: torch.Tensor | None = None, guidance_scale: float = 1.0) -> torch.Tensor:
        """x (B, T, input_dim), mods from `modulations`, audio_emb (B, T, 2A),
        hubert (B, T, hubert_dim) or None, extra (B, T, X) or None -> eps (B, T, input_dim).

        guidance_scale != 1 runs the batch twice (unconditional, conditional) and returns u + s * (c - u).
        """
        parts = [self.audio_proj(audio_emb)]
        if self.hubert_encoder is not None:
            parts.append(self.hubert_encoder(hubert.transpose(1, 2)).transpose(1, 2))  # (B, T, hubert_latent)
        if extra is not None:
            parts.append(extra)
        cond = torch.cat(parts, dim=-1)  # (B, T, C)
        h = self.PE(self.joint_embed(x))  # (B, T, D)
        guided = guidance_scale != 1.0
        if guided:
            h = torch.cat([h, h])
        for block, block_mods in zip(self.temporal_decoder_blocks, mods):
            h = block(h, block_mods, cond, self.null_cond_emb, null_mask, guided)
        out = self.out(h)
        if guided:
            uncond, conditional = out.chunk(2)
            out = uncond + guidance_scale * (conditional - uncond)
        return out


# ----------------------------------------------------------------------------------------------------------------
# the network


class UniEG(nn.Module):
    """DiffSHEG's UniEG (official class `UniDiffuser`); see the module docstring for the data flow."""

    def __init__(self, config: UniEGConfig):
        super().__init__()
        self.config = config
        D, time_embed_dim = config.latent_dim, 4 * config.latent_dim
        self.time_embed = nn.Sequential(nn.Linear(D, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim))
        self.encoder_aud = TransformerLayer(config.audio_dim, config.ff_size, config.num_heads, time_embed_dim,
                                            config.dropout)
        self.encoder_exp = MotionBranch(config, config.expression_dim)
        self.encoder_ges = MotionBranch(config, config.gesture_dim, extra_cond_dim=config.expression_dim)
        self._modulation_cache: dict | None = None

    @contextlib.contextmanager
    def modulation_cache(self):
        """Within this block, the style modulations of each (t, speaker, batch, guidance) are computed once.

        They depend on no input but the diffusion step and the speaker, and hold most of the weights (the
        2048-wide time/speaker MLPs): a sampler revisits the same few steps, so caching saves most of the memory
        traffic of a forward pass. Only for inference with fixed weights.
        """
        previous, self._modulation_cache = self._modulation_cache, {}
        try:
            yield
        finally:
            self._modulation_cache = previous

    def _modulations(self, t: torch.Tensor, t_sin: torch.Tensor, style: torch.Tensor, guided: bool):
        cache = self._modulation_cache
        key = None
        if cache is not None and not self.training and bool((t == t[0]).all()):
            key = (int(t[0]), guided, style.dtype, str(style.device), tuple(style.shape),
                   tuple(style.flatten().tolist()))
            if key in cache:
                return cache[key]
        mods = (self.encoder_aud.modulations(self.time_embed(t_sin)),
                self.encoder_exp.modulations(t_sin, style, guided),
                self.encoder_ges.modulations(t_sin, style, guided))
        if key is not None:
            cache[key] = mods
        return mods

    def count_parameters(self) -> int:
        """Trainable parameters (the PE buffers and BatchNorm statistics are not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, x0_coeffs, mel: torch.Tensor,
                hubert: torch.Tensor | None = None, style: torch.Tensor | None = None,
                guidance_scale: float = 1.0, null_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Predict the noise of a window.

        x_t: (B, T, G+E) noisy normalized motion, gesture first; T <= config.pe_length (1200).
        t: (B,) long original diffusion indices (0..999); a 0-d tensor or int is broadcast.
        x0_coeffs: (c1, c2) = (sqrt(1/abar_t), sqrt(1/abar_t - 1)), each (B, 1, 1), (B,) or a float.
        mel: (B, T, audio_dim) mel power spectrogram frames aligned with x_t.
        hubert: (B, T, hubert_dim) HuBERT features aligned with x_t; required iff config.use_hubert.
        style: (B, S) or (S,) one-hot speaker vector, or (B,) / int speaker index; None = speaker 0.
        guidance_scale: classifier-free guidance inside each branch (classifier-free models only); 1 = off.
        null_mask: (B,) bool, training only: rows whose conditions are replaced by null_cond_emb.
        Returns eps: (B, T, G+E) gesture first.
        """
        cfg = self.config
        B, T, _ = self._check_inputs(x_t, mel, hubert)
        guidance_scale = float(guidance_scale)
        if guidance_scale != 1.0 or null_mask is not None:
            if not cfg.classifier_free:
                raise BadInput("this model was trained without classifier-free guidance: use guidance_scale 1.0 "
                               "and no null_mask")
            if guidance_scale != 1.0 and null_mask is not None:
                raise BadInput("pass either guidance_scale (sampling) or null_mask (training), not both")
        if null_mask is not None:
            null_mask = torch.as_tensor(null_mask, dtype=torch.bool, device=x_t.device)
            if null_mask.shape != (B,):
                raise BadInput(f"null_mask must have shape ({B},), got {tuple(null_mask.shape)}")

        dtype, device = x_t.dtype, x_t.device
        t = torch.as_tensor(t, device=device)
        if t.dim() == 0:
            t = t.expand(B)
        t_sin = timestep_embedding(t, cfg.latent_dim).to(dtype)  # (B, D)
        style = self._style_vector(style, B, device, dtype)
        c1, c2 = (self._coeff(c, device, dtype) for c in x0_coeffs)

        guided = guidance_scale != 1.0
        aud_mods, exp_mods, ges_mods = self._modulations(t, t_sin, style, guided)

        # 1. mid-level audio feature, shared by both branches
        audio_emb = torch.cat([mel, self.encoder_aud(mel, aud_mods)], dim=-1)  # (B, T, 2A)
        x_g, x_e = x_t.split([cfg.gesture_dim, cfg.expression_dim], dim=-1)
        # 2. expression branch
        eps_e = self.encoder_exp(x_e, exp_mods, audio_emb, hubert, None, null_mask, guidance_scale)
        # 3. uni-directional information flow: the (guided) expression estimate conditions the gestures
        x0_e = c1 * x_e - c2 * eps_e.detach()  # (B, T, E)
        # 4. gesture branch
        eps_g = self.encoder_ges(x_g, ges_mods, audio_emb, hubert, x0_e, null_mask, guidance_scale)
        return torch.cat([eps_g, eps_e], dim=-1)

    # -- argument checks (cheap: shapes only) ---------------------------------------------------------------------

    def _check_inputs(self, x_t, mel, hubert):
        cfg = self.config
        if x_t.dim() != 3 or x_t.shape[-1] != cfg.net_dim:
            raise BadInput(f"x_t must be (B, T, {cfg.net_dim}), got {tuple(x_t.shape)}")
        B, T, _ = x_t.shape
        if not 1 <= T <= cfg.pe_length:
            raise BadInput(f"window length {T} frames is outside 1..{cfg.pe_length}: use shorter windows")
        if tuple(mel.shape) != (B, T, cfg.audio_dim):
            raise BadInput(f"mel must be ({B}, {T}, {cfg.audio_dim}) to match x_t, got {tuple(mel.shape)}")
        if cfg.use_hubert:
            if hubert is None:
                raise BadInput("this model needs HuBERT features (B, T, 1024): pass hubert (zeros if unavailable)")
            if tuple(hubert.shape) != (B, T, cfg.hubert_dim):
                raise BadInput(f"hubert must be ({B}, {T}, {cfg.hubert_dim}), got {tuple(hubert.shape)}")
        return B, T, cfg.net_dim

    def _style_vector(self, style, B, device, dtype) -> torch.Tensor:
        S = self.config.style_dim
        if style is None:
            style = 0
        style = torch.as_tensor(style, device=device)
        if not style.is_floating_point():  # speaker indices
            if style.dim() == 0:
                style = style.expand(B)
            if style.shape != (B,) or int(style.min()) < 0 or int(style.max()) >= S:
                raise BadInput(f"style index must be in 0..{S - 1} for each of {B} rows")
            return F.one_hot(style.long(), S).to(dtype)
        if style.dim() == 1:
            style = style.expand(B, -1)
        if tuple(style.shape) != (B, S):
            raise BadInput(f"style must be a one-hot ({B}, {S}) vector, got {tuple(style.shape)}")
        return style.to(dtype)

    @staticmethod
    def _coeff(c, device, dtype) -> torch.Tensor:
        c = torch.as_tensor(c, device=device, dtype=dtype)
        return c.view(-1, 1, 1) if c.dim() == 1 else c
