"""Download HuBERT from a loopback server (127.0.0.1 only, tests/hub_server.py) that serves a tiny random HuBERT in
the hub's layout: progress, cancel, a resume that asks only for the missing bytes (of a cancelled run, a killed
process and a dropped connection), the size and sha256 checks, a load check, then generation with it."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from sheg.errors import Cancelled, ShegError
from sheg.testing import make_tiny_hubert, make_tiny_model_dir
from hub_server import Hub
from sheg_cli import run_cli

pytest.importorskip("huggingface_hub")
pytest.importorskip("transformers")

SPEECH = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "speech", "arctic_a0007.wav")
WEIGHTS = "model.safetensors"
HIDDEN = 64  # a 214 kB weights file: it arrives in many pieces


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder = make_tiny_hubert(str(tmp_path_factory.mktemp("served") / "hubert"), hidden_size=HIDDEN)
    files = {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)}
    assert set(files) >= {"config.json", "preprocessor_config.json", WEIGHTS}
    return files


@pytest.fixture
def hub(served):
    server = Hub(dict(served)).start()
    yield server
    server.stop()


def test_cancel_keeps_the_bytes_and_a_new_run_asks_only_for_the_rest_then_loads_and_generates(hub, tmp_path):
    from sheg.io.hubert_download import download_hubert

    out = tmp_path / "hubert"
    size = len(hub.files[WEIGHTS])
    events = []

    def cancel_halfway(event):
        events.append(event)
        if event.get("file") == WEIGHTS and event["done"] >= size // 2:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        download_hubert(str(out), endpoint=hub.endpoint, progress=cancel_halfway)
    weights = [e for e in events if e.get("file") == WEIGHTS]
    assert len(weights) > 3 and all(e["stage"] == "download" and e["total"] == size for e in weights)
    kept = (out / f"{WEIGHTS}.incomplete").read_bytes()
    assert len(kept) == weights[-1]["done"] and size // 2 <= len(kept) < size  # what was reported is on disk
    assert kept == hub.files[WEIGHTS][:len(kept)]
    assert not (out / WEIGHTS).exists() and (out / "config.json").is_file()

    events.clear()
    result = download_hubert(str(out), endpoint=hub.endpoint, progress=events.append)
    assert hub.ranges == [(WEIGHTS, len(kept))]  # the new run asked only for the rest
    assert hub.requests[-1] == [WEIGHTS, len(kept), size - len(kept)]  # only the rest came
    assert size <= hub.sent[WEIGHTS] < 2 * size  # in all (the cancelled run's last bytes in flight included)
    assert result["files"] == ["config.json", "preprocessor_config.json", WEIGHTS] and result["hidden_size"] == HIDDEN
    for name, data in hub.files.items():
        assert (out / name).read_bytes() == data
    assert not (out / f"{WEIGHTS}.incomplete").exists()
    shown = [e["done"] for e in events if e.get("file") == WEIGHTS]
    assert shown[0] == len(kept) and shown[-1] == size and shown == sorted(shown)
    assert events[-1] == {"stage": "check"}
    assert not [e for e in events if e.get("file") == "config.json"]  # kept from the cancelled run

    model = make_tiny_model_dir(str(tmp_path / "model"), hubert=str(out), hubert_dim=HIDDEN)
    take = tmp_path / "take.npz"
    proc = run_cli("generate", SPEECH, "-o", take, "--model", model, "--steps", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    with np.load(take) as z:
        assert z["poses"].shape == (120, 165)

    hub.gets.clear()
    again = download_hubert(str(out), endpoint=hub.endpoint)  # complete: nothing is fetched again
    assert again["hidden_size"] == HIDDEN and WEIGHTS not in hub.gets


def test_cli_json_progress_and_a_dropped_connection_resumes_at_the_byte_it_reached(hub, tmp_path):
    hub.cut_after[WEIGHTS] = 5000  # the first GET of the weights ends after 5000 bytes
    out = tmp_path / "hubert"
    proc = run_cli("download-hubert", "-o", out, "--endpoint", hub.endpoint, "--json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["hidden_size"] == HIDDEN
    assert events[-2] == {"event": "progress", "stage": "check"}
    assert {e.get("file") for e in events if e["event"] == "progress"} >= {"config.json", WEIGHTS}
    assert hub.gets.count(WEIGHTS) == 2 and hub.ranges == [(WEIGHTS, 5000)] and not hub.cut_after
    assert hub.sent[WEIGHTS] == len(hub.files[WEIGHTS])  # no byte sent twice
    assert (out / WEIGHTS).read_bytes() == hub.files[WEIGHTS]


def test_a_killed_download_resumes_from_its_partial_file(hub, tmp_path):
    """What the add-on's cancel does: the process is terminated while the weights arrive."""
    hub.stall_after[WEIGHTS] = 9000
    out = tmp_path / "hubert"
    proc = subprocess.Popen([sys.executable, "-m", "sheg", "download-hubert", "-o", str(out), "--endpoint",
                             hub.endpoint, "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert hub.stalled.wait(120)
        partial = out / f"{WEIGHTS}.incomplete"
        deadline = time.monotonic() + 30
        while (not partial.is_file() or partial.stat().st_size < 9000) and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    hub.release.set()
    assert partial.read_bytes() == hub.files[WEIGHTS][:9000] and not (out / WEIGHTS).exists()
    done = run_cli("download-hubert", "-o", out, "--endpoint", hub.endpoint)
    assert done.returncode == 0, done.stderr
    assert hub.ranges == [(WEIGHTS, 9000)] and hub.sent[WEIGHTS] == len(hub.files[WEIGHTS])
    assert (out / WEIGHTS).read_bytes() == hub.files[WEIGHTS]


def test_a_server_that_ignores_range_sends_the_whole_file_again(hub, tmp_path):
    from sheg.io.hubert_download import download_hubert

    out = tmp_path / "hubert"
    out.mkdir()
    (out / f"{WEIGHTS}.incomplete").write_bytes(hub.files[WEIGHTS][:3000])
    hub.ignore_range = True
    download_hubert(str(out), endpoint=hub.endpoint)
    assert (out / WEIGHTS).read_bytes() == hub.files[WEIGHTS]


def test_a_size_the_head_does_not_state_comes_from_the_download_and_a_drop_still_resumes(hub, tmp_path):
    from sheg.io.hubert_download import download_hubert

    hub.hide_size.add(WEIGHTS)
    hub.cut_after[WEIGHTS] = 7000
    out = tmp_path / "hubert"
    assert download_hubert(str(out), endpoint=hub.endpoint)["hidden_size"] == HIDDEN
    assert hub.ranges == [(WEIGHTS, 7000)] and hub.sent[WEIGHTS] == len(hub.files[WEIGHTS])
    assert (out / WEIGHTS).read_bytes() == hub.files[WEIGHTS]


def test_a_file_that_does_not_match_its_sha256_is_one_line_and_not_kept(hub, tmp_path):
    from sheg.io.hubert_download import download_hubert

    hub.etags[WEIGHTS] = "0" * 64
    out = tmp_path / "hubert"
    with pytest.raises(ShegError, match="model.safetensors does not match its sha256 000000000000") as info:
        download_hubert(str(out), endpoint=hub.endpoint)
    assert "\n" not in str(info.value)
    assert not (out / WEIGHTS).exists() and not (out / f"{WEIGHTS}.incomplete").exists()


def test_a_repository_without_weights_is_one_line(hub, tmp_path):
    del hub.files[WEIGHTS]
    proc = run_cli("download-hubert", "-o", tmp_path / "a", "--endpoint", hub.endpoint)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "has none of model.safetensors, pytorch_model.bin" in proc.stderr


def test_an_unreachable_endpoint_is_one_line(tmp_path):
    hub = Hub({})  # a port that was just free: closed, it refuses connections
    endpoint = hub.endpoint
    hub.server_close()
    proc = run_cli("download-hubert", "-o", tmp_path / "a", "--endpoint", endpoint)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "a").exists()  # nothing arrived: no folder left behind
    assert f"cannot reach {endpoint} to download facebook/hubert-large-ls960-ft: check the connection (or " \
           "HF_ENDPOINT) and run it again" in proc.stderr
