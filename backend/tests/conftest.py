"""Fixtures shared by the backend tests: a tiny random model folder and a running worker."""

import pytest

from sheg.testing import make_tiny_model_dir
from sheg_cli import WorkerProcess


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_tiny_model_dir(str(tmp_path_factory.mktemp("models") / "tiny"))


@pytest.fixture()
def worker():
    w = WorkerProcess()
    yield w
    if w.proc.poll() is None:
        w.proc.kill()
    w.proc.wait()
