"""scripts/measure_vision_preprocess.py runs at its --smoke size (images through the CLI's input path), so it
does not rot; its table keeps every label it measured and their ratio."""

import importlib.util
import json
import os

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "measure_vision_preprocess.py")


def _script():
    spec = importlib.util.spec_from_file_location("_measure_vision", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_measure_vision_smoke(tmp_path):
    script = _script()
    out = tmp_path / "vision"
    for label in ("before", "after"):
        assert script.main(["--smoke", "--label", label, "--out", str(out)]) == 0
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert set(runs) == {"before", "after"}
    for run in runs.values():
        row = run["standin-224"]
        assert row["images"] == 8 and row["batch_shape"] == [4, 3, 224, 224] and row["images_per_s"] > 0
        assert row["train_rows"] == 12 and script.effective_rate(row) > 0
    table = out.with_suffix(".md").read_text()
    assert "| standin-512 | after |" in table and "x |" in table  # after / before over three epochs
