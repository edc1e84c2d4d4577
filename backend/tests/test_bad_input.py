"""Bad input, tried as a new user would: `sheg generate` and the worker protocol on real files and real processes.

Every case must end in one line that says what is wrong (CLI: `sheg: error: ...`, exit 2; worker: an `error`
event, the worker still alive) and leave the files as they were: no output, no temporary file, an existing output
untouched. With SHEG_BAD_INPUT_TABLE=FILE each case appends a row (input | message | state after) to FILE.
"""

import hashlib
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from sheg_cli import SPEECH, WorkerProcess, run_cli, write_wave


def record(case: str, message: str, state: str) -> None:
    table = os.environ.get("SHEG_BAD_INPUT_TABLE")
    if table:
        with open(table, "a", encoding="utf-8") as f:
            f.write(f"| {case} | {message} | {state} |\n")


def snapshot(folder) -> dict:
    """Every file below `folder` with its sha256: the state a failed command must leave as it was."""
    found = {}
    for base, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(base, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, folder)] = hashlib.sha256(f.read()).hexdigest()
    return found


class Marker:
    """A pickle payload that creates a file when unpickled: proof that nothing of a tampered file ever runs."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _audio(tmp, kind: str) -> str:
    path = tmp / "in.wav"
    if kind == "missing":
        return str(tmp / "missing.wav")
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path = tmp / "notes.txt"
        path.write_text("hello\n" * 50)
    elif kind == "random-bytes":
        path.write_bytes(b"RIFF" + os.urandom(64))
    elif kind == "sub-frame":
        sf.write(path, np.zeros(200, np.float32), 16000)
    elif kind in ("nan", "inf"):
        wave = (0.2 * np.sin(np.arange(32000) / 10)).astype(np.float32)
        wave[5000:5100] = np.nan if kind == "nan" else np.inf
        sf.write(path, wave, 16000, subtype="FLOAT")
    elif kind == "directory":
        path = tmp / "a-folder.wav"
        path.mkdir()
    else:
        write_wave(path, 1.0)
    return str(path)


def _tamper(model_dir: str, tmp, how: str) -> str:
    out = tmp / "model"
    shutil.copytree(model_dir, out)
    meta_file, weights = out / "model.json", out / "model.safetensors"
    meta = json.loads(meta_file.read_text())
    if how == "json-syntax":
        meta_file.write_text(meta_file.read_text()[:-20])
    elif how == "json-not-object":
        meta_file.write_text("[1, 2, 3]")
    elif how == "stats-length":
        meta["stats"]["mean"] = meta["stats"]["mean"][:-3]
        meta_file.write_text(json.dumps(meta))
    elif how == "window-absurd":
        meta["window"] = -5
        meta_file.write_text(json.dumps(meta))
    elif how == "config-missing":
        del meta["config"]
        meta_file.write_text(json.dumps(meta))
    elif how == "fps-string":
        meta["fps"] = "thirty"
        meta_file.write_text(json.dumps(meta))
    elif how == "weights-truncated":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif how == "weights-empty":
        weights.write_bytes(b"")
    elif how == "weights-pickle":
        weights.write_bytes(pickle.dumps({"unieg.weight": Marker(str(tmp / "PWNED"))}))
    elif how == "weights-missing":
        weights.unlink()
    elif how == "empty-folder":
        shutil.rmtree(out)
        out.mkdir()
    return str(out)


# (case, how the input is made, what the one line must say)
AUDIO_CASES = [
    ("missing", "audio file not found"),
    ("empty", "empty"),
    ("text", "cannot decode"),
    ("random-bytes", "cannot decode"),
    ("sub-frame", "too short"),
    ("nan", "NaN or infinite samples"),
    ("inf", "NaN or infinite samples"),
    ("directory", "is a folder, not an audio file"),
]
ARG_CASES = [
    (["--steps", "0"], "steps must be between 1 and 1000"),
    (["--steps", "100000"], "steps must be between 1 and 1000"),
    (["--steps", "abc"], "argument --steps: invalid int value"),
    (["--seed", "-1"], "seed must be a whole number from 0 to"),
    (["--seed", str(2**70)], "seed must be a whole number from 0 to"),
    (["--seed", "1.5"], "argument --seed: invalid int value"),
    (["--guidance", "nan"], "guidance must be a number from 0 to 10"),
    (["--guidance", "-5"], "guidance must be a number from 0 to 10"),
    (["--guidance", "1e9"], "guidance must be a number from 0 to 10"),
    (["--overlap", "-1"], "overlap must be between 0 and"),
    (["--jumps", "0"], "jumps must be at least 1"),
    (["--style", "99"], "style 99 is out of range"),
    (["--device", "tpu"], "argument --device: invalid choice"),
]
MODEL_CASES = [
    ("json-syntax", "is not valid JSON"),
    ("json-not-object", "is not a SHEG model description"),
    ("stats-length", "stats"),
    ("window-absurd", "window"),
    ("config-missing", "config"),
    ("fps-string", "fps"),
    ("weights-truncated", "is not a readable safetensors file"),
    ("weights-empty", "is not a readable safetensors file"),
    ("weights-pickle", "is not a readable safetensors file"),
    ("weights-missing", "no model.safetensors"),
    ("empty-folder", "no model folder at"),
]


def assert_one_line_error(proc, expected: str) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("sheg: error: "), proc.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and not proc.stdout.strip()
    return lines[0][len("sheg: error: "):]


def _generate(audio, out, model, *extra):
    return run_cli("generate", audio, "-o", out, "--model", model, "--steps", "2", "--quiet", *extra)


@pytest.mark.parametrize("kind,expected", AUDIO_CASES, ids=[c[0] for c in AUDIO_CASES])
def test_bad_audio(tiny_model_dir, tmp_path, kind, expected):
    audio = _audio(tmp_path, kind)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "take.npz").write_bytes(b"the artist's earlier take")  # an existing output must survive
    before = snapshot(tmp_path)
    message = assert_one_line_error(_generate(audio, out_dir / "take.npz", tiny_model_dir), expected)
    assert snapshot(tmp_path) == before
    record(f"audio: {kind}", message, "exit 2; existing output and folder unchanged")


@pytest.mark.parametrize("args,expected", ARG_CASES, ids=[" ".join(c[0]) for c in ARG_CASES])
def test_absurd_arguments(tiny_model_dir, tmp_path, args, expected):
    before = snapshot(tmp_path)
    message = assert_one_line_error(_generate(SPEECH, tmp_path / "take.npz", tiny_model_dir, *args), expected)
    assert snapshot(tmp_path) == before
    record(f"`{' '.join(args)}`", message, "exit 2; nothing written")


@pytest.mark.parametrize("how,expected", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_tampered_model_folder(tiny_model_dir, tmp_path, how, expected):
    model = _tamper(tiny_model_dir, tmp_path, how)
    before = snapshot(tmp_path)
    message = assert_one_line_error(_generate(SPEECH, tmp_path / "take.npz", model), expected)
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "PWNED").exists()  # the pickle in place of the weights was never unpickled
    record(f"model: {how}", message, "exit 2; nothing written; no pickle ran")


def test_absent_cuda(tiny_model_dir, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    message = assert_one_line_error(_generate(SPEECH, tmp_path / "take.npz", tiny_model_dir, "--device", "cuda"),
                                    "CUDA was asked for but no CUDA GPU is available")
    assert not os.listdir(tmp_path)
    record("`--device cuda` without a GPU", message, "exit 2; nothing written")


def _read_only_folder(tmp_path):
    """A folder this process cannot write to, even as root (mode 555 alone does not stop root): chattr +i where
    the file system has it, else a sysfs folder, where nobody creates files."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if made.returncode != 0:
            folder.chmod(0o755)
            return None, "/sys"
        return folder, str(folder)
    return folder, str(folder)


def test_read_only_output_folder(tiny_model_dir, tmp_path):
    folder, path = _read_only_folder(tmp_path)
    try:
        message = assert_one_line_error(_generate(SPEECH, os.path.join(path, "take.npz"), tiny_model_dir),
                                        "read-only")
        assert not os.path.exists(os.path.join(path, "take.npz"))
        assert not [n for n in os.listdir(path) if n.startswith(".sheg-")]
    finally:
        if folder is not None:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
            folder.chmod(0o755)
    record("output folder read-only", message, "exit 2 before any generation; nothing written")


@pytest.mark.parametrize("kind", ["folder", "under-a-file"])
def test_output_path_that_cannot_be_a_file(tiny_model_dir, tmp_path, kind):
    if kind == "folder":
        out = tmp_path / "take.npz"
        out.mkdir()
        expected = "is a folder: give a file name"
    else:
        (tmp_path / "notes").write_text("a file")
        out = tmp_path / "notes" / "take.npz"
        expected = "is a file, not a folder"
    before = snapshot(tmp_path)
    message = assert_one_line_error(_generate(SPEECH, out, tiny_model_dir), expected)
    assert snapshot(tmp_path) == before
    record(f"output path: {kind}", message, "exit 2; nothing written")


def test_inputs_that_work(tiny_model_dir, tmp_path):
    """Not errors: a 6-channel 96 kHz float file, unicode and spaces in every path, an existing output (replaced
    atomically by the new take), a truncated wav (the decodable part)."""
    from sheg.io.take import read_take

    folder = tmp_path / "Ünïcødé ☃ folder"
    folder.mkdir()
    rate, seconds = 96000, 2.0
    t = np.arange(int(rate * seconds)) / rate
    multi = np.stack([0.2 * np.sin(2 * np.pi * (180 + 40 * c) * t) for c in range(6)], axis=1).astype(np.float32)
    wav = folder / "six channels 96 kHz ✓.wav"
    sf.write(wav, multi, rate, subtype="FLOAT")
    out = folder / "résultat take.npz"
    out.write_bytes(b"old")
    proc = _generate(wav, out, tiny_model_dir)
    assert proc.returncode == 0, proc.stderr
    take = read_take(str(out))
    assert take["poses"].shape == (60, 165) and np.isfinite(take["poses"]).all()
    assert not [n for n in os.listdir(folder) if n.startswith(".sheg-")]
    record("6-channel 96 kHz float wav, unicode + space paths, existing output", "(none: generates)",
           "exit 0; 60 frames for 2 s; the old output replaced atomically")

    full = tmp_path / "full.wav"
    write_wave(full, 3.0)
    data = full.read_bytes()
    cut = tmp_path / "truncated.wav"
    cut.write_bytes(data[: len(data) // 2])
    proc = _generate(cut, tmp_path / "cut.npz", tiny_model_dir)
    assert proc.returncode == 0, proc.stderr
    assert 40 <= len(read_take(str(tmp_path / "cut.npz"))["poses"]) <= 46  # 1.5 s of the 3 s survived the cut
    record("wav truncated to half its bytes", "(none: generates the decodable part)", "exit 0; 1.5 s of motion")


# --- the worker protocol ---------------------------------------------------------------------------------------------

@pytest.fixture()
def loaded_worker(worker, tiny_model_dir):
    loaded, _ = worker.until(worker.send(cmd="load", model=tiny_model_dir, device="cpu"))
    assert loaded["event"] == "loaded"
    return worker


def _alive(worker) -> bool:
    hello, _ = worker.until(worker.send(cmd="hello"))
    return hello["event"] == "hello"


@pytest.mark.parametrize("line,expected", [
    ("{not json\n", "not a JSON object"),
    ("[1, 2, 3]\n", "not a JSON object"),
    ("\"generate\"\n", "not a JSON object"),
    ("x" * (3 << 20) + "\n", "request line longer than"),
], ids=["malformed", "array", "string", "3-MiB-line"])
def test_worker_refuses_lines_it_cannot_read_and_stays_alive(worker, line, expected):
    worker.send_raw(line)
    event = worker.read()
    assert event["event"] == "error" and expected in event["message"] and "\n" not in event["message"]
    assert _alive(worker)
    shown = line[:20].strip() + ("…" if len(line) > 20 else "")
    record(f"worker line `{shown}`", event["message"][:90], "error event; worker alive")


@pytest.mark.parametrize("field,value,expected", [
    ("seed", "abc", "'seed' must be a whole number or null"),
    ("seed", -4, "seed must be a whole number from 0 to"),
    ("steps", "many", "'steps' must be a whole number or null"),
    ("steps", 0, "steps must be between 1 and 1000"),
    ("guidance", "high", "'guidance' must be a number or null"),
    ("guidance", 1e300 * 10, "guidance must be a number from 0 to 10"),
    ("audio", 5, "needs 'audio'"),
    ("out", None, "needs 'audio'"),
])
def test_worker_generate_with_bad_fields(loaded_worker, tmp_path, field, value, expected):
    req = {"cmd": "generate", "audio": SPEECH, "out": str(tmp_path / "take.npz"), field: value}
    if value is None:
        del req[field]
    reply, _ = loaded_worker.until(loaded_worker.send(**req))
    assert reply["event"] == "error" and expected in reply["message"], reply
    assert not os.listdir(tmp_path)
    assert _alive(loaded_worker)
    record(f"worker generate {field}={json.dumps(value) if value is not None else '(absent)'}",
           reply["message"][:90], "error event; nothing written; worker alive")


def test_worker_unwritable_output(loaded_worker, tmp_path):
    (tmp_path / "notes").write_text("a file")
    reply, _ = loaded_worker.until(loaded_worker.send(cmd="generate", audio=SPEECH, steps=2,
                                                      out=str(tmp_path / "notes" / "take.npz")))
    assert reply["event"] == "error" and "is a file, not a folder" in reply["message"], reply
    assert (tmp_path / "notes").read_text() == "a file" and _alive(loaded_worker)
    record("worker out under a file", reply["message"][:90], "error event; nothing written; worker alive")


def test_worker_two_requests_at_once_run_in_order(loaded_worker, tmp_path):
    """Two generates sent back to back: the second waits for the first; both finish, each with its own id."""
    first = loaded_worker.send(cmd="generate", audio=SPEECH, out=str(tmp_path / "a.npz"), steps=2, seed=1)
    second = loaded_worker.send(cmd="generate", audio=SPEECH, out=str(tmp_path / "b.npz"), steps=2, seed=2)
    done_a, events = loaded_worker.until(first)
    done_b, events_b = loaded_worker.until(second)
    assert done_a["event"] == done_b["event"] == "done"
    assert not [e for e in events if e.get("id") == second]  # nothing of the second before the first ended
    a, b = np.load(tmp_path / "a.npz")["poses"], np.load(tmp_path / "b.npz")["poses"]
    assert a.shape == b.shape and not np.allclose(a, b)
    record("two generate requests at once", "(none: queued)", "both done in order, two takes")


def test_worker_killed_mid_generation_leaves_nothing(worker, tiny_model_dir, tmp_path):
    long_audio = write_wave(tmp_path / "long.wav", 60.0)
    worker.until(worker.send(cmd="load", model=tiny_model_dir, device="cpu"))
    out = tmp_path / "out" / "take.npz"
    worker.send(cmd="generate", audio=long_audio, out=str(out), steps=25, jumps=5)
    while worker.read().get("stage") != "sampling":
        pass
    os.kill(worker.proc.pid, signal.SIGKILL)
    assert worker.proc.wait(timeout=10) == -signal.SIGKILL
    assert not out.exists() and (not out.parent.exists() or not os.listdir(out.parent))
    record("worker killed (SIGKILL) mid-generation", "(the add-on reports the dead worker)",
           "no take, no temporary file")


@pytest.mark.slow
def test_one_hour_of_audio_keeps_memory_bounded(tiny_model_dir, tmp_path):
    """`sheg generate` on one hour of speech-like audio: peak RSS stays bounded (the audio is read in blocks, mel in
    chunks, FOPPAS windows one at a time; what grows is the take itself, ~0.9 KB a frame)."""
    rate = 16000
    audio = tmp_path / "hour.wav"
    with sf.SoundFile(audio, "w", rate, 1, subtype="PCM_16") as f:
        for minute in range(60):
            t = (np.arange(60 * rate) + minute * 60 * rate) / rate
            f.write((0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32))
    code = ("import resource, sys, time; from sheg.cli import main; t = time.time(); rc = main(sys.argv[1:]); "
            "print(f'peak_rss_mb={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} "
            "wall_s={time.time() - t:.0f}', file=sys.stderr); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "generate", str(audio), "-o", str(tmp_path / "hour.npz"),
                           "--model", tiny_model_dir, "--steps", "1", "--no-resample", "--quiet"],
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    figures = dict(item.split("=") for item in proc.stderr.split("\n")[-2].split())
    assert np.load(tmp_path / "hour.npz")["poses"].shape == (108000, 165)
    assert float(figures["peak_rss_mb"]) < 2048, figures
    print(f"one hour of audio: {figures}")
    record("one hour of audio (tiny model, 1 step)", "(none: generates 108,000 frames)",
           f"peak RSS {figures['peak_rss_mb']} MB, {figures['wall_s']} s")
