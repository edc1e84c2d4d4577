"""DiffGesture (Zhu et al., CVPR 2023) network: sizes, the official PoseDiffusion modules, and its denoiser.

Network (`DiffGestureNet`, official `PoseDiffusion` parameter names so official state_dicts load strictly):
- `audio_encoder`: the WavEncoder on raw 16 kHz audio, 4 Conv1d (kernel 15, strides 5/6/6/6, padding 1600 on the
  first) with BatchNorm + LeakyReLU(0.3) between; 36267 samples (34 frames at 15 fps) -> (34, 32).
- one token per frame: [x_t (P) | beta_t, sin beta_t, cos beta_t | seed pose (P) | seed flag (1) | audio (32)];
  the last three parts are the "context" (P + 33 wide). `diffusion_net.net`: Linear -> + learned positional
  embedding (1, n_poses, H) -> 4 timm ViT blocks -> LayerNorm -> 4 more -> LayerNorm -> Linear(H, H/2) ->
  LeakyReLU(negative_slope=1.0) -> Linear(H/2, P). It predicts eps for every frame, seed frames included.
- implicit classifier-free guidance: the whole context of every frame is replaced by the learned `null_cond_emb`
  (trained with probability null_cond_prob = 0.1); sampling mixes uncond + s (cond - uncond), s = 1.15 officially.
- `diffusion_net.var_sched.*`: the official schedule buffers (T = 500 linear betas 1e-4..0.02, padded with a 0 at
  index 0). Timesteps here are 0-based like the rest of SHEG (0..499, t = 0 least noisy): the official 1-based step
  is t + 1 and the network's time signal is beta[t + 1] of that buffer, i.e. NoiseSchedule(500).betas[t].
Poses are TED direction vectors minus the dataset's mean_dir_vec (no std scaling), see ted.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from sheg.errors import BadInput
from sheg.diffusion.samplers import guided

__all__ = ["DiffGestureConfig", "DiffGestureNet", "WavEncoder", "DiffGestureDenoiser", "seed_context",
           "AUDIO_FEATURE_DIM"]

AUDIO_FEATURE_DIM = 32  # WavEncoder output channels


@dataclass(kw_only=True)
class DiffGestureConfig:
    """Sizes of a DiffGesture network; `official_ted()` / `official_expressive()` give the published ones."""

    pose_dim: int = 27  # P: TED Gesture 27 (9 bones), TED Expressive 126 (42 bones), any for new data
    n_poses: int = 34  # frames per window (the positional embedding's length)
    n_pre_poses: int = 4  # seed frames at the start of each window
    hidden: int = 256  # transformer width (official: 256 TED, 512 Expressive)
    depth: int = 8  # ViT blocks in all: two halves, a LayerNorm after each
    heads: int = 8
    mlp_ratio: float = 4.0
    classifier_free: bool = True  # has null_cond_emb (implicit classifier-free guidance)
    null_cond_prob: float = 0.1  # training probability of the null context
    diffusion_steps: int = 500
    beta_start: float = 1e-4
    beta_end: float = 0.02
    fps: int = 15
    sample_rate: int = 16000

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("int", int) and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise BadInput(f"DiffGestureConfig.{f.name} must be a positive integer, got {value!r}")
        if self.depth % 2 or self.hidden % self.heads or self.hidden % 2:
            raise BadInput(f"DiffGestureConfig: depth must be even and heads ({self.heads}) must divide the even "
                           f"hidden width ({self.hidden}); got depth {self.depth}, hidden {self.hidden}")
        if not self.n_pre_poses < self.n_poses:
            raise BadInput(f"DiffGestureConfig: n_pre_poses {self.n_pre_poses} must be below n_poses {self.n_poses}")
        if not 0.0 <= float(self.null_cond_prob) < 1.0 or float(self.mlp_ratio) <= 0:
            raise BadInput("DiffGestureConfig: null_cond_prob must be in [0, 1) and mlp_ratio positive")

    @classmethod
    def official_ted(cls) -> "DiffGestureConfig":
        return cls(pose_dim=27, hidden=256)

    @classmethod
    def official_expressive(cls) -> "DiffGestureConfig":
        return cls(pose_dim=126, hidden=512)

    @property
    def context_dim(self) -> int:
        """Per-frame context: seed pose | flag | audio feature (official `in_size`)."""
        return self.pose_dim + 1 + AUDIO_FEATURE_DIM

    @property
    def embed_dim(self) -> int:
        """Token width: x_t | 3 time values | context."""
        return self.pose_dim + 3 + self.context_dim

    @property
    def audio_samples(self) -> int:
        """Raw audio samples per window (36267 for 34 frames at 15 fps, 16 kHz)."""
        return int(round(self.n_poses / self.fps * self.sample_rate))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "DiffGestureConfig":
        if not isinstance(data, dict):
            raise BadInput(f"a DiffGesture config must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise BadInput(f"unknown DiffGesture config keys: {', '.join(unknown)}")
        return cls(**data)


# ----------------------------------------------------------------------------------------------------------------
# network


class WavEncoder(nn.Module):
    """Raw audio (B, S) at 16 kHz -> (B, S', 32) features; 36267 samples give 34 frames."""

    def __init__(self):
        super().__init__()
        self.feat_extractor = nn.Sequential(
            nn.Conv1d(1, 16, 15, stride=5, padding=1600), nn.BatchNorm1d(16), nn.LeakyReLU(0.3, inplace=True),
            nn.Conv1d(16, 32, 15, stride=6), nn.BatchNorm1d(32), nn.LeakyReLU(0.3, inplace=True),
            nn.Conv1d(32, 64, 15, stride=6), nn.BatchNorm1d(64), nn.LeakyReLU(0.3, inplace=True),
            nn.Conv1d(64, AUDIO_FEATURE_DIM, 15, stride=6),
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self.feat_extractor(wave.unsqueeze(1)).transpose(1, 2)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_head)) v, as timm
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class VitBlock(nn.Module):
    """timm's ViT `Block` (pre-norm attention + MLP, qkv bias, no dropout): same parameter names."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), _Attention(dim, heads)
        self.norm2, self.mlp = nn.LayerNorm(dim), _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PoseTransformer(nn.Module):
    """Official `TransformerModel`: (x (B, T, P), beta (B,), context (B, T, C)) -> eps (B, T, P)."""

    def __init__(self, config: DiffGestureConfig):
        super().__init__()
        h, half = config.hidden, config.depth // 2
        self.linear = nn.Linear(config.embed_dim, h)
        self.pos_embedding = nn.Parameter(torch.randn(1, config.n_poses, h))
        self.blocks = nn.ModuleList(VitBlock(h, config.heads, config.mlp_ratio) for _ in range(half))
        self.norm = nn.LayerNorm(h)
        self.decoder_blocks = nn.ModuleList(VitBlock(h, config.heads, config.mlp_ratio) for _ in range(half))
        self.decoder_norm = nn.LayerNorm(h)
        # The official head is written LeakyReLU(True): negative_slope = True = 1.0, so it is the identity and the
        # head is effectively linear. Kept for parity with the released weights.
        self.out = nn.Sequential(nn.Linear(h, h // 2), nn.LeakyReLU(negative_slope=1.0), nn.Linear(h // 2,
                                                                                                   config.pose_dim))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):  # official: xavier_uniform, zero bias; LayerNorm 1 / 0
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x, beta, context):
        beta = beta.view(-1, 1, 1).to(x.dtype)
        time = torch.cat([beta, torch.sin(beta), torch.cos(beta)], dim=-1).expand(-1, x.shape[1], -1)
        h = self.linear(torch.cat([x, time, context], dim=-1)) + self.pos_embedding
        for block in self.blocks:
            h = block(h)
        h = self.norm(h)
        for block in self.decoder_blocks:
            h = block(h)
        return self.out(self.decoder_norm(h))


class VarianceSchedule(nn.Module):
    """The official schedule buffers, index 0 padding and 1..T the steps (betas, alphas, alpha_bars, sigmas)."""

    def __init__(self, num_steps: int, beta_1: float, beta_T: float):
        super().__init__()
        betas = torch.cat([torch.zeros(1), torch.linspace(beta_1, beta_T, num_steps)])
        alphas = 1 - betas
        alpha_bars = torch.cumsum(torch.log(alphas), 0).exp()
        sigmas_inflex = torch.zeros_like(betas)
        sigmas_inflex[1:] = ((1 - alpha_bars[:-1]) / (1 - alpha_bars[1:]) * betas[1:]).sqrt()
        for name, value in (("betas", betas), ("alphas", alphas), ("alpha_bars", alpha_bars),
                            ("sigmas_flex", betas.sqrt()), ("sigmas_inflex", sigmas_inflex)):
            self.register_buffer(name, value)


class DiffusionNet(nn.Module):
    def __init__(self, config: DiffGestureConfig):
        super().__init__()
        self.net = PoseTransformer(config)
        self.var_sched = VarianceSchedule(config.diffusion_steps, config.beta_start, config.beta_end)


class DiffGestureNet(nn.Module):
    """The whole official PoseDiffusion: audio encoder, null context, transformer (module docstring)."""

    def __init__(self, config: DiffGestureConfig):
        super().__init__()
        self.config = config
        self.audio_encoder = WavEncoder()
        if config.classifier_free:
            self.null_cond_emb = nn.Parameter(torch.randn(1, config.context_dim))
        self.diffusion_net = DiffusionNet(config)

    def encode_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """Raw audio (B, S) at the config's sample rate -> (B, n_poses, 32).

        The official size (34 frames, 36267 samples) gives exactly 34 features; other sizes are resampled linearly
        to n_poses so non-official configs still line up.
        """
        if wave.dim() != 2:
            raise BadInput(f"audio must be (batch, samples), got shape {tuple(wave.shape)}")
        feat = self.audio_encoder(wave)
        if feat.shape[1] != self.config.n_poses:
            feat = F.interpolate(feat.transpose(1, 2), size=self.config.n_poses, mode="linear",
                                 align_corners=False).transpose(1, 2)
        return feat

    def forward(self, x_t, t, seed, flag, audio_feat, null_mask=None):
        """eps (B, T, P) for x_t (B, T, P) at 0-based timesteps t (B,) long in 0..steps-1.

        seed (B, T, P): seed poses on the seed frames, zero elsewhere; flag (B, T, 1): 1 on seed frames;
        audio_feat (B, T, 32) from encode_audio; null_mask (B,) bool: items that get the null context.
        """
        cfg = self.config
        if x_t.dim() != 3 or x_t.shape[1:] != (cfg.n_poses, cfg.pose_dim):
            raise BadInput(f"x_t must be (batch, {cfg.n_poses}, {cfg.pose_dim}), got {tuple(x_t.shape)}")
        t = torch.as_tensor(t, device=x_t.device).long().reshape(-1).expand(x_t.shape[0])
        if int(t.min()) < 0 or int(t.max()) >= cfg.diffusion_steps:
            raise BadInput(f"DiffGesture timesteps are 0-based, 0..{cfg.diffusion_steps - 1}; got "
                           f"{int(t.min())}..{int(t.max())}")
        context = torch.cat([seed, flag, audio_feat], dim=-1).to(x_t.dtype)
        if null_mask is not None:
            if not cfg.classifier_free:
                raise BadInput("this DiffGesture model has no null context (classifier_free is false)")
            null = self.null_cond_emb.to(x_t.dtype).expand(context.shape[0], context.shape[1], -1)
            context = torch.where(null_mask.to(x_t.device).view(-1, 1, 1), null, context)
        beta = self.diffusion_net.var_sched.betas[t + 1]
        return self.diffusion_net.net(x_t, beta, context)


def seed_context(seed_poses, batch: int, config: DiffGestureConfig, device="cpu"):
    """(seed (batch, T, P), flag (batch, T, 1)) for seed poses (batch or 1, k, P) normalized, k <= n_pre_poses, or
    None (no seed frames, flag all zero)."""
    seed = torch.zeros(batch, config.n_poses, config.pose_dim, device=device)
    flag = torch.zeros(batch, config.n_poses, 1, device=device)
    if seed_poses is not None:
        seed_poses = torch.as_tensor(seed_poses, dtype=torch.float32, device=device)
        if seed_poses.dim() == 2:
            seed_poses = seed_poses[None]
        k = seed_poses.shape[1]
        if seed_poses.shape[2] != config.pose_dim or not 0 < k <= config.n_pre_poses:
            raise BadInput(f"seed poses must be (frames <= {config.n_pre_poses}, {config.pose_dim}), got "
                           f"{tuple(seed_poses.shape)}")
        seed[:, :k] = seed_poses
        flag[:, :k] = 1.0
    return seed, flag


class DiffGestureDenoiser:
    """`denoiser(x_t, t) -> eps` for one window with the seed, flag and audio features bound (sampling contract).

    guidance 1 is the conditional pass alone; otherwise uncond + s (cond - uncond) with the null context as the
    unconditional pass. batched=True runs both in one forward of batch 2B (as the official sampler);
    batched=False composes `sampling.guided(cond, uncond, s)`.
    """

    def __init__(self, net: DiffGestureNet, seed, flag, audio_feat, guidance: float = 1.0, batched: bool = True):
        self.net, self.seed, self.flag, self.audio_feat = net, seed, flag, audio_feat
        self.guidance = float(guidance)
        self.batched = batched
        self._guided = guided(self.cond, self.uncond, self.guidance)

    def _bound(self, batch):
        return (self.seed.expand(batch, -1, -1), self.flag.expand(batch, -1, -1),
                self.audio_feat.expand(batch, -1, -1))

    def cond(self, x_t, t):
        return self.net(x_t, t, *self._bound(x_t.shape[0]))

    def uncond(self, x_t, t):
        mask = torch.ones(x_t.shape[0], dtype=torch.bool, device=x_t.device)
        return self.net(x_t, t, *self._bound(x_t.shape[0]), null_mask=mask)

    def __call__(self, x_t, t):
        if self.guidance == 1.0 or not self.batched:
            return self._guided(x_t, t)
        b = x_t.shape[0]
        mask = torch.arange(2 * b, device=x_t.device) >= b
        both = self.net(torch.cat([x_t, x_t]), torch.cat([t, t]), *self._bound(2 * b), null_mask=mask)
        cond, uncond = both[:b], both[b:]
        return uncond + self.guidance * (cond - uncond)
