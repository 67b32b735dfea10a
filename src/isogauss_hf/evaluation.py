"""Accuracy with a 95 % interval over test examples, the majority-class rate, and interval comparisons.

Pure functions (no torch; numpy only for the bootstrap). Inputs may be lists, numpy arrays or tensors
(anything with ``tolist()``); predictions given as 2-D scores are reduced by argmax over the last axis.

* :func:`wilson_interval` — Wilson score interval of a proportion k / n (default 95 %);
* :func:`bootstrap_interval` — percentile bootstrap of the accuracy (optional alternative);
* :func:`majority_rate` — share of the most frequent label in the test split, and that label;
* :func:`accuracy_summary` / :func:`summary_from_counts` -> :class:`AccuracySummary`;
* :func:`intervals_separate` / :func:`compare_intervals` — do two runs' intervals overlap.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any, Optional, Sequence, Union

__all__ = ["AccuracySummary", "wilson_interval", "bootstrap_interval", "majority_rate", "accuracy_summary",
           "summary_from_counts", "intervals_separate", "compare_intervals", "near_majority", "INTERVAL_METHODS"]

INTERVAL_METHODS = ("wilson", "bootstrap")


def _z(confidence: float) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise ValueError(f"confidence must be a number strictly between 0 and 1, got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _check_counts(correct: int, total: int) -> None:
    for name, value in (("correct", correct), ("total", total)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an integer, got {value!r}")
    if total < 1:
        raise ValueError(f"total must be >= 1 test example, got {total}")
    if not 0 <= correct <= total:
        raise ValueError(f"correct must be in 0..{total} (total), got {correct}")


def wilson_interval(correct: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of the proportion p = correct / total.

    With z the two-sided normal quantile of ``confidence`` (1.95996 for 95 %) and n = total::

        centre = (p + z^2 / (2n)) / (1 + z^2 / n)
        half   = z / (1 + z^2 / n) * sqrt(p (1 - p) / n + z^2 / (4 n^2))
        [low, high] = [centre - half, centre + half]   (clipped to [0, 1])

    Unlike the normal (Wald) interval it stays inside [0, 1] and is sensible at p = 0 or 1.
    Example: 50 / 100 -> [0.4038, 0.5962].
    """
    _check_counts(correct, total)
    z = _z(confidence)
    n, p = float(total), correct / total
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(correct: int, total: int, confidence: float = 0.95, resamples: int = 10000,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the accuracy correct / total.

    Resampling the n test examples with replacement and counting the correct ones is a draw
    K* ~ Binomial(n, correct / n), so each bootstrap accuracy is K* / n; the interval is the
    (1 - confidence)/2 and (1 + confidence)/2 quantiles of ``resamples`` such draws (seeded: deterministic).
    """
    import numpy as np

    _check_counts(correct, total)
    _z(confidence)
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an integer >= 100, got {resamples!r}")
    draws = np.random.default_rng(seed).binomial(total, correct / total, size=resamples) / total
    low, high = np.quantile(draws, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def _as_list(values: Any) -> list:
    if hasattr(values, "tolist"):
        values = values.tolist()
    return list(values)


def _class_ids(predictions: Any) -> list:
    preds = _as_list(predictions)
    if preds and isinstance(preds[0], (list, tuple)):  # scores (n, classes) -> argmax
        return [max(range(len(row)), key=row.__getitem__) for row in preds]
    return preds


def majority_rate(labels: Any) -> tuple[float, Any]:
    """(share of the most frequent label, that label). Ties: the smallest label (first seen if unorderable)."""
    labels = _as_list(labels)
    if not labels:
        raise ValueError("majority_rate needs at least one label, got none")
    counts = Counter(labels)
    top = max(counts.values())
    tied = [label for label in counts if counts[label] == top]
    try:
        label = min(tied)
    except TypeError:
        label = tied[0]
    return top / len(labels), label


@dataclass
class AccuracySummary:
    """Test accuracy of one run with its interval and the majority-class rate of the same test split."""

    accuracy: float = field(metadata={"help": "correct / n."})
    low: float = field(metadata={"help": "Lower end of the interval."})
    high: float = field(metadata={"help": "Upper end of the interval."})
    n: int = field(metadata={"help": "Number of test examples."})
    majority_rate: Optional[float] = field(default=None, metadata={
        "help": "Share of the most frequent label in the test split (what always answering it scores)."})
    majority_label: Any = field(default=None, metadata={"help": "The most frequent label of the test split."})
    correct: Optional[int] = field(default=None, metadata={"help": "Number of correct predictions."})
    confidence: float = field(default=0.95, metadata={"help": "Coverage of the interval."})
    method: str = field(default="wilson", metadata={"help": f"Interval method, one of {INTERVAL_METHODS}."})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return asdict(self)

    def format(self) -> str:
        """E.g. ``'73.33 % [71.04, 75.51] (n=1500, majority 41.60 %)'``."""
        text = f"{100 * self.accuracy:.2f} % [{100 * self.low:.2f}, {100 * self.high:.2f}] (n={self.n}"
        if self.majority_rate is not None:
            text += f", majority {100 * self.majority_rate:.2f} %"
        return text + ")"


def summary_from_counts(correct: int, total: int, labels: Any = None, confidence: float = 0.95,
                        method: str = "wilson", seed: int = 0) -> AccuracySummary:
    """:class:`AccuracySummary` from a count of correct answers (``labels``: the test labels, for the majority rate)."""
    if method not in INTERVAL_METHODS:
        raise ValueError(f"method={method!r} is not valid; choose one of {', '.join(INTERVAL_METHODS)}")
    if method == "wilson":
        low, high = wilson_interval(correct, total, confidence)
    else:
        low, high = bootstrap_interval(correct, total, confidence, seed=seed)
    rate, label = majority_rate(labels) if labels is not None else (None, None)
    return AccuracySummary(correct / total, low, high, total, rate, label, correct, confidence, method)


def accuracy_summary(predictions: Any, labels: Any, confidence: float = 0.95, method: str = "wilson",
                     seed: int = 0) -> AccuracySummary:
    """Accuracy of ``predictions`` (class ids, or scores reduced by argmax) against ``labels``, with its interval
    and the majority-class rate of ``labels``."""
    preds, labels = _class_ids(predictions), _as_list(labels)
    if len(preds) != len(labels):
        raise ValueError(f"got {len(preds)} predictions for {len(labels)} labels; they must match one to one")
    if not labels:
        raise ValueError("accuracy_summary needs at least one test example, got none")
    correct = sum(int(p == y) for p, y in zip(preds, labels))
    return summary_from_counts(correct, len(labels), labels, confidence, method, seed)


Interval = Union[AccuracySummary, Sequence[float]]


def _bounds(x: Interval) -> tuple[float, float]:
    if isinstance(x, AccuracySummary):
        return x.low, x.high
    low, high = x
    return float(low), float(high)


def compare_intervals(a: Interval, b: Interval) -> str:
    """``'above'`` if a's interval lies wholly above b's, ``'below'`` if wholly below, else ``'overlap'``."""
    (a_low, a_high), (b_low, b_high) = _bounds(a), _bounds(b)
    if a_low > b_high:
        return "above"
    if a_high < b_low:
        return "below"
    return "overlap"


def intervals_separate(a: Interval, b: Interval) -> bool:
    """True when the two intervals do not overlap.

    Non-overlapping 95 % intervals imply a significant difference; overlapping ones do not prove the runs equal
    (the test is conservative).
    """
    return compare_intervals(a, b) != "overlap"


def near_majority(summary: AccuracySummary, points: float = 2.0) -> bool:
    """True when the accuracy is within ``points`` percentage points of the majority-class rate (or below it)."""
    if summary.majority_rate is None:
        raise ValueError("this AccuracySummary has no majority_rate; build it with the test labels")
    return 100 * (summary.accuracy - summary.majority_rate) <= points
