"""Download HuBERT-large (`facebook/hubert-large-ls960-ft`) into a folder with the ordinary Hugging Face client, with
progress, cancel and resume, then check that it loads. `sheg download-hubert`; the add-on's "Download HuBERT".

The endpoint is Hugging Face's unless HF_ENDPOINT (or `endpoint`) names another (a mirror; the tests' loopback
server). A dropped connection is retried by the client itself; files that arrived stay,
so a cancelled or failed run, started again, fetches only what is missing (huggingface_hub 2.x deletes the partial
file of the one file it was downloading, which then starts again from its beginning).
"""

from __future__ import annotations

import os

from sheg.errors import Cancelled, ShegError

HUBERT_ID = "facebook/hubert-large-ls960-ft"
HUBERT_FILES = ("config.json", "preprocessor_config.json")
HUBERT_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # the first one the repository has


def download_hubert(out_dir: str, repo_id: str = HUBERT_ID, endpoint: str | None = None, progress=None) -> dict:
    """Fetch the HuBERT files into `out_dir` and load them once; returns {'folder', 'files', 'hidden_size'}.

    progress({'file', 'done', 'total'}) is told as bytes arrive; raising sheg.errors.Cancelled from it stops the
    download (the files that arrived are kept for the next run)."""
    try:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError
        from tqdm.auto import tqdm
    except ImportError:
        raise ShegError("downloading HuBERT needs the hubert extra: pip install 'sheg[hubert]'") from None
    report = progress or (lambda event: None)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    current = {"file": ""}

    class Reporter(tqdm):
        """The client's progress bar, silenced, passing byte counts on (and cancel back)."""

        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 (closed with the bar)
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            shown = super().update(n)
            report({"file": current["file"], "done": int(self.n), "total": int(self.total or 0)})
            return shown

        def close(self):
            super().close()
            self.fp.close()

    def fetch(name: str) -> str:
        current["file"] = name
        return hf_hub_download(repo_id, name, local_dir=out_dir, endpoint=endpoint, tqdm_class=Reporter)

    files = []
    try:
        for name in HUBERT_FILES:
            files.append(fetch(name))
        for name in HUBERT_WEIGHTS:
            try:
                files.append(fetch(name))
                break
            except EntryNotFoundError:
                continue
        else:
            raise ShegError(f"{repo_id} has none of {', '.join(HUBERT_WEIGHTS)}: is it a HuBERT repository?")
    except (Cancelled, ShegError):
        raise
    except Exception as exc:  # the client raises HTTP, connection and file errors of many types
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ShegError(f"downloading {repo_id} failed ({first[:200]}): check the connection (or HF_ENDPOINT) and "
                        "run it again: the files that arrived are kept") from None
    return {"folder": os.path.abspath(out_dir), "files": [os.path.basename(f) for f in files],
            "hidden_size": check_hubert(out_dir)}


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
