"""Download HuBERT-large (`facebook/hubert-large-ls960-ft`) into a folder with progress, cancel and resume, then
check that it loads. `sheg download-hubert`; the add-on's "Download HuBERT".

The endpoint is Hugging Face's unless HF_ENDPOINT (or `endpoint`) names another (a mirror; the tests' loopback
server). The small files (config, feature extractor) come through the ordinary client (`hf_hub_download`). The
weights file (over 1 GB) is fetched here with HTTP Range requests on the hub's resolve URL
(`{endpoint}/{repo}/resolve/main/{file}`, redirects followed), through the client's own HTTP session and headers,
because the client deletes the partial file of a failed or cancelled download. Its bytes go to `FILE.incomplete` in
the target folder, which is kept when the run is cancelled, killed or loses its connection: a dropped connection is
resumed at once (a few tries while no byte arrives), and a new run asks only for the rest (`Range: bytes=KEPT-`).
The finished file is checked against the size the hub states and, where the hub sends one (ETag / X-Linked-Etag
of an LFS file), its sha256, then renamed into place. A server that ignores Range gets the whole file again.
"""

from __future__ import annotations

import os
import re
import shutil
import time

from sheg.errors import Cancelled, ShegError
from sheg.io.take import sha256_of

HUBERT_ID = "facebook/hubert-large-ls960-ft"
HUBERT_FILES = ("config.json", "preprocessor_config.json")
HUBERT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # the first one the repository has
TRIES_WITHOUT_PROGRESS = 5  # connection attempts in a row that bring no byte before the run gives up


def download_hubert(out_dir: str, repo_id: str = HUBERT_ID, endpoint: str | None = None, progress=None) -> dict:
    """Fetch the HuBERT files into `out_dir` and load them once; returns {'folder', 'files', 'hidden_size'}.

    progress({'stage': 'download', 'file', 'done', 'total'}) is told as bytes arrive (`done` counts the bytes kept
    from an earlier run too), then progress({'stage': 'check'}) before the load check; raising
    sheg.errors.Cancelled from it stops the download (what arrived is kept for the next run)."""
    try:
        import filelock  # noqa: F401  (the client's own dependencies, imported where they are used)
        import huggingface_hub  # noqa: F401
        from huggingface_hub.utils import logging as hub_logging
        from tqdm.auto import tqdm
    except ImportError:
        raise ShegError("downloading HuBERT needs the hubert extra: pip install 'sheg[hubert]'") from None
    report = progress or (lambda event: None)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    hub_logging.set_verbosity_error()  # the client's retry warnings would break the one-line error rule
    current = {"file": ""}

    class Reporter(tqdm):
        """The client's progress bar, silenced, passing byte counts on (and cancel back)."""

        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 (closed with the bar)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            shown = super().update(n)
            report({"stage": "download", "file": current["file"], "done": int(self.n), "total": int(self.total or 0)})
            return shown

        def close(self):
            super().close()
            self.fp.close()

    created = not os.path.exists(out_dir)
    lock_dir = os.path.join(out_dir, ".cache", "huggingface")
    os.makedirs(lock_dir, exist_ok=True)
    try:
        files = _fetch_all(out_dir, repo_id, endpoint, report, lock_dir, current, Reporter)
    except BaseException:
        if created and not _holds_a_byte(out_dir):  # a run that brought nothing leaves no folder behind
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    report({"stage": "check"})
    return {"folder": os.path.abspath(out_dir), "files": [os.path.basename(f) for f in files],
            "hidden_size": check_hubert(out_dir)}


def _holds_a_byte(folder: str) -> bool:
    """Whether `folder` holds any downloaded byte (a file, or a partial one, outside the client's .cache)."""
    for base, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".cache"]
        if any(os.path.getsize(os.path.join(base, n)) for n in names):
            return True
    return False


def _fetch_all(out_dir, repo_id, endpoint, report, lock_dir, current, Reporter) -> list[str]:
    from filelock import FileLock, Timeout
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    files = []
    try:
        with FileLock(os.path.join(lock_dir, "sheg-download.lock"), timeout=0):
            for name in HUBERT_FILES:
                current["file"] = name
                files.append(hf_hub_download(repo_id, name, local_dir=out_dir, endpoint=endpoint,
                                             tqdm_class=Reporter))
            for name in HUBERT_WEIGHTS:
                url = hf_hub_url(repo_id, name, endpoint=endpoint)
                try:
                    meta = get_hf_file_metadata(url, endpoint=endpoint)
                except EntryNotFoundError:
                    continue
                files.append(fetch_resumable(url, os.path.join(out_dir, name), meta.size, meta.etag, report))
                break
            else:
                raise ShegError(f"{repo_id} has none of {', '.join(HUBERT_WEIGHTS)}: is it a HuBERT repository?")
    except (Cancelled, ShegError):
        raise
    except LocalEntryNotFoundError:  # what the client raises when the endpoint cannot be reached
        raise ShegError(f"cannot reach {endpoint or 'https://huggingface.co'} to download {repo_id}: check the "
                        "connection (or HF_ENDPOINT) and run it again: the bytes that arrived are kept") from None
    except Timeout:
        raise ShegError(f"another download into {out_dir} is running: wait for it to end, or pick another "
                        "folder") from None
    except Exception as exc:  # the client raises HTTP, connection and file errors of many types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShegError(f"downloading {repo_id} failed ({first[:200]}): check the connection (or HF_ENDPOINT) and "
                        "run it again: the bytes that arrived are kept") from None
    return files


def _transport_errors(session) -> tuple:
    """The HTTP library's errors of a lost or refused connection (httpx or its fork httpx2 behind the client)."""
    import importlib

    library = importlib.import_module(type(session).__module__.split(".")[0])
    return (library.TransportError,)


def _kept(path: str) -> int:
    return os.path.getsize(path) if os.path.isfile(path) else 0


def fetch_resumable(url: str, dest: str, size: int | None, etag: str | None, report) -> str:
    """Download `url` to `dest` through `dest`.incomplete, continuing from the bytes it holds; returns `dest`.

    `size` and `etag` are the hub's metadata: the file must have that size and, when the etag is a sha256 (an LFS
    file), that digest. report({'stage', 'file', 'done', 'total'}) is told per chunk; Cancelled raised from it stops
    the download with the bytes kept."""
    from huggingface_hub.utils import build_hf_headers, get_session

    name = os.path.basename(dest)
    size = size or None  # a redirect's own length (0) is no file size: the download's headers tell it then
    if size is not None and os.path.isfile(dest) and os.path.getsize(dest) == size:
        report({"stage": "download", "file": name, "done": size, "total": size})
        return dest  # finished by an earlier run
    partial = dest + ".incomplete"
    if size is not None and _kept(partial) > size:
        os.remove(partial)  # not a prefix of this file: start again
    session = get_session()
    retryable = _transport_errors(session)
    total = size or 0
    tries = 0
    while size is None or _kept(partial) < size:
        have = _kept(partial)
        headers = build_hf_headers()
        headers["Accept-Encoding"] = "identity"  # byte offsets of the file itself, not of a compressed stream
        if have:
            headers["Range"] = f"bytes={have}-"
        report({"stage": "download", "file": name, "done": have, "total": total})
        before = have
        try:
            with session.stream("GET", url, headers=headers, follow_redirects=True, timeout=30) as response:
                if response.status_code == 416:  # the kept bytes are no prefix of what the server has now
                    if os.path.isfile(partial):
                        os.remove(partial)
                    tries += 1
                    if tries >= TRIES_WITHOUT_PROGRESS:
                        raise ShegError(f"the server refuses every range of {name}: run the download again")
                    continue
                if response.status_code not in (200, 206):
                    raise ShegError(f"the server answered {response.status_code} for {name} ({url}): check the "
                                    "endpoint (HF_ENDPOINT) and run the download again")
                start = _range_start(response.headers.get("Content-Range")) if response.status_code == 206 else 0
                if start not in (0, have):
                    raise ShegError(f"the server sent {name} from byte {start}, not {have}: run the download again")
                if size is None:
                    total = _total_size(response) or 0
                with open(partial, "ab" if start else "wb") as f:
                    have = start
                    for chunk in response.iter_bytes():  # as it arrives: the file on disk is what was reported
                        f.write(chunk)
                        f.flush()
                        have += len(chunk)
                        report({"stage": "download", "file": name, "done": have, "total": total})
            if size is None:
                size = total or have  # no size known before: the response's, else what it brought
        except retryable:
            tries = 0 if _kept(partial) > before else tries + 1
            if tries >= TRIES_WITHOUT_PROGRESS:
                raise
            time.sleep(min(0.2 * 2 ** tries, 3.0))
    have = _kept(partial)
    if have != size:
        os.remove(partial)
        raise ShegError(f"{name} arrived with {have} bytes instead of {size}: run the download again")
    if etag and re.fullmatch(r"[0-9a-f]{64}", etag):
        if sha256_of(partial) != etag:
            os.remove(partial)
            raise ShegError(f"{name} does not match its sha256 {etag[:12]}…: run the download again (it starts "
                            "over)")
    os.replace(partial, dest)
    return dest


def _range_start(content_range: str | None) -> int:
    found = re.match(r"bytes (\d+)-", content_range or "")
    return int(found.group(1)) if found else -1


def _total_size(response) -> int | None:
    found = re.match(r"bytes \d+-\d+/(\d+)", response.headers.get("Content-Range") or "")
    if found:
        return int(found.group(1))
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def check_hubert(folder: str) -> int:
    """Load the HuBERT folder and run it on 0.1 s of silence; its feature width, or a one-line ShegError."""
    import numpy as np
    import torch

    try:
        from transformers import HubertModel, Wav2Vec2FeatureExtractor

        extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
        net = HubertModel.from_pretrained(folder).eval()
        values = extractor(np.zeros(1600, np.float32), sampling_rate=16000, return_tensors="pt").input_values
        with torch.inference_mode():
            return int(net(values).last_hidden_state.shape[-1])
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShegError(f"the HuBERT folder {folder} does not load ({first[:200]}): download it again") from None
