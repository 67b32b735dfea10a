"""The comparison table of a sweep: from its run records to ``comparison.{json,md,png}``, and back from the JSON.

:func:`comparison_of` turns the complete run records of a sweep directory into
:func:`isogauss_hf.comparison.build_comparison`'s table (every run the directory holds, this command's and
earlier ones'); :func:`write_comparison` writes it as ``comparison.json`` (the runs and the statistics),
``comparison.md`` (:func:`markdown`) and ``comparison.png`` (:func:`plot`). ``isogauss-finetune --report DIR``
(:func:`render_report`) re-renders the markdown and the plot from ``DIR/comparison.json`` alone.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from ..comparison import UNRESOLVED_P, build_comparison
from ..errors import UsageError

__all__ = ["COMPARISON", "comparison_of", "markdown", "plot", "write_comparison", "render_report"]

COMPARISON = "comparison"


def _run_row(record: dict[str, Any], metric: str) -> dict[str, Any]:
    value = (record.get("metrics") or {}).get(metric) if record.get("status") == "completed" else None
    summary = record.get("accuracy_summary")
    return {"run": record.get("run"), "variant": record.get("label", record.get("name")), "kind": record.get("kind"),
            "blocks": record.get("blocks"), "layers": record.get("layers"), "seed": record.get("seed"),
            "status": record.get("status"), "value": value,
            "accuracy_summary": {k: summary[k] for k in ("accuracy", "low", "high", "n", "majority_rate")
                                 if k in summary} if summary else None,
            "train_time_s": record.get("train_time_s")}


def comparison_of(records: list[dict[str, Any]], recipe: dict[str, Any], block_sets: list[str],
                  commands: list[str]) -> dict[str, Any]:
    """The comparison table of ``records`` (complete run records) for the sweep of ``recipe``."""
    metric = recipe.get("metric", "accuracy")
    context = {"recipe": recipe.get("name"), "model": recipe.get("model"), "dataset": recipe.get("dataset"),
               "commands": list(commands)}
    return build_comparison([_run_row(r, metric) for r in records], metric, block_sets, context)


def _digits(comparison: dict[str, Any]) -> int:
    return 2 if comparison["unit"] == "%" or comparison["metric"] in ("exact_match", "f1") else 4


def _cell_text(cell: Optional[dict[str, Any]], digits: int) -> str:
    if cell is None:
        return "—"
    if not cell["n"]:
        text = "diverged"
    elif cell["n"] == 1:
        text = f"{cell['mean']:.{digits}f} (1)"
    else:
        text = f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f} ({cell['n']})"
    if cell["n"] and cell.get("diverged"):
        text += f", {len(cell['diverged'])} diverged"
    return text


def _table(header: list[str], rows: list[list[str]], align: str) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _p_text(entry: dict[str, Any]) -> str:
    if entry["p"] is None:
        return "— (more seeds than the exact test enumerates)"
    text = f"{entry['p']:.3f}"
    seeds = f"{entry['n']} seed{'s' if entry['n'] != 1 else ''}"
    return text + (f" (≥ {entry['p_floor']:.2f} whatever the data with {seeds})" if entry["unresolvable"] else "")


def _spread(values: list[float], digits: int) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:.{digits}f}" if hi - lo < 10 ** -digits else f"{lo:.{digits}f}–{hi:.{digits}f}"


def markdown(comparison: dict[str, Any]) -> str:
    """The comparison as markdown: the table, the seed-paired differences, one run's interval, the majority rate."""
    c, digits = comparison, _digits(comparison)
    ctx = c.get("context", {})
    unit = f" ({c['unit']})" if c["unit"] else ""
    out = [f"# Comparison: {ctx.get('recipe', '?')} ({ctx.get('model', '?')} on {ctx.get('dataset', '?')})", ""]
    if ctx.get("commands"):
        out += ["Commands: " + ", ".join(f"`{cmd}`" for cmd in ctx["commands"]), ""]
    out += [f"Test {c['metric']}{unit}, mean ± std over seeds (number of seeds); seeds {', '.join(map(str, c['seeds']))}."
            " `dense` does not depend on the block set.", ""]
    cells = {(cell["variant"], cell["blocks"]): cell for cell in c["cells"]}
    header = ["variant"] + [f"blocks {b}" for b in c["block_sets"]]
    rows = []
    for v in c["variants"]:
        if (v, None) in cells:
            rows.append([v, _cell_text(cells[(v, None)], digits)] + [""] * (len(header) - 2))
        else:
            rows.append([v] + [_cell_text(cells.get((v, b)), digits) for b in c["block_sets"]])
    out += _table(header, rows, "l" + "r" * (len(header) - 1)) + [""]
    picked = [cell for cell in c["cells"] if cell.get("picked")]
    for cell in picked[:1] if picked else []:
        out.append(f"Blocks picked by the scan for {cell['blocks']}: " + "; ".join(
            f"seed {s}: {','.join(map(str, layers))}" for s, layers in cell["picked"].items()) + ".")
    widths = [cell["interval_half_width"] for cell in c["cells"] if cell.get("interval_half_width") is not None]
    rates = [cell["majority_rate"] for cell in c["cells"] if cell.get("majority_rate") is not None]
    if widths:
        majority = f"; majority-class rate of the test split: {_spread(rates, digits)} %" if rates else ""
        out.append(f"One run's 95 % interval (Wilson, per run, mean half-width per cell): ±{_spread(widths, digits)} "
                   f"points{majority}.")
    if c["paired"]:
        out += ["", "Seed-paired differences (variant minus reference on the same seeds, mean ± std"
                + (", points" if c["unit"] == "%" else "") + "), on how many seeds the variant is above, and the exact "
                "two-sided sign-flip p of a zero mean difference. With n seeds p cannot go below 2 / 2^n: up to "
                f"{3} seeds p ≥ {UNRESOLVED_P:g} whatever the data, so no difference can be resolved.", ""]
        rows = [[e["variant"], e["blocks"] or "—", e["reference"], str(e["n"]),
                 f"{e['mean']:+.{digits}f} ± {e['std']:.{digits}f}", f"{e['above']} / {e['n']}", _p_text(e)]
                for e in c["paired"]]
        out += _table(["variant", "blocks", "reference", "seeds", "difference", "above on", "p"], rows, "lllrrrr")
    return "\n".join(out).rstrip() + "\n"


def plot(comparison: dict[str, Any], path: Path) -> None:
    """Bars per block set and variant (mean ± std), the dense mean and the majority-class rate as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = comparison
    cells = {(cell["variant"], cell["blocks"]): cell for cell in c["cells"] if cell["n"]}
    variants = [v for v in c["variants"] if (v, None) not in cells and any((v, b) in cells for b in c["block_sets"])]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(c["block_sets"]) + 3), 4.2))
    width = 0.8 / max(len(variants), 1)
    for i, v in enumerate(variants):
        got = [cells.get((v, b)) for b in c["block_sets"]]
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(c["block_sets"]))]
        ax.bar(xs, [g["mean"] if g else 0 for g in got], width, yerr=[g["std"] if g else 0 for g in got], label=v)
        for x, g in zip(xs, got):  # every seed's value: with few seeds the bars alone hide the spread
            if g:
                ax.scatter([x] * len(g["values"]), g["values"], color="k", s=8, zorder=3)
    for (v, b), cell in cells.items():
        if b is None:
            ax.axhline(cell["mean"], color="k", lw=1.5, ls="-" if v == "dense" else "--", label=v)
    rates = [cell["majority_rate"] for cell in cells.values() if cell.get("majority_rate") is not None]
    if rates:
        rate = sum(rates) / len(rates)
        ax.axhline(rate, color="grey", ls=":", label=f"majority class ({rate:.1f})")
    values = [x for cell in cells.values() for x in cell["values"]]
    if values and c["unit"] == "%":
        ax.set_ylim(max(0.0, min(values) - 5), min(100.0, max(values) + 3))
    ax.set_xticks(range(len(c["block_sets"])), [f"blocks {b}" for b in c["block_sets"]])
    ax.set_ylabel(f"test {c['metric']}" + (f" ({c['unit']})" if c["unit"] else ""))
    ctx = c.get("context", {})
    ax.set_title(f"{ctx.get('recipe', '')}: seeds {', '.join(map(str, c['seeds']))}")
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)


def write_comparison(out: Path, comparison: dict[str, Any], png: bool = True, with_json: bool = True) -> list[Path]:
    """``comparison.json`` (unless not ``with_json``), ``comparison.md`` and, with ``png``, ``comparison.png`` in
    ``out``; the paths written."""
    from .output import write_json

    paths = [out / f"{COMPARISON}.md"]
    if with_json:
        write_json(out / f"{COMPARISON}.json", comparison)
        paths.insert(0, out / f"{COMPARISON}.json")
    paths[-1].write_text(markdown(comparison), encoding="utf-8")
    if png and comparison["cells"]:
        paths.append(out / f"{COMPARISON}.png")
        plot(comparison, paths[-1])
    return paths


def render_report(directory: str) -> int:
    """``--report DIR``: the markdown and plot again from ``DIR/comparison.json`` alone; prints the markdown."""
    path = Path(directory).expanduser() / f"{COMPARISON}.json"
    try:
        comparison = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--report {directory!r}: no {COMPARISON}.json there (a sweep writes it: --seeds / "
                         f"--layers \"A;B\")") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"--report {directory!r}: {path.name} cannot be read ({e})") from None
    if not isinstance(comparison, dict) or not {"cells", "paired", "runs", "metric"} <= set(comparison):
        raise UsageError(f"--report {directory!r}: {path.name} is not a comparison written by isogauss-finetune")
    paths = write_comparison(path.parent, comparison, with_json=False)
    print(markdown(comparison))
    print("written: " + ", ".join(str(p) for p in paths))
    return 0
