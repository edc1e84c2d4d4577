"""Download HuBERT through the ordinary Hugging Face client from a loopback server (127.0.0.1 only) that serves a
tiny random HuBERT in the hub's layout: progress, cancel, resume of a dropped connection, a load check, then
generation with it. (huggingface_hub 2.x deletes a partial file when a download fails, so a cancelled file starts
again on the next run, while the files that arrived are kept; a dropped connection is retried by the client.)"""

import hashlib
import http.server
import json
import os
import re
import threading

import numpy as np
import pytest

from sheg.errors import Cancelled
from sheg.testing import make_tiny_hubert, make_tiny_model_dir
from sheg_cli import run_cli

pytest.importorskip("huggingface_hub")
pytest.importorskip("transformers")

REPO = "facebook/hubert-large-ls960-ft"
COMMIT = "d" * 40
SPEECH = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "speech", "arctic_a0007.wav")


class Hub(http.server.ThreadingHTTPServer):
    """/{repo}/resolve/{revision}/{file} with the headers the client reads (X-Repo-Commit, ETag, sizes, ranges);
    `cut_after` drops the connection of the next full GET of a file after that many bytes."""

    def __init__(self, files: dict):
        super().__init__(("127.0.0.1", 0), Handler)
        self.files, self.ranges, self.cut_after, self.gets = files, [], {}, []

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _file(self):
        found = re.fullmatch(rf"/{re.escape(REPO)}/resolve/[^/]+/(.+)", self.path.split("?")[0])
        return found and self.server.files.get(found.group(1)), found and found.group(1)

    def _head(self, data, status=200, length=None):
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()

    def _missing(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("X-Error-Message", "Entry not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        data, _ = self._file()
        self._missing() if data is None else self._head(data)

    def do_GET(self):
        data, name = self._file()
        if data is None:
            return self._missing()
        self.server.gets.append(name)
        start = 0
        if "Range" in self.headers:
            start = int(re.match(r"bytes=(\d+)-", self.headers["Range"]).group(1))
            self.server.ranges.append((name, start))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest() + '"')
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
        else:
            self._head(data)
        body = data[start:]
        cut = self.server.cut_after.pop(name, None) if start == 0 else None
        self.wfile.write(body if cut is None else body[:cut])
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True


@pytest.fixture
def hub(tmp_path):
    folder = make_tiny_hubert(str(tmp_path / "served"), hidden_size=16)
    files = {n: open(os.path.join(folder, n), "rb").read() for n in os.listdir(folder)}
    assert set(files) >= {"config.json", "preprocessor_config.json", "model.safetensors"}
    server = Hub(files)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_progress_cancel_then_a_new_run_finishes_loads_and_generates(hub, tmp_path):
    from sheg.io.hubert_download import download_hubert

    out = tmp_path / "hubert"
    weights = len(hub.files["model.safetensors"])
    events = []

    def cancel_halfway(event):
        events.append(event)
        if event["file"] == "model.safetensors" and event["done"] >= weights // 2:
            raise Cancelled("cancelled")

    with pytest.raises(Cancelled):
        download_hubert(str(out), endpoint=hub.endpoint, progress=cancel_halfway)
    # the weights never land half-written; the small files that did arrive are kept
    assert not (out / "model.safetensors").exists() and (out / "config.json").is_file()
    assert not list((out / ".cache" / "huggingface" / "download").glob("*.incomplete"))

    events.clear()
    result = download_hubert(str(out), endpoint=hub.endpoint, progress=events.append)
    assert result["files"] == ["config.json", "preprocessor_config.json", "model.safetensors"]
    assert result["hidden_size"] == 16
    assert (out / "model.safetensors").read_bytes() == hub.files["model.safetensors"]
    shown = [e["done"] for e in events if e["file"] == "model.safetensors"]
    assert shown[-1] == weights and shown == sorted(shown)
    assert not [e for e in events if e["file"] == "config.json"]  # kept from the cancelled run, not fetched again

    model = make_tiny_model_dir(str(tmp_path / "model"), hubert=str(out), hubert_dim=16)
    take = tmp_path / "take.npz"
    proc = run_cli("generate", SPEECH, "-o", take, "--model", model, "--steps", "2", "--quiet")
    assert proc.returncode == 0, proc.stderr
    with np.load(take) as z:
        assert z["poses"].shape == (120, 165)


def test_cli_json_progress_and_a_dropped_connection_is_retried(hub, tmp_path):
    hub.cut_after["model.safetensors"] = 1000  # the first GET of the weights ends after 1000 bytes
    out = tmp_path / "hubert"
    proc = run_cli("download-hubert", "-o", out, "--endpoint", hub.endpoint, "--json")
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    assert events[-1]["event"] == "done" and events[-1]["hidden_size"] == 16
    assert {e["file"] for e in events if e["event"] == "progress"} >= {"config.json", "model.safetensors"}
    assert hub.gets.count("model.safetensors") == 2 and not hub.cut_after  # cut once, fetched again by the client
    assert (out / "model.safetensors").read_bytes() == hub.files["model.safetensors"]


def test_a_repository_without_weights_is_one_line(hub, tmp_path):
    del hub.files["model.safetensors"]
    proc = run_cli("download-hubert", "-o", tmp_path / "a", "--endpoint", hub.endpoint)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "has none of model.safetensors, pytorch_model.bin" in proc.stderr
