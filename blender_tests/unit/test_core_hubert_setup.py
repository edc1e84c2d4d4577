"""HuBERT set-up logic of the add-on (addon/core/hubert_setup.py, no bpy): which models need HuBERT, the pip command
of the `hubert` extra (resolved by the real pip, offline, against the tested environment: torch stays), the
download command and its JSON lines as progress (the real backend's lines)."""

import glob
import json
import os
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import hubert_setup  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_which_model_json_needs_hubert(tmp_path):
    assert hubert_setup.model_needs_hubert({"audio": {"hubert": {"model": "facebook/hubert-large-ls960-ft"}}})
    assert hubert_setup.model_needs_hubert({"arch": "unieg", "config": {"use_hubert": True}, "audio": {}})
    assert not hubert_setup.model_needs_hubert({"audio": {"hubert": None}, "config": {"use_hubert": False}})
    assert not hubert_setup.model_needs_hubert({"arch": "diffgesture", "config": {"use_hubert": True}})
    assert not hubert_setup.model_needs_hubert([])
    (tmp_path / "model.json").write_text(json.dumps({"audio": {"hubert": {"model": "x"}}}))
    assert hubert_setup.folder_needs_hubert(str(tmp_path))
    (tmp_path / "model.json").write_text("{not json")
    assert not hubert_setup.folder_needs_hubert(str(tmp_path))
    assert not hubert_setup.folder_needs_hubert(str(tmp_path / "missing"))


def test_a_model_made_by_the_backend_with_hubert_needs_it(backend_python, tmp_path):
    script = ("import sys; from sheg.testing import make_tiny_model_dir; "
              "make_tiny_model_dir(sys.argv[1], hubert='facebook/hubert-large-ls960-ft', hubert_dim=16)")
    subprocess.run([backend_python, "-c", script, str(tmp_path / "m")], check=True, capture_output=True, timeout=300)
    assert hubert_setup.folder_needs_hubert(str(tmp_path / "m"))


def test_the_venv_package_check_reads_site_packages(backend_python):
    venv = os.path.dirname(os.path.dirname(backend_python))
    assert hubert_setup.venv_has_package(venv, "transformers")  # the tested environment has the extra
    assert not hubert_setup.venv_has_package(venv, "no_such_package_here")


def test_the_hubert_extra_command_keeps_torch_and_resolves_offline_against_the_tested_versions(backend_python,
                                                                                               tmp_path):
    wheels = sorted(glob.glob(os.path.join(REPO, "wheels", "sheg-*.whl")))
    if not wheels:
        pytest.skip("no backend wheel in wheels/ (python3 build.py build makes it)")
    command = hubert_setup.hubert_extra_command(backend_python, wheels[-1], "2.13.0")
    assert command[:4] == [backend_python, "-m", "pip", "install"]
    assert command[5].startswith("sheg[hubert] @ file:") and command[6] == "torch==2.13.0"
    assert [c for c in command if c.startswith(("transformers==", "huggingface-hub=="))] == list(
        hubert_setup.HUBERT_PINS)
    with open(os.path.join(REPO, "build.py"), encoding="utf-8") as f:
        tested = f.read()
    assert all(f'"{pin}"' in tested for pin in hubert_setup.HUBERT_PINS)  # the versions the project tests
    # The real pip, no index: everything but sheg itself must already be there, torch included.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    report = tmp_path / "report.json"
    done = subprocess.run([*command, "--dry-run", "--no-index", "--quiet", "--report", str(report)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    installs = [item["metadata"]["name"] for item in json.loads(report.read_text())["install"]]
    assert installs in ([], ["sheg"])


def test_the_download_command():
    assert hubert_setup.download_command("/py", "/out") == ["/py", "-m", "sheg", "download-hubert", "-o", "/out",
                                                            "--json"]
    assert hubert_setup.download_command("/py", "/out", " http://127.0.0.1:9/ ")[-2:] == [
        "--endpoint", "http://127.0.0.1:9/"]


def test_download_lines_become_progress():
    show = hubert_setup.download_progress
    assert show({"event": "progress", "stage": "download", "file": "config.json", "done": 10, "total": 20}) == (
        "Downloading config.json", 0.02)
    message, fraction = show({"event": "progress", "stage": "download", "file": "pytorch_model.bin",
                              "done": 631_000_000, "total": 1_262_000_000})
    assert message == "Downloading pytorch_model.bin: 631 MB of 1262 MB" and fraction == pytest.approx(0.48)
    assert show({"event": "progress", "stage": "download", "file": "model.safetensors", "done": 5, "total": 0})[1] \
        == pytest.approx(0.03)
    assert show({"event": "progress", "stage": "check"}, 0.2, 1.0) == ("Checking that HuBERT loads", 0.96)
    assert show({"event": "done", "folder": "/x"}) is None
    fractions = [show({"event": "progress", "stage": "download", "file": "model.safetensors", "done": d,
                       "total": 100}, 0.2)[1] for d in range(0, 101, 10)]
    assert fractions == sorted(fractions) and 0.2 < fractions[0] and fractions[-1] < 0.96
