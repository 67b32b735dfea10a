"""Accuracy intervals, majority-class rate and interval comparisons (isogauss_hf.evaluation)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from isogauss_hf.evaluation import (
    AccuracySummary,
    accuracy_summary,
    bootstrap_interval,
    compare_intervals,
    intervals_separate,
    majority_rate,
    near_majority,
    summary_from_counts,
    wilson_interval,
)

Z95 = 1.959963984540054


@pytest.mark.parametrize(
    "correct,total,low,high",
    [
        (50, 100, 0.4038, 0.5962),  # the textbook example
        (0, 10, 0.0, 0.2775),  # upper = z^2 / (n + z^2)
        (10, 10, 0.7225, 1.0),
        (1100, 1500, 0.7104, 0.7550),
        (1, 1, 0.2065, 1.0),
    ],
)
def test_wilson_known_values(correct, total, low, high):
    got = wilson_interval(correct, total)
    assert got == pytest.approx((low, high), abs=1e-4)


@pytest.mark.parametrize("correct,total", [(3, 17), (50, 100), (612, 1000), (1, 445)])
def test_wilson_bounds_solve_the_score_equation(correct, total):
    """The Wilson bounds are the p with (k/n - p)^2 = z^2 p (1 - p) / n."""
    p_hat = correct / total
    for p in wilson_interval(correct, total):
        assert (p_hat - p) ** 2 == pytest.approx(Z95 ** 2 * p * (1 - p) / total, rel=1e-9, abs=1e-15)
    low, high = wilson_interval(correct, total)
    assert low < p_hat < high


def test_wilson_wider_at_higher_confidence_and_narrower_with_more_examples():
    w95 = wilson_interval(50, 100)
    w99 = wilson_interval(50, 100, confidence=0.99)
    assert w99[0] < w95[0] and w99[1] > w95[1]
    big = wilson_interval(500, 1000)
    assert big[1] - big[0] < w95[1] - w95[0]


def test_bootstrap_close_to_wilson_and_deterministic():
    boot = bootstrap_interval(700, 1000, seed=3)
    assert boot == bootstrap_interval(700, 1000, seed=3)
    wil = wilson_interval(700, 1000)
    assert boot[0] == pytest.approx(wil[0], abs=0.006) and boot[1] == pytest.approx(wil[1], abs=0.006)
    s = summary_from_counts(700, 1000, method="bootstrap", seed=3)
    assert (s.low, s.high, s.method) == (*boot, "bootstrap")


@pytest.mark.parametrize(
    "labels,rate,label",
    [
        ([0, 1, 1, 2], 0.5, 1),
        ([1, 0], 0.5, 0),  # tie: smallest label
        (["sport", "tech", "sport"], 2 / 3, "sport"),
        (np.array([2, 2, 2, 0, 1]), 0.6, 2),
        (torch.tensor([3, 3, 1, 1, 1, 0, 0, 0, 0, 0]), 0.5, 0),
    ],
)
def test_majority_rate(labels, rate, label):
    assert majority_rate(labels) == (pytest.approx(rate), label)


def test_accuracy_summary_from_ids_and_scores():
    labels = [0, 1, 1, 1, 2, 1, 0, 1, 1, 2]
    preds = [0, 1, 0, 1, 2, 1, 1, 1, 1, 0]  # 7 correct
    s = accuracy_summary(preds, labels)
    assert (s.accuracy, s.n, s.correct) == (0.7, 10, 7)
    assert (s.low, s.high) == wilson_interval(7, 10)
    assert (s.majority_rate, s.majority_label) == (0.6, 1)
    scores = torch.nn.functional.one_hot(torch.tensor(preds), 3).float() + 0.1
    assert accuracy_summary(scores, torch.tensor(labels)) == s  # argmax over the last axis
    d = s.to_dict()
    assert set(d) == {"accuracy", "low", "high", "n", "majority_rate", "majority_label", "correct", "confidence",
                      "method"}
    assert d["accuracy"] == 0.7 and d["method"] == "wilson"
    assert s.format() == "70.00 % [39.68, 89.22] (n=10, majority 60.00 %)"


def test_interval_comparisons():
    assert intervals_separate((0.10, 0.20), (0.30, 0.40))
    assert not intervals_separate((0.10, 0.35), (0.30, 0.40))
    assert compare_intervals((0.5, 0.6), (0.3, 0.4)) == "above"
    assert compare_intervals((0.3, 0.4), (0.5, 0.6)) == "below"
    assert compare_intervals((0.3, 0.5), (0.4, 0.6)) == "overlap"
    a, b = summary_from_counts(1100, 1500), summary_from_counts(754, 1500)  # 73.3 % vs 50.3 % (issue 10)
    assert compare_intervals(a, b) == "above" and intervals_separate(b, a)
    c = summary_from_counts(1084, 1500)  # 72.3 %: within noise of 73.3 %
    assert not intervals_separate(a, c)


def test_near_majority():
    labels = [0] * 70 + [1] * 30
    at_chance = summary_from_counts(70, 100, labels)
    assert near_majority(at_chance)
    assert near_majority(summary_from_counts(71, 100, labels))
    assert not near_majority(summary_from_counts(90, 100, labels))
    assert near_majority(summary_from_counts(60, 100, labels))  # below the majority rate
    with pytest.raises(ValueError, match="no majority_rate"):
        near_majority(summary_from_counts(70, 100))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: wilson_interval(11, 10), r"correct must be in 0\.\.10 \(total\), got 11"),
        (lambda: wilson_interval(0, 0), r"total must be >= 1 test example, got 0"),
        (lambda: wilson_interval(1.5, 10), r"correct must be an integer, got 1\.5"),
        (lambda: wilson_interval(5, 10, confidence=95), r"confidence must be .* between 0 and 1, got 95"),
        (lambda: bootstrap_interval(5, 10, resamples=5), r"resamples must be an integer >= 100, got 5"),
        (lambda: summary_from_counts(5, 10, method="wald"), r"method='wald' is not valid; choose one of wilson, boot"),
        (lambda: accuracy_summary([1, 0], [1, 0, 1]), r"got 2 predictions for 3 labels"),
        (lambda: accuracy_summary([], []), r"at least one test example"),
        (lambda: majority_rate([]), r"at least one label"),
    ],
)
def test_bad_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_summary_is_plain_data():
    s = AccuracySummary(0.5, 0.4, 0.6, 100)
    assert s.majority_rate is None and s.format() == "50.00 % [40.00, 60.00] (n=100)"
    assert math.isclose(summary_from_counts(50, 100).low, 0.40383, abs_tol=1e-5)
