"""Local datasets as users have them: one file, a directory of files, or a directory of class folders.

:func:`load_local` returns a ``DatasetDict`` and how its splits came about. What it reads:

* a ``.csv`` / ``.json`` (JSON lines, a JSON array of objects, or SQuAD's ``{"data": [...]}``) /
  ``.jsonl`` / ``.parquet`` file;
* a directory written by ``Dataset(Dict).save_to_disk``;
* a directory of such files (one format): files whose names say ``train`` / ``test`` /
  ``validation`` (``valid``, ``val``, ``dev``) become those splits, otherwise all of them are the
  training data;
* a directory with one sub-directory of ``.txt`` files per class (text-classification; the file's
  text, the folder's name as label), optionally under ``train/`` and ``test/``;
* anything else ``datasets.load_dataset(directory)`` understands (e.g. an image folder per class).

A ``validation`` split stands in for a missing ``test`` split; data with neither is split later
(:mod:`isogauss_hf.cli.dataprep`, stratified by label when it can be).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

from ..errors import UsageError
from .filechecks import check_data_file, explain_load_failure

__all__ = ["DATA_SUFFIXES", "load_local"]

#: file suffix -> ``datasets`` builder
DATA_SUFFIXES: dict[str, str] = {".csv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}
_SPLIT_WORDS = {"train": "train", "training": "train", "test": "test", "testing": "test", "validation": "validation",
                "valid": "validation", "val": "validation", "dev": "validation", "eval": "validation"}


def _split_of(stem: str) -> Optional[str]:
    """``train.csv`` -> train, ``bbc-test-2024.jsonl`` -> test, ``notes.csv`` -> None."""
    for word in re.split(r"[^a-z]+", stem.lower()):
        if word in _SPLIT_WORDS:
            return _SPLIT_WORDS[word]
    return None


def _json_field(path: Path) -> dict[str, Any]:
    """``{"field": "data"}`` for a SQuAD-style ``{"version": ..., "data": [...]}`` file, else ``{}``."""
    with open(path, encoding="utf-8") as handle:
        head = handle.read(1)
        handle.seek(0)
        if head != "{":
            return {}
        try:
            top = json.load(handle)
        except json.JSONDecodeError:
            return {}  # JSON lines
    return {"field": "data"} if isinstance(top, dict) and isinstance(top.get("data"), list) else {}


def _load_files(files: dict[str, list[Path]], label: str) -> Any:
    import datasets

    suffixes = {p.suffix.lower() for paths in files.values() for p in paths}
    builders = {DATA_SUFFIXES[s] for s in suffixes}
    if len(builders) > 1:
        raise UsageError(f"dataset {label!r} mixes file formats {sorted(suffixes)}; keep one format per dataset")
    builder = builders.pop()
    kwargs: dict[str, Any] = {}
    if builder == "json":
        first = next(p for paths in files.values() for p in paths)
        kwargs = _json_field(first)
    for paths in files.values():
        for path in paths:
            check_data_file(path, str(path) if len(files) > 1 or len(paths) > 1 else label)
    data_files = {split: [str(p) for p in sorted(paths)] for split, paths in files.items()}
    try:
        return datasets.load_dataset(builder, data_files=data_files, **kwargs)
    except Exception as e:  # noqa: BLE001 - datasets' own errors (DatasetGenerationError, ...), ValueError, OSError
        every = [p for paths in files.values() for p in sorted(paths)]
        raise UsageError(f"dataset {label!r} cannot be read as {builder}: "
                         f"{explain_load_failure(e, every, builder, kwargs)}") from None


def _class_folders(root: Path) -> Optional[dict[str, list[Path]]]:
    """``{class name: [txt files]}`` when ``root`` holds one sub-directory of ``.txt`` files per class."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        return None
    classes = {d.name: sorted(d.glob("*.txt")) for d in subdirs}
    if not all(classes.values()):
        return None
    return classes


def _read_class_folders(classes: dict[str, list[Path]]) -> Any:
    import datasets

    names = sorted(classes)
    texts, labels = [], []
    for name in names:
        for path in classes[name]:
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            texts.append(text.strip())
            labels.append(names.index(name))
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    return datasets.Dataset.from_dict({"text": texts, "label": labels}, features=features)


def _load_directory(path: Path, label: str, task: str) -> tuple[Any, str]:
    import datasets

    if (path / "dataset_dict.json").exists() or (path / "dataset_info.json").exists():
        return datasets.load_from_disk(str(path)), "save_to_disk directory"
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in DATA_SUFFIXES
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if files:
        by_split: dict[str, list[Path]] = {}
        for p in files:
            by_split.setdefault(_split_of(p.stem) or "train", []).append(p)
        named = ", ".join(f"{s}: {len(v)} file(s)" for s, v in by_split.items())
        return _load_files(by_split, label), f"directory of {len(files)} file(s) ({named})"
    if task == "text-classification":
        split_dirs = {s: path / s for s in ("train", "test") if (path / s).is_dir()}
        if "train" in split_dirs:
            parts = {s: _class_folders(d) for s, d in split_dirs.items()}
            if all(parts.values()):
                names = sorted(set().union(*(set(c) for c in parts.values())))
                full = {s: {n: c.get(n, []) for n in names} for s, c in parts.items()}
                return (datasets.DatasetDict({s: _read_class_folders(c) for s, c in full.items()}),
                        "train/ and test/ folders of one .txt folder per class")
        classes = _class_folders(path)
        if classes:
            return (datasets.DatasetDict({"train": _read_class_folders(classes)}),
                    f"{len(classes)} class folders of .txt files")
    try:
        return datasets.load_dataset(str(path)), "directory (datasets.load_dataset)"
    except Exception as e:  # noqa: BLE001 - whatever datasets raises, the user needs one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"dataset directory {label!r} holds no .csv/.json/.jsonl/.parquet files, no class folders of "
                         f".txt files and nothing datasets can load ({first})") from None


def load_local(path_text: str, task: str) -> tuple[Any, dict]:
    """A local file or directory as a ``DatasetDict`` (``train``, maybe ``test``) and its split info.

    The split info says ``{"how": "given", "test_split": ...}`` when the data brings its test split
    (or a validation split standing in for it), else ``{"how": "to split"}``.
    """
    import datasets

    path = Path(path_text).expanduser()
    if not path.exists():
        raise UsageError(f"dataset path {path_text!r} does not exist")
    if path.is_dir():
        data, source = _load_directory(path, path_text, task)
    else:
        suffix = path.suffix.lower()
        if suffix not in DATA_SUFFIXES:
            raise UsageError(f"dataset file {path_text!r}: unsupported format {suffix!r}; use .csv, .json, .jsonl or "
                             f".parquet (or a directory of them)")
        data, source = _load_files({"train": [path]}, path_text), f"{suffix[1:]} file"
    if isinstance(data, datasets.Dataset):
        data = datasets.DatasetDict({"train": data})
    if "train" not in data:
        raise UsageError(f"dataset {path_text!r} has splits {list(data)}; it needs a 'train' split")
    if "test" in data:
        return datasets.DatasetDict({"train": data["train"], "test": data["test"]}), \
            {"how": "given", "test_split": "test", "source": source}
    other = next((s for s in ("validation", "valid", "dev") if s in data), None)
    if other is not None:
        return datasets.DatasetDict({"train": data["train"], "test": data[other]}), \
            {"how": "given", "test_split": other, "source": source}
    return datasets.DatasetDict({"train": data["train"]}), {"how": "to split", "source": source}
