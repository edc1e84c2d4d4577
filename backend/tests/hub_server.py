"""A loopback (127.0.0.1 only) stand-in for the Hugging Face hub: `/{repo}/resolve/{revision}/{file}` with the headers
the client reads (X-Repo-Commit, ETag = the file's sha256, sizes), HTTP Range (206 Partial Content), and faults for
tests: drop the connection or stall after some bytes of the next GET of a file, ignore Range. It records what it
was asked for and how many bytes it sent. Used by backend/tests and blender_tests (standard library only)."""

from __future__ import annotations

import hashlib
import http.server
import re
import threading
import time

REPO = "facebook/hubert-large-ls960-ft"
COMMIT = "d" * 40
SLICE = 4096  # bytes per write, a short pause between writes: the client sees the file arrive in many pieces
PAUSE = 0.002


class Hub(http.server.ThreadingHTTPServer):
    """files: name -> bytes. cut_after[name] = n: the next GET of it sends n bytes, then closes the connection;
    stall_after[name] = n: the next GET sends n bytes, then waits (at most `stall_seconds`) until `release` is set,
    and closes; ignore_range: answer 200 with the whole file. `ranges` lists (name, first byte) of Range requests,
    `gets` every GET's name, `sent[name]` the body bytes sent in all, `requests` (name, first byte, bytes sent) per
    GET, `stalled` is set once a stall began."""

    daemon_threads = True

    def __init__(self, files: dict, repo: str = REPO):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files, self.repo = files, repo
        self.cut_after, self.stall_after, self.ignore_range, self.etags = {}, {}, False, {}
        self.hide_size = set()  # names whose HEAD states length 0, as a redirect to a CDN does
        self.ranges, self.gets, self.sent, self.requests = [], [], {}, []
        self.stalled, self.release, self.stall_seconds = threading.Event(), threading.Event(), 60.0
        self._thread = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def start(self) -> "Hub":
        self._thread = threading.Thread(target=self.serve_forever, name="loopback-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()

    def etag(self, name: str) -> str:
        return self.etags.get(name) or hashlib.sha256(self.files[name]).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Hub

    def log_message(self, *args):
        pass

    def _name(self):
        found = re.fullmatch(rf"/{re.escape(self.server.repo)}/resolve/[^/]+/(.+)", self.path.split("?")[0])
        name = found and found.group(1)
        return name if name in self.server.files else None

    def _headers(self, name, status, length, extra=()):
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", f'"{self.server.etag(name)}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        for key, value in extra:
            self.send_header(key, value)
        self.end_headers()

    def _missing(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("X-Error-Message", "Entry not found")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        name = self._name()
        if name is None:
            return self._missing()
        self._headers(name, 200, 0 if name in self.server.hide_size else len(self.server.files[name]))

    def do_GET(self):
        name = self._name()
        if name is None:
            return self._missing()
        hub, data = self.server, self.server.files[name]
        hub.gets.append(name)
        start = 0
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if asked and not hub.ignore_range:
            start = int(asked.group(1))
            hub.ranges.append((name, start))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._headers(name, 206, len(data) - start, [("Content-Range", f"bytes {start}-{len(data) - 1}/"
                                                                           f"{len(data)}")])
        else:
            self._headers(name, 200, len(data))
        body = data[start:]
        cut, stall = hub.cut_after.pop(name, None), hub.stall_after.pop(name, None)
        limit = min(x for x in (cut, stall, len(body)) if x is not None)
        record = [name, start, 0]
        hub.requests.append(record)
        for offset in range(0, limit, SLICE):
            piece = body[offset:min(offset + SLICE, limit)]
            try:
                self.wfile.write(piece)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):  # the client went away (cancelled)
                self.close_connection = True
                return
            hub.sent[name] = hub.sent.get(name, 0) + len(piece)
            record[2] += len(piece)
            time.sleep(PAUSE)
        if stall is not None:
            hub.stalled.set()
            hub.release.wait(hub.stall_seconds)
        if limit < len(body):
            self.close_connection = True
