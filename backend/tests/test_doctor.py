"""`sheg doctor`: usable models, what each still needs and the step that fixes it."""

import json
import os
import shutil

import pytest

from sheg.testing import make_tiny_model_dir
from sheg_cli import run_cli

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from sheg.testing import make_tiny_hubert

    root = tmp_path_factory.mktemp("doctor")
    hubert = make_tiny_hubert(str(root / "hubert"), hidden_size=16)
    folder = root / "models"
    make_tiny_model_dir(str(folder / "a-plain"))
    make_tiny_model_dir(str(folder / "b-hubert-ok"), hubert=hubert, hubert_dim=16)
    make_tiny_model_dir(str(folder / "c-hubert-missing"), hubert=str(root / "nowhere"), hubert_dim=16)
    make_tiny_model_dir(str(folder / "d-no-weights"))
    os.remove(folder / "d-no-weights" / "model.safetensors")
    (folder / "e-broken").mkdir()
    (folder / "e-broken" / "model.json").write_text("{not json")
    partial = root / "hubert-partial"
    shutil.copytree(hubert, partial)
    os.remove(partial / "preprocessor_config.json")
    make_tiny_model_dir(str(folder / "f-hubert-partial"), hubert=str(partial), hubert_dim=16)
    return folder, hubert


def test_json_report_says_which_models_are_usable_and_what_the_others_need(models):
    folder, hubert = models
    proc = run_cli("doctor", folder, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["sheg"] == "0.1.0" and "cpu" in report["devices"]
    assert report["packages"]["transformers"]["installed"] and report["packages"]["smplx"]["fix"] is None
    by_name = {os.path.basename(m["path"]): m for m in report["models"]}
    assert by_name["default"]["usable"] and by_name["diffgesture-small"]["usable"]
    assert by_name["a-plain"]["usable"] and by_name["b-hubert-ok"]["usable"]
    assert by_name["a-plain"]["license"] == "test only" and by_name["a-plain"]["fps"] == 30.0
    need = lambda name: [(n["what"], n["problem"], n["fix"]) for n in by_name[name]["needs"]]  # noqa: E731
    [(what, problem, fix)] = need("c-hubert-missing")
    assert what == "HuBERT" and "does not exist" in problem and "Download HuBERT" in fix and "--hubert" in fix
    [(what, problem, _)] = need("f-hubert-partial")
    assert what == "HuBERT" and problem.endswith("lacks preprocessor_config.json")
    [(what, problem, fix)] = need("d-no-weights")
    assert what == "weights" and "no model.safetensors" in problem and "import-diffsheg" in fix
    [(what, problem, _)] = need("e-broken")
    assert what == "model files" and "not valid JSON" in problem
    assert not any(by_name[n]["usable"] for n in ("c-hubert-missing", "d-no-weights", "e-broken", "f-hubert-partial"))


def test_hubert_flag_overrides_the_card_and_the_screen_names_the_fix(models):
    folder, hubert = models
    proc = run_cli("doctor", folder / "c-hubert-missing", "--hubert", hubert, "--json")
    [model] = [m for m in json.loads(proc.stdout)["models"] if m["path"].endswith("c-hubert-missing")]
    assert model["usable"]
    text = run_cli("doctor", folder).stdout
    assert "models: 4 of 8 usable" in text
    [line] = [line for line in text.splitlines() if line.endswith("d-no-weights")]
    assert line.startswith("  NEEDS tiny-test (show, 30 fps)") and "fix: convert the checkpoint again" in text
    assert "licence: test only" in text


def test_a_model_id_not_in_the_cache_needs_a_download(tmp_path):
    make_tiny_model_dir(str(tmp_path / "m"), hubert="facebook/hubert-large-ls960-ft", hubert_dim=16)
    env_home = {"HF_HOME": str(tmp_path / "hf")}
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "sheg", "doctor", str(tmp_path / "m"), "--json"],
                          capture_output=True, text=True, env=os.environ | env_home, timeout=300)
    [model] = [m for m in json.loads(proc.stdout)["models"] if m["path"].endswith(os.sep + "m")]
    assert model["needs"][0]["problem"] == ("HuBERT 'facebook/hubert-large-ls960-ft' is not downloaded "
                                            "(not in the Hugging Face cache)")
