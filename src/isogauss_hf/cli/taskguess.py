"""Which task a local dataset is for, read from its columns (``isogauss-finetune --model M --dataset FILE``).

A run built from flags without ``--task`` gets the task its data fits, when exactly one does (:data:`TASK_SIGNS`):
question answering (``id``, ``context``, ``question``, ``answers``), summarization (``dialogue``, ``summary``),
image classification (a label column and ``image`` or ``pixel_values``), text classification (a label column
and a text column; ``--text-column`` / ``--label-column`` name them). The plan says what was inferred and from
which columns; data that fits none or several tasks is refused in one line asking for ``--task``.
"""

from __future__ import annotations

from typing import Optional

from ..errors import UsageError

__all__ = ["TASK_SIGNS", "infer_task"]

#: task -> (role, the column(s) that may play it); "{text}" / "{label}" are the run's text / label column
TASK_SIGNS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "question-answering": (("id", ("id",)), ("context", ("context",)), ("question", ("question",)),
                           ("answers", ("answers",))),
    "summarization": (("dialogue", ("dialogue",)), ("summary", ("summary",))),
    "image-classification": (("image", ("image", "pixel_values")), ("label", ("{label}",))),
    "text-classification": (("text", ("{text}",)), ("label", ("{label}",))),
}
_FLAGS = {"text": "--text-column", "text_pair": "--text-pair-column", "label": "--label-column"}


def _present(sign: tuple, columns: set[str], names: dict[str, str]) -> Optional[list[str]]:
    """``role 'column'`` for each role of ``sign`` found in ``columns``, or None when one is missing."""
    found = []
    for role, options in sign:
        hit = next((c for c in (o.format(**names) for o in options) if c in columns), None)
        if hit is None:
            return None
        found.append(f"{role} {hit!r}")
    return found


def infer_task(dataset: str, text_column: Optional[str] = None, text_pair_column: Optional[str] = None,
               label_column: Optional[str] = None) -> tuple[str, str]:
    """``(task, why)`` for the local dataset ``dataset``; a :class:`UsageError` unless exactly one task fits."""
    import datasets

    from .datafiles import load_local

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        data, _ = load_local(dataset, "text-classification")
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    columns = list(data["train"].column_names)
    given = {"text": text_column, "text_pair": text_pair_column, "label": label_column}
    for role, column in given.items():
        if column and column not in columns:
            raise UsageError(f"dataset {dataset!r} has no column {column!r} ({_FLAGS[role]}); columns present: "
                             f"{columns}")
    names = {"text": text_column or "text", "label": label_column or "label"}
    fits = {task: found for task, sign in TASK_SIGNS.items()
            if (found := _present(sign, set(columns), names)) is not None}
    if len(fits) == 1:
        task, found = next(iter(fits.items()))
        return task, f"inferred from the columns of {dataset} ({', '.join(found)}); give --task to choose another"
    fix = ("give --task (text-classification, image-classification, question-answering, summarization), and name "
           "the text and label columns with --text-column / --label-column")
    if not fits:
        raise UsageError(f"--task is needed for dataset {dataset!r}: its columns {columns} fit no task (a text "
                         f"classification needs a text and a label column: 'text' and 'label' unless named); {fix}")
    raise UsageError(f"--task is needed for dataset {dataset!r}: its columns {columns} fit {', '.join(fits)}; {fix}")
