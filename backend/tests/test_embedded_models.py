"""The models shipped inside the package: listed, loaded by name, and generating real takes from real speech."""

import json
from pathlib import Path

import numpy as np
import pytest

from sheg.errors import BadInput
from sheg.inference.base import embedded_models, resolve_model_path
from sheg.io.take import read_take
from sheg_cli import run_cli

SPEECH = Path(__file__).resolve().parents[2] / "assets" / "speech" / "arctic_a0007.wav"


def test_the_embedded_models_are_listed_and_resolved_by_name(tmp_path):
    assert embedded_models()[:1] == ["default"] and "diffgesture-small" in embedded_models()
    assert resolve_model_path(None).endswith("default")
    assert resolve_model_path("diffgesture-small").endswith("diffgesture-small")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)  # an existing folder is itself
    with pytest.raises(BadInput, match="neither a folder nor an embedded model"):
        resolve_model_path("no-such-model")


@pytest.mark.parametrize("model, fps, face", [(None, 30.0, True), ("diffgesture-small", 15.0, False)],
                         ids=["default", "diffgesture-small"])
def test_generate_with_an_embedded_model(tmp_path, model, fps, face):
    out = tmp_path / "take.npz"
    result = run_cli("generate", SPEECH, "-o", out, "--seed", "2", "--json", *(["--model", model] if model else []))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)["takes"][0]
    take = read_take(out)
    assert summary["fps"] == fps and summary["frames"] == len(take["poses"]) == int(4.0 * fps)  # a 4.0 s clip
    assert take["poses"].shape[1] == 165
    assert float(take["mocap_frame_rate"]) == fps and np.isfinite(take["poses"]).all()
    generated = take["generated_joints"]
    assert generated[[3, 6, 9, 12, 16, 17, 18, 19]].all() and not generated[[1, 2, 4, 5]].any()  # no legs
    assert bool(take["generated_expressions"]) is face
    assert summary["model"] == ("sheg-small-v2" if model is None else "sheg-diffgesture-small-beat2")


def test_an_unknown_model_name_is_a_one_line_error(tmp_path):
    result = run_cli("generate", SPEECH, "-o", tmp_path / "take.npz", "--model", "no-such-model")
    assert result.returncode == 2 and not (tmp_path / "take.npz").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-model" in lines[0] and "diffgesture-small" in lines[0]
