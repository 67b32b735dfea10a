"""What ``isogauss-finetune`` prints about finished runs: one line as each run ends, the closing table.

Both read the run records of ``results.json`` (``name``, ``kind``, ``layers``, ``metrics``,
``parameter_report``, ``isogauss_config``, times), so a new kind of variant shows up without changes
here; columns a record lacks print as ``-``.
"""

from __future__ import annotations

from typing import Any, Optional

__all__ = ["fmt_int", "format_metric", "run_line", "summary_table"]


def fmt_int(n: Any) -> str:
    return f"{int(n):,}" if isinstance(n, (int, float)) and not isinstance(n, bool) else str(n)


def format_metric(name: str, value: Optional[float]) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.2f}%" if name == "accuracy" else f"{value:.4g}"


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


def run_line(run: dict[str, Any], headline: str) -> str:
    """``== dense done: accuracy 91.25%, loss 0.3312; train 12 s, eval 3 s; saved to out/model``."""
    metrics = run.get("metrics", {})
    names = _metric_names([run], headline) + (["loss"] if "loss" in metrics else [])
    shown = ", ".join(f"{m} {format_metric(m, metrics.get(m))}" for m in names) or "no metrics"
    return (f"== {run['name']} done: {shown}; train {run.get('train_time_s', 0):.0f} s, "
            f"eval {run.get('eval_time_s', 0):.0f} s; saved to {run.get('saved_to', '-')}")


def summary_table(runs: list[dict[str, Any]], headline: str) -> str:
    """The runs side by side: blocks, rule and noise of Gaussian rows, metrics, parameters, training time."""
    metric_names = _metric_names(runs, headline)
    header = ["run", "layers", "rule", "noise"] + metric_names + ["replaced weights", "Gaussian stats", "ratio",
                                                                  "model params", "train s"]
    rows = []
    for run in runs:
        rep = run.get("parameter_report", {})
        cells = [run["name"], _layers_cell(run), _setting(run, "rule"), _setting(run, "noise")]
        cells += [format_metric(m, run.get("metrics", {}).get(m)) for m in metric_names]
        cells += [fmt_int(rep.get("replaced_weights", "-")), fmt_int(rep.get("gaussian_parameters", "-")),
                  f"{100 * rep['ratio']:.2f}%" if rep.get("replaced_weights") else "-",
                  fmt_int(rep.get("isogauss_model_parameters", "-")), f"{run.get('train_time_s', 0):.0f}"]
        rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]

    def fmt(cells: list[Any]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()

    line = "-" * len(fmt(header))
    return "\n".join([line, fmt(header), line] + [fmt(r) for r in rows] + [line])
