"""What ``isogauss-finetune`` prints about finished runs: one line as each run ends, the closing table.

Both read the run records of ``results.json`` (``name``, ``kind``, ``layers``, ``metrics``,
``accuracy_summary`` (accuracy, Wilson 95 % interval, majority-class rate), ``parameter_report``,
``isogauss_config``, ``classifier_parameters``, times), so a new kind of variant (the baselines) shows up
without changes here; columns a record lacks print as ``-``. "kept" is what stands for the replaced
weights: Gaussian statistics, low-rank factor entries, 0 for removed blocks.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["METRIC_SCALES", "fmt_int", "format_metric", "metric_label", "run_line", "summary_table"]

#: The scale each metric is printed on, as in the paper's tables: ROUGE / BLEU 0-1 (Table 3), SQuAD exact match
#: and F1 in percent (Table 4); accuracy prints as a percentage.
METRIC_SCALES: dict[str, str] = {"rouge1": "0-1", "rougeL": "0-1", "bleu": "0-1", "exact_match": "%", "f1": "%"}


def fmt_int(n: Any) -> str:
    return f"{int(n):,}" if isinstance(n, (int, float)) and not isinstance(n, bool) else str(n)


def format_metric(name: str, value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if name == "accuracy" else f"{value:.4g}"


def metric_label(name: str) -> str:
    """``rougeL (0-1)``, ``f1 (%)``: the metric's name with its scale."""
    return f"{name} ({METRIC_SCALES[name]})" if name in METRIC_SCALES else name


def _metric_names(runs: list[dict[str, Any]], headline: str) -> list[str]:
    names: list[str] = []
    for run in runs:
        for k in run.get("metrics", {}):
            if k not in names and k != "loss":
                names.append(k)
    if headline in names:
        names.remove(headline)
        names.insert(0, headline)
    return names


def _layers_cell(run: dict[str, Any]) -> str:
    return ",".join(map(str, run["layers"])) if run.get("layers") else "none (dense)"


def _setting(run: dict[str, Any], key: str) -> str:
    config = run.get("isogauss_config") or {}
    return str(config.get(key, "-")) if run.get("gaussian") else "-"


def _interval(run: dict[str, Any]) -> str:
    s = run.get("accuracy_summary")
    return f"[{100 * s['low']:.2f}, {100 * s['high']:.2f}]" if s else "-"


def _majority(run: dict[str, Any]) -> str:
    s = run.get("accuracy_summary")
    return f"{100 * s['majority_rate']:.2f}%" if s and s.get("majority_rate") is not None else "-"


def run_line(run: dict[str, Any], headline: str) -> str:
    """``== dense done: accuracy 91.25% [89.1, 93.0] (majority 41.60%), loss 0.3312; train 12 s, eval 3 s;
    saved to out/model`` (plus the classifier's parameters of a ``classifier_hidden`` run)."""
    metrics = run.get("metrics", {})
    names = _metric_names([run], headline) + (["loss"] if "loss" in metrics else [])
    shown = []
    for m in names:
        text = f"{metric_label(m)} {format_metric(m, metrics.get(m))}"
        if m == "accuracy" and run.get("accuracy_summary"):
            text += f" {_interval(run)} (majority {_majority(run)})"
        shown.append(text)
    head = run.get("classifier_parameters")
    extra = (f"; classifier {fmt_int(head['this_run'])} parameters (dense head {fmt_int(head['dense_head'])})"
             if head else "")
    if run.get("curve"):  # recipe.eval_every
        extra += "; curve " + ", ".join(f"{e['step']}: {format_metric(headline, e.get(headline))}" for e in run["curve"])
    return (f"== {run['name']} done: {', '.join(shown) or 'no metrics'}{extra}; train {run.get('train_time_s', 0):.0f} "
            f"s, eval {run.get('eval_time_s', 0):.0f} s; saved to {run.get('saved_to') or '-'}")


def summary_table(runs: list[dict[str, Any]], headline: str) -> str:
    """The runs side by side: blocks, rule and noise of Gaussian rows, metrics (accuracy with its 95 % interval
    and the majority-class rate), parameters kept, model parameters, train and eval time."""
    metric_names = _metric_names(runs, headline)
    intervals = any(run.get("accuracy_summary") for run in runs)
    header = ["run", "layers", "rule", "noise"]
    for m in metric_names:
        header += [metric_label(m)] + (["95% interval", "majority"] if m == "accuracy" and intervals else [])
    header += ["replaced weights", "kept", "ratio", "model params", "train s", "eval s"]
    rows = []
    for run in runs:
        rep = run.get("parameter_report", {})
        cells = [run["name"], _layers_cell(run), _setting(run, "rule"), _setting(run, "noise")]
        for m in metric_names:
            cells.append(format_metric(m, run.get("metrics", {}).get(m)))
            if m == "accuracy" and intervals:
                cells += [_interval(run), _majority(run)]
        cells += [fmt_int(rep.get("replaced_weights", "-")), fmt_int(rep.get("gaussian_parameters", "-")),
                  f"{100 * rep['ratio']:.2f}%" if rep.get("replaced_weights") else "-",
                  fmt_int(rep.get("isogauss_model_parameters", "-")), f"{run.get('train_time_s', 0):.0f}",
                  f"{run.get('eval_time_s', 0):.0f}"]
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def fmt(cells: list[Any]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    line = "-" * len(fmt(header))
    return "\n".join([line, fmt(header), line] + [fmt(r) for r in rows] + [line])
