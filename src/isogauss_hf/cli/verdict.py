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

Any run also warns when its training loss rose far above the first step's (:data:`LOSS_ROSE`; then the learning
rate, not the blocks, is what to change) and when distribution steps of its Gaussian layers were skipped because
their update was not finite (the statistics did not learn).
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["run_warnings", "NEAR_MAJORITY_POINTS", "LOSS_ROSE", "ADVICE"]

#: Percentage points above the majority-class rate under which a run is said to be at the majority rate.
NEAR_MAJORITY_POINTS = 2.0
#: (factor, margin): a last training-step loss above factor x the first and first + margin "rose" (far beyond the
#: batch-to-batch noise of a run that learns).
LOSS_ROSE = (3.0, 1.0)


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


def _loss_rose(run: dict[str, Any]) -> bool:
    """Whether the training loss ended far above where it started (:data:`LOSS_ROSE`): the lr, not the blocks."""
    first, last = run.get("loss_first"), run.get("loss_last")
    if not first or not last:
        return False
    factor, margin = LOSS_ROSE
    return last[1] > factor * first[1] and last[1] > first[1] + margin


def _training_warnings(run: dict[str, Any], recipe: Any) -> list[dict[str, Any]]:
    """A loss that rose during training, and Gaussian statistics whose updates were skipped (not finite)."""
    out = []
    name = run.get("name")
    if _loss_rose(run):
        (s0, l0), (s1, l1) = run["loss_first"], run["loss_last"]
        lrs = f"lr {getattr(recipe, 'lr', 0):g}, head lr {getattr(recipe, 'head_lr', 0):g}" if recipe else "the lr"
        out.append({"run": name, "reasons": ["loss_rose"], "configuration": {},
                    "message": f"run {name!r}: the training loss rose from {l0:.4g} (step {s0}) to {l1:.4g} (step "
                               f"{s1}); the learning rate ({lrs}) is likely too high: lower --lr / --head-lr"})
    skipped, total = run.get("skipped_layer_steps") or 0, run.get("layer_steps") or 0
    if skipped:
        config = run.get("isogauss_config") or {}
        lr = config.get("distribution_lr")
        out.append({"run": name, "reasons": ["statistics_skipped"], "configuration": {},
                    "message": f"run {name!r}: {skipped} of {total} distribution steps of its Gaussian layers were "
                               f"skipped because the update was not finite, so those statistics did not learn "
                               f"(distribution lr {'= the optimizer lr' if lr is None else f'{lr:g}'}); lower "
                               f"--distribution-lr (or --lr)"})
    return out


def run_warnings(runs: list[dict[str, Any]], recipe: Any = None,
                 labels: Optional[list[str]] = None) -> list[dict[str, Any]]:
    """One ``{"run", "reasons", "message", "configuration"}`` per Gaussian run that is at the majority-class rate
    or below the ``drop`` run (``labels``: class names, to name the majority class)."""
    from ..evaluation import AccuracySummary, compare_intervals, near_majority

    drop = next((r for r in runs if r.get("kind") == "drop" and r.get("accuracy_summary")), None)
    drop_summary = AccuracySummary(**drop["accuracy_summary"]) if drop else None
    warnings = []
    for run in runs:
        warnings += _training_warnings(run, recipe)
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
        advice = _advice(config, blocks, recipe)
        if _loss_rose(run):
            advice = "its training loss rose (above): lower the learning rate before judging the blocks"
        elif run.get("skipped_layer_steps") and run.get("skipped_layer_steps") == run.get("layer_steps"):
            advice = "its statistics never learned (above): lower --distribution-lr before judging the blocks"
        message = (f"the Gaussian model {run.get('name')!r} ({setting}) scored {_pct(s.accuracy)} "
                   f"[{_pct(s.low)}, {_pct(s.high)}], which " + " and ".join(parts) + "; " + advice)
        warnings.append({"run": run.get("name"), "reasons": found, "message": message,
                         "configuration": {"rule": config.get("rule"), "noise": config.get("noise"),
                                           "blocks": blocks}})
    return warnings
