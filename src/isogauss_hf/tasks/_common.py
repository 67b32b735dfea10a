"""Small helpers shared by the task modules (schema checks, deterministic subsampling)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["cap_splits", "column_names", "flat_float_feature", "require_columns"]


def column_names(dataset: Any) -> list[str]:
    """Column names of a ``Dataset``, ``DatasetDict`` (union over splits), dict of lists or batch dict."""
    names = getattr(dataset, "column_names", None)
    if names is None:
        return list(dataset.keys())
    if isinstance(names, dict):  # DatasetDict: {split: [columns]}
        merged: list[str] = []
        for cols in names.values():
            merged.extend(c for c in cols if c not in merged)
        return merged
    return list(names)


def require_columns(dataset: Any, required: Iterable[str], task: str) -> None:
    """Raise ``ValueError`` naming the missing column(s), the columns present and the task."""
    present = column_names(dataset)
    if hasattr(dataset, "column_names") and isinstance(dataset.column_names, dict):
        # every split of a DatasetDict must carry the columns
        for split, cols in dataset.column_names.items():
            missing = [c for c in required if c not in cols]
            if missing:
                raise ValueError(
                    f"{task}: split '{split}' is missing column(s) {missing}; columns present: {list(cols)}"
                )
        return
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(f"{task}: dataset is missing column(s) {missing}; columns present: {present}")


def cap_splits(dataset_dict: Any, max_samples: int | None, seed: int = 42, shuffle: bool = False) -> Any:
    """Keep at most ``max_samples`` rows of every split, deterministically.

    With ``shuffle=False`` the first rows are kept (use after a seeded
    ``train_test_split``, which already shuffles); with ``shuffle=True`` each
    split is shuffled with ``seed`` first.
    """
    if max_samples is None:
        return dataset_dict
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    out = {}
    for split, ds in dataset_dict.items():
        if shuffle:
            ds = ds.shuffle(seed=seed)
        out[split] = ds.select(range(min(max_samples, len(ds)))) if len(ds) > max_samples else ds
    return type(dataset_dict)(out)


def flat_float_feature(length: int) -> Any:
    """``datasets`` feature for a fixed-length float32 vector (``List`` on datasets>=4, ``Sequence`` before)."""
    import datasets

    value = datasets.Value("float32")
    if hasattr(datasets, "List"):
        return datasets.List(value, length=length)
    return datasets.Sequence(value, length=length)  # pragma: no cover - datasets<4
