"""`sheg worker`: JSON lines on stdin/stdout for the Blender add-on (protocol: docs/ARCHITECTURE.md).

A reader thread parses requests so that `cancel` is seen while a generation runs; the main thread executes the
others in order. Every failure is answered as an `error` event; the worker itself only ends on `shutdown` or when
stdin closes.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import traceback

from sheg.version import __version__
from sheg.errors import Cancelled, ShegError, os_error_line
from sheg.io.take import check_writable

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20  # a request is a few hundred bytes; a longer line is skipped, never held in memory
# generate's optional fields and their JSON types (None = the model's default); values are range-checked by the model
GENERATE_FIELDS = {"seed": int, "steps": int, "guidance": (int, float), "style": int, "overlap": int, "jumps": int}


class _Channel:
    """Writes protocol lines to the real stdout; everything else printed goes to stderr."""

    def __init__(self, stream):
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, **event) -> None:
        line = json.dumps(event, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def _devices() -> list[str]:
    import torch

    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return found


class Worker:
    def __init__(self, channel: _Channel):
        self.channel = channel
        self.model = None
        self.model_key = None
        self.cancel_event = threading.Event()

    # Each handler returns the reply event dict (without id) or raises.
    def hello(self, req: dict) -> dict:
        import torch

        return {"event": "hello", "version": __version__, "protocol": PROTOCOL_VERSION,
                "torch": torch.__version__, "devices": _devices(), "pid": os.getpid()}

    def load(self, req: dict) -> dict:
        from sheg.inference.load import load_model

        key = (req.get("model"), req.get("device", "auto"), req.get("hubert"), req.get("fps_mode"))
        if self.model is None or key != self.model_key:
            self.model = None  # free the old one before loading the next
            self.model = load_model(req.get("model"), device=req.get("device", "auto"), hubert=req.get("hubert"),
                                    fps_mode=req.get("fps_mode"))
            self.model_key = key
        return {"event": "loaded", "model": self.model.summary()}

    def generate(self, req: dict, rid) -> dict:
        if self.model is None:
            self.load({k: req.get(k) for k in ("model", "hubert", "fps_mode")} | {"device": req.get("device", "auto")})
        if not isinstance(req.get("audio"), str) or not isinstance(req.get("out"), str) or not req["audio"] \
                or not req["out"]:
            raise ShegError("generate needs 'audio' (input file) and 'out' (take .npz path) as strings")
        for name, kind in GENERATE_FIELDS.items():
            value = req.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
                raise ShegError(f"generate: '{name}' must be a {'number' if name == 'guidance' else 'whole number'} "
                                f"or null, got {json.dumps(value)[:40]}")
        check_writable(req["out"])  # before minutes of work, not after
        self.cancel_event.clear()

        def progress(event: dict) -> None:
            if self.cancel_event.is_set():
                raise Cancelled("generation cancelled")
            self.channel.send(id=rid, event="progress", **event)

        keep = req.get("keep")
        if keep is not None and not (isinstance(keep, dict) and keep.get("take")):
            raise ShegError("generate's 'keep' must be {\"take\": NPZ, \"frames\": [[start, stop], ...] or null, "
                            "\"parts\": [names] or null}")
        options = {} if keep is None else {"keep": keep["take"], "keep_frames": keep.get("frames"),
                                           "keep_parts": keep.get("parts")}
        seed = 0 if req.get("seed") is None else req["seed"]
        take = self.model.generate(req["audio"], seed=seed, steps=req.get("steps"),
                                   guidance=req.get("guidance"), style=req.get("style"),
                                   overlap=req.get("overlap"), jumps=req.get("jumps"), progress=progress, **options)
        if self.cancel_event.is_set():
            raise Cancelled("generation cancelled")
        take.save(req["out"])
        return {"event": "done", "out": os.path.abspath(req["out"]), "frames": take.frames, "fps": take.fps,
                "seconds": take.meta.get("seconds"), "model": self.model.model_id}

    def handle(self, req: dict) -> bool:
        """Run one request; returns False when the worker should stop."""
        rid = req.get("id")
        cmd = req.get("cmd")
        try:
            if cmd == "hello":
                reply = self.hello(req)
            elif cmd == "load":
                reply = self.load(req)
            elif cmd == "generate":
                reply = self.generate(req, rid)
            elif cmd == "shutdown":
                self.channel.send(id=rid, event="bye")
                return False
            else:
                reply = {"event": "error", "message": f"unknown command '{cmd}'"}
        except Cancelled:
            reply = {"event": "cancelled"}
        except ShegError as exc:
            reply = {"event": "error", "message": str(exc)}
        except OSError as exc:
            reply = {"event": "error", "message": os_error_line(exc)}
        except MemoryError:
            reply = {"event": "error", "message": "out of memory: try shorter audio, fewer steps or --device cpu"}
        except Exception as exc:  # never a dead pipe: report, log the traceback to stderr, carry on
            traceback.print_exc(file=sys.stderr)
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "out of memory" in text.lower():
                text = "the GPU ran out of memory: try fewer steps, --device cpu, or close other GPU programs"
            reply = {"event": "error", "message": f"{type(exc).__name__}: {text}"}
        self.channel.send(id=rid, **reply)
        return True


def _bounded_lines(stream):
    """The stream's lines; None in place of a line longer than MAX_LINE_BYTES, whose rest is read and dropped."""
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith("\n"):
            while line and not line.endswith("\n"):
                line = stream.readline(MAX_LINE_BYTES)
            yield None
            continue
        yield line


def run_worker(stdin=None, stdout=None) -> int:
    stdin = stdin or sys.stdin
    channel = _Channel(stdout or sys.stdout)
    # Libraries that print must not corrupt the protocol stream.
    sys.stdout = sys.stderr
    worker = Worker(channel)
    requests: queue.Queue = queue.Queue()

    def read_requests() -> None:
        for line in _bounded_lines(stdin):
            if line is None:
                channel.send(id=None, event="error", message=f"request line longer than {MAX_LINE_BYTES} characters: "
                                                             "skipped (requests carry file paths, not data)")
                continue
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("not an object")
            except ValueError:
                channel.send(id=None, event="error", message=f"not a JSON object: {line[:80]}")
                continue
            if req.get("cmd") == "cancel":
                worker.cancel_event.set()
                channel.send(id=req.get("id"), event="ok")
                continue
            if req.get("cmd") == "shutdown":
                worker.cancel_event.set()
            requests.put(req)
        requests.put(None)  # stdin closed: the add-on is gone

    threading.Thread(target=read_requests, name="sheg-worker-reader", daemon=True).start()
    while True:
        req = requests.get()
        if req is None or not worker.handle(req):
            return 0
