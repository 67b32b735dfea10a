"""Issue 11, point 4: which block score predicts the accuracy lost when that block is made Gaussian and fine-tuned.

On MiniLM-L6 (6 blocks) with tweets and BBC News: per dataset, (1) the block scan
(``isogauss_hf.analysis.scan_blocks``, head probed on the calibration features, one scan per
``--scan-seeds`` seed, values averaged) gives every score of ``analysis.SCORES`` per block; (2) fine-tuning
runs give the dense accuracy and the accuracy with each single block Gaussian (the recipe's default
configuration: GDU, seeded, 200 calibration steps); (3) per score, the Spearman rank correlation with the
accuracy lost (dense - block) and its exact permutation p-value; "oriented rho" flips the sign of
higher-is-safer scores, so > 0 always means "the score ranks as intended"; (4) the blocks ``auto:1`` /
``auto:3`` pick with each score against the recipes' hand-picked blocks (``recipes/minilm-*.yaml`` for one block;
Table 2 analogue's 3-block set) and random picks (for one block the exact expectation over the six; for
three, ``random_picks`` seeded triples fine-tuned).

The fine-tunes are a sweep of the product (``isogauss-finetune --recipe minilm-DATASET-table2 --seeds ...
--layers "1;2;3;4;5;6;..." --baselines none``) into ``--sweep-dir`` (default ``runs/table2-{dataset}``, the Table 2
analogue's own sweep directory, so its runs are reused and only the missing ones train); the data of the scan are
the same recipe's (``isogauss_hf.cli.run.load_shared``). Accuracies are averaged over ``--seeds``. Interrupting
and rerunning continues the sweep.

    python scripts/analysis_correlation.py --seeds 0                 # results/analysis_correlation.{json,md,png}
    python scripts/analysis_correlation.py --smoke --out-dir /tmp/x  # tiny budget, seconds
    python scripts/analysis_correlation.py --report-only             # re-analyse the JSON, train nothing
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import sys
import time
from pathlib import Path
from typing import Any, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _repro_common as C  # noqa: E402

NAME = "analysis_correlation"
DATASETS = ("tweets", "bbc_news")
NUM_BLOCKS = 6


# -------------------------------------------------------------------------------------------- statistics
def _ranks(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> Optional[float]:
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return None if sxx == 0 or syy == 0 else sxy / (sxx * syy) ** 0.5


def permutation_p(x: list[float], y: list[float]) -> Optional[float]:
    """Two-sided exact permutation p-value of Spearman's rho (all orderings of ``y``; n <= 8)."""
    rho = spearman(x, y)
    if rho is None or len(x) > 8:
        return None
    perms = list(itertools.permutations(y))
    hits = sum(1 for p in perms if (r := spearman(x, list(p))) is not None and abs(r) >= abs(rho) - 1e-12)
    return hits / len(perms)


# -------------------------------------------------------------------------------------------- runs, scans
#: Flags of ``--smoke``: the recipe at a budget of seconds.
SMOKE_FLAGS = ["--train-samples", "32", "--eval-samples", "16", "--max-length", "16", "--batch-size", "8",
               "--epochs", "1", "--num-samples", "2", "--calibrate-steps", "2"]


def run_key(dataset: str, layers: Optional[list[int]], variant: Optional[str]) -> str:
    """``tweets|base|dense`` / ``tweets|2,3,4|gdu/seeded+calib=200``: a fine-tuned block set of one dataset."""
    return f"{dataset}|{C.layers_key(layers)}|{variant or 'dense'}"


def recipe_of(dataset: str) -> str:
    return f"minilm-{dataset.replace('_', '-')}-table2"


def finetune(dataset: str, seeds: list[int], block_sets: list[list[int]], sweep_dir: str, smoke: bool) -> list[dict]:
    """The sweep of the product over ``seeds`` x ``block_sets`` (Gaussian runs, and dense) in ``sweep_dir``: the
    records of its planned runs (complete runs already there are reused, not trained again)."""
    import json
    import shlex

    from isogauss_hf.cli.finetune import main as isogauss_finetune
    from isogauss_hf.cli.sweep_store import SweepStore

    argv = ["--recipe", recipe_of(dataset), "--seeds", ",".join(map(str, seeds)), "--layers",
            ";".join(C.layers_key(b) for b in block_sets), "--baselines", "none", "--no-save-models",
            "--output-dir", sweep_dir] + (SMOKE_FLAGS if smoke else [])
    code = isogauss_finetune(argv)
    if code:
        raise SystemExit(f"isogauss-finetune {shlex.join(argv)} ended with exit code {code}")
    store = SweepStore(Path(sweep_dir))
    planned = set(json.loads((Path(sweep_dir) / "sweep.json").read_text())["plan"])
    return [r for r in store.records() if r["run"] in planned]


def scan(dataset: str, args) -> dict[str, Any]:
    """Per-block values of every score (mean over ``--scan-seeds``) and the first scan in full, on the train split
    of the dataset's Table 2 recipe (the examples its fine-tunes train on)."""
    from isogauss_hf.analysis import SCORES, make_calibration_batches, scan_blocks
    from isogauss_hf.cli.args import build_parser, resolve_recipe
    from isogauss_hf.cli.context import RunContext
    from isogauss_hf.cli.pipelines import load_model
    from isogauss_hf.cli.run import load_shared

    flags = build_parser().parse_args(["--recipe", recipe_of(dataset)] + (SMOKE_FLAGS if args.smoke else []))
    ctx = RunContext(recipe=resolve_recipe(flags), out=Path(args.out_dir))
    load_shared(ctx)
    model = load_model(ctx.recipe, ctx.source, ctx.labels).eval()
    batches = make_calibration_batches(ctx.train, ctx.pipeline.collator(), num_samples=args.calibration,
                                       batch_size=16, seed=0, model=model)
    t0 = time.perf_counter()
    results = [scan_blocks(model, batches, seed=s, probe_head=True, progress=False) for s in args.scan_seeds]
    scores = {name: {str(b): sum(float(s.value(r.block(b))) for r in results) / len(results)
                     for b in range(1, NUM_BLOCKS + 1)} for name, s in SCORES.items()}
    return {"scores": scores, "scan": results[0].to_dict(), "seeds": list(args.scan_seeds),
            "seconds": time.perf_counter() - t0}


# -------------------------------------------------------------------------------------------- analysis
def hand_picked() -> dict[str, dict[str, list[int]]]:
    """The blocks picked by hand before any scan: block 5 (the 0.1.0 MiniLM recipes' one Gaussian block) and the
    Table 2 analogue's 3-block set 2,4,6."""
    return {ds: {"1": [5], "3": [2, 4, 6]} for ds in DATASETS}


def random_triples(count: int, seed: int) -> list[list[int]]:
    triples = [list(t) for t in itertools.combinations(range(1, NUM_BLOCKS + 1), 3)]
    return sorted(random.Random(seed).sample(triples, count))


def auto_pick(scores: dict[str, float], lower_is_safer: bool, k: int) -> list[int]:
    sign = 1.0 if lower_is_safer else -1.0
    return sorted(sorted((int(b) for b in scores), key=lambda b: (sign * scores[str(b)], b))[:k])


def analyse(payload: dict[str, Any]) -> dict[str, Any]:
    """Correlations and selections from the scans and runs in ``payload`` (missing runs: None)."""
    from isogauss_hf.analysis import SCORES

    runs, out = payload["runs"], {}
    rule = payload["settings"].get("rule")
    for ds, info in payload.get("scans", {}).items():
        def acc(ls, ds=ds):
            return (runs.get(run_key(ds, ls or None, rule if ls else None)) or {}).get("test_accuracy")

        base = acc(None)
        singles = {b: acc([b]) for b in range(1, NUM_BLOCKS + 1)}
        lost = {b: base - a for b, a in singles.items() if a is not None and base is not None}
        corr = {}
        for name, s in SCORES.items():
            blocks = sorted(lost)
            x, y = [info["scores"][name][str(b)] for b in blocks], [lost[b] for b in blocks]
            rho = spearman(x, y) if len(blocks) >= 3 else None
            corr[name] = {"n": len(blocks), "rho": rho, "p_value": permutation_p(x, y) if rho is not None else None,
                          "oriented_rho": None if rho is None else (rho if s.lower_is_safer else -rho)}
        sel: dict[str, Any] = {}
        for k in ("1", "3"):
            autos = {name: auto_pick(info["scores"][name], s.lower_is_safer, int(k)) for name, s in SCORES.items()}
            hand = payload["hand_picked"][ds][k]
            entry = {"auto": {n: {"blocks": b, "accuracy": acc(b)} for n, b in autos.items()},
                     "hand_picked": {"blocks": hand, "accuracy": acc(hand) if hand else None}}
            if k == "1":
                vals = [a for a in singles.values() if a is not None]
                entry["random"] = {"expected_accuracy": sum(vals) / len(vals) if vals else None, "over": len(vals)}
                entry["oracle"] = {"accuracy": max(vals) if vals else None}
            else:
                picks = payload["random_picks"]
                vals = [a for a in (acc(p) for p in picks) if a is not None]
                entry["random"] = {"picks": picks, "accuracies": vals,
                                   "mean_accuracy": sum(vals) / len(vals) if vals else None}
            sel[k] = entry
        out[ds] = {"dense_accuracy": base, "single_block_accuracy": singles, "correlation": corr, "selection": sel}
    summary = {}
    for name in SCORES:
        vals = [out[ds]["correlation"][name]["oriented_rho"] for ds in out]
        vals = [v for v in vals if v is not None]
        summary[name] = sum(vals) / len(vals) if vals else None
    ranked = sorted((v, n) for n, v in summary.items() if v is not None)
    return {"datasets": out, "mean_oriented_rho": summary, "recommended_score": ranked[-1][1] if ranked else None}


def _pct(a: Optional[float]) -> str:
    return "not run" if a is None else f"{100 * a:.2f}"


def markdown(payload: dict[str, Any]) -> str:
    from isogauss_hf.analysis import SCORES

    res, st = payload["analysis"], payload["settings"]
    env = payload["environment"]
    lines = ["# Which block score predicts the accuracy lost by a Gaussian block? (MiniLM-L6, issue 11)\n",
             f"Command: `{payload['command']}`  ",
             f"Measured {payload['updated']} on {env['platform']} (torch {env['torch']}, {env['torch_threads']} "
             f"thread(s)); fine-tuning budgets {st.get('recipes') or st.get('budgets')} (the Table 2 analogue's "
             f"recipes `minilm-*-table2`); Gaussian variant {st.get('variant')}, accuracies averaged over "
             f"seeds {st['seeds']}; scan seeds {st['scan_seeds']}, {st['calibration']} calibration examples.\n",
             "Accuracy lost = dense accuracy - accuracy with that one block Gaussian after fine-tuning. rho = "
             "Spearman rank correlation of the score with it over the six blocks (p: exact permutation test, "
             "two-sided); oriented rho > 0 means the score ranks as intended (its 'safe' end loses less).\n"]
    header = ["score", "safe end"] + [f"{ds} rho (p)" for ds in res["datasets"]] + ["mean oriented rho"]
    rows = []
    for name, s in SCORES.items():
        cells = [name, "low" if s.lower_is_safer else "high"]
        for ds in res["datasets"]:
            c = res["datasets"][ds]["correlation"][name]
            cells.append("-" if c["rho"] is None else f"{c['rho']:+.2f} ({c['p_value']:.2f})")
        m = res["mean_oriented_rho"][name]
        cells.append("-" if m is None else f"{m:+.2f}")
        rows.append(cells)
    lines.append(C.md_table(header, rows))
    lines.append(f"\nRecommended score (highest mean oriented rho): **{res['recommended_score']}**.\n")
    for ds, r in res["datasets"].items():
        lines.append(f"\n## {ds}: dense {_pct(r['dense_accuracy'])}%\n")
        singles = {int(b): a for b, a in r["single_block_accuracy"].items()}
        lines.append(C.md_table(["block"] + [str(b) for b in range(1, NUM_BLOCKS + 1)],
                                [["accuracy (%)"] + [_pct(singles.get(b)) for b in range(1, NUM_BLOCKS + 1)]]))
        for k, e in r["selection"].items():
            rows = [[f"auto:{k} by {n}", ",".join(map(str, v["blocks"])), _pct(v["accuracy"])]
                    for n, v in e["auto"].items()]
            hp = e["hand_picked"]
            rows.append(["hand-picked", ",".join(map(str, hp["blocks"] or [])) or "-", _pct(hp["accuracy"])])
            if k == "1":
                rows.append([f"random (expectation over {e['random']['over']})", "-",
                             _pct(e["random"]["expected_accuracy"])])
                rows.append(["best single block (oracle)", "-", _pct(e["oracle"]["accuracy"])])
            else:
                rows.append(["random triples " + "; ".join(",".join(map(str, p)) for p in e["random"]["picks"]), "-",
                             _pct(e["random"]["mean_accuracy"])])
            lines.append(f"\n{k} block(s):\n")
            lines.append(C.md_table(["selection", "blocks", "accuracy (%)"], rows))
    return "\n".join(lines)


def plot(payload: dict[str, Any], path: str) -> None:
    from isogauss_hf.analysis import SCORES

    pyplot, res = C.plt(), payload["analysis"]
    names = list(SCORES)
    fig, axes = pyplot.subplots(1, 1 + len(res["datasets"]), figsize=(5 + 4 * len(res["datasets"]), 3.6), squeeze=False)
    ax = axes[0][0]
    for i, ds in enumerate(res["datasets"]):
        vals = [res["datasets"][ds]["correlation"][n]["oriented_rho"] for n in names]
        ax.bar([j + 0.4 * i for j in range(len(names))], [0 if v is None else v for v in vals], width=0.4, label=ds)
    ax.set_xticks([j + 0.2 for j in range(len(names))], names, rotation=60, ha="right", fontsize=7)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("oriented Spearman rho")
    ax.legend(fontsize=7)
    best = res["recommended_score"] or names[0]
    for ax, ds in zip(axes[0][1:], res["datasets"]):
        r, scores = res["datasets"][ds], payload["scans"][ds]["scores"][best]
        dense = r["dense_accuracy"] or 0
        pts = [(str(b), scores[str(b)], 100 * (dense - a))
               for b, a in r["single_block_accuracy"].items() if a is not None]
        ax.scatter([p[1] for p in pts], [p[2] for p in pts])
        for label, x, y in pts:
            ax.annotate(label, (x, y), fontsize=8)
        ax.set_xlabel(best)
        ax.set_ylabel("accuracy lost (points)")
        ax.set_title(ds, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)


def write_outputs(payload: dict[str, Any], out_dir: str, name: str) -> None:
    payload["analysis"] = analyse(payload)
    C.write_outputs(os.path.join(out_dir, name), payload, markdown, plot)


def _accuracies(records: list[dict], seeds: list[int]) -> tuple[Optional[str], dict[str, list[float]]]:
    """The Gaussian label of the sweep's records and the accuracies per block set (``base``: dense) of ``seeds``."""
    label, out = None, {}
    for rec in sorted(records, key=lambda r: r["seed"]):
        if rec["seed"] not in seeds or rec.get("status") != "completed":
            continue
        if rec["kind"] == "gaussian":
            label = rec["label"]
        key = "base" if rec["kind"] == "dense" else C.layers_key(rec["layers"])
        out.setdefault(key, []).append(rec["metrics"]["accuracy"])
    return label, out


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a budget of seconds (the recipe on 32 / 16 examples)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds (accuracies averaged)")
    p.add_argument("--single-blocks", type=int, nargs="+", default=list(range(1, NUM_BLOCKS + 1)),
                   help="the single blocks fine-tuned (default all six; fewer only for a quick check)")
    p.add_argument("--no-triples", action="store_true", help="skip the 3-block fine-tunes (auto:3, random)")
    p.add_argument("--triple-scores", nargs="+", default=None,
                   help="fine-tune only these scores' auto:3 picks (default: every score's; the others show 'not run')")
    p.add_argument("--triple-seeds", type=int, default=1, help="how many of --seeds the 3-block fine-tunes use")
    p.add_argument("--scan-seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds of the scan's Gaussian draws (averaged)")
    p.add_argument("--calibration", type=int, default=128, help="calibration examples of the scan")
    p.add_argument("--sweep-dir", default=None,
                   help="the fine-tunes' sweep directory, '{dataset}' standing for the dataset (tweets, bbc-news), "
                        "which it must contain when more than one dataset runs (default runs/table2-{dataset}; with "
                        "--smoke OUT_DIR/sweep-{dataset})")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", default=C.RESULTS_DIR)
    p.add_argument("--name", default=NAME)
    p.add_argument("--report-only", action="store_true", help="re-analyse and rewrite md/png from the JSON")
    args = p.parse_args(argv)
    if args.sweep_dir and len(args.datasets) > 1 and "{dataset}" not in args.sweep_dir:
        p.error(f"--sweep-dir {args.sweep_dir!r} would hold {len(args.datasets)} datasets' sweeps; put '{{dataset}}' "
                "in it (e.g. results/table2_check/{dataset}) or pass one --datasets")
    torch.set_num_threads(args.threads)
    path = os.path.join(args.out_dir, f"{args.name}.json")
    if args.report_only:
        payload = C.load_json(path) or sys.exit(f"--report-only: {path} does not exist")
        write_outputs(payload, args.out_dir, args.name)
        return
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    settings = {"seeds": list(args.seeds), "scan_seeds": list(args.scan_seeds), "calibration": args.calibration,
                "recipes": {ds: recipe_of(ds) for ds in args.datasets}, "smoke": args.smoke}
    payload = C.load_json(path) or {}
    if {k: v for k, v in (payload.get("settings") or {}).items() if k not in ("variant", "rule")} != settings:
        payload = {"runs": {}, "scans": {}}
    payload.update({"name": args.name, "environment": C.environment(),
                    "command": "python scripts/analysis_correlation.py "
                               + " ".join(argv if argv is not None else sys.argv[1:]),
                    "hand_picked": hand_picked(), "random_picks": random_triples(3, 0)})
    payload["settings"] = {**payload.get("settings", {}), **settings}

    def save():
        payload["updated"] = C.utc_now()
        write_outputs(payload, args.out_dir, args.name)

    for ds in args.datasets:
        if ds not in payload["scans"]:
            payload["scans"][ds] = scan(ds, args)
            save()
            print(f"[{C.utc_now()}] {ds}: scan {payload['scans'][ds]['seconds']:.0f}s", flush=True)
        sweep_dir = (args.sweep_dir or (os.path.join(args.out_dir, "sweep-{dataset}") if args.smoke
                                        else os.path.join("runs", "table2-{dataset}"))).format(dataset=ds.replace("_", "-"))
        records = finetune(ds, list(args.seeds), [[b] for b in args.single_blocks], sweep_dir, args.smoke)
        label, found = _accuracies(records, list(args.seeds))
        if not args.no_triples:
            from isogauss_hf.analysis import SCORES

            unknown = sorted(set(args.triple_scores or []) - set(SCORES))
            if unknown:
                raise SystemExit(f"--triple-scores: unknown score(s) {unknown}; choose from {sorted(SCORES)}")
            triples = [auto_pick(payload["scans"][ds]["scores"][n], s.lower_is_safer, 3) for n, s in SCORES.items()
                       if args.triple_scores is None or n in args.triple_scores]
            triples += [payload["hand_picked"][ds]["3"]] + payload["random_picks"]
            triples = [t for i, t in enumerate(triples) if t not in triples[:i]]
            seeds = list(args.seeds[:args.triple_seeds])
            found.update({k: v for k, v in _accuracies(finetune(ds, seeds, triples, sweep_dir, args.smoke),
                                                       seeds)[1].items() if k != "base"})
        payload["settings"].update(variant=label, rule=label)
        for lk, accs in found.items():
            layers = None if lk == "base" else [int(b) for b in lk.split(",")]
            payload["runs"][run_key(ds, layers, label if layers else None)] = {
                "dataset": ds, "layers": list(layers or []), "test_accuracy": sum(accs) / len(accs),
                "accuracies": accs, "source": sweep_dir}
        save()
    print(f"recommended score: {payload['analysis']['recommended_score']}  ({path})")


if __name__ == "__main__":
    main()
