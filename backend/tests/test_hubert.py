"""HuBERT features as the official code computes them, with a tiny random HuBERT of HuBERT-large's front end."""

import numpy as np
import pytest
import torch

from sheg.data.audio import HUBERT_KERNEL, HUBERT_STRIDE, hubert_features, hubert_windows

transformers = pytest.importorskip("transformers")

RATE = 16000


@pytest.fixture(scope="module")
def tiny_hubert(tmp_path_factory):
    from sheg.testing import make_tiny_hubert

    return make_tiny_hubert(str(tmp_path_factory.mktemp("hubert") / "tiny-hubert"))


def speech_like(seconds, seed=0):
    """Noise whose loudness changes a lot over the clip, so per-window and whole-clip normalisation differ."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    envelope = np.where(np.arange(n) < n // 3, 0.02, 0.5)
    return (rng.standard_normal(n) * envelope).astype(np.float32)


def test_windows_are_the_official_ones():
    # 320,080 samples (1,000 frames) every 320,000; the rest when it holds a kernel
    assert hubert_windows(720_000) == [(0, 320_080), (320_000, 640_080), (640_000, 720_000)]
    assert hubert_windows(320_000) == [(0, 320_000)]
    assert hubert_windows(320_000 + 399) == [(0, 320_080)]  # a rest shorter than one kernel is dropped
    assert hubert_windows(160_000) == [(0, 160_000)]
    for start, stop in hubert_windows(10 ** 7)[:-1]:
        assert (stop - start - HUBERT_KERNEL) // HUBERT_STRIDE + 1 == 1000
    # frames over all windows = the official expected length (N - (kernel - stride)) // stride
    for n in (400, 320_079, 320_080, 640_400, 1_000_000):
        got = sum((b - a - HUBERT_KERNEL) // HUBERT_STRIDE + 1 for a, b in hubert_windows(n))
        assert got == (n - (HUBERT_KERNEL - HUBERT_STRIDE)) // HUBERT_STRIDE


def test_windows_join_without_gap_or_repeat(tiny_hubert):
    from transformers import HubertModel

    net = HubertModel.from_pretrained(tiny_hubert).eval()
    values = torch.from_numpy(speech_like(45.0))[None]
    with torch.no_grad():
        whole = net.feature_extractor(values)  # (1, C, frames): the convolutional front end is local
        joined = torch.cat([net.feature_extractor(values[:, a:b]) for a, b in hubert_windows(values.shape[1])], -1)
    assert joined.shape == whole.shape and joined.shape[-1] == 2249
    torch.testing.assert_close(joined, whole, atol=1e-5, rtol=1e-5)


def reference(wave, frames, model_dir, per_window_norm=False):
    """Official recipe written out: normalise (zero mean, unit variance) then HuBERT per window, interpolate."""
    from transformers import HubertModel

    net = HubertModel.from_pretrained(model_dir).eval()
    norm = lambda x: (x - x.mean()) / np.sqrt(x.var() + 1e-7)  # noqa: E731
    values = wave if per_window_norm else norm(wave)
    pieces = []
    with torch.no_grad():
        for a, b in hubert_windows(len(values)):
            piece = norm(values[a:b]) if per_window_norm else values[a:b]
            pieces.append(net(torch.from_numpy(piece.astype(np.float32))[None]).last_hidden_state[0])
    feats = torch.cat(pieces)
    return torch.nn.functional.interpolate(feats.T[None], size=frames, mode="linear", align_corners=True)[0].T.numpy()


def test_long_clip_is_normalised_whole_and_windowed_like_the_official_code(tiny_hubert):
    wave = speech_like(45.0)
    frames = 45 * 30
    got = hubert_features(wave, frames, tiny_hubert)
    assert got.shape == (frames, 16) and got.dtype == np.float32
    np.testing.assert_allclose(got, reference(wave, frames, tiny_hubert), atol=2e-5)
    # normalising window by window (the old behaviour) gives other features
    assert np.abs(got - reference(wave, frames, tiny_hubert, per_window_norm=True)).max() > 1e-2


def test_short_clip_is_one_pass(tiny_hubert):
    from transformers import HubertModel

    wave = speech_like(12.0, seed=1)
    net = HubertModel.from_pretrained(tiny_hubert).eval()
    values = (wave - wave.mean()) / np.sqrt(wave.var() + 1e-7)
    with torch.no_grad():
        one = net(torch.from_numpy(values)[None]).last_hidden_state[0].numpy()
    got = hubert_features(wave, one.shape[0], tiny_hubert)  # as many frames as HuBERT gives: no interpolation
    np.testing.assert_allclose(got, one, atol=2e-5)
