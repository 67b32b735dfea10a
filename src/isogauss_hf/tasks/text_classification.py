"""Hub text-classification tasks: schema checks, label mappings, splits and tokenization.

The recipes load AG News, Yelp Review Full and Emotion from the Hugging Face
hub (:func:`isogauss_hf.tasks.hub.load_hub_task`); everything here is pure
preprocessing, tested on small local fixtures with the same schemas:

* AG News (``fancyzhx/ag_news``): ``text``, ``label`` in {0: World, 1: Sports, 2: Business, 3: Sci/Tech}.
* Yelp Review Full (``Yelp/yelp_review_full``): ``text``, ``label`` 0-4 (1-5 stars),
  mapped to 3 sentiment classes: 0-1 negative, 2 neutral, 3-4 positive.
* Emotion (``dair-ai/emotion``): ``text``, ``label`` in
  {sadness, joy, love, anger, fear, surprise}; the recipe uses a 90/10 split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._common import require_columns

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset, DatasetDict

__all__ = [
    "AG_NEWS_LABELS",
    "EMOTION_LABELS",
    "YELP_SENTIMENT_LABELS",
    "prepare_ag_news",
    "prepare_emotion",
    "prepare_yelp_sentiment",
    "sample_rows",
    "tokenize_classification",
    "yelp_stars_to_sentiment",
]

AG_NEWS_LABELS: tuple[str, ...] = ("World", "Sports", "Business", "Sci/Tech")
EMOTION_LABELS: tuple[str, ...] = ("sadness", "joy", "love", "anger", "fear", "surprise")
YELP_SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
_YELP_STAR_TO_SENTIMENT = (0, 0, 1, 2, 2)  # label 0..4 = 1..5 stars


def yelp_stars_to_sentiment(label: int) -> int:
    """Map a Yelp Review Full label (0-4 = 1-5 stars) to 0 negative (0-1), 1 neutral (2), 2 positive (3-4)."""
    if not 0 <= int(label) <= 4:
        raise ValueError(f"yelp: star label must be in 0..4, got {label}")
    return _YELP_STAR_TO_SENTIMENT[int(label)]


def _with_class_label(ds: Dataset, names: tuple[str, ...], task: str) -> Dataset:
    """Check ``label`` ids lie in ``range(len(names))`` and cast the column to ``ClassLabel(names)``."""
    import datasets

    labels = ds["label"]
    bad = sorted({int(v) for v in labels if not 0 <= int(v) < len(names)})
    if bad:
        raise ValueError(f"{task}: label values {bad[:10]} outside 0..{len(names) - 1}")
    return ds.cast_column("label", datasets.ClassLabel(names=list(names)))


def _map_splits(data: Any, fn: Any) -> Any:
    import datasets

    if isinstance(data, datasets.DatasetDict):
        return datasets.DatasetDict({split: fn(ds) for split, ds in data.items()})
    return fn(data)


def sample_rows(ds: Dataset, n: int, seed: int = 42) -> Dataset:
    """Deterministic sample of ``n`` rows (seeded shuffle, then the first ``n``); all rows if ``n >= len(ds)``."""
    if n <= 0:
        raise ValueError(f"sample_rows: n must be positive, got {n}")
    if n >= len(ds):
        return ds
    return ds.shuffle(seed=seed).select(range(n)).flatten_indices()


def prepare_ag_news(data: Dataset | DatasetDict) -> Dataset | DatasetDict:
    """Validate AG News (``text``, ``label``) and cast ``label`` to ``ClassLabel`` :data:`AG_NEWS_LABELS`."""
    require_columns(data, ["text", "label"], "ag_news")
    return _map_splits(data, lambda ds: _with_class_label(ds, AG_NEWS_LABELS, "ag_news"))


def prepare_yelp_sentiment(
    data: Dataset | DatasetDict, sample_size: int | None = 100_000, seed: int = 42
) -> Dataset | DatasetDict:
    """Yelp Review Full -> 3-class sentiment (``label`` becomes ``ClassLabel`` :data:`YELP_SENTIMENT_LABELS`).

    Args:
        data: a split or ``DatasetDict`` with ``text`` and ``label`` (0-4).
        sample_size: if set, first keep a deterministic sample of this many rows
            of every split (the paper's 100k subset of the 650k training reviews).
        seed: seed of that sample.
    """
    import datasets

    require_columns(data, ["text", "label"], "yelp_review_full")
    features = datasets.Features(
        {"text": datasets.Value("string"), "label": datasets.ClassLabel(names=list(YELP_SENTIMENT_LABELS))}
    )

    def convert(ds: Dataset) -> Dataset:
        if sample_size is not None:
            ds = sample_rows(ds, sample_size, seed)
        ds = ds.select_columns(["text", "label"])
        return ds.map(
            lambda batch: {"text": batch["text"], "label": [yelp_stars_to_sentiment(v) for v in batch["label"]]},
            batched=True,
            features=features,
            desc="yelp stars -> sentiment",
        )

    return _map_splits(data, convert)


def prepare_emotion(data: Dataset | DatasetDict, test_size: float = 0.1, seed: int = 42) -> DatasetDict:
    """Emotion (``dair-ai/emotion``) -> stratified 90/10 ``train``/``test`` ``DatasetDict``.

    All given splits are pooled first (the hub version ships train/validation/test),
    then re-split with ``train_test_split(stratify_by_column="label", seed=seed)``.
    """
    import datasets

    require_columns(data, ["text", "label"], "emotion")
    if isinstance(data, datasets.DatasetDict):
        parts = [ds.select_columns(["text", "label"]) for _, ds in sorted(data.items())]
        parts = [_with_class_label(ds, EMOTION_LABELS, "emotion") for ds in parts]
        pooled = datasets.concatenate_datasets(parts)
    else:
        pooled = _with_class_label(data.select_columns(["text", "label"]), EMOTION_LABELS, "emotion")
    return pooled.train_test_split(test_size=test_size, stratify_by_column="label", seed=seed)


def tokenize_classification(
    data: Dataset | DatasetDict,
    tokenizer: Any,
    max_length: int = 128,
    text_column: str = "text",
    task: str = "text-classification",
    text_pair_column: str | None = None,
) -> Dataset | DatasetDict:
    """Tokenize ``text_column`` (and ``text_pair_column`` as the second segment of sentence pairs),
    truncated to ``max_length``, no padding: use ``DataCollatorWithPadding``.

    Keeps ``label``; drops the raw text columns the model does not take.
    """
    required = [text_column, "label"] + ([text_pair_column] if text_pair_column else [])
    require_columns(data, required, task)
    from ._common import column_names

    drop = [c for c in column_names(data) if c != "label"]

    def tok(batch: dict[str, list]) -> dict[str, Any]:
        if text_pair_column:
            return tokenizer(batch[text_column], batch[text_pair_column], truncation=True, max_length=max_length)
        return tokenizer(batch[text_column], truncation=True, max_length=max_length)

    return data.map(tok, batched=True, remove_columns=drop, desc=f"tokenize {task}")
