"""``isogauss_hf.comparison``: the seed-paired statistics and the comparison table, against hand computations."""

import pytest

from isogauss_hf.comparison import build_comparison, mean_std, p_floor, paired_difference, reference_label, \
    sign_flip_p


@pytest.mark.parametrize("diffs, p", [
    ([1.0, 2.0, -0.5], 0.5),  # sums of the 8 sign patterns: |±1 ±2 ±0.5| >= 2.5 for 4 of them
    ([1.0, 2.0, 3.0], 0.25),  # all positive: only +++ and --- reach 6
    ([1.0, 1.0, 1.0, 1.0, 1.0], 2 / 32),  # five seeds all above: the floor 2 / 2^5
    ([1.0, -1.0], 1.0),
    ([0.0, 0.0], 1.0),  # no difference at all: every pattern ties
    ([3.0], 1.0),
])
def test_sign_flip_p_is_the_share_of_sign_patterns_at_least_as_extreme(diffs, p):
    assert sign_flip_p(diffs) == pytest.approx(p)
    assert sign_flip_p(diffs) >= p_floor(len(diffs))


@pytest.mark.parametrize("n, floor", [(0, 1.0), (1, 1.0), (2, 0.5), (3, 0.25), (4, 0.125), (7, 2 / 128)])
def test_p_floor(n, floor):
    assert p_floor(n) == pytest.approx(floor)


def test_sign_flip_p_of_no_pairs_or_too_many_is_none():
    assert sign_flip_p([]) is None and sign_flip_p([1.0] * 17) is None


def test_paired_difference_uses_the_shared_seeds_only():
    got = paired_difference({0: 0.70, 1: 0.80, 2: 0.75, 5: 0.9}, {0: 0.71, 1: 0.75, 2: 0.70, 3: 0.1}, scale=100)
    assert got["seeds"] == [0, 1, 2] and got["diffs"] == pytest.approx([-1.0, 5.0, 5.0])
    assert got["mean"] == pytest.approx(3.0) and got["std"] == pytest.approx(12 ** 0.5)  # var = (16 + 4 + 4) / 2
    assert (got["above"], got["below"], got["p"], got["p_floor"], got["unresolvable"]) == (2, 1, 0.5, 0.25, True)
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


@pytest.mark.parametrize("label, reference, expected", [
    ("gdu/seeded+calib=200", "drop", "drop"),
    ("gdu/seeded+calib=200+kd=2", "drop", "drop+kd=2"),
    ("gdu/seeded+calib=200+kd=2", "dense", "dense"),  # the teacher: the plain dense run
    ("frozen+kd=4", "lowrank", "lowrank+kd=4"),
])
def test_reference_label_keeps_the_shared_options(label, reference, expected):
    assert reference_label(label, reference) == expected


def _run(variant, blocks, seed, value, low=None, high=None, majority=0.4):
    summary = {"accuracy": value, "low": low, "high": high, "n": 100, "majority_rate": majority} if low else None
    return {"variant": variant, "blocks": blocks, "seed": seed, "value": value, "accuracy_summary": summary}


def test_build_comparison_cells_and_pairs_by_hand():
    runs = [_run("dense", None, s, v, v - 0.02, v + 0.02) for s, v in ((0, 0.80), (1, 0.82), (2, 0.78))]
    runs += [_run("drop", "3", s, v, v - 0.03, v + 0.03) for s, v in ((0, 0.70), (1, 0.74), (2, 0.72))]
    runs += [_run("gdu/seeded", "3", s, v, v - 0.04, v + 0.04) for s, v in ((0, 0.71), (1, 0.76), (2, 0.71))]
    runs += [_run("lowrank", "3", s, v) for s, v in ((0, 0.71), (1, 0.73), (2, 0.72))]
    runs += [_run("gdu/seeded", "2,4", 0, None)]  # a diverged run
    c = build_comparison(runs, "accuracy", block_sets=["2,4", "3"])
    assert c["variants"] == ["dense", "drop", "lowrank", "gdu/seeded"] and c["block_sets"] == ["2,4", "3"]
    cells = {(x["variant"], x["blocks"]): x for x in c["cells"]}
    dense = cells[("dense", None)]
    assert (dense["n"], dense["mean"]) == (3, pytest.approx(80.0)) and dense["std"] == pytest.approx(2.0)
    assert dense["interval_half_width"] == pytest.approx(2.0) and dense["majority_rate"] == pytest.approx(40.0)
    assert cells[("gdu/seeded", "3")]["mean"] == pytest.approx(72.6666667)
    assert cells[("gdu/seeded", "2,4")]["n"] == 0 and cells[("gdu/seeded", "2,4")]["diverged"] == [0]
    pairs = {(p["variant"], p["blocks"], p["reference"]): p for p in c["paired"]}
    vs_drop = pairs[("gdu/seeded", "3", "drop")]  # +1, +2, -1 points
    assert vs_drop["diffs"] == pytest.approx([1.0, 2.0, -1.0]) and vs_drop["mean"] == pytest.approx(2 / 3)
    assert (vs_drop["above"], vs_drop["p"]) == (2, 0.75)  # |±1 ±2 ±1| >= 2 for 6 of the 8 sign patterns
    vs_dense = pairs[("gdu/seeded", "3", "dense")]  # -9, -6, -7
    assert vs_dense["mean"] == pytest.approx(-22 / 3) and (vs_dense["above"], vs_dense["p"]) == (0, 0.25)
    assert ("drop", "3", "dense") in pairs and ("gdu/seeded", "2,4", "drop") not in pairs
    assert ("dense", None, "dense") not in pairs
    assert ("lowrank", "3", "drop") in pairs and ("drop", "3", "lowrank") not in pairs  # no mirror pairs
    assert pairs[("lowrank", "3", "drop")]["diffs"] == pytest.approx([1.0, -1.0, 0.0])


@pytest.mark.parametrize("values, mean, std", [([1.0, 2.0, 3.0], 2.0, 1.0), ([5.0], 5.0, 0.0), ([2.0, 4.0], 3.0, 2 ** 0.5)])
def test_mean_std_is_the_sample_standard_deviation(values, mean, std):
    assert mean_std(values) == (pytest.approx(mean), pytest.approx(std))
