"""Output of the analysis: the ranked table (text / markdown), ``analysis.json`` and the PNG plots.

:func:`write_report` writes ``analysis.md``, ``analysis.json``, ``fit_heatmap.png`` (block x matrix heat
maps of the fit metrics), ``block_sensitivity.png`` (per-block bars of Block Influence and the two loss
increases) and ``std_by_depth.png`` (row/column std of each matrix kind by block).
:func:`write_drift_report` does the same for :func:`~isogauss_hf.analysis.drift.weight_drift` rows.
Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Optional, Sequence

from .blocks import ScanResult
from .fit import FIT_METRICS
from .select import SCORES, rank_blocks

__all__ = ["HEATMAP_METRICS", "format_table", "markdown_report", "write_report", "write_drift_report"]

#: Fit metrics drawn as block x matrix heat maps.
HEATMAP_METRICS = ("ks", "wasserstein", "kurtosis", "mean_share", "stable_rank")

_COLUMNS = (("block_influence", "BI"), ("replacement_loss", "d-loss Gaussian"), ("removal_loss", "d-loss removed"),
            ("ks", "KS"), ("wasserstein", "W1"), ("abs_kurtosis", "abs kurtosis"), ("mean_share", "mean share"),
            ("stable_rank", "stable rank"))


def _value(row, key: str) -> Optional[float]:
    return getattr(row, key) if key in ("block_influence", "replacement_loss", "removal_loss") else row.fit.get(key)


def _fmt(value: Optional[float]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}"


def _table_rows(scan: ScanResult, score: str) -> tuple[list[str], list[list[str]]]:
    columns = [(k, h) for k, h in _COLUMNS if any(_value(r, k) is not None for r in scan.blocks)]
    try:
        order = rank_blocks(scan, score)
    except ValueError:
        order = [r.block for r in scan.blocks]
    header = ["rank", "block"] + [h for _, h in columns]
    rows = []
    for rank, b in enumerate(order, 1):
        row = scan.block(b)
        rows.append([str(rank), str(b)] + [_fmt(_value(row, k)) for k, _ in columns])
    return header, rows


def format_table(scan: ScanResult, score: str) -> str:
    """The per-block table as aligned text, safest block first by ``score``."""
    header, rows = _table_rows(scan, score)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def _md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown_report(scan: ScanResult, score: str, title: str = "isogauss-analyze",
                    context: Optional[dict[str, Any]] = None) -> str:
    """The markdown of ``analysis.md``: settings, the ranked block table, the per-matrix fit table."""
    s = SCORES[score]
    parts = [f"# {title}\n"]
    for key, value in (context or {}).items():
        parts.append(f"- {key}: {value}")
    meta = scan.meta
    if scan.base_loss is not None:
        parts.append(f"- dense calibration loss: {scan.base_loss:.6g} on {meta.get('calibration_examples')} examples "
                     f"({meta.get('calibration_batches')} batches); head: {meta.get('head', 'kept')}")
        parts.append(f"- cost: {meta.get('model_calls')} model calls, block compute of "
                     f"{meta.get('dense_pass_equivalents')} dense passes (blocks + 1 at most)")
    parts.append(f"- scan time (fit metrics and forward passes): {meta.get('seconds')} s")
    parts.append(f"\n## Blocks, safest first by `{score}` ({'lower' if s.lower_is_safer else 'higher'} is safer)\n")
    parts.append(_md(*_table_rows(scan, score)))
    parts.append("\nBI = Block Influence (1 - cosine of the block's input and output hidden states, unmasked tokens); "
                 "d-loss = calibration-loss increase when the block's matrices become a seeded draw of their fitted "
                 "Eq. 2 statistics (Gaussian) or the block is removed; fit columns are means over the block's "
                 "matrices.\n")
    parts.append("## Matrices\n")
    keys = ("z_mean", "z_std", "kurtosis", "ks", "wasserstein", "mean_share", "stable_rank", "row_std_mean",
            "col_std_mean")
    rows = [[m.name, str(m.block), m.kind, f"{m.shape[0]}x{m.shape[1]}"] + [_fmt(m.metrics[k]) for k in keys]
            for m in scan.matrices]
    parts.append(_md(["matrix", "block", "kind", "shape", *keys], rows))
    parts.append("\n" + "\n".join(f"- `{k}`: {FIT_METRICS[k]}" for k in keys) + "\n")
    return "\n".join(parts)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _kinds(scan: ScanResult) -> list[str]:
    kinds: list[str] = []
    for m in scan.matrices:
        if m.kind not in kinds:
            kinds.append(m.kind)
    return kinds


def plot_fit_heatmap(scan: ScanResult, path: str) -> None:
    plt = _plt()
    kinds, blocks = _kinds(scan), [r.block for r in scan.blocks]
    fig, axes = plt.subplots(1, len(HEATMAP_METRICS), figsize=(3.2 * len(HEATMAP_METRICS), 0.45 * len(blocks) + 2.2),
                             squeeze=False)
    for ax, metric in zip(axes[0], HEATMAP_METRICS):
        grid = [[math.nan] * len(kinds) for _ in blocks]
        for m in scan.matrices:
            if m.block in blocks:
                grid[blocks.index(m.block)][kinds.index(m.kind)] = m.metrics[metric]
        image = ax.imshow(grid, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(kinds)), kinds, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(len(blocks)), [str(b) for b in blocks], fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.set_ylabel("block") if metric == HEATMAP_METRICS[0] else None
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.suptitle("Eq. 2 fit of each matrix (standardised residual vs N(0,1))", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_block_sensitivity(scan: ScanResult, path: str) -> None:
    plt = _plt()
    blocks = [r.block for r in scan.blocks]
    titles = (("block_influence", "Block Influence"), ("replacement_loss", "loss increase, Gaussian"),
              ("removal_loss", "loss increase, removed"), ("ks", "mean KS (fit)"))
    panels = [(k, t) for k, t in titles if any(_value(r, k) is not None for r in scan.blocks)]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.2), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        values = [_value(r, key) for r in scan.blocks]
        ax.bar([str(b) for b in blocks], [math.nan if v is None else v for v in values], color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("block (1-based)")
        ax.axhline(0, color="k", lw=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_std_by_depth(scan: ScanResult, path: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), squeeze=False)
    for ax, key, title in ((axes[0][0], "row_std_mean", "mean row std"),
                           (axes[0][1], "col_std_mean", "mean column std")):
        for kind in _kinds(scan):
            pts = sorted((m.block, m.metrics[key]) for m in scan.matrices if m.kind == kind and m.block is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=kind)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("block (1-based)")
    axes[0][1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _json(path: str, payload: Any) -> None:
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {str(k): clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(clean(payload), f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def write_report(scan: ScanResult, output_dir: str, score: str, *, context: Optional[dict[str, Any]] = None,
                 extra: Optional[dict[str, Any]] = None, plots: bool = True) -> dict[str, str]:
    """Write ``analysis.{md,json}`` and the PNGs into ``output_dir``; the paths written, by kind."""
    os.makedirs(output_dir, exist_ok=True)
    paths = {"markdown": os.path.join(output_dir, "analysis.md"), "json": os.path.join(output_dir, "analysis.json")}
    rankings = {}
    for name in SCORES:
        try:
            rankings[name] = rank_blocks(scan, name)
        except ValueError:
            continue
    payload = {"context": context or {}, "score": score, "rankings": rankings, **scan.to_dict(), **(extra or {})}
    _json(paths["json"], payload)
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write(markdown_report(scan, score, context=context))
    if plots:
        for key, fn in (("heatmap", plot_fit_heatmap), ("sensitivity", plot_block_sensitivity),
                        ("std_by_depth", plot_std_by_depth)):
            if key != "sensitivity" and not scan.matrices:
                continue
            paths[key] = os.path.join(output_dir, {"heatmap": "fit_heatmap.png", "sensitivity": "block_sensitivity.png",
                                                   "std_by_depth": "std_by_depth.png"}[key])
            fn(scan, paths[key])
    return paths


def write_drift_report(rows: Sequence[dict[str, Any]], output_dir: str, *, basename: str = "drift",
                       context: Optional[dict[str, Any]] = None, plots: bool = True) -> dict[str, str]:
    """``drift.{json,md,png}``: per-matrix Wasserstein drift and fit metrics before / after fine-tuning."""
    from .drift import drift_by_block

    os.makedirs(output_dir, exist_ok=True)
    paths = {"json": os.path.join(output_dir, f"{basename}.json"),
             "markdown": os.path.join(output_dir, f"{basename}.md")}
    per_block = drift_by_block(rows)
    _json(paths["json"], {"context": context or {}, "matrices": list(rows), "blocks": per_block})
    keys = ("wasserstein", "wasserstein_relative", "frobenius_change", "before_ks", "after_ks", "before_kurtosis",
            "after_kurtosis")
    table = [[r["name"], str(r["block"]), r["kind"]] + [_fmt(r[k]) for k in keys] for r in rows]
    lines = ["# Weight drift over fine-tuning\n"] + [f"- {k}: {v}" for k, v in (context or {}).items()]
    lines += ["", "Wasserstein-1 between each matrix's weight distribution before and after (relative: over the "
              "std before); frobenius_change = ||after - before||_F / ||before||_F; KS / kurtosis of the Eq. 2 "
              "standardised residual before and after.\n", _md(["matrix", "block", "kind", *keys], table)]
    with open(paths["markdown"], "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    if plots and per_block:
        plt = _plt()
        fig, ax = plt.subplots(figsize=(6, 3.2))
        blocks = list(per_block)
        ax.bar([str(b) for b in blocks], [per_block[b]["wasserstein_relative"] for b in blocks], color="tab:orange")
        ax.set_xlabel("block (1-based)")
        ax.set_ylabel("W1(before, after) / std before")
        ax.set_title("distribution drift over fine-tuning (mean over matrices)", fontsize=9)
        fig.tight_layout()
        paths["png"] = os.path.join(output_dir, f"{basename}.png")
        fig.savefig(paths["png"], dpi=110)
        plt.close(fig)
    return paths
