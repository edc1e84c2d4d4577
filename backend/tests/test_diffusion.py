"""Noise schedule invariants, x0 <-> eps algebra, DDIM spacing and the training loss (CPU, well under a second)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sheg.diffusion.gaussian import LossWeights, NoiseSchedule, ddim_timesteps, diffusion_loss
from sheg.errors import BadInput, ShegError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule()


def test_linear_betas_and_monotone_abar(schedule):
    assert schedule.betas.dtype == np.float64 and schedule.alphas_cumprod.dtype == np.float64
    assert len(schedule.betas) == 1000
    assert schedule.betas[0] == pytest.approx(1e-4) and schedule.betas[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(schedule.betas), (0.02 - 1e-4) / 999)
    abar = schedule.alphas_cumprod
    assert np.all(np.diff(abar) < 0), "abar must decrease strictly with t"
    assert 0.0 < abar[-1] < 1e-4 and abar[0] == pytest.approx(1 - 1e-4)
    assert schedule.alphas_cumprod_prev[0] == 1.0
    assert np.allclose(schedule.alphas_cumprod_prev[1:], abar[:-1])


def test_abar_lookup_forms(schedule):
    assert schedule.abar(560) == pytest.approx(0.04087854804372509)
    t = torch.tensor([0, 560, 999])
    values = schedule.abar(t)
    assert values.dtype == torch.float64 and values.shape == (3,)
    assert np.allclose(values.numpy(), schedule.alphas_cumprod[[0, 560, 999]])
    with pytest.raises(BadInput):
        schedule.abar(1000)
    with pytest.raises(BadInput):
        schedule.abar(torch.tensor([-1]))


def test_ddim25_is_guided_diffusion_spacing():
    assert ddim_timesteps(1000, 25) == list(range(960, -1, -40))
    assert set(ddim_timesteps(1000, 25)) == set(range(0, 1000, 40))
    assert ddim_timesteps(1000, 50) == list(range(980, -1, -20))
    assert ddim_timesteps(1000, 1000) == list(range(999, -1, -1))
    assert ddim_timesteps(1000, 1) == [0]


@pytest.mark.parametrize("steps", [2, 7, 10, 30, 333, 999])
def test_ddim_timesteps_count_order_range(steps):
    ts = ddim_timesteps(1000, steps)
    assert len(ts) == steps
    assert all(a > b for a, b in zip(ts, ts[1:]))
    assert ts[-1] == 0 and ts[0] <= 999


@pytest.mark.parametrize("steps", [0, -3, 1001])
def test_ddim_timesteps_rejects_bad_counts(steps):
    with pytest.raises(ShegError, match="sampling steps"):
        ddim_timesteps(1000, steps)


def test_x0_eps_round_trip(schedule):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(4, 9, 5, generator=gen)
    eps = torch.randn(4, 9, 5, generator=gen)
    t = torch.tensor([0, 40, 560, 999])
    x_t = schedule.q_sample(x0, t, eps)
    assert x_t.dtype == torch.float32
    torch.testing.assert_close(schedule.predict_x0(x_t, t, eps), x0, atol=2e-4, rtol=1e-4)
    # eps is ill-conditioned at t=0 (sqrt(1/abar - 1) = 0.01), so compare the noisier timesteps tightly
    torch.testing.assert_close(schedule.predict_eps(x_t, t, x0)[1:], eps[1:], atol=1e-3, rtol=1e-3)


def test_x0_coeffs_shape_and_meaning(schedule):
    t = torch.tensor([3, 560])
    a, b = schedule.x0_coeffs(t)
    assert a.shape == (2, 1, 1) and b.shape == (2, 1, 1)
    assert a.dtype == torch.float32 and b.dtype == torch.float32
    abar = schedule.alphas_cumprod[[3, 560]]
    assert np.allclose(a.flatten().numpy(), np.sqrt(1 / abar), rtol=1e-6)
    assert np.allclose(b.flatten().numpy(), np.sqrt(1 / abar - 1), rtol=1e-6)
    x_t, eps = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    torch.testing.assert_close(a * x_t - b * eps, schedule.predict_x0(x_t, t, eps))


def test_q_sample_statistics(schedule):
    gen = torch.Generator().manual_seed(1)
    x0 = torch.full((1, 20000, 4), 2.0)
    for t in (0, 300, 999):
        x_t = schedule.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
        abar = schedule.alphas_cumprod[t]
        assert x_t.mean().item() == pytest.approx(2.0 * math.sqrt(abar), abs=0.02)
        assert x_t.std().item() == pytest.approx(math.sqrt(1 - abar), rel=0.02, abs=1e-3)


def test_respaced_schedule_reproduces_abar(schedule):
    timesteps = ddim_timesteps(1000, 25)
    r = schedule.respaced(timesteps)
    assert list(r.timesteps) == sorted(timesteps) and len(r) == 25
    assert np.allclose(r.alphas_cumprod, schedule.alphas_cumprod[r.timesteps])
    assert np.allclose(np.cumprod(1 - r.betas), r.alphas_cumprod)
    assert r.betas[0] == pytest.approx(1e-4)
    assert r.alphas_cumprod_prev[0] == 1.0 and np.allclose(r.alphas_cumprod_prev[1:], r.alphas_cumprod[:-1])
    # the FOPPAS start of later windows: respaced index 14 = original 560
    assert r.timesteps[14] == 560
    with pytest.raises(BadInput):
        schedule.respaced([3, 3])


# -- loss ---------------------------------------------------------------------------------------------------------

class ToyDenoiser(torch.nn.Module):
    """Per-frame MLP on [x_t, t/1000] -> eps; tiny and trainable."""

    def __init__(self, dim):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(dim + 1, 32), torch.nn.SiLU(), torch.nn.Linear(32, dim))

    def forward(self, x_t, t):
        t_feature = (t.float() / 1000.0).view(-1, 1, 1).expand(-1, x_t.shape[1], 1)
        return self.net(torch.cat([x_t, t_feature], dim=-1))


def test_loss_terms_and_weights(schedule):
    torch.manual_seed(0)
    model = ToyDenoiser(6)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(3, 10, 6, generator=gen)
    t = torch.tensor([5, 400, 900])
    noise = torch.randn(3, 10, 6, generator=gen)
    out = diffusion_loss(model, x0, schedule, t=t, noise=noise)
    assert set(out) == {"loss", "eps_mse", "velocity", "huber"}
    assert all(torch.isfinite(v) for v in out.values())
    assert out["loss"].item() == pytest.approx(
        1000 * out["eps_mse"].item() + 1 * out["velocity"].item() + 100 * out["huber"].item(), rel=1e-5)
    # the terms themselves, recomputed by hand
    x_t = schedule.q_sample(x0, t, noise)
    eps_pred = model(x_t, t)
    x0_pred = schedule.predict_x0(x_t, t, eps_pred)
    assert out["eps_mse"].item() == pytest.approx(F.mse_loss(eps_pred, noise).item(), rel=1e-5)
    vel = F.mse_loss(x0_pred.diff(dim=1), x0.diff(dim=1))
    assert out["velocity"].item() == pytest.approx(vel.item(), rel=1e-5)
    diff = (x0_pred - x0).abs()
    huber = torch.where(diff < 0.1, 0.5 * diff**2 / 0.1, diff - 0.05).mean()
    assert out["huber"].item() == pytest.approx(huber.item(), rel=1e-4)
    custom = diffusion_loss(model, x0, schedule, t=t, noise=noise, weights=LossWeights(eps=1, velocity=0, huber_x0=0))
    assert custom["loss"].item() == pytest.approx(out["eps_mse"].item(), rel=1e-6)


def test_loss_is_zero_for_the_true_noise(schedule):
    x0 = torch.randn(2, 8, 3)
    noise = torch.randn(2, 8, 3)
    out = diffusion_loss(lambda x_t, t: noise, x0, schedule, t=torch.tensor([10, 700]), noise=noise)
    assert out["eps_mse"].item() == 0.0
    assert out["loss"].item() < 1e-6


def test_loss_draws_t_and_noise_from_the_generator(schedule):
    model = ToyDenoiser(4)
    x0 = torch.randn(2, 6, 4)
    a = diffusion_loss(model, x0, schedule, generator=torch.Generator().manual_seed(7))["loss"]
    b = diffusion_loss(model, x0, schedule, generator=torch.Generator().manual_seed(7))["loss"]
    c = diffusion_loss(model, x0, schedule, generator=torch.Generator().manual_seed(8))["loss"]
    assert a.item() == b.item() and a.item() != c.item()


def test_loss_frame_weight_and_single_frame(schedule):
    model = ToyDenoiser(4)
    x0, noise, t = torch.randn(2, 6, 4), torch.randn(2, 6, 4), torch.tensor([50, 60])
    plain = diffusion_loss(model, x0, schedule, t=t, noise=noise)
    ones = diffusion_loss(model, x0, schedule, t=t, noise=noise, frame_weight=torch.ones(2, 6))
    doubled = diffusion_loss(model, x0, schedule, t=t, noise=noise, frame_weight=torch.full((2, 6), 2.0))
    assert ones["huber"].item() == pytest.approx(plain["huber"].item())
    assert doubled["huber"].item() > plain["huber"].item()
    single = diffusion_loss(model, x0[:, :1], schedule, t=t, noise=noise[:, :1])
    assert single["velocity"].item() == 0.0 and torch.isfinite(single["loss"])


def test_loss_decreases_with_adam(schedule):
    torch.manual_seed(0)
    model = ToyDenoiser(6)
    gen = torch.Generator().manual_seed(4)
    x0 = torch.randn(8, 12, 6, generator=gen)
    t = torch.randint(0, 1000, (8,), generator=gen)
    noise = torch.randn(8, 12, 6, generator=gen)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(30):
        loss = diffusion_loss(model, x0, schedule, t=t, noise=noise)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
