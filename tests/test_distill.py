"""Logit distillation (``isogauss_hf.distill``, ``--distill-temperature``): the loss against a hand computation, the
collator, and the runs of a distilled plan and sweep on a tiny BERT (the dense run of the same seed as teacher)."""

import json
import math
from pathlib import Path

import pytest
import torch

from isogauss_hf.distill import COLUMN, TeacherCollator, kd_loss

from cli_support import FIXTURES, offline, tiny_bert_dir  # noqa: F401  (fixtures)
from cli_support import one_line_error, results_of, run_cli

TINY = ["--dataset", FIXTURES / "ag_news.jsonl", "--task", "text-classification", "--max-steps", "1",
        "--batch-size", "4", "--num-samples", "2"]


def _log_softmax(row):
    top = max(row)
    log_sum = top + math.log(sum(math.exp(x - top) for x in row))
    return [x - log_sum for x in row]


@pytest.mark.parametrize("student, teacher, label, t, alpha", [
    ([2.0, 0.0], [0.0, 2.0], 0, 1.0, 0.5),
    ([0.5, -1.0, 3.0], [1.0, 1.0, 1.0], 2, 2.0, 0.25),
    ([1.0, 2.0], [1.0, 2.0], 1, 4.0, 1.0),  # the student is the teacher: the KL term is 0
])
def test_kd_loss_matches_a_hand_computation(student, teacher, label, t, alpha):
    ce = -_log_softmax(student)[label]
    ls, lt = _log_softmax([x / t for x in student]), _log_softmax([x / t for x in teacher])
    kl = sum(math.exp(b) * (b - a) for a, b in zip(ls, lt))
    got = kd_loss(torch.tensor([student]), torch.tensor([teacher]), torch.tensor([label]), t, alpha)
    assert float(got) == pytest.approx((1 - alpha) * ce + alpha * t * t * kl, rel=1e-5)


def test_teacher_collator_stacks_logits_beside_the_padded_batch():
    rows = [{"input_ids": [1, 2], COLUMN: [0.5, -0.5]}, {"input_ids": [3], COLUMN: [1.0, 2.0]}]
    pad = lambda rs: {"input_ids": torch.tensor([r["input_ids"] + [0] * (2 - len(r["input_ids"])) for r in rs])}
    batch = TeacherCollator(pad)(rows)
    assert batch["input_ids"].tolist() == [[1, 2], [3, 0]]
    assert batch[COLUMN].dtype == torch.float32 and batch[COLUMN].tolist() == [[0.5, -0.5], [1.0, 2.0]]
    assert COLUMN not in TeacherCollator(pad)([{"input_ids": [4]}])  # evaluation rows carry no teacher


def test_a_distilled_run_trains_dense_first_then_the_control_and_every_variant_on_its_logits(capsys, tiny_bert_dir):
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, *TINY, "--layers", "1", "--compare-dense",
                             "--baselines", "drop", "--distill-temperature", "2", "--output-dir", "kd")
    assert code == 0, err
    runs = results_of("kd")["runs"]
    assert [(r["name"], r["label"]) for r in runs] == [("dense", "dense"), ("dense-kd", "dense+kd=2"),
                                                      ("isogauss", "gdu/seeded+calib=2+kd=2"), ("drop", "drop+kd=2")]
    assert "distill" not in runs[0] and all(r["distill"] == {"temperature": 2.0, "alpha": 0.5} for r in runs[1:])
    logits = torch.load("kd/teacher_logits.pt")
    assert tuple(logits.shape) == (results_of("kd")["dataset"]["train"], 4)
    assert "distilled from the dense run at T = 2" in out


@pytest.mark.parametrize("argv, pattern", [
    (["--layers", "1", "--distill-temperature", "2"], "the teacher is the dense run of the same seed"),
    (["--layers", "1", "--compare-dense", "--distill-temperature", "2", "--distill-alpha", "1.5"],
     "distill_alpha must be in (0, 1]"),
    (["--layers", "1", "--statistics-lr", "0.01"], "statistics_lr 0.01 is the optimizer lr of the statistics under "
                                                   "rule backprop"),
])
def test_research_option_errors_are_one_line(capsys, tiny_bert_dir, argv, pattern):
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, *TINY, *argv, "--output-dir", "bad")
    one_line_error(code, err, pattern)


def test_distillation_added_to_a_plain_sweep_retrains_the_teacher_once_and_pairs_like_with_like(capsys,
                                                                                             tiny_bert_dir):
    sweep = ["--model", tiny_bert_dir, *TINY, "--seeds", "0", "--layers", "1", "--compare-dense", "--baselines",
             "drop", "--no-save-models", "--output-dir", "sw"]
    code, out, err = run_cli(capsys, *sweep)
    assert code == 0, err
    code, out, err = run_cli(capsys, *sweep, "--distill-temperature", "2")
    assert code == 0, err
    names = {p.name for p in Path("sw/runs").iterdir()}
    assert names == {"dense_s0", "dense+kd=2_s0", "gdu-seeded+calib=2_b1_s0", "gdu-seeded+calib=2+kd=2_b1_s0",
                     "drop_b1_s0", "drop+kd=2_b1_s0"}
    assert Path("sw/runs/dense_s0/teacher_logits.pt").is_file()  # the plain sweep's dense run kept none: run again
    assert ": 4 runs\n" in out and "sweep: 1/4 runs done (dense_s0" in out  # the teacher, again
    paired = json.loads(Path("sw/comparison.json").read_text())["paired"]
    refs = {(p["variant"], p["reference"]) for p in paired}
    assert ("gdu/seeded+calib=2+kd=2", "drop+kd=2") in refs and ("gdu/seeded+calib=2+kd=2", "dense") in refs
    assert ("gdu/seeded+calib=2+kd=2", "drop") not in refs and ("dense+kd=2", "dense") in refs
