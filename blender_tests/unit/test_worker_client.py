"""The worker client (addon/core/worker_client.py) against real subprocesses: no bpy, no mocks.

Tests that need the backend (`python -m sheg worker` and `python -m sheg make-test-model`) use the fixtures
`backend_python` and `tiny_model_dir` from blender_tests/conftest.py, which skip with a reason when unavailable.
"""

import os
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import worker_client as wc  # noqa: E402


def _fake_worker(script: str) -> tuple:
    """Arguments that run `script` in this interpreter; used for processes that misbehave on purpose."""
    return ("-c", script)


def test_one_line_keeps_the_last_meaningful_line():
    assert wc.one_line("Traceback...\n  File x\nMemoryError: boom\n\n") == "MemoryError: boom"
    assert wc.one_line("") == ""
    assert len(wc.one_line("x" * 1000, limit=50)) == 50


def test_missing_python_is_a_one_line_error(tmp_path):
    with pytest.raises(wc.WorkerError, match="backend Python not found") as info:
        wc.WorkerClient(str(tmp_path / "no-python")).start()
    assert "\n" not in str(info.value)


def test_a_worker_that_dies_reports_its_last_stderr_line(tmp_path):
    script = "import sys; sys.stderr.write('starting\\nModuleNotFoundError: No module named torch\\n'); sys.exit(3)"
    client = wc.WorkerClient(sys.executable, log_path=str(tmp_path / "w.log"), args=_fake_worker(script)).start()
    client.process.wait(timeout=10)
    with pytest.raises(wc.WorkerError) as info:
        client.request("hello", timeout=10)
    message = str(info.value)
    assert "exit code 3" in message and "No module named torch" in message
    assert not client.alive


def test_request_timeout_names_the_command(tmp_path):
    client = wc.WorkerClient(sys.executable, log_path=str(tmp_path / "w.log"),
                             args=_fake_worker("import sys\nfor line in sys.stdin: pass")).start()
    try:
        with pytest.raises(wc.WorkerError, match="did not answer 'hello' within 0.3 s"):
            client.request("hello", timeout=0.3)
    finally:
        client.shutdown(timeout=1)
    assert not client.alive


def test_stale_worker_of_a_dead_blender_is_killed(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    dead_parent = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_parent.wait()
    # argv carries 'sheg worker' so the process is recognised as a worker by its command line
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "sheg", "worker"])
    adopted = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "sheg", "worker"])
    try:
        (state / f"worker-{orphan.pid}.json").write_text(f'{{"pid": {orphan.pid}, "parent": {dead_parent.pid}}}')
        (state / f"worker-{adopted.pid}.json").write_text(f'{{"pid": {adopted.pid}, "parent": {os.getppid()}}}')
        (state / "worker-1.json").write_text("not json")
        killed = wc.kill_stale_workers(str(state))
        assert killed == [orphan.pid]
        assert orphan.wait(timeout=5) != 0
        assert adopted.poll() is None  # its Blender is alive: left alone
        assert sorted(os.listdir(state)) == [f"worker-{adopted.pid}.json"]
    finally:
        for p in (orphan, adopted):
            p.kill()
            p.wait()


# --- against the real backend worker ------------------------------------------------------------------------------

@pytest.fixture
def client(backend_python, tmp_path):
    c = wc.WorkerClient(backend_python, state_dir=str(tmp_path / "state"), log_path=str(tmp_path / "worker.log"))
    c.start()
    yield c
    c.shutdown(timeout=2)


def test_hello_and_pid_file(client, tmp_path):
    reply = client.request("hello", timeout=120)
    assert reply["protocol"] == wc.PROTOCOL_VERSION and "cpu" in reply["devices"]
    assert os.path.isfile(tmp_path / "state" / f"worker-{client.pid}.json")
    client.shutdown()
    assert not client.alive
    assert not os.listdir(tmp_path / "state")


def _task(client, tiny_model_dir, speech_wav, out, **kw):
    return wc.GenerateTask(client, audio=speech_wav, out=str(out), model=tiny_model_dir, device="cpu", **kw).start()


def test_generate_task_ticks_without_blocking_and_finishes(client, tiny_model_dir, speech_wav, tmp_path):
    task = _task(client, tiny_model_dir, speech_wav, tmp_path / "take.npz", steps=3, seed=1)
    stages, slowest = set(), 0.0
    deadline = time.monotonic() + 120
    while True:
        t0 = time.perf_counter()
        state = task.tick(max_events=1)  # one event a tick, so every stage is seen however fast the worker is
        slowest = max(slowest, time.perf_counter() - t0)
        stages.add(task.stage)
        if state != wc.RUNNING or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert state == wc.DONE, task.error
    assert task.result["frames"] == 120 and task.result["fps"] == 30.0
    assert os.path.isfile(tmp_path / "take.npz") and task.fraction == 1.0
    assert any(s.startswith("Sampling window") for s in stages)
    assert slowest < 0.05
    # the model stays loaded: a second task sends no `load`
    assert client.loaded_key == (tiny_model_dir, "cpu", None)
    second = _task(client, tiny_model_dir, speech_wav, tmp_path / "take2.npz", steps=2, seed=2)
    assert second.load_id is None
    assert second.run_blocking(timeout=120)["frames"] == 120


def test_cancel_stops_within_a_second_and_writes_nothing(client, tiny_model_dir, speech_wav, tmp_path):
    task = _task(client, tiny_model_dir, speech_wav, tmp_path / "take.npz", steps=900)
    deadline = time.monotonic() + 120
    while task.tick() == wc.RUNNING and not task.stage.startswith("Sampling") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert task.state == wc.RUNNING, task.error
    t0 = time.monotonic()
    task.cancel()
    while task.tick() == wc.RUNNING:
        time.sleep(0.01)
    assert task.state == wc.CANCELLED
    assert time.monotonic() - t0 < 1.0
    assert not os.path.exists(tmp_path / "take.npz")
    if client.alive:  # answered in time: the same worker and model serve the next request
        assert client.request("hello", timeout=30)["event"] == "hello"


def test_a_killed_worker_fails_the_task_in_one_line_and_the_session_restarts(backend_python, tiny_model_dir,
                                                                             speech_wav, tmp_path):
    kw = dict(state_dir=str(tmp_path / "state"), log_path=str(tmp_path / "worker.log"))
    client = wc.session_client(backend_python, **kw)
    try:
        assert wc.session_client(backend_python, **kw) is client
        task = _task(client, tiny_model_dir, speech_wav, tmp_path / "take.npz", steps=900)
        deadline = time.monotonic() + 120
        while task.tick() == wc.RUNNING and not task.stage.startswith("Sampling") and time.monotonic() < deadline:
            time.sleep(0.01)
        client.process.kill()
        with pytest.raises(wc.WorkerError, match="killed") as info:
            task.run_blocking(timeout=30)
        assert "\n" not in str(info.value)
        assert task.state == wc.FAILED and not os.path.exists(tmp_path / "take.npz")
        fresh = wc.session_client(backend_python, **kw)
        assert fresh is not client and fresh.alive
        assert fresh.request("hello", timeout=120)["event"] == "hello"
    finally:
        wc.shutdown_session()
    assert wc.current_session() is None


def test_load_error_fails_the_task_with_the_worker_message(client, speech_wav, tmp_path):
    task = _task(client, str(tmp_path / "no-such-model"), speech_wav, tmp_path / "take.npz", steps=2)
    with pytest.raises(wc.WorkerError) as info:
        task.run_blocking(timeout=120)
    assert "\n" not in str(info.value) and str(info.value)
    assert client.loaded_key is None and client.alive
