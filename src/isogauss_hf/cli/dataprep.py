"""From loaded data to what the runs train on: columns, empty rows, labels, the test split, and a summary.

:func:`finish_task_data` (called by :func:`isogauss_hf.cli.data.load_task_data`):

1. renames the user's columns (``--text-column``, ``--text-pair-column``, ``--label-column``) to the
   task's (``text``, ``text_pair``, ``label``);
2. classification: drops rows whose text or label is missing or empty (the count per split is kept
   and printed), and refuses, naming the split and row, a value that is neither (a number where a
   text belongs, a label ``1.5``, ``-3`` or ``[1]``);
3. turns string labels into a ``ClassLabel`` (names sorted; numerically when they are all digits)
   and integer ids into a ``ClassLabel`` named ``"0" ... "N-1"``, so class names reach ``id2label``;
4. splits off a test split when the data has none: seeded, stratified by label when every class
   has two rows or more.

:func:`split_summary` gives each split's size, class balance and majority-class rate;
:func:`describe_split` says in words how train and test came about.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any, Optional

from ..errors import UsageError

__all__ = ["CLASSIFICATION_TASKS", "finish_task_data", "split_summary", "describe_split", "describe_balance"]

CLASSIFICATION_TASKS = ("text-classification", "image-classification")
_FLAGS = {"text": "--text-column", "text_pair": "--text-pair-column", "label": "--label-column"}


def _rename_columns(data: Any, columns: dict[str, Optional[str]], name: str) -> tuple[Any, dict[str, str]]:
    """Rename the user's columns to the task's, all at once (so ``--text-column label --label-column text`` swaps);
    a column that would serve two roles is refused."""
    import datasets

    mapping = {target: source for target, source in columns.items() if source and source != target}
    if not mapping:
        return data, {}
    present = data["train"].column_names
    roles: dict[str, list[str]] = {}
    for target in _FLAGS:
        source = columns.get(target) or (target if target in present else None)
        if source:
            roles.setdefault(source, []).append(target)
    for source, targets in roles.items():
        if len(targets) > 1:
            flags = " and the ".join(f"{t} ({_FLAGS[t]})" if columns.get(t) else f"{t} (the default)" for t in targets)
            raise UsageError(f"dataset {name!r}: column {source!r} cannot be both the {flags}; give each a column of "
                             f"its own with {' and '.join(_FLAGS[t] for t in targets)}; columns present: {present}")
    out = {}
    for split, ds in data.items():
        for target, source in mapping.items():
            if source not in ds.column_names:
                raise UsageError(f"dataset {name!r} ({split} split) has no column {source!r} ({_FLAGS[target]}); "
                                 f"columns present: {ds.column_names}")
        # a column already called like a task column, but not chosen for it, is not used
        unused = [t for t in mapping if t in ds.column_names and t not in mapping.values()]
        out[split] = ds.remove_columns(unused).rename_columns({s: t for t, s in mapping.items()})
    return datasets.DatasetDict(out), dict(mapping)


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (
        isinstance(value, str) and not value.strip())


def _bad_row(name: str, split: str, row: int, column: str, value: Any, expected: str) -> UsageError:
    flag = _FLAGS.get(column, "")
    hint = f"; choose the right column with {flag}" if flag else ""
    return UsageError(f"dataset {name!r} ({split} split) row {row}: {column} {value!r} is not {expected}{hint}")


def _label_kind(value: Any) -> Optional[str]:
    """'name' (a string), 'id' (an integer >= 0, or a float holding one) or None (unusable)."""
    if isinstance(value, str):
        return "name"
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "id" if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return "id"
    return None


def _clean_classification(data: Any, name: str, task: str) -> tuple[Any, dict[str, int]]:
    """Drop rows without a text or label; check the rest; encode the labels as a ``ClassLabel``."""
    import datasets

    text_cols = [c for c in ("text", "text_pair") if task == "text-classification" and c in data["train"].column_names]
    class_label = isinstance(data["train"].features.get("label"), datasets.ClassLabel)
    dropped: dict[str, int] = {}
    kept: dict[str, Any] = {}
    label_values: dict[str, list] = {}
    kinds: dict[str, tuple[int, str, int]] = {}  # kind -> (order, split, row) of the first row holding it
    label_values_raw: dict[str, list] = {}
    for split, ds in data.items():
        if "label" not in ds.column_names or any(c not in ds.column_names for c in text_cols):
            return data, {}  # check_columns names what is missing
        columns = {c: list(ds[c]) for c in text_cols + ["label"]}
        label_values_raw[split] = columns["label"]
        keep = []
        for row in range(len(ds)):
            label = columns["label"][row]
            texts = [columns[c][row] for c in text_cols]
            if any(_is_empty(t) for t in texts) or _is_empty(label) or (class_label and label == -1):
                continue
            for column, text in zip(text_cols, texts):
                if not isinstance(text, str):
                    raise _bad_row(name, split, row, column, text, "a text (string)")
            if not class_label:
                kind = _label_kind(label)
                if kind is None:
                    raise _bad_row(name, split, row, "label", label,
                                   "a class id (an integer >= 0) or a class name (a string)")
                kinds.setdefault(kind, (len(kinds), split, row))
            keep.append(row)
        dropped[split] = len(ds) - len(keep)
        kept[split] = ds if len(keep) == len(ds) else ds.select(keep).flatten_indices()
        label_values[split] = [columns["label"][r] for r in keep]
    if len(kinds) > 1:
        (_, split, row), kind = max((v, k) for k, v in kinds.items())
        other = "class ids" if kind == "name" else "class names"
        raise UsageError(f"dataset {name!r} ({split} split) row {row}: label {label_values_raw[split][row]!r} is a "
                         f"class {'name' if kind == 'name' else 'id'}, but earlier rows hold {other}; "
                         f"use one or the other")
    if class_label:  # name the classes in the checks' messages
        names = data["train"].features["label"].names
        _check_label_values({s: [names[v] for v in vs] for s, vs in label_values.items()}, name, False)
    else:
        _check_label_values(label_values, name, "name" in kinds)
    if not class_label:
        kept = _encode_labels(kept, label_values, "name" in kinds)
    return datasets.DatasetDict(kept), dropped


def _check_label_values(values: dict[str, list], name: str, by_name: bool) -> None:
    """Labels that cannot be what the user meant: a test split sharing no class with the train split, a class for
    almost every row (a text column taken for the label)."""
    train, test = set(values.get("train", ())), set(values.get("test", ()))
    if train and test and not train & test:
        shown = lambda v: sorted(map(str, v))[:5]  # noqa: E731
        raise UsageError(f"dataset {name!r}: the test split's labels {shown(test)} share no class with the train "
                         f"split's {shown(train)} (class ids in one file, class names in another?); use the same "
                         f"labels in every split")
    if len(train) == 1:
        raise UsageError(f"dataset {name!r}: every train row has the label {next(iter(train))!r}; a classifier needs "
                         f"two classes or more (is --label-column the right column?)")
    if by_name:
        ids = sorted(v for v in train | test if v.strip().isdigit())
        names = sorted(v for v in train | test if not v.strip().isdigit())
        if ids and names:
            raise UsageError(f"dataset {name!r}: the label column mixes class ids {ids[:4]} and class names "
                             f"{names[:4]}; use one or the other in every row and file")
    rows = len(values.get("train", ()))
    if by_name and rows >= 20 and len(train) > rows // 2:
        raise UsageError(f"dataset {name!r}: the label column holds {len(train)} different values in {rows} train "
                         f"rows, a class for almost every row; is it a text column? choose the label column with "
                         f"--label-column")


def _encode_labels(splits: dict[str, Any], values: dict[str, list], by_name: bool) -> dict[str, Any]:
    import datasets

    everything = [v for vs in values.values() for v in vs]
    if by_name:
        unique = set(everything)
        names = sorted(unique, key=int) if all(v.strip().isdigit() for v in unique) else sorted(unique)
        index = {n: i for i, n in enumerate(names)}
        ids = {s: [index[v] for v in vs] for s, vs in values.items()}
    else:
        ids = {s: [int(v) for v in vs] for s, vs in values.items()}
        names = [str(i) for i in range(max(everything, default=0) + 1)] if everything else []
    if not names:
        return splits
    feature = datasets.ClassLabel(names=[str(n) for n in names])
    out = {}
    for split, ds in splits.items():
        features = ds.features.copy()
        features["label"] = feature
        column = ds.remove_columns("label").add_column("label", ids[split])
        out[split] = column.cast(features)
    return out


def _split_train(data: Any, task: str, seed: int, test_size: Any) -> tuple[Any, dict]:
    import datasets

    train = data["train"]
    info: dict[str, Any] = {"how": "split", "test_size": test_size, "seed": seed, "stratified": False}
    if len(train) < 2:
        raise UsageError(f"dataset has {len(train)} usable row; a train/test split needs at least 2")
    stratify = None
    if task in CLASSIFICATION_TASKS and isinstance(train.features.get("label"), datasets.ClassLabel):
        counts = Counter(train["label"])
        n_test = test_size if isinstance(test_size, int) else math.ceil(test_size * len(train))
        if min(counts.values()) >= 2 and len(counts) <= n_test <= len(train) - len(counts):
            stratify = "label"
        else:
            info["note"] = ("not stratified: a class has fewer than 2 rows, or the test split is smaller than the "
                            "class count")
    try:
        split = train.train_test_split(test_size=test_size, seed=seed, stratify_by_column=stratify)
    except ValueError as e:
        raise UsageError(f"cannot split the dataset into train/test (test_size {test_size!r}): {e}") from None
    info["stratified"] = stratify is not None
    return datasets.DatasetDict({"train": split["train"], "test": split["test"]}), info


def _check_not_empty(data: Any, name: str, dropped: bool) -> None:
    empty = [s for s, ds in data.items() if len(ds) == 0]
    if empty:
        raise UsageError(f"dataset {name!r} has no usable rows in its {' and '.join(empty)} split"
                         + (" (every row had an empty or missing text or label)" if dropped else ""))


def finish_task_data(data: Any, split: dict, *, name: str, task: str, seed: int, columns: dict,
                     test_size: Any = 0.2) -> Any:
    """Columns renamed, rows cleaned, labels encoded, test split made.

    Returns the fields of a :class:`~isogauss_hf.cli.data.TaskData`: ``data``, ``split``, ``dropped`` (split ->
    rows dropped) and ``columns`` (task column -> the dataset's).
    """
    data, used = _rename_columns(data, columns, name)
    dropped: dict[str, int] = {}
    if task in CLASSIFICATION_TASKS:
        data, dropped = _clean_classification(data, name, task)
    split = dict(split)
    _check_not_empty(data, name, bool(dropped))
    if split.get("how") == "to split":
        dropped = {"before the split": sum(dropped.values())} if dropped else {}
        source = split.get("source")
        data, split = _split_train(data, task, seed, test_size)
        if source:
            split["source"] = source
    return {"data": data, "split": split, "dropped": {s: n for s, n in dropped.items() if n}, "columns": used}


# ------------------------------------------------------------------------------------------- summary
def split_summary(data: Any, labels: Optional[list[str]]) -> dict[str, dict[str, Any]]:
    """Per split: ``rows``; with labels also ``classes`` (name -> count), ``majority_class`` and ``majority_rate``."""
    out: dict[str, dict[str, Any]] = {}
    for split, ds in data.items():
        entry: dict[str, Any] = {"rows": len(ds)}
        if labels and "label" in ds.column_names and len(ds):
            counts = Counter(int(v) for v in ds["label"])
            entry["classes"] = {labels[i] if 0 <= i < len(labels) else str(i): counts.get(i, 0)
                                for i in range(max(len(labels), max(counts) + 1))}
            top = max(counts, key=lambda k: (counts[k], -k))
            entry["majority_class"] = labels[top] if top < len(labels) else str(top)
            entry["majority_rate"] = counts[top] / len(ds)
        out[split] = entry
    return out


def describe_balance(entry: dict[str, Any], limit: int = 6) -> str:
    """``business 22.9%, sport 23.0%, ...; majority 'sport' 23.0%`` (the ``limit`` largest classes)."""
    classes = entry.get("classes")
    if not classes:
        return ""
    n = max(entry["rows"], 1)
    items = sorted(classes.items(), key=lambda kv: -kv[1]) if len(classes) > limit else list(classes.items())
    shown = ", ".join(f"{k} {100 * v / n:.1f}%" for k, v in items[:limit])
    more = f", ... ({len(classes)} classes)" if len(classes) > limit else ""
    return f"{shown}{more}; majority {entry['majority_class']!r} {100 * entry['majority_rate']:.1f}%"


def describe_split(info: dict[str, Any]) -> str:
    """How train and test came about, in words."""
    source = f" ({info['source']})" if info.get("source") else ""
    if info.get("how") == "split":
        size = info.get("test_size")
        size_text = f"{size:,} test rows" if isinstance(size, int) else f"test {100 * float(size):g}%"
        kind = "stratified by label" if info.get("stratified") else "not stratified"
        note = f"; {info['note']}" if info.get("note") else ""
        return f"split here: {size_text}, seed {info.get('seed')}, {kind}{note}{source}"
    test = info.get("test_split", "test")
    note = f"; {info['note']}" if info.get("note") else ""
    return f"the dataset's own splits (train / {test} as test){note}{source}"
