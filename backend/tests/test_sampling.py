"""DDIM / DDPM / FOPPAS samplers with tiny stand-in denoisers (CPU, a few seconds in total)."""

import math

import pytest
import torch

from sheg.diffusion.gaussian import NoiseSchedule, ddim_timesteps
from sheg.errors import BadInput
from sheg.diffusion.samplers import (
    count_model_calls,
    ddim_sample,
    ddpm_sample,
    foppas_sample,
    foppas_window,
    guided,
    jump_schedule,
    stabilizer_share,
    window_model_calls,
    window_spans,
)

torch.set_num_threads(1)

WINDOW, OVERLAP = 12, 3
STRIDE = WINDOW - OVERLAP
DIM = 4


@pytest.fixture(scope="module")
def schedule():
    return NoiseSchedule()


class LinearDenoiser:
    """eps = 0.5 * tanh(x W) * (1 + t / 1000): a fixed random map that depends on x and t; counts its calls."""

    def __init__(self, dim=DIM, seed=0):
        self.weight = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed)) / math.sqrt(dim)
        self.calls = 0

    def __call__(self, x_t, t):
        assert t.dtype == torch.long and t.shape == (x_t.shape[0],)
        self.calls += 1
        return 0.5 * torch.tanh(x_t @ self.weight) * (1.0 + t.float().view(-1, 1, 1) / 1000.0)


def shared_denoiser():
    """A make_denoiser(start, stop) whose denoisers share one call counter."""
    denoiser = LinearDenoiser()
    return denoiser, (lambda start, stop: denoiser)


def oracle(schedule, x0):
    """The denoiser that knows x0: returns the exact eps mapping x0 to x_t."""
    return lambda x_t, t: schedule.predict_eps(x_t, t, x0)


# -- the jump schedule and call counts -------------------------------------------------------------------------------

@pytest.mark.parametrize("jump_n_sample, calls", [(5, 63), (2, 27), (1, 15)], ids=["n5", "n2", "n1"])
def test_jump_schedule_model_calls(jump_n_sample, calls):
    times = jump_schedule(25, jump_length=3, jump_n_sample=jump_n_sample)
    assert times[0] == 14 and times[-1] == -1
    assert all(abs(a - b) == 1 for a, b in zip(times, times[1:]))
    assert all(-1 <= t <= 14 for t in times)
    assert sum(b < a for a, b in zip(times, times[1:])) == calls
    assert window_model_calls(25, True, 3, jump_n_sample) == calls
    assert window_model_calls(25, False, 3, jump_n_sample) == 25


def test_no_resample_is_the_truncated_schedule():
    assert window_model_calls(25, True, 3, 5, resample=False) == 15
    assert jump_schedule(25, 1, 1) == list(range(14, -2, -1))
    # the jump points are 0, 3, 6, 9: with n=2 the walk goes back up once from each
    times = jump_schedule(25, 3, 2)
    ups = [a for a, b in zip(times, times[1:]) if b > a]
    assert sorted(set(ups)) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    # other step counts start at int(0.6 * steps) - 1 and never stall
    assert jump_schedule(10, 3, 1)[0] == 5
    assert jump_schedule(1, 3, 5) == [0, -1]


@pytest.mark.parametrize("total, n, resample", [(1, 5, True), (12, 5, True), (13, 5, True), (40, 2, True),
                                                (40, 5, False), (50, 1, True)])
def test_count_model_calls_matches_the_sampler(schedule, total, n, resample):
    denoiser, make = shared_denoiser()
    progress = []
    foppas_sample(make, total, DIM, schedule, WINDOW, OVERLAP, jump_n_sample=n, resample=resample,
                  generator=torch.Generator().manual_seed(0), callback=progress.append)
    expected = count_model_calls(total, WINDOW, OVERLAP, 25, 3, n, resample)
    assert denoiser.calls == expected
    assert [p["calls"] for p in progress] == list(range(1, expected + 1))
    assert all(p["total_calls"] == expected and p["windows"] == len(window_spans(total, WINDOW, OVERLAP))
               for p in progress)


def test_count_model_calls_known_values():
    # SHOW script: 150 frames at 88/10 -> 2 windows, 25 + 63 calls; BEAT: 5 windows of 34/4, 25 + 4 * 27
    assert count_model_calls(150, 88, 10, 25, 3, 5) == 88
    assert count_model_calls(150, 34, 4, 25, 3, 2) == 133


# -- windows -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("total", [1, WINDOW - 1, WINDOW, WINDOW + 1, WINDOW + STRIDE - 1, WINDOW + STRIDE,
                                   WINDOW + STRIDE + 1, 5 * STRIDE + 3],
                         ids=["1", "N-1", "N", "N+1", "N+step-1", "N+step", "N+step+1", "5step+3"])
def test_window_spans_and_output_length(schedule, total):
    spans = window_spans(total, WINDOW, OVERLAP)
    assert spans[0][0] == 0 and spans[-1][1] == total
    for (start, stop), (next_start, _) in zip(spans, spans[1:]):
        assert stop - start == WINDOW and next_start == start + STRIDE
    assert spans[-1][1] - spans[-1][0] >= min(total, OVERLAP + 1)
    assert len(spans) == 1 if total <= WINDOW else len(spans) >= 2
    _, make = shared_denoiser()
    asked = []
    out = foppas_sample(lambda a, b: asked.append((a, b)) or make(a, b), total, DIM, schedule, WINDOW, OVERLAP,
                        jump_n_sample=2, batch=2, generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, total, DIM) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert asked == spans


def test_window_spans_match_get_windows_examples():
    assert window_spans(150, 88, 10) == [(0, 88), (78, 150)]
    assert window_spans(88 + 78, 88, 10) == [(0, 88), (78, 166)]
    assert window_spans(25, 12, 3) == [(0, 12), (9, 21), (18, 25)]
    assert window_spans(20, 12, 0) == [(0, 12), (12, 20)]
    with pytest.raises(BadInput):
        window_spans(0, 12, 3)
    with pytest.raises(BadInput):
        window_spans(30, 12, 12)


# -- reproducibility ----------------------------------------------------------------------------------------------

def test_same_seed_same_output_different_seed_differs(schedule):
    def run(seed):
        _, make = shared_denoiser()
        return foppas_sample(make, 30, DIM, schedule, WINDOW, OVERLAP, generator=torch.Generator().manual_seed(seed))

    a, b, c = run(11), run(11), run(12)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


# -- the FOPPAS overlap constraint --------------------------------------------------------------------------------

def test_overlap_frames_follow_the_known_tail(schedule):
    gen = torch.Generator().manual_seed(5)
    known = torch.randn(2, OVERLAP, DIM, generator=gen)
    x_init = torch.randn(2, WINDOW, DIM, generator=gen)
    trace = []
    out = foppas_window(LinearDenoiser(), x_init, schedule, known=known, jump_n_sample=2, generator=gen,
                        callback=trace.append)
    assert len(trace) == 27 and [s["i"] for s in trace] == list(range(27))
    for step in trace:
        abar_prev = step["abar_prev"]
        expected = math.sqrt(abar_prev) * known + math.sqrt(1 - abar_prev) * step["overlap_noise"]
        torch.testing.assert_close(step["known_noised"], expected, rtol=0, atol=1e-6)
        overlap = step["x"][:, :OVERLAP]
        if step["blend_weight"] is None:
            assert math.sqrt(1 - abar_prev) >= 0.2
            assert torch.equal(overlap, step["known_noised"])
        else:
            w = torch.linspace(0, 1, OVERLAP).view(1, -1, 1)
            torch.testing.assert_close(overlap, step["known_noised"] * (1 - w) + step["x_update"][:, :OVERLAP] * w)
        assert torch.equal(step["x"][:, OVERLAP:], step["x_update"][:, OVERLAP:])
    # blending only at respaced 2, 1, 0 (sqrt(1 - abar_prev) < 0.2); the first pass jumps back up from 0 after
    # denoising at 1, the second ends with the step at 0
    assert [s["respaced_t"] for s in trace if s["blend_weight"] is not None] == [2, 1, 2, 1, 0]
    assert trace[0]["t"] == 560 and trace[-1]["t"] == 0 and trace[-1]["abar_prev"] == 1.0
    assert torch.equal(trace[-1]["known_noised"], known)
    assert torch.equal(out[:, 0], known[:, 0]), "blend weight 0 keeps the known tail's first frame"
    assert torch.equal(out[:, OVERLAP - 1], trace[-1]["x_update"][:, OVERLAP - 1]), "weight 1 keeps the new frame"


def test_windows_are_chained_and_stitched(schedule):
    total = 3 * STRIDE + 5  # 4 windows, the last one partial
    finals, knowns = {}, {}

    def capture(info):
        if info["i"] == info["steps"] - 1:
            finals[info["window"]] = info["x"].clone()
            if info["window"] > 0:
                knowns[info["window"]] = info["known_noised"].clone()  # abar_prev = 1 at the last step

    _, make = shared_denoiser()
    out = foppas_sample(make, total, DIM, schedule, WINDOW, OVERLAP, jump_n_sample=1,
                        generator=torch.Generator().manual_seed(2), callback=capture)
    spans = window_spans(total, WINDOW, OVERLAP)
    assert len(spans) == 4 and sorted(finals) == [0, 1, 2, 3]
    for k in range(1, 4):
        assert torch.equal(knowns[k], finals[k - 1][:, -OVERLAP:])
        assert torch.equal(finals[k][:, 0], finals[k - 1][:, WINDOW - OVERLAP])
    expected = torch.cat([finals[0][:, :STRIDE], finals[1][:, :STRIDE], finals[2][:, :STRIDE], finals[3]], dim=1)
    assert torch.equal(out, expected)


def test_zero_overlap_runs_independent_full_windows(schedule):
    denoiser, make = shared_denoiser()
    out = foppas_sample(make, 30, DIM, schedule, WINDOW, 0, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 30, DIM) and denoiser.calls == 3 * 25 == count_model_calls(30, WINDOW, 0)


def test_callback_exception_aborts(schedule):
    denoiser, make = shared_denoiser()

    def cancel(info):
        if info["calls"] == 30:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        foppas_sample(make, 40, DIM, schedule, WINDOW, OVERLAP, callback=cancel)
    assert denoiser.calls == 30


def test_very_long_input_uses_bounded_work_per_window(schedule):
    # 2 h at 30 fps; 2 steps keep it to one model call per later window so the test stays fast
    total = 2 * 3600 * 30
    denoiser, make = shared_denoiser()
    out = foppas_sample(make, total, DIM, schedule, 88, 10, steps=2, resample=False,
                        generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, total, DIM) and torch.isfinite(out).all()
    windows = len(window_spans(total, 88, 10))
    assert windows == 2770  # 2769 full windows + a partial one of 18 frames
    assert denoiser.calls == count_model_calls(total, 88, 10, 2, 3, 5, False) == 2 + (windows - 1)


# -- DDIM / DDPM --------------------------------------------------------------------------------------------------

def test_ddim_with_oracle_recovers_x0(schedule):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(2, 10, DIM, generator=gen)
    x_T = torch.randn(2, 10, DIM, generator=gen)
    steps = []
    out = ddim_sample(oracle(schedule, x0), x_T, schedule, ddim_timesteps(1000, 25), callback=steps.append)
    torch.testing.assert_close(out, x0, atol=1e-4, rtol=1e-4)
    assert [s["t"] for s in steps] == list(range(960, -1, -40)) and steps[-1]["steps"] == 25
    stochastic = ddim_sample(oracle(schedule, x0), x_T, schedule, ddim_timesteps(1000, 25), eta=1.0,
                             generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(stochastic, x0, atol=1e-4, rtol=1e-4)


def test_ddim_eta_zero_is_deterministic_and_eta_one_is_seeded(schedule):
    x_T = torch.randn(1, 8, DIM, generator=torch.Generator().manual_seed(3))
    ts = ddim_timesteps(1000, 10)
    det = [ddim_sample(LinearDenoiser(), x_T, schedule, ts, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    assert torch.equal(det[0], det[1])
    sto = [ddim_sample(LinearDenoiser(), x_T, schedule, ts, eta=1.0, generator=torch.Generator().manual_seed(s))
           for s in (1, 1, 2)]
    assert torch.equal(sto[0], sto[1]) and not torch.allclose(sto[0], sto[2])


def test_ddpm_runs_seeded_and_recovers_x0_with_oracle():
    schedule = NoiseSchedule()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1, 6, DIM, generator=gen)
    x_T = torch.randn(1, 6, DIM, generator=gen)
    denoiser = LinearDenoiser()
    a = ddpm_sample(denoiser, x_T, schedule, generator=torch.Generator().manual_seed(4))
    b = ddpm_sample(denoiser, x_T, schedule, generator=torch.Generator().manual_seed(4))
    c = ddpm_sample(denoiser, x_T, schedule, generator=torch.Generator().manual_seed(5))
    assert denoiser.calls == 3000
    assert torch.equal(a, b) and not torch.allclose(a, c) and torch.isfinite(a).all()
    recovered = ddpm_sample(oracle(schedule, x0), x_T, schedule, generator=torch.Generator().manual_seed(6))
    torch.testing.assert_close(recovered, x0, atol=1e-4, rtol=1e-4)


def test_window_zero_is_plain_ddim(schedule):
    x_init = torch.randn(1, WINDOW, DIM, generator=torch.Generator().manual_seed(9))
    a = foppas_window(LinearDenoiser(), x_init, schedule)
    b = ddim_sample(LinearDenoiser(), x_init, schedule, ddim_timesteps(1000, 25))
    assert torch.equal(a, b)


# -- guidance -----------------------------------------------------------------------------------------------------

def test_guided_combines_and_skips_uncond_at_scale_one():
    cond, uncond = LinearDenoiser(seed=1), LinearDenoiser(seed=2)
    x, t = torch.randn(2, 5, DIM), torch.tensor([100, 200])
    assert torch.equal(guided(cond, uncond, 1.0)(x, t), cond(x, t))
    assert uncond.calls == 0
    expected = uncond(x, t) + 1.25 * (cond(x, t) - uncond(x, t))
    torch.testing.assert_close(guided(cond, uncond, 1.25)(x, t), expected)


# -- Diffusion Gesture Stabilizer ----------------------------------------------------------------------------------

def zero_denoiser(x_t, t):
    return torch.zeros_like(x_t)


def frame_correlation(z):
    """(correlation of the noise between two different frames, mean variance) over batch and features; z (B, T, D).

    The correlation is the mean off-diagonal E[z_i z_j] over the mean E[z_i^2], so for z = s z_shared +
    sqrt(1 - s^2) z_frame it estimates s^2.
    """
    frames = z.shape[1]
    gram = torch.einsum("bid,bjd->ij", z.double(), z.double()) / (z.shape[0] * z.shape[2])
    off = gram[~torch.eye(frames, dtype=torch.bool)]
    return float(off.mean() / gram.diagonal().mean()), float(gram.diagonal().mean())


def test_stabilizer_share_is_the_official_annealing():
    assert stabilizer_share(5, 25, "smooth") == pytest.approx(((5 - 25) / 25) ** 2)
    assert stabilizer_share(24, 25, "smooth") == pytest.approx(1 / 625)
    assert stabilizer_share(2, 25, "hard") == 1.0
    for n in (1, 25, 26, 500):  # no noise at the last step; i.i.d. noise before the last t0 steps
        assert stabilizer_share(n, 25, "smooth") is None and stabilizer_share(n, 25, "hard") is None
    assert stabilizer_share(5, 25, None) is None
    with pytest.raises(BadInput, match="unknown stabilizer"):
        stabilizer_share(5, 25, "soft")
    with pytest.raises(BadInput, match="stabilizer_t0"):
        ddpm_sample(zero_denoiser, torch.zeros(1, 2, 2), NoiseSchedule(10), stabilizer="smooth", stabilizer_t0=1)


@pytest.mark.parametrize("mode", ["smooth", "hard"])
def test_stabilizer_off_equals_plain_sampling(mode):
    schedule = NoiseSchedule(60)
    x_T = torch.randn(2, 7, DIM, generator=torch.Generator().manual_seed(0))
    runs = {}
    for name, kwargs in (("plain", {}), ("none", {"stabilizer": None}), ("empty", {"stabilizer": mode,
                                                                                    "stabilizer_t0": 2}),
                         ("on", {"stabilizer": mode, "stabilizer_t0": 25})):
        trace = []
        out = ddpm_sample(LinearDenoiser(), x_T, schedule, generator=torch.Generator().manual_seed(1),
                          callback=trace.append, **kwargs)
        runs[name] = (out, [step["x"] for step in trace])
    assert torch.equal(runs["plain"][0], runs["none"][0]) and torch.equal(runs["plain"][0], runs["empty"][0])
    # with t0 = 25 the first 60 - 24 steps (t >= 24) are untouched, the stabilized tail differs
    plain, on = runs["plain"][1], runs["on"][1]
    assert all(torch.equal(a, b) for a, b in zip(plain[:36], on[:36]))
    assert not torch.allclose(plain[36], on[36]) and not torch.allclose(runs["plain"][0], runs["on"][0])


@pytest.mark.parametrize("mode", ["smooth", "hard"])
def test_stabilizer_shares_noise_across_frames_on_schedule(mode):
    schedule = NoiseSchedule(30)
    trace = []
    ddpm_sample(zero_denoiser, torch.zeros(1500, 6, 8), schedule, generator=torch.Generator().manual_seed(2),
                callback=trace.append, stabilizer=mode, stabilizer_t0=25)
    for step in trace:
        n = step["t"] + 1
        if n == 1:
            assert step["noise"] is None
            continue
        corr, var = frame_correlation(step["noise"])
        share = ((n - 25) / 25) ** 2 if mode == "smooth" else 1.0
        expected = share ** 2 if 1 < n < 25 else 0.0
        assert step["shared"] == (pytest.approx(share) if 1 < n < 25 else None)
        assert abs(corr - expected) < 0.02, (n, corr, expected)
        assert abs(var - 1.0) < 0.05  # still unit-variance noise
        if mode == "hard" and 1 < n < 25:
            assert torch.equal(step["noise"], step["noise"][:, :1].expand_as(step["noise"]))


def test_stabilizer_shapes_ddim_noise_only_with_eta():
    schedule = NoiseSchedule(100)
    ts = ddim_timesteps(100, 10)
    x_T = torch.zeros(800, 5, 6)
    trace = []
    ddim_sample(zero_denoiser, x_T, schedule, ts, eta=1.0, generator=torch.Generator().manual_seed(3),
                callback=trace.append, stabilizer="smooth", stabilizer_t0=6)
    for i, step in enumerate(trace):
        n = len(ts) - i  # visited steps left, this one included
        if n == 1:
            assert step["noise"] is None  # abar_prev = 1: DDIM adds nothing at the end
            continue
        corr, _ = frame_correlation(step["noise"])
        expected = ((n - 6) / 6) ** 4 if 1 < n < 6 else 0.0
        assert abs(corr - expected) < 0.03, (n, corr, expected)
    x_T = torch.randn(1, 5, DIM, generator=torch.Generator().manual_seed(4))
    det = [ddim_sample(LinearDenoiser(), x_T, schedule, ts, stabilizer=mode) for mode in (None, "hard")]
    assert torch.equal(det[0], det[1])  # eta = 0 injects no noise to shape


def test_foppas_with_eta_and_the_stabilizer_for_unieg_models(schedule):
    """Official FOPPAS is eta 0; a stabilizer there changes nothing. eta > 0 adds seeded noise, and with the hard
    stabilizer the late-step noise of a window is one vector for all its frames."""
    def run(seed=5, **kwargs):
        _, make = shared_denoiser()
        return foppas_sample(make, 30, DIM, schedule, WINDOW, OVERLAP, generator=torch.Generator().manual_seed(seed),
                             **kwargs)

    plain = run()
    assert torch.equal(plain, run(stabilizer="hard"))
    noisy = run(eta=1.0, stabilizer="smooth")
    assert not torch.allclose(plain, noisy) and torch.equal(noisy, run(eta=1.0, stabilizer="smooth"))
    assert not torch.allclose(noisy, run(eta=1.0))  # the stabilizer shapes the eta noise
    with pytest.raises(BadInput, match="unknown stabilizer"):
        run(eta=1.0, stabilizer="soft")
    x = torch.zeros(400, 12, 4)
    known = torch.zeros(400, 3, 4)
    updates = []
    foppas_window(zero_denoiser, x, NoiseSchedule(100), steps=10, known=known, known_len=3, resample=False,
                  eta=1.0, stabilizer="hard", stabilizer_t0=6, generator=torch.Generator().manual_seed(6),
                  callback=updates.append)
    def added_noise(step):  # eps = 0: x_update = sqrt(abar_prev) x0 + sigma z
        return step["x_update"] - math.sqrt(step["abar_prev"]) * step["x0"]

    late = added_noise(updates[-2])  # 2 respaced steps to go: the hard stabilizer shares all of the noise
    assert late.abs().max() > 1e-3 and torch.allclose(late, late[:, :1].expand_as(late), atol=1e-5)
    early = added_noise(updates[0])
    assert not torch.allclose(early, early[:, :1].expand_as(early), atol=1e-3)


def test_foppas_can_hand_the_previous_tail_to_the_denoiser(schedule):
    denoiser = LinearDenoiser()
    seen, finals = [], {}

    def make_denoiser(start, stop, known):
        seen.append((start, stop, None if known is None else known.clone()))
        return denoiser

    def callback(info):
        finals[info["window"]] = info["x"]

    total = 2 * STRIDE + WINDOW
    out = foppas_sample(make_denoiser, total, DIM, schedule, window=WINDOW, overlap=OVERLAP, steps=5,
                        generator=torch.Generator().manual_seed(0), callback=callback, known_to_denoiser=True)
    assert [(a, b) for a, b, _ in seen] == window_spans(total, WINDOW, OVERLAP) and seen[0][2] is None
    for k in (1, 2):
        torch.testing.assert_close(seen[k][2], finals[k - 1][:, -OVERLAP:])
    plain = foppas_sample(lambda start, stop: denoiser, total, DIM, schedule, window=WINDOW, overlap=OVERLAP,
                          steps=5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, plain)
