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

Fine-tuning follows ``scripts/reproduce_table2_minilm.py`` (its data subsets and evaluation; AdamW lr
2e-5, head lr 1e-3, batch 16, constant lr) and stores runs in the same format and keys
(``"<dataset>|<blocks>|<rule>"`` -> ``{dataset, layers, rule, test_accuracy, ...}``, dense = ``|base|dense``),
so ``--finetune-results results/table2_minilm.json`` reuses that script's runs: only those whose dataset
settings (sizes, epochs, lr, head lr, draws, max length, seed) equal this budget's and whose rule is
``--rule`` (``--budget small`` is Table 2's setting: base and blocks 1, 3, 5 and 2,4,6 come from there).
Missing runs are trained here, the JSON is rewritten after each one, and an interrupted job resumes.

    python scripts/analysis_correlation.py --budget small            # results/analysis_correlation.{json,md,png}
    python scripts/analysis_correlation.py --smoke --out-dir /tmp/x  # tiny random 6-block BERT, seconds
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
BUDGETS: dict[str, dict[str, Any]] = {
    "smoke": {"sizes": {"tweets": (32, 16), "bbc_news": (32, 16)}, "epochs": 1.0, "num_samples": 2, "max_length": 32,
              "calibration": 16, "random_picks": 1, "tiny": True},
    "small": {"sizes": {"tweets": (480, 192), "bbc_news": (480, 96)}, "epochs": 1.0, "num_samples": 3,
              "max_length": 128, "calibration": 128, "random_picks": 3, "tiny": False},
    "medium": {"sizes": {"tweets": (1600, 400), "bbc_news": (960, 200)}, "epochs": 2.0, "num_samples": 3,
               "max_length": 128, "calibration": 128, "random_picks": 3, "tiny": False},
}


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


def finetune(dataset: str, layers: Optional[list[int]], args, data, factory) -> dict[str, Any]:
    """One run of the Table 2 protocol with ``layers`` Gaussian (None = dense); a record in its format."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from isogauss_hf import IsoGaussCallback, IsoGaussConfig, get_isogauss_model

    train, test, names, tokenizer = data
    model = factory()
    callbacks = []
    if layers:
        model = get_isogauss_model(model, IsoGaussConfig(layers=list(layers), rule=args.rule, noise="resample",
                                                         seed=args.seed, num_samples=args.budget["num_samples"]))
        callbacks.append(IsoGaussCallback())
    head = [p for n, p in model.named_parameters() if "classifier" in n and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if "classifier" not in n and p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": rest, "lr": args.lr}, {"params": head, "lr": args.head_lr}],
                                  weight_decay=0.0)
    targs = TrainingArguments(
        output_dir=os.path.join(args.work_dir, f"{dataset}-{C.layers_key(layers)}"), per_device_train_batch_size=16,
        num_train_epochs=args.budget["epochs"], learning_rate=args.lr, lr_scheduler_type="constant", weight_decay=0.0,
        seed=args.seed, data_seed=args.seed, save_strategy="no", eval_strategy="no", logging_strategy="no",
        report_to=[], disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
        train_sampling_strategy="group_by_length")
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=callbacks, optimizers=(optimizer, None))
    t0 = time.perf_counter()
    out = trainer.train()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = T2.evaluate(model, test, tokenizer, batch_size=32)
    return {"dataset": dataset, "layers": list(layers or []), "rule": args.rule if layers else None,
            "test_accuracy": acc, "train_loss": float(out.training_loss), "steps": int(out.global_step),
            "train_seconds": train_s, "eval_seconds": time.perf_counter() - t0,
            "num_samples": args.budget["num_samples"] if layers else 1, "source": "analysis_correlation.py"}


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
    """One block: the ``layers`` of the recipes ``minilm-<dataset>``; three: Table 2 analogue's 3-block set."""
    from isogauss_hf.recipes import load_recipe

    three = next(ls for ls in T2.LAYER_SETS if len(ls) == 3)
    out = {}
    for ds in DATASETS:
        one = load_recipe(f"minilm-{ds.replace('_', '-')}").layers
        out[ds] = {"1": list(one) if one and len(one) == 1 else None, "3": list(three)}
    return out


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
             f"thread(s)); budget `{st['budget_name']}`: {st['budget']}; rule {st['rule']}, seed {st['seed']}, "
             f"scan seeds {st['scan_seeds']}.\n",
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
    C.write_json(os.path.join(out_dir, f"{name}.json"), payload)
    C.write_text(os.path.join(out_dir, f"{name}.md"), markdown(payload))
    plot(payload, os.path.join(out_dir, f"{name}.png"))


def expected_settings(args, rec: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The Table 2 settings a reused run must have been measured with (None: a run this job does not use)."""
    ds = rec.get("dataset")
    if ds not in args.datasets or (rec.get("layers") and rec.get("rule") != args.rule):
        return None
    train, test = args.budget["sizes"][ds]
    return {"train_size": train, "test_size": test, "epochs": args.budget["epochs"], "lr": args.lr,
            "head_lr": args.head_lr, "num_samples": args.budget["num_samples"],
            "max_length": args.budget["max_length"], "seed": args.seed}


def main(argv: Optional[list[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget", choices=list(BUDGETS), default="small", help="data sizes, epochs, draws (default small)")
    p.add_argument("--smoke", action="store_true", help="= --budget smoke: a tiny random 6-block BERT, seconds")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--rule", default="wdu", choices=["gdu", "wdu"])
    p.add_argument("--finetune-results", nargs="*", default=[], help="JSON files of reproduce_table2_minilm.py format "
                                                                    "whose runs are reused when their settings match")
    p.add_argument("--no-triples", action="store_true",
                   help="skip the 3-block fine-tunes (auto:3, hand-picked, random)")
    p.add_argument("--scan-seeds", type=int, nargs="+", default=[0],
                   help="seeds of the scan's Gaussian draws (averaged)")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    p.add_argument("--time-limit-s", type=float, default=None, help="start no new fine-tune after this many seconds")
    p.add_argument("--out-dir", default=C.RESULTS_DIR)
    p.add_argument("--name", default=NAME)
    p.add_argument("--work-dir", default="/tmp/isogauss_analysis_correlation")
    p.add_argument("--report-only", action="store_true", help="re-analyse and rewrite md/png from the JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = os.path.join(args.out_dir, f"{args.name}.json")
    if args.report_only:
        payload = C.load_json(path) or sys.exit(f"--report-only: {path} does not exist")
        write_outputs(payload, args.out_dir, args.name)
        return
    args.budget_name = "smoke" if args.smoke else args.budget
    args.budget = BUDGETS[args.budget_name]
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from isogauss_hf.tasks import minilm_model_dir, tokenize_classification

    hf_logging.set_verbosity_error()
    settings = {"budget_name": args.budget_name, "budget": args.budget, "rule": args.rule, "seed": args.seed,
                "scan_seeds": list(args.scan_seeds), "lr": args.lr, "head_lr": args.head_lr}
    payload = C.load_json(path) or {}
    if payload.get("settings") != settings:
        payload = {"runs": {}, "scans": {}}
    payload.update({"name": args.name, "settings": settings, "environment": C.environment(),
                    "command": "python scripts/analysis_correlation.py "
                               + " ".join(argv if argv is not None else sys.argv[1:]),
                    "hand_picked": hand_picked(),
                    "random_picks": random_triples(args.budget["random_picks"], args.seed),
                    "finetune_sources": list(args.finetune_results)})
    for source in args.finetune_results:  # reuse runs measured elsewhere with the same protocol and sizes
        data = C.load_json(source) or sys.exit(f"--finetune-results: {source} does not exist")
        for key, rec in (data.get("runs") or {}).items():
            theirs, ours = (data.get("settings") or {}).get(rec.get("dataset"), {}), expected_settings(args, rec)
            if ours is None or any(theirs.get(k) != v for k, v in ours.items()):
                continue  # another dataset, rule or budget: not comparable
            payload["runs"].setdefault(key, {**rec, "source": source})
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir()))

    def save():
        payload["updated"] = C.utc_now()
        write_outputs(payload, args.out_dir, args.name)

    for ds in args.datasets:
        train, test, names, _ = T2.load_dataset(ds, *args.budget["sizes"][ds], seed=args.seed)
        data = (tokenize_classification(train, tokenizer, max_length=args.budget["max_length"]),
                tokenize_classification(test, tokenizer, max_length=args.budget["max_length"]), names, tokenizer)
        factory = make_factory(args.budget, names, args.seed)
        if ds not in payload["scans"]:
            payload["scans"][ds] = scan(ds, data, factory, args)
            save()
            print(f"[{C.utc_now()}] {ds}: scan {payload['scans'][ds]['seconds']:.0f}s", flush=True)
        plan: list[Optional[list[int]]] = [None] + [[b] for b in range(1, NUM_BLOCKS + 1)]
        if not args.no_triples:
            from isogauss_hf.analysis import SCORES

            triples = [auto_pick(payload["scans"][ds]["scores"][n], s.lower_is_safer, 3) for n, s in SCORES.items()]
            triples += [payload["hand_picked"][ds]["3"]] + payload["random_picks"]
            plan += [t for i, t in enumerate(triples) if t not in triples[:i]]
        for layers in plan:
            key = T2.run_key(ds, layers, args.rule if layers else None)
            if key in payload["runs"]:
                continue
            if args.time_limit_s is not None and time.perf_counter() - started > args.time_limit_s:
                print(f"time limit reached; {key} and later runs not started (rerun to resume)", flush=True)
                save()
                return
            payload["runs"][key] = finetune(ds, layers, args, data, factory)
            save()
            rec = payload["runs"][key]
            print(f"[{C.utc_now()}] {key}: acc {100 * rec['test_accuracy']:.2f}% ({rec['train_seconds']:.0f}s)",
                  flush=True)
    save()
    print(f"recommended score: {payload['analysis']['recommended_score']}  ({path})")


if __name__ == "__main__":
    main()
