"""Table 2 analogue with baselines: MiniLM-L6 on tweets and BBC News, several seeds, every variant side by side.

For each dataset, block set and seed, one fine-tuning run per variant (see ``scripts/_minilm.py``):
``dense``; the baselines ``drop`` (blocks removed), ``lowrank`` (rank-2 factors = the same parameter budget),
``frozen`` (Gaussian layers at their initial fit); and Gaussian blocks learned by ``gdu`` / ``wdu`` /
``backprop`` with ``seeded`` or ``resample`` noise. Cells are test accuracy, mean ± std over seeds; the
markdown also gives the majority-class rate and the 95 % Wilson half-width of one run on that test set, and pairs
every Gaussian variant with dense, drop and lowrank seed by seed (the mean difference, on how many seeds it is
above, and an exact sign-flip p-value), since one run's interval is wider than most differences in the table.

    python scripts/reproduce_table2_baselines.py --datasets tweets --seeds 0 1 2
    python scripts/reproduce_table2_baselines.py --curve tweets      # the dense learning curve
    python scripts/reproduce_table2_baselines.py --smoke --out results-smoke/t2

Runs already in the JSON with the same settings are skipped, so an interrupted job resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
from typing import Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _minilm as M  # noqa: E402
import _repro_common as C  # noqa: E402

BLOCK_SETS = [[1], [3], [5], [2, 4], [2, 4, 6]]
VARIANTS = ["dense", "drop", "lowrank", "frozen", "gdu/seeded", "wdu/resample", "backprop/seeded",
            "gdu/resample", "wdu/seeded", "backprop/resample"]
BUDGETS = {
    "tweets": M.Budget(train_size=3000, test_size=1500, max_length=64, batch_size=32, epochs=1.5, num_samples=10),
    "bbc_news": M.Budget(train_size=400, test_size=445, max_length=64, batch_size=16, epochs=3.0, num_samples=10),
}
SMOKE = M.Budget(train_size=32, test_size=16, max_length=16, batch_size=8, epochs=1.0, num_samples=2)


def merge_block_sets(old: list[list[int]], new: list[list[int]]) -> list[list[int]]:
    """The table's columns: the sets of earlier runs and of this one, each once, fewest blocks first."""
    return [list(b) for b in sorted({tuple(b) for b in old + new}, key=lambda b: (len(b), b))]


def is_dense(variant: str) -> bool:
    """``dense`` and its options (``dense+kd=2``) do not depend on the block set."""
    return M.parse_variant(variant)[0] == "dense"


TEACHER = "dense (teacher of `+kd`)"


def teacher_cells(runs: list[dict]) -> list[float]:
    """Accuracy of the dense runs the ``+kd`` variants distil from (scripts/_distill.py), one per seed."""
    return list({r["seed"]: r["teacher_accuracy"] for r in runs if "teacher_accuracy" in r}.values())


def key(ds: str, variant: str, blocks: Optional[list[int]], seed: int) -> str:
    return f"{ds}|{variant}|{C.layers_key(blocks)}|{seed}"


def per_seed(payload: dict, ds: str, variant: str, blocks) -> dict[int, dict]:
    """The runs of one table cell (dataset, variant, block set), by seed."""
    return {r["seed"]: r for r in payload["runs"].values()
            if r["dataset"] == ds and r["variant"] == variant and C.layers_key(r["layers"] or None) == C.layers_key(blocks)}


def cells(payload: dict, ds: str, variant: str, blocks) -> list[float]:
    return [r["accuracy"]["accuracy"] for r in per_seed(payload, ds, variant, blocks).values()]


#: What every Gaussian variant is compared with, seed by seed (``paired_rows``).
REFERENCES = ("dense", "drop", "lowrank")
#: Options that change the training of every variant alike, so a baseline is compared with the same ones.
SHARED_OPTIONS = ("kd",)
MIN_PAIRED_SEEDS = 3


def reference_variant(variant: str, reference: str) -> str:
    """``reference`` with the options of ``variant`` that apply to every variant: gdu/seeded+calib=200+kd=2 and
    drop give drop+kd=2. The dense reference is always the plain dense run (a ``+kd`` run's teacher)."""
    if reference == "dense":
        return "dense"
    kept = [o for o in variant.split("+")[1:] if o.partition("=")[0] in SHARED_OPTIONS]
    return "+".join([reference, *kept])


def paired_rows(payload: dict, ds: str) -> list[list[str]]:
    """Per Gaussian variant and block set with >= MIN_PAIRED_SEEDS seeds shared with a reference: the mean and std of
    the seed-paired differences (points), on how many seeds the variant is above, and the exact sign-flip p-value."""
    rows = []
    for variant in payload["variants"]:
        if M.parse_variant(variant)[0] in REFERENCES:
            continue
        for blocks in payload["block_sets"]:
            mine = per_seed(payload, ds, variant, blocks)
            if len(mine) < MIN_PAIRED_SEEDS:
                continue
            for ref in REFERENCES:
                name = reference_variant(variant, ref)
                theirs = {s: r["accuracy"]["accuracy"]
                          for s, r in per_seed(payload, ds, name, None if ref == "dense" else blocks).items()}
                if ref == "dense":  # the teacher of a +kd run is the plain dense run of its seed
                    theirs.update({s: r["teacher_accuracy"] for s, r in mine.items()
                                   if "teacher_accuracy" in r and s not in theirs})
                seeds = sorted(set(mine) & set(theirs))
                if len(seeds) < MIN_PAIRED_SEEDS:
                    continue
                diffs = [100 * (mine[s]["accuracy"]["accuracy"] - theirs[s]) for s in seeds]
                mean, std = C.mean_std(diffs)
                rows.append([variant, C.layers_key(blocks), name, str(len(seeds)), f"{mean:+.2f} ± {std:.2f}",
                             f"{sum(d > 0 for d in diffs)} / {len(diffs)}", f"{C.sign_flip_p(diffs):.3f}"])
    return rows


def fmt(values: list[float]) -> str:
    if not values:
        return "not run"
    mean = 100 * statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.2f} (n=1)"
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" + ("" if len(values) >= 3 else f" (n={len(values)})")


def markdown(payload: dict) -> str:
    out = ["# Table 2 analogue with baselines: MiniLM-L6 (6-block BERT) on tweets and BBC News\n",
           "Commands: " + ", ".join(f"`{c}`" for c in payload["commands"]) + "\n",
           "Test accuracy (%), mean ± std over seeds. Every variant fine-tunes the same pretrained MiniLM with the "
           "same loop; the listed blocks (all six matrices each) are: removed (`drop`), replaced by trained rank-2 "
           "factors initialised from the SVD (`lowrank`, the Gaussian layer's parameter budget), Gaussian layers "
           "never updated (`frozen`), or Gaussian layers learned by RULE with NOISE (`rule/noise`). `dense` does "
           "not depend on the block set. Resample variants average the logits over the stated number of draws; "
           "seeded ones run their one draw.\n"]
    for ds in payload["datasets"]:
        s = payload["settings"].get(ds)
        runs = [r for r in payload["runs"].values() if r["dataset"] == ds]
        curve = payload.get("curves", {}).get(ds)
        if s is None or not (runs or curve):
            continue
        maj = runs[0]["majority_rate"] if runs else curve["final"]["majority_rate"]
        n = s["test_size"]
        half = 196 * (0.7 * 0.3 / n) ** 0.5
        out.append(f"## {ds}\n")
        out.append(f"Train {s['train_size']} / test {n} examples (seeded subsets of the fixed stratified split), "
                   f"max length {s['max_length']}, batch {s['batch_size']}, {s['epochs']:g} epoch(s), AdamW lr "
                   f"{s['lr']:g} (head {s['head_lr']:g}), linear schedule with {s['warmup']:g} warm-up, "
                   f"{s['num_samples']} draws at evaluation. Majority-class rate {100 * maj:.2f} %; a single run's "
                   f"95 % Wilson interval is about ±{half:.1f} points at 70 % accuracy on this test set.\n")
        if runs:
            header = ["variant"] + [C.layers_key(b) for b in payload["block_sets"]]
            rows = []
            for variant in payload["variants"]:
                if is_dense(variant):
                    rows.append([variant] + [fmt(cells(payload, ds, variant, None))] + [""] * (len(header) - 2))
                    continue
                rows.append([variant] + [fmt(cells(payload, ds, variant, b)) for b in payload["block_sets"]])
            teachers = teacher_cells(runs)
            if teachers:
                rows.append([TEACHER, fmt(teachers)] + [""] * (len(header) - 2))
            out.append(C.md_table(header, rows))
            paired = paired_rows(payload, ds)
            if paired:
                out.append(f"\nSeed-paired differences (points: variant minus reference on the same seeds, mean ± std; "
                           f"rows with at least {MIN_PAIRED_SEEDS} shared seeds). p: exact two-sided sign-flip test "
                           "of a zero mean difference; with n seeds it cannot go below 2 / 2^n (3 seeds: 0.25).\n")
                out.append(C.md_table(["variant", "blocks", "reference", "seeds", "difference", "above on", "p"],
                                      paired, align="lllrrrr"))
            secs = sum(r["train_seconds"] + r["eval_seconds"] for r in runs)
            loads = [r["load_average"] for r in runs]
            out.append(f"\n{len(runs)} runs, {secs / 3600:.2f} h of training + evaluation; 1-minute load average "
                       f"during the runs {min(loads):.1f}-{max(loads):.1f} on 2 cores (times taken under that load).\n")
        if curve:
            pts = ", ".join(f"{c['step']}: {100 * c['accuracy']:.2f}" for c in curve["curve"])
            out.append(f"Dense learning curve (step: test accuracy %, seed {curve['seed']}, {curve['epochs']:g} epochs "
                       f"with the same schedule shape; the table's budget is {curve.get('budget_epochs', '?')} "
                       f"epochs): {pts}.\n")
    return "\n".join(out)


def _plot_curve(ax, ds: str, curve: Optional[dict]) -> None:
    """The dense learning curve of ``ds`` (test accuracy against optimizer steps), the table's budget marked."""
    if not curve:
        ax.axis("off")
        return
    steps = [c["step"] for c in curve["curve"]]
    ax.plot(steps, [100 * c["accuracy"] for c in curve["curve"]], "o-", color="k")
    budget = curve.get("budget_epochs")
    if budget:
        ax.axvline(steps[-1] * budget / curve["epochs"], color="grey", ls="--", label=f"table budget ({budget:g} ep.)")
        ax.legend(fontsize=7)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("dense test accuracy %")
    ax.set_title(f"dense learning curve, {ds}")


def plot(payload: dict, path: str) -> None:
    plt = C.plt()
    if plt is None:
        return
    curves = payload.get("curves", {})
    datasets = [d for d in payload["datasets"]
                if d in curves or any(r["dataset"] == d for r in payload["runs"].values())]
    if not datasets:
        return
    ncols = 2 if any(d in curves for d in datasets) else 1
    fig, axes = plt.subplots(len(datasets), ncols, figsize=(12 + 5 * (ncols - 1), 4.2 * len(datasets)),
                             squeeze=False, gridspec_kw={"width_ratios": [12, 5][:ncols]})
    variants = [v for v in payload["variants"] if not is_dense(v)]
    for row, ds in enumerate(datasets):
        ax = axes[row, 0]
        runs = [r for r in payload["runs"].values() if r["dataset"] == ds]
        if ncols == 2:
            _plot_curve(axes[row, 1], ds, curves.get(ds))
        if not runs:
            ax.axis("off")
            continue
        width = 0.8 / max(len(variants), 1)
        for i, v in enumerate(variants):
            means, errs = [], []
            for b in payload["block_sets"]:
                vals = cells(payload, ds, v, b)
                means.append(100 * statistics.mean(vals) if vals else 0)
                errs.append(100 * statistics.stdev(vals) if len(vals) > 1 else 0)
            xs = [j + (i - len(variants) / 2) * width for j in range(len(payload["block_sets"]))]
            ax.bar(xs, means, width, yerr=errs, label=v)
        lines = [(v, cells(payload, ds, v, None)) for v in payload["variants"] if is_dense(v)]
        if not cells(payload, ds, "dense", None):  # the +kd runs' teachers are the dense runs
            lines.append((TEACHER, teacher_cells(runs)))
        for (label, vals), style in zip([line for line in lines if line[1]], ("-", "--", "-.", ":")):
            ax.axhline(100 * statistics.mean(vals), color="k", lw=1.5, ls=style, label=label)
        ax.axhline(100 * runs[0]["majority_rate"], color="grey", ls=":", label="majority class")
        ax.set_xticks(range(len(payload["block_sets"])), [C.layers_key(b) for b in payload["block_sets"]])
        ax.set_ylabel("test accuracy %")
        ax.set_title(f"MiniLM-L6 on {ds}: blocks made Gaussian / removed / factored")
        lows = [100 * r["accuracy"]["accuracy"] for r in runs]
        ax.set_ylim(max(0, min(lows) - 5), min(100, max(lows) + 3))
        ax.legend(ncol=7, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1))  # below: never over a bar
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write(payload: dict, out: str, png: bool) -> None:
    C.write_outputs(out, payload, markdown, plot if png else None)


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["tweets", "bbc_news"], choices=sorted(BUDGETS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=VARIANTS)
    p.add_argument("--blocks", default=";".join(C.layers_key(b) for b in BLOCK_SETS),
                   help="block sets separated by ';', e.g. '1;3;2,4'")
    p.add_argument("--curve", default=None, choices=sorted(BUDGETS),
                   help="only run the dense learning curve of this dataset (evaluated every --curve-every steps)")
    p.add_argument("--curve-every", type=int, default=25)
    p.add_argument("--curve-epochs", type=float, default=None,
                   help="epochs of the learning-curve run (default: twice the table's budget, to show the plateau)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--smoke", action="store_true", help="tiny budget, seconds")
    p.add_argument("--out", default="results/table2_baselines", help="output prefix (.json/.md/.png)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    block_sets = [[int(x) for x in part.split(",")] for part in args.blocks.split(";") if part]
    budgets = {ds: (SMOKE if args.smoke else BUDGETS[ds]) for ds in BUDGETS}
    payload = C.load_json(args.out + ".json") or {"runs": {}, "curves": {}, "commands": []}
    command = "python scripts/reproduce_table2_baselines.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if command not in payload["commands"]:
        payload["commands"].append(command)
    payload.update({"datasets": sorted(set(payload.get("datasets", [])) | set(args.datasets)),
                    "block_sets": merge_block_sets(payload.get("block_sets") or [], block_sets),
                    "variants": list(dict.fromkeys((payload.get("variants") or []) + list(args.variants))),
                    "environment": C.environment()})
    payload.setdefault("settings", {})
    for ds in ([args.curve] if args.curve else args.datasets):
        budget = budgets[ds]
        settings = dataclasses.asdict(budget)
        if payload["settings"].get(ds) not in (None, settings):  # other settings: start this dataset afresh
            payload["runs"] = {k: v for k, v in payload["runs"].items() if v["dataset"] != ds}
        payload["settings"][ds] = settings
        data = M.load_data(ds, budget)
        if args.curve:
            long = dataclasses.replace(budget, epochs=args.curve_epochs or 2 * budget.epochs)
            rec = M.train_eval("dense", None, data, args.seeds[0], long, curve_every=args.curve_every)
            payload["curves"][ds] = {"seed": args.seeds[0], "epochs": long.epochs, "curve": rec["curve"],
                                     "final": rec["accuracy"], "budget_epochs": budget.epochs}
            write(payload, args.out, png=False)
            print(f"{ds} dense curve: {rec['curve']}", flush=True)
            continue
        plan = [(v, None if is_dense(v) else b, s) for s in args.seeds for v in args.variants
                for b in ([None] if is_dense(v) else block_sets)]
        for variant, blocks, seed in plan:
            k = key(ds, variant, blocks, seed)
            if k in payload["runs"]:
                continue
            rec = M.train_eval(variant, blocks, data, seed, budget)
            payload["runs"][k] = rec
            write(payload, args.out, png=False)
            acc = rec["accuracy"]
            print(f"[{C.utc_now()}] {k}: {100 * acc['accuracy']:.2f} % [{100 * acc['low']:.1f}, {100 * acc['high']:.1f}]"
                  f" ({rec['train_seconds']:.0f} s + {rec['eval_seconds']:.0f} s, load {rec['load_average']:.1f})",
                  flush=True)
    write(payload, args.out, png=True)


if __name__ == "__main__":
    main()
