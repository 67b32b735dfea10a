"""``isogauss-finetune`` on datasets as users have them (issue 13, part 3).

Column flags, string labels -> ``ClassLabel`` -> ``id2label``, rows with an empty text or label dropped
with a printed count, unusable columns named by row, directories of files, and the plan's data lines
(split sizes, class balance, majority-class rate, the split's seed and stratification).
"""

import csv
import json
from pathlib import Path

import pytest

from cli_support import FIXTURES, offline, tiny_bert_dir  # noqa: F401  (fixtures)
from cli_support import one_line_error, results_of, run_cli

TEXTS = ["leaders meet in geneva", "striker scores twice", "oil prices climb", "floods displace thousands",
         "united win the derby", "stocks and shares fall", "peace talks in the region", "champion retains title",
         "bank rates rise"]
CLASSES = ["world", "sport", "business"]


def _rows(n=18):
    return [{"text": TEXTS[i % len(TEXTS)], "class": CLASSES[i % 3]} for i in range(n)]


def _train_args(model, dataset, *extra):
    return ["--model", model, "--dataset", dataset, "--task", "text-classification", "--layers", "none",
            "--max-steps", "1", "--batch-size", "4", *extra]


def test_json_array_with_a_class_column_and_a_trailing_empty_row(capsys, tiny_bert_dir, tmp_path):
    """Today: needed a hand-written conversion; the trailing {"text": "", "class": null} row gave "found ['None']"."""
    path = tmp_path / "reviews.json"
    path.write_text(json.dumps(_rows() + [{"text": "", "class": None}]))
    code, out, err = run_cli(capsys, *_train_args(tiny_bert_dir, path, "--label-column", "class", "--output-dir", "j"))
    assert code == 0, err
    assert "dropped   1 row with an empty or missing text or label (before the split 1)" in out
    results = results_of("j")
    assert results["dataset"]["labels"] == ["business", "sport", "world"]  # string labels -> ClassLabel names
    assert results["dataset"]["dropped"] == {"before the split": 1} and results["dataset"]["columns"] == {
        "label": "class"}
    assert results["dataset"]["train"] + results["dataset"]["test"] == 18
    config = json.loads(Path("j/model/config.json").read_text())
    assert config["id2label"] == {"0": "business", "1": "sport", "2": "world"}  # names reach id2label


def test_string_labels_and_null_rows_under_the_default_column_names(capsys, tiny_bert_dir, tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"text": r["text"], "label": r["class"]} for r in _rows()]
    rows += [{"text": "", "label": None}, {"text": None, "label": "sport"}, {"text": "a fine text", "label": None},
             {"text": "   ", "label": "world"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, "--dataset", path, "--task", "text-classification",
                             "--layers", "1", "--dry-run")
    assert code == 0, err
    assert "3 classes" in out and "dropped   4 rows with an empty or missing text or label" in out


def test_text_and_text_pair_columns_of_a_csv(capsys, tiny_bert_dir, tmp_path):
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["premise", "hypothesis", "gold", "text"])
        writer.writeheader()
        for i in range(12):
            writer.writerow({"premise": TEXTS[i % 9], "hypothesis": TEXTS[(i + 4) % 9], "gold": i % 2,
                             "text": "not this column"})
    code, out, err = run_cli(capsys, *_train_args(tiny_bert_dir, path, "--text-column", "premise",
                                                  "--text-pair-column", "hypothesis", "--label-column", "gold",
                                                  "--output-dir", "pairs"))
    assert code == 0, err
    results = results_of("pairs")
    assert results["dataset"]["columns"] == {"text": "premise", "text_pair": "hypothesis", "label": "gold"}
    assert results["dataset"]["labels"] == ["0", "1"] and results["recipe"]["text_pair_column"] == "hypothesis"


@pytest.mark.parametrize("rows, flags, pattern", [
    ([{"text": "a", "label": 1}, {"text": "b", "label": 0}, {"text": "c", "label": 1.5}], [],
     "(train split) row 2: label 1.5 is not a class id (an integer >= 0) or a class name (a string)"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": -3}], [], "row 1: label -3 is not a class id"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": [1]}], [], "row 1: label [1] is not"),
    ([{"text": 5, "label": 1}, {"text": 6, "label": 0}], [], "row 0: text 5 is not a text (string)"),
    ([{"text": "a", "label": 1}, {"text": "b", "label": "pos"}], [],
     "row 1: label 'pos' is a class name, but earlier rows hold class ids"),
    ([{"text": "a", "y": "pos"}, {"text": "b", "y": "neg"}], ["--label-column", "klass"],
     "has no column 'klass' (--label-column); columns present: ['text', 'y']"),
    ([{"text": "", "label": 1}, {"text": None, "label": 0}], [], "has no usable rows in its train split"),
], ids=["float-label", "negative-label", "list-label", "number-text", "mixed-labels", "no-such-column", "all-empty"])
def test_unusable_columns_name_the_row_and_leave_nothing_behind(capsys, tiny_bert_dir, tmp_path, rows, flags, pattern):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows * 1))
    code, out, err = run_cli(capsys, *_train_args(tiny_bert_dir, path, *flags, "--output-dir", "bad"))
    one_line_error(code, err, pattern)
    assert not Path("bad").exists()


def test_dry_run_shows_sizes_balance_majority_and_the_split(capsys, tiny_bert_dir, tmp_path):
    path = tmp_path / "reviews.json"
    path.write_text(json.dumps(_rows(20) + [{"text": "one more world story", "class": "world"}] * 4))
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, "--dataset", path, "--task", "text-classification",
                             "--label-column", "class", "--layers", "1", "--seed", "7", "--dry-run")
    assert code == 0, err
    lines = out.splitlines()
    assert "dataset     " in out and "train 19 of 19, test 5 of 5, 3 classes" in out
    split = next(line for line in lines if line.startswith("  split"))
    assert "test 20%" in split and "seed 7" in split and "stratified by label" in split
    train = next(line for line in lines if line.startswith("  train"))
    test = next(line for line in lines if line.startswith("  test"))
    assert "world 47.4%" in train and "majority 'world' 47.4%" in train  # 9 of 19 (11 of 24 before the split)
    assert "majority 'sport' 40.0%" in test  # a tie (2 of 5 each) goes to the first class in label order


def test_dry_run_of_a_given_split_and_of_caps(capsys, tiny_bert_dir):
    code, out, err = run_cli(capsys, "--recipe", "minilm-bbc-news", "--model", tiny_bert_dir, "--dataset",
                             FIXTURES / "ag_news.jsonl", "--layers", "1", "--train-samples", "4", "--dry-run")
    assert code == 0, err
    assert "train 4 of 6, test 2 of 2" in out or "train 4 of" in out
    assert "train capped to a random subset (seed 42)" in out


def test_directory_of_split_files(capsys, tiny_bert_dir, tmp_path):
    data = tmp_path / "mydata"
    data.mkdir()
    for name, rows in (("train.jsonl", _rows(12)), ("test.jsonl", _rows(6))):
        (data / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out, err = run_cli(capsys, "--model", tiny_bert_dir, "--dataset", data, "--task", "text-classification",
                             "--label-column", "class", "--layers", "1", "--dry-run")
    assert code == 0, err
    assert "train 12 of 12, test 6 of 6, 3 classes" in out
    assert "the dataset's own splits (train / test as test)" in out and "2 file(s)" in out


def test_directory_of_class_folders(capsys, tiny_bert_dir, tmp_path):
    data = tmp_path / "articles"
    for c in CLASSES:
        (data / c).mkdir(parents=True)
        for i in range(5):
            (data / c / f"{i}.txt").write_text(f"{TEXTS[i]} {c}\n")
    code, out, err = run_cli(capsys, *_train_args(tiny_bert_dir, data, "--output-dir", "folders"))
    assert code == 0, err
    results = results_of("folders")
    assert results["dataset"]["labels"] == sorted(CLASSES) and results["dataset"]["split"]["stratified"] is True
    assert results["dataset"]["summary"]["test"]["majority_rate"] == pytest.approx(1 / 3)


def test_results_json_records_the_split_and_the_majority_rate(capsys, tiny_bert_dir):
    code, out, err = run_cli(capsys, *_train_args(tiny_bert_dir, FIXTURES / "ag_news.jsonl", "--output-dir", "s"))
    assert code == 0, err
    dataset = results_of("s")["dataset"]
    assert dataset["split"]["how"] in ("given", "split") and dataset["rows_before_caps"]["train"] >= dataset["train"]
    test = dataset["summary"]["test"]
    assert test["rows"] == dataset["test"] and 0 < test["majority_rate"] <= 1
    assert sum(test["classes"].values()) == test["rows"]


def test_named_offline_dataset_shows_its_stratified_seeded_split(capsys):
    code, out, err = run_cli(capsys, "--recipe", "minilm-tweets", "--dry-run")
    if code == 2 and "install it with" in err:
        pytest.skip(f"offline asset missing: {err.strip()}")
    assert code == 0, err
    assert "split here: test 20%, seed 42, stratified by label" in out
    assert "train and test capped to a random subset (seed 42)" in out and "majority 'negative'" in out
