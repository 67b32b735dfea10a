"""Load the paper's hub datasets (needs network access to the Hugging Face hub).

Each task name maps to a hub dataset id and the preprocessing step applied
right after loading. Tests never call the hub; they run the same
preprocessing on local fixtures. ``load_dataset`` is looked up at call time so
it can be replaced (e.g. monkeypatched, or a local ``data_files`` loader).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ._common import require_columns

__all__ = ["HUB_TASKS", "HubTask", "load_hub_task"]


class HubTask:
    """A hub dataset id (+ config) and the columns / preparation its recipes expect."""

    def __init__(self, dataset_id: str, columns: tuple[str, ...], config: str | None = None,
                 prepare: Callable[[Any], Any] | None = None) -> None:  # fmt: skip
        self.dataset_id = dataset_id
        self.config = config
        self.columns = columns
        self.prepare = prepare

    def __repr__(self) -> str:
        return f"HubTask({self.dataset_id!r}, config={self.config!r}, columns={self.columns})"


def _prepare_ag_news(ds: Any) -> Any:
    from .text_classification import prepare_ag_news

    return prepare_ag_news(ds)


def _prepare_yelp(ds: Any) -> Any:
    from .text_classification import prepare_yelp_sentiment

    return prepare_yelp_sentiment(ds)


def _prepare_emotion(ds: Any) -> Any:
    from .text_classification import prepare_emotion

    return prepare_emotion(ds)


HUB_TASKS: dict[str, HubTask] = {
    "ag_news": HubTask("fancyzhx/ag_news", ("text", "label"), prepare=_prepare_ag_news),
    "yelp_review_full": HubTask("Yelp/yelp_review_full", ("text", "label"), prepare=_prepare_yelp),
    "emotion": HubTask("dair-ai/emotion", ("text", "label"), config="split", prepare=_prepare_emotion),
    "squad": HubTask("rajpurkar/squad", ("id", "title", "context", "question", "answers")),
    # the canonical "Samsung/samsum" needs a loading script (py7zr); this mirror has the same columns as parquet
    "samsum": HubTask("knkarthick/samsum", ("id", "dialogue", "summary")),
    "mini_imagenet": HubTask("timm/mini-imagenet", ("image", "label")),
    "food101": HubTask("ethz/food101", ("image", "label")),
}


def load_hub_task(name: str, dataset_id: str | None = None, **load_kwargs: Any) -> Any:
    """``datasets.load_dataset`` the task's hub dataset, check its columns and apply its preparation.

    Args:
        name: a key of :data:`HUB_TASKS`.
        dataset_id: override the hub id (e.g. a mirror or a local path).
        **load_kwargs: passed to ``datasets.load_dataset`` (``split``, ``cache_dir``, ...).
    """
    if name not in HUB_TASKS:
        raise ValueError(f"unknown hub task {name!r}; known: {sorted(HUB_TASKS)}")
    import datasets

    task = HUB_TASKS[name]
    args = [dataset_id or task.dataset_id] + ([task.config] if task.config and dataset_id is None else [])
    data = datasets.load_dataset(*args, **load_kwargs)
    require_columns(data, list(task.columns), name)
    return task.prepare(data) if task.prepare is not None else data
