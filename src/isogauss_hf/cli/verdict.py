"""Whether a finished Gaussian run learned anything: the warnings that close a run (stderr and results.json).

:func:`run_warnings` reads the run records (their ``accuracy_summary``: accuracy, Wilson 95 % interval,
majority-class rate of the test split) and warns about a Gaussian run (kind ``gaussian``) that

* scores within 2 points of the majority-class rate (:func:`isogauss_hf.evaluation.near_majority`): it
  may have learned nothing beyond the most frequent class; or
* scores a lower accuracy than the ``drop`` baseline run beside it (the same blocks removed). Any lower
  accuracy warns — a Gaussian block that does not beat removing the block carries nothing measurable —
  and the message says whether the 95 % intervals separate
  (:func:`isogauss_hf.evaluation.compare_intervals` == ``"below"``) or overlap.

Each warning names the run's configuration (rule, noise, blocks) and what to try (:data:`ADVICE`, each line
from a measurement): seeded noise, GDU, a calibration, fewer blocks, other blocks (``isogauss-analyze``,
``--layers auto:K``). Tasks without an accuracy
summary (question answering, summarization) get none.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["run_warnings", "NEAR_MAJORITY_POINTS", "ADVICE"]

#: Percentage points above the majority-class rate under which a run is said to be at the majority rate.
NEAR_MAJORITY_POINTS = 2.0


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


#: What to try, in order, for a configuration that did not beat removing the block: (applies to the run's
#: (config, blocks, calibrate_steps), suggestion). Each line follows a measurement on the offline tasks (README,
#: "What the measurements say"): seeded noise and GDU scored above resample noise and WDU on unseen data, a
#: calibration of the statistics helped one block, and one block came closer to dense than three.
ADVICE = (
    (lambda config, blocks, calibrated: config.get("noise") == "resample", "--noise seeded"),
    (lambda config, blocks, calibrated: config.get("rule") == "wdu", "--rule gdu"),
    (lambda config, blocks, calibrated: not calibrated, "--calibrate-steps 200"),
    (lambda config, blocks, calibrated: len(blocks) > 1, "fewer blocks"),
)


def _advice(config: dict[str, Any], blocks: list[int], recipe: Any) -> str:
    calibrated = int(getattr(recipe, "calibrate_steps", 0) or 0) > 0
    tries = [text for applies, text in ADVICE if applies(config, blocks, calibrated)]
    model = getattr(recipe, "model", "MODEL")
    dataset = getattr(recipe, "dataset", "DATASET")
    k = len(blocks) or 1
    tries.append(f"other blocks (isogauss-analyze --model {model} --dataset {dataset} --suggest {k}, or "
                 f"--layers auto:{k})")
    return "try " + ", ".join(tries[:-1]) + (" or " if len(tries) > 1 else "") + tries[-1] + \
        "; if none beats drop, the Gaussian layer does not pay for itself on this task"


def run_warnings(runs: list[dict[str, Any]], recipe: Any = None,
                 labels: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """One ``{"run", "reasons", "message", "configuration"}`` per Gaussian run that is at the majority-class rate
    or below the ``drop`` run (``labels``: class names, to name the majority class)."""
    from ..evaluation import AccuracySummary, compare_intervals, near_majority

    drop = next((r for r in runs if r.get("kind") == "drop" and r.get("accuracy_summary")), None)
    drop_summary = AccuracySummary(**drop["accuracy_summary"]) if drop else None
    warnings = []
    for run in runs:
        if run.get("kind") != "gaussian" or not run.get("accuracy_summary"):
            continue
        s = AccuracySummary(**run["accuracy_summary"])
        config = run.get("isogauss_config") or {}
        blocks = list(run.get("layers") or [])
        found, parts = [], []
        if s.majority_rate is not None and near_majority(s, NEAR_MAJORITY_POINTS):
            label = s.majority_label
            if labels and isinstance(label, int) and 0 <= label < len(labels):
                label = labels[label]
            found.append("near_majority")
            parts.append(f"is not more than {NEAR_MAJORITY_POINTS:g} points above the majority-class rate "
                         f"{_pct(s.majority_rate)} (always answering {label!r})")
        if drop_summary is not None and s.accuracy < drop_summary.accuracy:
            found.append("below_drop")
            separate = compare_intervals(s, drop_summary) == "below"
            parts.append(f"is below the drop baseline's {_pct(drop_summary.accuracy)} (the same blocks removed; "
                         + ("the 95% intervals separate" if separate else "the 95% intervals overlap") + ")")
        if not found:
            continue
        setting = (f"rule {config.get('rule')}, noise {config.get('noise')}, blocks "
                   f"{','.join(map(str, blocks)) or '-'}")
        message = (f"the Gaussian model {run.get('name')!r} ({setting}) scored {_pct(s.accuracy)} "
                   f"[{_pct(s.low)}, {_pct(s.high)}], which " + " and ".join(parts) + "; "
                   + _advice(config, blocks, recipe))
        warnings.append({"run": run.get("name"), "reasons": found, "message": message,
                         "configuration": {"rule": config.get("rule"), "noise": config.get("noise"),
                                           "blocks": blocks}})
    return warnings
