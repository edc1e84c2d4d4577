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

from . import __version__
from .errors import Cancelled, ShegError

PROTOCOL_VERSION = 1


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
        from .pipeline import load_model

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
        if not req.get("audio") or not req.get("out"):
            raise ShegError("generate needs 'audio' (input file) and 'out' (take .npz path)")
        self.cancel_event.clear()

        def progress(event: dict) -> None:
            if self.cancel_event.is_set():
                raise Cancelled("generation cancelled")
            self.channel.send(id=rid, event="progress", **event)

        take = self.model.generate(req["audio"], seed=int(req.get("seed", 0)), steps=req.get("steps"),
                                   guidance=req.get("guidance"), style=req.get("style"),
                                   overlap=req.get("overlap"), jumps=req.get("jumps"), progress=progress)
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


def run_worker(stdin=None, stdout=None) -> int:
    stdin = stdin or sys.stdin
    channel = _Channel(stdout or sys.stdout)
    # Libraries that print must not corrupt the protocol stream.
    sys.stdout = sys.stderr
    worker = Worker(channel)
    requests: queue.Queue = queue.Queue()

    def read_requests() -> None:
        for line in stdin:
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
