"""The doctor report's lines for the preferences (addon/core/doctor_report.py) on the backend's real report."""

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "addon"))
from core import doctor_report  # noqa: E402


def test_lines_name_each_model_its_licence_needs_and_fix(backend_python, tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run([backend_python, "-m", "sheg", "make-test-model", str(broken)], check=True, capture_output=True,
                   timeout=300)
    os.remove(broken / "model.safetensors")
    proc = subprocess.run([backend_python, "-m", "sheg", "doctor", "--json", tiny_model_dir, str(broken)],
                          capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    assert doctor_report.summary_part(report) == "models: 3 of 4 usable"
    lines = doctor_report.model_lines(report)
    assert ("CHECKMARK", "tiny-test (show, 30 fps)") in lines and ("ERROR", "tiny-test (show, 30 fps)") in lines
    assert ("BLANK1", "licence: test only") in lines
    at = lines.index(("ERROR", "tiny-test (show, 30 fps)"))
    assert lines[at + 2][1] == f"weights: {broken} has no model.safetensors"
    assert lines[at + 3][1].startswith("fix: convert the checkpoint again")


def test_missing_packages_are_listed_with_their_fix():
    report = {"models": [], "packages": {"smplx": {"installed": False, "for": "the exact rig",
                                                   "fix": "py -m pip install 'smplx==0.1.28'"}}}
    assert doctor_report.model_lines(report) == [
        ("INFO", "smplx not installed (for the exact rig): py -m pip install 'smplx==0.1.28'")]
    assert doctor_report.summary_part(report) == "models: 0 of 0 usable"


def test_a_model_that_lacks_transformers_is_seen():
    need = {"what": "transformers", "problem": "HuBERT models need the transformers package", "fix": "pip"}
    assert doctor_report.needs_transformers({"models": [{"needs": [need]}]})
    assert not doctor_report.needs_transformers({"models": [{"needs": [{"what": "HuBERT"}]}, {"needs": []}]})
    assert not doctor_report.needs_transformers({})
