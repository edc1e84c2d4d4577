"""`sheg` as users run it: a subprocess of this Python (the CLI), the worker on pipes, and speech files to feed them
(shared by the CLI and worker tests)."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import soundfile as sf

SPEECH = os.path.join(os.path.dirname(__file__), "..", "..", "assets", "speech", "arctic_a0007.wav")


def run_cli(*args, timeout: float = 300):
    """Run `python -m sheg ARGS...` (paths allowed), capturing stdout/stderr as text."""
    return subprocess.run([sys.executable, "-m", "sheg", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def write_wave(path, seconds, rate=16000):
    t = np.arange(int(round(seconds * rate))) / rate
    sf.write(path, (0.2 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32), rate)
    return str(path)


class WorkerProcess:
    """`python -m sheg worker` on pipes: send requests, read its events."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "sheg", "worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.next_id = 0

    def send(self, **req):
        self.next_id += 1
        req["id"] = self.next_id
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return self.next_id

    def send_raw(self, text: str) -> None:
        """Write bytes the protocol does not expect (malformed or huge lines)."""
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def read(self, timeout=60):
        deadline = time.time() + timeout
        line = self.proc.stdout.readline()
        assert line, f"worker closed stdout; stderr: {self.proc.stderr.read()[-2000:]}"
        assert time.time() < deadline
        return json.loads(line)

    def until(self, rid, final=("done", "error", "cancelled", "loaded", "hello", "bye", "ok")):
        events = []
        while True:
            event = self.read()
            events.append(event)
            if event.get("id") == rid and event["event"] in final:
                return event, events
