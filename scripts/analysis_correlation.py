"""Issue 11, point 4: which block score predicts the accuracy lost when that block is made Gaussian and fine-tuned.

On MiniLM-L6 (6 blocks) with tweets and BBC News: per dataset, (1) the block scan
(``isogauss_hf.analysis.scan_blocks``, head probed on the calibration features, one scan per
``--scan-seeds`` seed, values averaged) gives every score of ``analysis.SCORES`` per block; (2) fine-tuning
runs give the dense accuracy and the accuracy with each single block Gaussian (all six blocks, rule
``--rule``, noise 'resample', logits averaged over the budget's draws); (3) per score, the Spearman rank
correlation with the accuracy lost (dense - block) and its exact permutation p-value; "oriented rho"
flips the sign of higher-is-safer scores, so > 0 always means "the score ranks as intended"; (4) the
blocks ``auto:1`` / ``auto:3`` pick with each score against the recipes' hand-picked blocks
(``recipes/minilm-*.yaml`` for one block; Table 2 analogue's 3-block set) and random picks (for one
block the exact expectation over the six; for three, ``random_picks`` seeded triples fine-tuned).

Fine-tuning is the Table 2 analogue's (``scripts/reproduce_table2_baselines.py``: its budgets, data subsets
and runner ``scripts/_minilm.py``); runs of ``--variant`` already in ``--table`` (same budget) are reused and
the missing seeds are trained here (kept under ``seed_runs``); accuracies are averaged over ``--seeds``. The
JSON is rewritten after each run, and an interrupted job resumes.

    python scripts/analysis_correlation.py --variant gdu/seeded      # results/analysis_correlation.{json,md,png}
    python scripts/analysis_correlation.py --smoke --out-dir /tmp/x  # tiny budget, seconds
    python scripts/analysis_correlation.py --report-only             # re-analyse the JSON, train nothing
"""

from __future__ import annotations

import argparse
import copy
import itertools
import os
import random
import sys
import time
from typing import Any, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _repro_common as C  # noqa: E402
import reproduce_table2_minilm as T2  # noqa: E402  (data subsets, evaluation and run keys of Table 2)

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


# -------------------------------------------------------------------------------------------- models, runs
def make_factory(budget: dict, names: list[str], seed: int):
    """A function returning a fresh copy of the starting model (pretrained MiniLM, or the tiny random BERT)."""
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, BertConfig,
                              BertForSequenceClassification)

    from isogauss_hf.tasks import minilm_model_dir

    labels = {"num_labels": len(names), "id2label": dict(enumerate(names)),
              "label2id": {n: i for i, n in enumerate(names)}}
    if budget["tiny"]:
        vocab = AutoTokenizer.from_pretrained(str(minilm_model_dir())).vocab_size
        torch.manual_seed(seed)
        template = BertForSequenceClassification(BertConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=NUM_BLOCKS, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=512, **labels))
        return lambda: copy.deepcopy(template)

    def load():
        C.seed_everything(seed)  # the new head starts the same in every run
        return AutoModelForSequenceClassification.from_pretrained(str(minilm_model_dir()), **labels)

    return load


def scan(dataset: str, data, factory, args) -> dict[str, Any]:
    """Per-block values of every score (mean over ``--scan-seeds``) and the first scan in full."""
    from transformers import DataCollatorWithPadding

    from isogauss_hf.analysis import SCORES, make_calibration_batches, scan_blocks

    train, _, _, tokenizer = data
    model = factory().eval()
    batches = make_calibration_batches(train, DataCollatorWithPadding(tokenizer),
                                       num_samples=args.budget["calibration"], batch_size=16, seed=args.seed,
                                       model=model)
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
    rule = payload["settings"]["rule"]
    for ds, info in payload.get("scans", {}).items():
        def acc(ls, ds=ds):
            return (runs.get(T2.run_key(ds, ls or None, rule if ls else None)) or {}).get("test_accuracy")

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
             f"thread(s)); fine-tuning budgets {st['budgets']} (the Table 2 analogue's, "
             f"`scripts/reproduce_table2_baselines.py`); Gaussian variant {st['variant']}, accuracies averaged over "
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


def _table_runs(table: dict, ds: str, variant: str, seeds: list[int]) -> dict[str, list[float]]:
    """Accuracies per block set (``layers_key``) of ``variant`` on ``ds`` in a table2_baselines JSON (+ dense), of
    the given ``seeds`` only (in their order), so that every block and the dense model average the same seeds."""
    out: dict[str, list[float]] = {}
    runs = [r for r in (table.get("runs") or {}).values()
            if r["dataset"] == ds and r["variant"] in (variant, "dense") and r.get("seed") in seeds]
    for rec in sorted(runs, key=lambda r: seeds.index(r["seed"])):
        k = "base" if rec["variant"] == "dense" else C.layers_key(rec["layers"])
        out.setdefault(k, []).append(rec["accuracy"]["accuracy"])
    return out


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny budget and a tiny random 6-block BERT scan, seconds")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--variant", default="gdu/seeded", help="the Gaussian variant whose accuracy loss is predicted")
    p.add_argument("--table", default=os.path.join(C.RESULTS_DIR, "table2_baselines.json"),
                   help="reproduce_table2_baselines.py JSON whose runs (same budget) are reused")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="fine-tuning seeds (accuracies averaged)")
    p.add_argument("--no-triples", action="store_true", help="skip the 3-block fine-tunes (auto:3, random)")
    p.add_argument("--triple-scores", nargs="+", default=None,
                   help="fine-tune only these scores' auto:3 picks (default: every score's; the others show 'not run')")
    p.add_argument("--triple-seeds", type=int, default=1,
                   help="how many of --seeds the 3-block fine-tunes use (table runs of more seeds are still used)")
    p.add_argument("--scan-seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="seeds of the scan's Gaussian draws (averaged)")
    p.add_argument("--calibration", type=int, default=128, help="calibration examples of the scan")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--time-limit-s", type=float, default=None, help="start no new fine-tune after this many seconds")
    p.add_argument("--out-dir", default=C.RESULTS_DIR)
    p.add_argument("--name", default=NAME)
    p.add_argument("--report-only", action="store_true", help="re-analyse and rewrite md/png from the JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = os.path.join(args.out_dir, f"{args.name}.json")
    if args.report_only:
        payload = C.load_json(path) or sys.exit(f"--report-only: {path} does not exist")
        write_outputs(payload, args.out_dir, args.name)
        return
    import dataclasses

    import _minilm as M  # noqa: E402
    import reproduce_table2_baselines as TB  # noqa: E402
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    budgets = {ds: (TB.SMOKE if args.smoke else TB.BUDGETS[ds]) for ds in args.datasets}
    settings = {"variant": args.variant, "seeds": list(args.seeds), "scan_seeds": list(args.scan_seeds),
                "calibration": args.calibration, "budgets": {ds: dataclasses.asdict(b) for ds, b in budgets.items()},
                "smoke": args.smoke, "rule": args.variant}
    payload = C.load_json(path) or {}
    if payload.get("settings") != settings:
        payload = {"runs": {}, "scans": {}, "seed_runs": {}}
    payload.update({"name": args.name, "settings": settings, "environment": C.environment(),
                    "command": "python scripts/analysis_correlation.py "
                               + " ".join(argv if argv is not None else sys.argv[1:]),
                    "hand_picked": hand_picked(),
                    "random_picks": random_triples(3, 0)})
    table = C.load_json(args.table) or {}
    started = time.perf_counter()

    def save():
        payload["updated"] = C.utc_now()
        write_outputs(payload, args.out_dir, args.name)

    for ds in args.datasets:
        budget = budgets[ds]
        reuse = (table.get("settings") or {}).get(ds) == dataclasses.asdict(budget)
        data = M.load_data(ds, budget)
        names = data.labels
        factory = make_factory({"tiny": args.smoke}, names, 0)
        if ds not in payload["scans"]:
            t2data = (data.train, data.test, names, data.tokenizer)
            args.budget = {"calibration": args.calibration}
            args.seed = 0
            payload["scans"][ds] = scan(ds, t2data, factory, args)
            save()
            print(f"[{C.utc_now()}] {ds}: scan {payload['scans'][ds]['seconds']:.0f}s", flush=True)
        plan: list[Optional[list[int]]] = [None] + [[b] for b in range(1, NUM_BLOCKS + 1)]
        if not args.no_triples:
            from isogauss_hf.analysis import SCORES

            unknown = sorted(set(args.triple_scores or []) - set(SCORES))
            if unknown:
                raise SystemExit(f"--triple-scores: unknown score(s) {unknown}; choose from {sorted(SCORES)}")
            triples = [auto_pick(payload["scans"][ds]["scores"][n], s.lower_is_safer, 3) for n, s in SCORES.items()
                       if args.triple_scores is None or n in args.triple_scores]
            triples += [payload["hand_picked"][ds]["3"]] + payload["random_picks"]
            plan += [t for i, t in enumerate(triples) if t not in triples[:i]]
        found = _table_runs(table, ds, args.variant, list(args.seeds)) if reuse else {}
        for layers in plan:
            lk = "base" if layers is None else C.layers_key(layers)
            accs = list(found.get(lk, []))
            seeds = args.seeds if layers is None or len(layers) == 1 else args.seeds[:args.triple_seeds]
            for seed in seeds[len(accs):]:
                skey = f"{ds}|{args.variant if layers else 'dense'}|{lk}|{seed}"
                if skey not in payload["seed_runs"]:
                    if args.time_limit_s is not None and time.perf_counter() - started > args.time_limit_s:
                        print(f"time limit reached; {skey} and later runs not started (rerun to resume)", flush=True)
                        save()
                        return
                    rec = M.train_eval(args.variant if layers else "dense", layers, data, seed, budget)
                    payload["seed_runs"][skey] = rec
                    print(f"[{C.utc_now()}] {skey}: {100 * rec['accuracy']['accuracy']:.2f}%", flush=True)
                accs.append(payload["seed_runs"][skey]["accuracy"]["accuracy"])
            key = T2.run_key(ds, layers, args.variant if layers else None)
            payload["runs"][key] = {"dataset": ds, "layers": list(layers or []), "test_accuracy": sum(accs) / len(accs),
                                    "accuracies": accs, "source": "table2_baselines.json" if found.get(lk) else "here"}
            save()
    save()
    print(f"recommended score: {payload['analysis']['recommended_score']}  ({path})")


if __name__ == "__main__":
    main()
