"""JSON-lines client for the backend worker `python -m sheg worker` (protocol: docs/ARCHITECTURE.md).

The worker is a separate interpreter (torch never enters Blender's Python). Requests go to its stdin, one JSON object
per line; a reader thread parses its stdout into a queue so the UI can poll without blocking; stderr goes to a log
file whose last line explains a crash. Each running worker leaves a small pid file in `state_dir` so that a worker
orphaned by a crashed Blender is killed the next time one starts. No bpy here: unit-tested with plain pytest.
"""

from __future__ import annotations

import atexit
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

PROTOCOL_VERSION = 1
WORKER_ARGS = ("-m", "sheg", "worker")


class WorkerError(RuntimeError):
    """The worker failed or stopped; the message is one line a user can act on."""


def one_line(text: str, limit: int = 300) -> str:
    """The last meaningful line of `text`, shortened: UI reports must stay on one line."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    line = lines[-1] if lines else ""
    return line if len(line) <= limit else line[:limit - 3] + "..."


# --- process bookkeeping -------------------------------------------------------------------------------------------

def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    if os.name == "nt":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _command_line(pid: int) -> str | None:
    """The command line of a process, or None where it cannot be read (then we never kill it)."""
    try:
        if sys.platform.startswith("linux"):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().replace(b"\0", b" ").decode(errors="replace")
        if os.name == "posix":
            out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True, text=True, timeout=5)
            return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None
    return None


def _looks_like_worker(pid: int) -> bool:
    cmd = _command_line(pid)
    return bool(cmd) and "sheg" in cmd and "worker" in cmd


def _kill_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL if hasattr(signal, "SIGKILL") else signal.SIGTERM)
    except OSError:
        pass


_OWN_PIDS: set[int] = set()  # workers started by this process and not yet stopped


def kill_stale_workers(state_dir: str) -> list[int]:
    """Kill workers whose Blender is gone (or that this process lost track of); returns the pids killed."""
    killed = []
    if not state_dir or not os.path.isdir(state_dir):
        return killed
    for name in os.listdir(state_dir):
        if not (name.startswith("worker-") and name.endswith(".json")):
            continue
        path = os.path.join(state_dir, name)
        try:
            with open(path) as f:
                info = json.load(f)
            pid, parent = int(info["pid"]), int(info["parent"])
        except (OSError, ValueError, KeyError, TypeError):
            _remove_quietly(path)
            continue
        if not pid_alive(pid):
            _remove_quietly(path)
            continue
        orphaned = not pid_alive(parent) or (parent == os.getpid() and pid not in _OWN_PIDS)
        if orphaned and _looks_like_worker(pid):
            _kill_pid(pid)
            killed.append(pid)
            _remove_quietly(path)
    return killed


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


# --- the client ----------------------------------------------------------------------------------------------------

class WorkerClient:
    """One backend worker process. send() returns the request id; poll() returns parsed events without blocking.

    Events are the worker's JSON objects, plus one synthetic `{"event": "exit", "id": None, "returncode": N,
    "message": "..."}` queued when the worker's stdout closes (it stopped or crashed).
    """

    def __init__(self, python: str, *, state_dir: str | None = None, log_path: str | None = None,
                 env: dict | None = None, args: tuple[str, ...] = WORKER_ARGS):
        self.python = python
        self.state_dir = state_dir
        self.log_path = log_path
        self.env = dict(env) if env else None
        self.args = tuple(args)
        self.process: subprocess.Popen | None = None
        self.loaded_key = None  # (model, device, hubert) of the model the worker holds, once `loaded` was seen
        self.info: dict = {}  # the `hello` reply, once asked
        self._events: queue.Queue = queue.Queue()
        self._ids = itertools.count(1)
        self._write_lock = threading.Lock()
        self._pid_file: str | None = None
        self._log_file = None
        self._exit_message: str | None = None

    # lifecycle
    def start(self) -> "WorkerClient":
        if not self.python or not os.path.isfile(self.python):
            raise WorkerError(f"backend Python not found: '{self.python}': set it in Preferences > Add-ons > SHEG")
        if self.state_dir:
            os.makedirs(self.state_dir, exist_ok=True)
            kill_stale_workers(self.state_dir)
        env = dict(os.environ if self.env is None else self.env)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONHOME", None)  # Blender's own Python home must not leak into another interpreter
        if self.log_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.log_path)), exist_ok=True)
            self._log_file = open(self.log_path, "wb")
        kwargs = {}
        if os.name == "nt":
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        else:
            kwargs["start_new_session"] = True  # Ctrl+C in Blender's terminal must not hit the worker
        try:
            self.process = subprocess.Popen(
                [self.python, *self.args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=self._log_file if self._log_file else subprocess.DEVNULL,
                env=env, encoding="utf-8", errors="replace", bufsize=1, **kwargs)
        except OSError as exc:
            self._close_log()
            raise WorkerError(f"cannot start the backend Python '{self.python}': {exc.strerror or exc}") from None
        _OWN_PIDS.add(self.process.pid)
        if self.state_dir:
            self._pid_file = os.path.join(self.state_dir, f"worker-{self.process.pid}.json")
            with open(self._pid_file, "w") as f:
                json.dump({"pid": self.process.pid, "parent": os.getpid(), "python": self.python}, f)
        threading.Thread(target=self._read_stdout, name="sheg-worker-stdout", daemon=True).start()
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _read_stdout(self) -> None:
        proc = self.process
        for line in proc.stdout:
            line = line.strip()
            if not line:
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue  # not protocol: the worker only prints protocol lines on stdout
            if isinstance(event, dict):
                self._events.put(event)
        returncode = proc.wait()
        self._exit_message = self._describe_exit(returncode)
        self._events.put({"event": "exit", "id": None, "returncode": returncode, "message": self._exit_message})
        self._forget()

    def _describe_exit(self, returncode: int) -> str:
        last = self.last_stderr_line()
        if returncode is not None and returncode < 0:
            how = f"was killed (signal {-returncode}{', out of memory?' if -returncode == 9 else ''})"
        else:
            how = f"stopped (exit code {returncode})"
        return f"the backend worker {how}" + (f": {last}" if last else "")

    def last_stderr_line(self) -> str:
        if not self.log_path or not os.path.isfile(self.log_path):
            return ""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 8192))
                return one_line(f.read().decode(errors="replace"))
        except OSError:
            return ""

    def exit_message(self) -> str:
        return self._exit_message or self._describe_exit(self.process.poll() if self.process else None)

    # requests
    def send(self, cmd: str, **fields) -> int:
        if not self.alive:
            raise WorkerError(self.exit_message() if self.process else "the backend worker is not running")
        rid = next(self._ids)
        line = json.dumps({"id": rid, "cmd": cmd, **fields}, separators=(",", ":"))
        try:
            with self._write_lock:
                self.process.stdin.write(line + "\n")
                self.process.stdin.flush()
        except (OSError, ValueError):
            raise WorkerError(self.exit_message()) from None
        return rid

    def poll(self, limit: int | None = None) -> list[dict]:
        """Events received so far (at most `limit`), without waiting."""
        events = []
        while limit is None or len(events) < limit:
            try:
                events.append(self._events.get_nowait())
            except queue.Empty:
                break
        return events

    def next_event(self, timeout: float) -> dict | None:
        try:
            return self._events.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None

    def request(self, cmd: str, timeout: float = 120.0, **fields) -> dict:
        """Send and wait for the final reply (not `progress`) to it; raises WorkerError on error, exit or timeout."""
        rid = self.send(cmd, **fields)
        deadline = time.monotonic() + timeout
        while True:
            event = self.next_event(deadline - time.monotonic())
            if event is None:
                raise WorkerError(f"the backend worker did not answer '{cmd}' within {timeout:g} s "
                                  f"(log: {self.log_path})")
            if event.get("event") == "exit":
                raise WorkerError(event["message"])
            if event.get("id") != rid or event.get("event") == "progress":
                continue
            if event.get("event") == "error":
                raise WorkerError(one_line(event.get("message", "unknown error")))
            if cmd == "hello":
                self.info = event
            if cmd == "load":
                self.loaded_key = (fields.get("model"), fields.get("device"), fields.get("hubert"))
            return event

    def cancel(self) -> int | None:
        """Ask the running generate to stop; None when the worker is already gone."""
        try:
            return self.send("cancel")
        except WorkerError:
            return None

    def shutdown(self, timeout: float = 2.0) -> None:
        """Polite stop (shutdown request), then kill if it does not exit within `timeout` seconds."""
        if self.alive:
            try:
                self.send("shutdown")
                self.process.stdin.close()
            except (WorkerError, OSError, ValueError):
                pass
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._forget()

    def _forget(self) -> None:
        if self.process is not None:
            _OWN_PIDS.discard(self.process.pid)
        if self._pid_file:
            _remove_quietly(self._pid_file)
            self._pid_file = None
        self.loaded_key = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            try:
                self._log_file.close()
            except OSError:
                pass
            self._log_file = None


# --- one generation, advanced by ticks -----------------------------------------------------------------------------

RUNNING, DONE, CANCELLED, FAILED = "running", "done", "cancelled", "failed"


def describe_progress(event: dict) -> str:
    stage = event.get("stage", "")
    if stage == "sampling" and event.get("windows"):
        return (f"Sampling window {event.get('window')}/{event.get('windows')}, "
                f"step {event.get('step')}/{event.get('steps')}")
    return {"features": "Reading audio", "loading": "Loading model", "done": "Writing take"}.get(
        stage, stage.capitalize() or "Working")


class GenerateTask:
    """One `generate` through a worker: start(), then tick() until the state is no longer RUNNING.

    tick() never waits: it drains the event queue and returns. Cancel sends `cancel` and, if the worker has not
    answered `cancelled` within `kill_after` seconds, kills it (the next task starts a fresh worker).
    """

    def __init__(self, client: WorkerClient, *, audio: str, out: str, model: str | None = None,
                 device: str = "auto", hubert: str | None = None, seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, style: int | None = None, kill_after: float = 0.5,
                 keep: dict | None = None):
        self.client = client
        self.audio, self.out = audio, out
        self.model, self.device, self.hubert = model, device, hubert
        self.options = {"seed": int(seed), "steps": steps, "guidance": guidance, "style": style}
        if keep is not None:  # constrained regeneration: {"take": NPZ, "frames": [[a, b]] | None, "parts": [...]}
            self.options["keep"] = keep
        self.kill_after = kill_after
        self.state = RUNNING
        self.fraction = 0.0
        self.stage = "Starting backend"
        self.result: dict | None = None
        self.error = ""
        self.load_id = self.generate_id = None
        self._cancel_deadline: float | None = None

    def start(self) -> "GenerateTask":
        key = (self.model, self.device, self.hubert)
        if self.client.loaded_key != key:
            self.stage = "Loading model"
            self.load_id = self.client.send("load", model=self.model, device=self.device, hubert=self.hubert)
        # model/device ride along so a worker whose load failed does not fall back to another model
        self.generate_id = self.client.send("generate", audio=self.audio, out=self.out, model=self.model,
                                            device=self.device, hubert=self.hubert, **self.options)
        return self

    @property
    def cancelling(self) -> bool:
        return self._cancel_deadline is not None

    def cancel(self) -> None:
        if self.state != RUNNING or self.cancelling:
            return
        self.stage = "Cancelling"
        self._cancel_deadline = time.monotonic() + self.kill_after
        if self.client.cancel() is None:
            self._finish(CANCELLED)

    def tick(self, max_events: int = 200) -> str:
        if self.state != RUNNING:
            return self.state
        for event in self.client.poll(max_events):
            self._handle(event)
            if self.state != RUNNING:
                return self.state
        if self.cancelling and time.monotonic() >= self._cancel_deadline:
            self.client.kill()
            self._finish(CANCELLED)
        return self.state

    def _handle(self, event: dict) -> None:
        kind, rid = event.get("event"), event.get("id")
        if kind == "exit":
            if self.cancelling:
                self._finish(CANCELLED)
            else:
                self._finish(FAILED, event.get("message") or "the backend worker stopped")
            return
        if rid == self.load_id:
            if kind == "loaded":
                self.client.loaded_key = (self.model, self.device, self.hubert)
                self.stage = "Model loaded"
            elif kind == "error":
                self.client.loaded_key = None
                self._finish(FAILED, one_line(event.get("message", "could not load the model")))
            return
        if rid != self.generate_id:
            return  # replies to cancel, or leftovers of an earlier task
        if kind == "progress":
            self.fraction = float(event.get("fraction", self.fraction))
            self.stage = describe_progress(event)
        elif kind == "done":
            if not os.path.isfile(event.get("out", self.out)):
                self._finish(FAILED, f"the worker reported a take at {event.get('out')} but no file is there")
            else:
                self.result = event
                self.fraction = 1.0
                self._finish(DONE)
        elif kind == "cancelled":
            self._finish(CANCELLED)
        elif kind == "error":
            if self.cancelling:
                self._finish(CANCELLED)
            else:
                self._finish(FAILED, one_line(event.get("message", "generation failed")))

    def _finish(self, state: str, error: str = "") -> None:
        self.state = state
        self.error = error
        self.stage = {DONE: "Done", CANCELLED: "Cancelled", FAILED: "Failed"}[state]

    def run_blocking(self, timeout: float | None = None, on_progress: Callable[["GenerateTask"], None] | None = None,
                     poll_interval: float = 0.05) -> dict:
        """Tick until finished (headless use); returns the `done` event or raises WorkerError."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.tick() == RUNNING:
            if on_progress is not None:
                on_progress(self)
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                deadline = None
            time.sleep(poll_interval)
        if self.state == DONE:
            return self.result
        if self.state == CANCELLED:
            raise WorkerError("generation cancelled")
        raise WorkerError(self.error)


# --- one worker per Blender session --------------------------------------------------------------------------------

_session: WorkerClient | None = None
_session_lock = threading.Lock()


def session_client(python: str, *, state_dir: str | None = None, log_path: str | None = None,
                   env: dict | None = None) -> WorkerClient:
    """The session's worker, started on first use and restarted when it died or the Python changed."""
    global _session
    with _session_lock:
        if _session is not None and (not _session.alive or _session.python != python):
            _session.shutdown(timeout=1.0)
            _session = None
        if _session is None:
            _session = WorkerClient(python, state_dir=state_dir, log_path=log_path, env=env).start()
        return _session


def current_session() -> WorkerClient | None:
    return _session


def shutdown_session(timeout: float = 2.0) -> None:
    global _session
    with _session_lock:
        if _session is not None:
            _session.shutdown(timeout=timeout)
            _session = None


atexit.register(shutdown_session)
