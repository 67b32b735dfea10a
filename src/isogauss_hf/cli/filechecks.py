"""Checks of local data files before ``datasets`` reads them, so a bad file is one line naming the file, the line
and the fix — not ``StopIteration`` or ``DatasetGenerationError: An error occurred while generating the dataset``.

:func:`check_data_file` refuses an empty file, text that is not UTF-8 (naming the line and a conversion command),
a JSON-lines line that is not a JSON object, a JSON array that does not parse, a CSV with a header but no rows,
and a CSV row with more fields than its header. :func:`explain_load_failure` turns what ``datasets`` raised for
several files into the column whose type differs between them (``label`` int in one file, string in another),
else the underlying error's first line.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from pathlib import Path
from typing import Any, Iterator

from ..errors import UsageError

__all__ = ["check_data_file", "explain_load_failure"]

_CHUNK = 1 << 20


def _lines(path: Path, label: str) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of a UTF-8 file read in chunks; a :class:`UsageError` at the first invalid byte."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    number, pending = 0, ""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(_CHUNK)
            try:
                text = decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                line = number + chunk[: e.start].count(b"\n") + 1  # ``pending`` holds no newline
                raise UsageError(f"dataset file {label!r} is not UTF-8 text (byte 0x{e.object[e.start]:02x} on line "
                                 f"{line}); convert it, e.g. iconv -f latin1 -t utf-8 {path.name} > utf8-{path.name}, "
                                 f"and give the converted file") from None
            pending += text
            *complete, pending = pending.split("\n")
            for line in complete:
                number += 1
                yield number, line
            if not chunk:
                break
    if pending:
        yield number + 1, pending


def _check_json_lines(path: Path, label: str) -> None:
    rows = 0
    for number, line in _lines(path, label):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as e:
            raise UsageError(f"dataset file {label!r} line {number}: not valid JSON ({e.msg} at column {e.colno}); "
                             f"fix or remove that line (JSON lines: one object per line)") from None
        if not isinstance(value, dict):
            raise UsageError(f"dataset file {label!r} line {number}: a JSON {type(value).__name__}, not an object; "
                             f"each line must be one object such as {{\"text\": ..., \"label\": ...}}")
        rows += 1
    if not rows:
        raise UsageError(f"dataset file {label!r} holds no rows (only blank lines)")


def _check_json(path: Path, label: str) -> None:
    text = "\n".join(line for _, line in _lines(path, label))
    head = text.lstrip()[:1]
    if head == "[":
        try:
            value = json.loads(text)
        except ValueError as e:
            raise UsageError(f"dataset file {label!r} line {e.lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                             f"fix the file") from None
        if not value:
            raise UsageError(f"dataset file {label!r} holds an empty JSON array: no rows")
        return
    try:
        value = json.loads(text)  # one object (SQuAD's {"data": [...]}) parses whole
    except ValueError:
        _check_json_lines(path, label)
        return
    if isinstance(value, dict) and not isinstance(value.get("data"), list) and "\n" not in text.strip():
        raise UsageError(f"dataset file {label!r} is one JSON object (keys {sorted(value)[:5]}), not rows; give "
                         f"JSON lines (one object per row), a JSON array of rows, or SQuAD's {{\"data\": [...]}}")


def _check_csv(path: Path, label: str) -> None:
    reader = csv.reader(line + "\n" for _, line in _lines(path, label))
    header = next(reader, None)
    if not header or not any(h.strip() for h in header):
        raise UsageError(f"dataset file {label!r} is empty; a CSV needs a header line and rows")
    other = next((sep for sep in (";", "\t", "|") if len(header) == 1 and sep in header[0]), None)
    if other is not None:
        raise UsageError(f"dataset file {label!r} has one column {header[0]!r}: its fields look separated by "
                         f"{other!r}; give a comma-separated file (or .jsonl)")
    rows = 0
    for row in reader:
        if not row:
            continue
        rows += 1
        if len(row) > len(header):
            raise UsageError(f"dataset file {label!r} line {reader.line_num}: {len(row)} fields, but the header has "
                             f"{len(header)} ({', '.join(header)}); quote texts that hold commas")
    if not rows:
        raise UsageError(f"dataset file {label!r} has a header ({', '.join(header)}) but no rows")


_CHECKS = {".jsonl": _check_json_lines, ".json": _check_json, ".csv": _check_csv}


def check_data_file(path: Path, label: str) -> None:
    """Refuse, in one line naming ``label`` (and the line), a data file ``datasets`` would fail on obscurely."""
    if path.stat().st_size == 0 or (path.suffix.lower() != ".parquet" and not path.read_bytes()[:4096].strip()
                                    and path.stat().st_size <= 4096):
        raise UsageError(f"dataset file {label!r} is empty; give a file with a header and rows (CSV), one JSON object "
                         f"per line (JSONL) or a parquet table")
    check = _CHECKS.get(path.suffix.lower())
    if check is not None:
        check(path, label)


def _features(path: Path, builder: str, kwargs: dict) -> dict[str, str]:
    import datasets

    ds = datasets.load_dataset(builder, data_files={"train": [str(path)]}, **kwargs)["train"]
    return {name: str(getattr(feature, "dtype", type(feature).__name__)) for name, feature in ds.features.items()}


def explain_load_failure(error: Exception, files: list[Path], builder: str, kwargs: dict) -> str:
    """What went wrong when ``datasets`` read ``files`` together: a column typed differently in two files, else the
    first line of the innermost error."""
    if len(files) > 1:
        try:
            kinds = {path: _features(path, builder, kwargs) for path in files}
        except Exception:  # noqa: BLE001 - one file alone fails too: its own error is reported below
            kinds = {}
        names = sorted({c for k in kinds.values() for c in k})
        for column in names:
            seen: dict[str, Path] = {}
            for path, features in kinds.items():
                if column in features:
                    seen.setdefault(features[column], path)
            if len(seen) > 1:
                parts = " but ".join(f"{kind} in {path.name}" for kind, path in seen.items())
                return f"column {column!r} is {parts}; give it one type in every file (all class ids or all names)"
        columns = {tuple(sorted(k)) for k in kinds.values()}
        if len(columns) > 1:
            shown = "; ".join(f"{path.name}: {sorted(k)}" for path, k in kinds.items())
            return f"the files have different columns ({shown}); give every file the same columns"
    inner: Any = error
    while inner.__cause__ is not None or inner.__context__ is not None:
        inner = inner.__cause__ or inner.__context__
    text = str(inner).strip().splitlines()[0] if str(inner).strip() else type(inner).__name__
    return f"{type(inner).__name__}: {text}"
