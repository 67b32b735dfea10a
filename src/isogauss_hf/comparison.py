"""Seed-paired comparison of fine-tuning runs: the statistics behind every multi-seed claim, and the table's data.

A *run* is one finished fine-tuning run as a flat record (what ``isogauss-finetune`` sweeps write, see
:mod:`isogauss_hf.cli.sweep`): ``variant`` (its label: ``dense``, ``drop``, ``lowrank``, ``frozen`` or the
Gaussian configuration such as ``gdu/seeded+calib=200``; ``+kd=T`` when distilled), ``blocks`` (the block set:
``"3"``, ``"2,4"``, ``"auto:3"``; ``None`` for dense runs), ``seed``, ``value`` (the headline metric, ``None``
when the run diverged) and, for accuracy, ``accuracy_summary`` (Wilson 95 % interval, majority-class rate).

:func:`build_comparison` turns runs into the comparison table:

* per variant and block set, the mean ± sample std over seeds (``cells``), with one run's 95 % interval
  (mean half-width of the runs' Wilson intervals) and the test split's majority-class rate;
* per variant and block set against each reference of :data:`REFERENCES` (``dense`` of the same seed;
  ``drop`` / ``lowrank`` of the same seed and blocks, trained with the variant's shared options such as
  ``+kd=T``; a reference against those before it only: ``lowrank`` - ``drop``, not both ways), the
  seed-paired differences (``paired``): mean ± std, on how many seeds the variant is above,
  and the exact two-sided sign-flip p-value (:func:`sign_flip_p`). With n pairs that p cannot go below
  2 / 2^n (:func:`p_floor`): up to three seeds, p >= 0.25 whatever the data, and the entry says so.

Values are kept as measured in ``runs``; ``cells`` and ``paired`` are on the display scale (accuracy in
percent, differences in points; other metrics as they are).
"""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any, Iterable, Optional, Sequence

__all__ = ["REFERENCES", "SHARED_OPTIONS", "MAX_EXACT_PAIRS", "UNRESOLVED_P", "mean_std", "sign_flip_p", "p_floor",
           "paired_difference", "split_label", "reference_label", "metric_scale", "build_comparison"]

#: What every other variant is compared with, seed by seed.
REFERENCES = ("dense", "drop", "lowrank")
#: Label options that change the training of every variant alike (a ``+kd=2`` variant is compared with
#: ``drop+kd=2``; the dense reference stays the plain dense run, the teacher of the distilled runs).
SHARED_OPTIONS = ("kd",)
#: The sign-flip test enumerates the 2^n sign patterns exactly up to this many pairs.
MAX_EXACT_PAIRS = 16
#: Up to this many pairs the smallest attainable p (2 / 2^n) is at least this: no difference can be resolved.
UNRESOLVED_P = 0.25


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN for none)."""
    values = [float(v) for v in values]
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def sign_flip_p(diffs: Sequence[float]) -> Optional[float]:
    """Exact two-sided p-value of a paired comparison (sign-flip permutation test): the share of the 2^n sign
    patterns of ``diffs`` whose sum is at least as far from 0 as the observed one. ``None`` for no pairs or more
    than :data:`MAX_EXACT_PAIRS`. It is never below :func:`p_floor` (3 pairs: 0.25)."""
    diffs = [float(d) for d in diffs]
    if not diffs or len(diffs) > MAX_EXACT_PAIRS:
        return None
    observed = abs(sum(diffs)) - 1e-12 * max(1.0, sum(abs(d) for d in diffs))  # ties count as "as far"
    hits = sum(1 for signs in itertools.product((1.0, -1.0), repeat=len(diffs))
               if abs(sum(s * d for s, d in zip(signs, diffs))) >= observed)
    return hits / 2 ** len(diffs)


def p_floor(n: int) -> float:
    """The smallest two-sided sign-flip p-value ``n`` pairs can give: 2 / 2^n (1 for n <= 1)."""
    return 1.0 if n <= 1 else 2.0 / 2 ** n


def paired_difference(mine: dict[int, float], theirs: dict[int, float], scale: float = 1.0) -> Optional[dict[str, Any]]:
    """The seed-paired comparison of two ``{seed: value}`` maps on their shared seeds (``None`` when none):
    differences ``scale * (mine - theirs)`` per seed, their mean ± std, seeds above / below, the exact p-value."""
    seeds = sorted(set(mine) & set(theirs))
    if not seeds:
        return None
    diffs = [scale * (mine[s] - theirs[s]) for s in seeds]
    mean, std = mean_std(diffs)
    n = len(seeds)
    return {"seeds": seeds, "n": n, "diffs": diffs, "mean": mean, "std": std,
            "above": sum(d > 0 for d in diffs), "below": sum(d < 0 for d in diffs), "p": sign_flip_p(diffs),
            "p_floor": p_floor(n), "unresolvable": p_floor(n) >= UNRESOLVED_P}


def split_label(label: str) -> tuple[str, list[str]]:
    """``"gdu/seeded+calib=200+kd=2"`` -> ``("gdu/seeded", ["calib=200", "kd=2"])``."""
    base, *options = label.split("+")
    return base, options


def reference_label(label: str, reference: str) -> str:
    """The label of ``reference`` that ``label`` is paired with: the reference with ``label``'s shared options
    (:data:`SHARED_OPTIONS`), except ``dense``, which is always the plain dense run."""
    if reference == "dense":
        return "dense"
    shared = [o for o in split_label(label)[1] if o.partition("=")[0] in SHARED_OPTIONS]
    return "+".join([reference, *shared])


def metric_scale(metric: str) -> tuple[float, str]:
    """(factor, unit) of the display scale: accuracy in percent (differences in points), others as they are."""
    return (100.0, "%") if metric == "accuracy" else (1.0, "")


def _variant_order(labels: list[str]) -> list[str]:
    rank = {name: i for i, name in enumerate(("dense",) + REFERENCES[1:] + ("frozen",))}
    return sorted(dict.fromkeys(labels), key=lambda v: (rank.get(split_label(v)[0], len(rank)), labels.index(v)))


def _is_dense(label: str) -> bool:
    return split_label(label)[0] == "dense"


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _cell(variant: str, blocks: Optional[str], runs: list[dict[str, Any]], scale: float) -> dict[str, Any]:
    ok = sorted((r for r in runs if _finite(r.get("value"))), key=lambda r: r["seed"])
    mean, std = mean_std(scale * r["value"] for r in ok)
    cell: dict[str, Any] = {"variant": variant, "blocks": blocks, "seeds": [r["seed"] for r in ok], "n": len(ok),
                            "values": [scale * r["value"] for r in ok], "mean": mean if ok else None,
                            "std": std if ok else None, "diverged": sorted(r["seed"] for r in runs if r not in ok)}
    summaries = [r["accuracy_summary"] for r in ok if r.get("accuracy_summary")]
    if summaries:
        cell["interval_half_width"] = scale * statistics.fmean((s["high"] - s["low"]) / 2 for s in summaries)
        rates = [s["majority_rate"] for s in summaries if s.get("majority_rate") is not None]
        cell["majority_rate"] = scale * statistics.fmean(rates) if rates else None
    layers = {tuple(r["layers"]) for r in ok if r.get("layers")}
    if blocks is not None and blocks.startswith("auto") and layers:  # the blocks the scan picked, per seed
        cell["picked"] = {str(r["seed"]): r["layers"] for r in ok if r.get("layers")}
    return cell


def build_comparison(runs: list[dict[str, Any]], metric: str, block_sets: Optional[Sequence[str]] = None,
                     context: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The comparison table of ``runs`` (see the module docstring) as a JSON-ready dict; ``block_sets`` orders
    the columns (others follow in order of appearance); ``context`` is stored as given (recipe, commands)."""
    scale, unit = metric_scale(metric)
    seen = [r["blocks"] for r in runs if r.get("blocks") is not None]
    blocks = list(dict.fromkeys([*(block_sets or []), *seen]))
    blocks = [b for b in blocks if b in seen]
    variants = _variant_order([r["variant"] for r in runs])
    by_cell: dict[tuple[str, Optional[str]], dict[int, dict[str, Any]]] = {}
    for r in runs:
        key = (r["variant"], None if _is_dense(r["variant"]) else r.get("blocks"))
        by_cell.setdefault(key, {})[r["seed"]] = r
    cells = [_cell(v, b, list(by_cell[(v, b)].values()), scale)
             for v in variants for b in ([None] if _is_dense(v) else blocks) if (v, b) in by_cell]

    def values(variant: str, b: Optional[str]) -> dict[int, float]:
        found = by_cell.get((variant, None if _is_dense(variant) else b), {})
        return {s: r["value"] for s, r in found.items() if _finite(r.get("value"))}

    paired = []
    for v in variants:
        if v == "dense":
            continue
        for b in ([None] if _is_dense(v) else blocks):
            mine = values(v, b)
            for ref in REFERENCES:
                name, base = reference_label(v, ref), split_label(v)[0]
                if name == v or (_is_dense(v) and ref != "dense") or (
                        base in REFERENCES and REFERENCES.index(base) < REFERENCES.index(ref)):
                    continue  # itself; dense + kd is compared with dense alone; no mirror pairs (drop vs lowrank)
                result = paired_difference(mine, values(name, b), scale)
                if result is not None:
                    paired.append({"variant": v, "blocks": b, "reference": name, **result})
    seeds = sorted({r["seed"] for r in runs})
    return {"metric": metric, "unit": unit, "scale": scale, "seeds": seeds, "block_sets": blocks,
            "variants": variants, "cells": cells, "paired": paired, "runs": runs, "context": dict(context or {})}
