"""Table 2 analogue on a real pretrained model available offline: MiniLM-L6 on BBC News and tweets.

The paper's Table 2 fine-tunes BERT-base (12 blocks) on Emotions / AG News / Yelp. Here the model is
the pretrained MiniLM-L6 (a 6-block BERT, hidden 384; ``isogauss_hf.tasks.minilm_model_dir()``) and
the data are the offline BBC News (5 classes) and tweet sentiment (3 classes) corpora. Each run
fine-tunes ``AutoModelForSequenceClassification`` with the transformers ``Trainer``; Gaussian runs
convert all six matrices (query, key, value, attention output, MLP in/out) of the chosen blocks with
``get_isogauss_model`` and learn their statistics with ``IsoGaussCallback`` (GDU or WDU, noise
'resample'). Evaluation averages the logits over ``num_samples`` weight draws (10, Table 9).

Hyperparameters (Table 9, BERT): AdamW, lr 2e-5 (also the distribution-step lr), batch 16, max length
128, weight decay 0. Budget deviations, all stored in the JSON and stated in the markdown: seeded
subsets of each corpus, 1 epoch, constant lr, one seed, and a separate lr for the freshly initialised
classification head (``--head-lr``, default 1e-3; 2e-5 cannot train a random head in the few dozen
steps a 2-core CPU allows).

    python scripts/reproduce_table2_minilm.py                 # results/table2_minilm.{json,md,png}
    python scripts/reproduce_table2_minilm.py --smoke         # seconds; writes under --out-dir
    python scripts/reproduce_table2_minilm.py --datasets tweets --rules gdu

Runs already in the JSON (same settings) are skipped, so an interrupted job resumes where it stopped.
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

NAME = "table2_minilm"
LAYER_SETS: list[list[int]] = [[1], [3], [5], [2, 4], [2, 4, 6]]
DATASETS = ("bbc_news", "tweets")
# Table 2 of the paper (BERT-base, 12 blocks, full datasets): context only, not comparable to MiniLM.
PAPER_TABLE2 = {
    "columns": ["base", "6", "9", "5,12", "8,12", "4,6,8", "5,7,9", "4,8,10,12", "2,4,6,8,10", "2,4,6,8,10,12"],
    "Emotions": [94.29, 94.13, 94.16, 94.11, 94.12, 94.10, 94.02, 94.08, 94.04, 93.99],
    "AG News": [94.79, 94.52, 94.27, 94.30, 94.31, 94.16, 94.22, 94.14, 93.98, 93.69],
    "Yelp Review": [88.78, 88.21, 88.18, 87.98, 87.80, 87.55, 87.41, 87.30, 86.82, 86.94],
}
DEFAULT_SIZES = {"bbc_news": (160, 96), "tweets": (480, 192)}
SMOKE_SIZES = {"bbc_news": (16, 8), "tweets": (16, 8)}


def load_dataset(name: str, train_size: int, test_size: int, seed: int):
    from isogauss_hf.tasks import load_bbc_news, load_tweets

    dd = load_bbc_news() if name == "bbc_news" else load_tweets()
    train = dd["train"].shuffle(seed=seed).select(range(min(train_size, len(dd["train"]))))
    test = dd["test"].shuffle(seed=seed + 1).select(range(min(test_size, len(dd["test"]))))
    names = dd["train"].features["label"].names
    labels = list(test["label"])
    majority = max(labels.count(c) for c in set(labels)) / max(len(labels), 1)
    return train, test, names, {"train_available": len(dd["train"]), "test_available": len(dd["test"]),
                                "test_majority_class_fraction": majority}


def run_one(dataset: str, layers: Optional[list[int]], rule: Optional[str], args, data) -> dict[str, Any]:
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer, TrainingArguments

    from isogauss_hf import IsoGaussCallback, IsoGaussConfig, get_isogauss_model
    from isogauss_hf.tasks import minilm_model_dir

    train, test, names, tokenizer = data
    C.seed_everything(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_model_dir()), num_labels=len(names),
        id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
    )
    report = None
    callbacks = []
    if layers:
        cfg = IsoGaussConfig(layers=list(layers), rule=rule, noise=args.noise, seed=args.seed,
                             num_samples=args.num_samples)
        model = get_isogauss_model(model, cfg)
        rep = model.parameter_report()
        report = {k: rep[k] for k in ("replaced_weights", "gaussian_parameters", "ratio", "num_matrices")}
        callbacks.append(IsoGaussCallback())
    head = [p for n, p in model.named_parameters() if "classifier" in n and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if "classifier" not in n and p.requires_grad]
    # Group 0 (the encoder) carries the Table 9 lr: IsoGaussCallback reads param_groups[0]["lr"].
    optimizer = torch.optim.AdamW([{"params": rest, "lr": args.lr}, {"params": head, "lr": args.head_lr}],
                                  weight_decay=0.0)
    targs = TrainingArguments(
        output_dir=os.path.join(args.work_dir, f"{dataset}-{C.layers_key(layers)}-{rule or 'dense'}"),
        per_device_train_batch_size=16, num_train_epochs=args.epochs, learning_rate=args.lr,
        lr_scheduler_type="constant", weight_decay=0.0, seed=args.seed, data_seed=args.seed,
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=True, dataloader_num_workers=0, train_sampling_strategy="group_by_length",
    )
    trainer = Trainer(model=model, args=targs, train_dataset=train, data_collator=DataCollatorWithPadding(tokenizer),
                      callbacks=callbacks, optimizers=(optimizer, None))
    t0 = time.perf_counter()
    out = trainer.train()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    acc = evaluate(model, test, tokenizer, batch_size=32)
    eval_s = time.perf_counter() - t0
    skipped = 0
    if layers:
        skipped = sum(layer.skipped_steps for layer in model.isogauss_layers().values())
    return {
        "dataset": dataset, "layers": list(layers or []), "rule": rule, "test_accuracy": acc,
        "train_loss": float(out.training_loss), "steps": int(out.global_step), "train_seconds": train_s,
        "eval_seconds": eval_s, "num_samples": args.num_samples if layers else 1, "parameters": report,
        "skipped_layer_steps": skipped,
    }


@torch.no_grad()
def evaluate(model, test, tokenizer, batch_size: int = 32) -> float:
    """Accuracy; an IsoGaussModel in eval mode averages logits over its ``num_samples`` draws."""
    from _minilm import split_logits

    order = sorted(range(len(test)), key=lambda i: len(test[i]["input_ids"]))  # little padding
    if not order:
        return 0.0
    preds = split_logits(model, test, tokenizer, order, batch_size).argmax(-1)
    return int((preds == torch.tensor([test[i]["label"] for i in order])).sum()) / len(order)


def settings_of(args, dataset: str) -> dict[str, Any]:
    return {"train_size": args.sizes[dataset][0], "test_size": args.sizes[dataset][1], "epochs": args.epochs,
            "lr": args.lr, "head_lr": args.head_lr, "num_samples": args.num_samples, "max_length": args.max_length,
            "seed": args.seed, "batch_size": 16, **({"noise": args.noise} if args.noise != "resample" else {})}


def write_outputs(payload: dict[str, Any], out_dir: str, name: str, png: bool = True) -> None:
    """JSON and markdown; the PNG too when ``png`` (plotting costs seconds on a loaded machine)."""
    C.write_outputs(os.path.join(out_dir, name), payload, markdown, plot if png else None)


def _cols() -> list[tuple[str, Optional[list[int]], Optional[str]]]:
    cols = [("base", None, None)]
    for rule in ("gdu", "wdu"):
        for ls in LAYER_SETS:
            cols.append((f"{C.layers_key(ls)} {rule.upper()}", ls, rule))
    return cols


def run_key(dataset: str, layers: Optional[list[int]], rule: Optional[str]) -> str:
    return f"{dataset}|{C.layers_key(layers)}|{rule or 'dense'}"


def markdown(payload: dict[str, Any]) -> str:
    runs = payload["runs"]
    out = ["# Table 2 analogue: MiniLM-L6 (6-block BERT, hidden 384) on BBC News and tweets\n",
           "Commands: " + ", ".join(f"`{c}`" for c in payload.get("commands", [payload.get("command", "")])) + "  ",
           f"Measured {payload['updated']} on {payload['environment']['platform']} "
           f"(torch {payload['environment']['torch']}, {payload['environment']['torch_threads']} thread(s)).\n",
           "Test accuracy (%), one seed; 'majority class' is the accuracy of always predicting the most frequent "
           "test label (reference). 'base' is dense fine-tuning; a column `k GDU` / `k WDU` converts all six "
           f"matrices of encoder block(s) k (1-based) to Gaussian layers learned by that rule (noise "
           f"'{payload['settings_common'].get('noise', 'resample')}'), "
           f"evaluated with logits averaged over {payload['settings_common']['num_samples']} weight draws.\n"]
    cols = _cols()
    header = ["dataset (train/test examples)", "majority class"] + [c[0] for c in cols]
    rows = []
    for ds in payload["datasets"]:
        s = payload["settings"].get(ds)
        if s is None:
            continue
        maj = s.get("test_majority_class_fraction")
        cells = [f"{ds} ({s['train_size']}/{s['test_size']})", "-" if maj is None else f"{100 * maj:.2f}"]
        for _, ls, rule in cols:
            r = runs.get(run_key(ds, ls, rule))
            cells.append(f"{100 * r['test_accuracy']:.2f}" if r else "not run")
        rows.append(cells)
    out.append(C.md_table(header, rows))
    out.append("\nGaussian statistics vs dense weights of the converted matrices (from `parameter_report()`):\n")
    prow = []
    for ls in LAYER_SETS:
        r = next((v for v in runs.values() if v["layers"] == ls and v.get("parameters")), None)
        if r:
            p = r["parameters"]
            prow.append([C.layers_key(ls), f"{p['replaced_weights']:,}", f"{p['gaussian_parameters']:,}",
                         f"{100 * p['ratio']:.2f}%"])
    out.append(C.md_table(["blocks", "dense weights", "Gaussian statistics", "ratio"], prow))
    out.append("\nBudget (measured): " + "; ".join(
        f"{ds}: {sum(r['train_seconds'] + r['eval_seconds'] for r in runs.values() if r['dataset'] == ds):.0f} s "
        f"for {sum(1 for r in runs.values() if r['dataset'] == ds)} runs" for ds in payload["datasets"]) + ".\n")
    sc = payload["settings_common"]
    out.append(
        f"\nSettings: AdamW lr {sc['lr']} (encoder, Gaussian distribution step), head lr {sc['head_lr']} (new "
        f"classifier; deviation for the CPU budget), batch 16, max length {sc['max_length']}, weight decay 0, "
        f"constant lr, {sc['epochs']} epoch(s), seed {sc['seed']}, {sc['num_samples']} weight draws averaged at evaluation "
        "(Table 9: 10), seeded random subsets of the stratified "
        "80/20 splits of `load_bbc_news()` / `load_tweets()`. Deviations from the paper's protocol: smaller model, "
        "other datasets, small subsets (BBC News: 10 optimizer steps), one epoch, one seed, head lr, fewer evaluation draws "
        "when below 10: the numbers are an analogue, not a reproduction.\n")
    out.append("\nPaper, Table 2 (BERT-base, 12 blocks, full datasets; context only, not comparable):\n")
    pt = PAPER_TABLE2
    out.append(C.md_table(["dataset (paper)"] + pt["columns"],
                          [[k] + [f"{v:.2f}" for v in pt[k]] for k in ("Emotions", "AG News", "Yelp Review")]))
    return "\n".join(out)


def plot(payload: dict[str, Any], path: str) -> None:
    pyplot = C.plt()
    fig, axes = pyplot.subplots(1, len(payload["datasets"]), figsize=(6 * len(payload["datasets"]), 4), squeeze=False)
    for ax, ds in zip(axes[0], payload["datasets"]):
        base = payload["runs"].get(run_key(ds, None, None))
        labels = [C.layers_key(ls) for ls in LAYER_SETS]
        xs = range(len(LAYER_SETS))
        for off, rule in ((-0.2, "gdu"), (0.2, "wdu")):
            vals = [payload["runs"].get(run_key(ds, ls, rule)) for ls in LAYER_SETS]
            ax.bar([x + off for x in xs], [100 * v["test_accuracy"] if v else 0 for v in vals], width=0.4,
                   label=rule.upper())
        if base:
            ax.axhline(100 * base["test_accuracy"], color="k", ls="--", label="dense (base)")
        ax.set_xticks(list(xs), labels)
        ax.set_xlabel("Gaussian encoder blocks (1-based)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"MiniLM-L6 on {ds}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    pyplot.close(fig)


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny subsets, 2 draws, base + one GDU run (seconds)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--rules", nargs="+", default=["gdu", "wdu"], choices=["gdu", "wdu"])
    parser.add_argument("--noise", default="resample", choices=["resample", "seeded"],
                        help="noise mode of the Gaussian layers ('seeded': one fixed draw, evaluated on it)")
    parser.add_argument("--train-size", type=int, default=None, help="training examples per dataset (default per dataset)")
    parser.add_argument("--test-size", type=int, default=None, help="test examples per dataset (default per dataset)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=2e-5, help="encoder and distribution-step lr (Table 9)")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="lr of the new classification head")
    parser.add_argument("--num-samples", type=int, default=10, help="weight draws averaged at evaluation (Table 9)")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--out-dir", default=C.RESULTS_DIR)
    parser.add_argument("--name", default=NAME, help="basename of the result files")
    parser.add_argument("--work-dir", default="/tmp/isogauss_table2_minilm")
    parser.add_argument("--report-only", action="store_true", help="rewrite the markdown and PNG from the JSON, run nothing")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.report_only:
        path = os.path.join(args.out_dir, f"{args.name}.json")
        if not os.path.isfile(path):
            raise SystemExit(f"--report-only: {path} does not exist; run the script without --report-only first")

        def refresh(p):  # fill in the majority-class reference of files written before it was recorded
            for ds, st in p.get("settings", {}).items():
                if "test_majority_class_fraction" not in st:
                    st.update(load_dataset(ds, st["train_size"], st["test_size"], seed=st["seed"])[3])
            if "commands" not in p:  # files written before per-dataset commands were recorded
                p["commands"] = [f"python scripts/reproduce_table2_minilm.py --datasets {ds} --num-samples "
                                 f"{p['settings_common']['num_samples']}" for ds in p.get("datasets", [])]
            return p

        C.locked_update(path, refresh, lambda p: write_outputs(p, args.out_dir, args.name))
        return
    sizes = SMOKE_SIZES if args.smoke else DEFAULT_SIZES
    args.sizes = {ds: (args.train_size or sizes[ds][0], args.test_size or sizes[ds][1]) for ds in DATASETS}
    layer_sets = LAYER_SETS[:1] if args.smoke else LAYER_SETS
    rules = ["gdu"] if args.smoke else args.rules
    if args.smoke:
        args.num_samples, args.max_length = 2, 32
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from isogauss_hf.tasks import minilm_model_dir, tokenize_classification

    hf_logging.set_verbosity_error()
    path = os.path.join(args.out_dir, f"{args.name}.json")
    common = {k: v for k, v in settings_of(args, args.datasets[0]).items() if k not in ("train_size", "test_size")}
    meta = {"name": args.name, "command": "python scripts/reproduce_table2_minilm.py " + " ".join(argv or sys.argv[1:]),
            "settings_common": common, "environment": C.environment(), "paper_table2_bert_context_only": PAPER_TABLE2}
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir()))
    for ds in args.datasets:
        train, test, names, avail = load_dataset(ds, *args.sizes[ds], seed=args.seed)
        settings = {**settings_of(args, ds), **avail}

        def update(payload, rec=None):
            # Several processes (one per dataset) may share the JSON: merge under a lock, keep the others' runs.
            if payload.get("settings_common") != common:
                payload = {"runs": {}, "settings": {}}
            if payload.get("settings", {}).get(ds) != settings:  # other sizes: this dataset's runs are stale
                payload["runs"] = {k: v for k, v in payload.get("runs", {}).items() if v["dataset"] != ds}
                payload.setdefault("settings", {})[ds] = settings
            payload.update(meta)
            payload["commands"] = sorted(set(payload.get("commands", [])) | {meta["command"]})
            payload["datasets"] = [d for d in DATASETS if d in payload["settings"]]
            if rec is not None:
                payload["runs"][run_key(ds, rec["layers"] or None, rec["rule"])] = rec
            payload["updated"] = C.utc_now()
            return payload

        payload = C.locked_update(path, update, lambda p: write_outputs(p, args.out_dir, args.name))
        train_t = tokenize_classification(train, tokenizer, max_length=args.max_length)
        test_t = tokenize_classification(test, tokenizer, max_length=args.max_length)
        data = (train_t, test_t, names, tokenizer)
        plan = [(None, None)] + [(ls, rule) for ls in layer_sets for rule in rules]
        for ls, rule in plan:
            key = run_key(ds, ls, rule)
            if key in payload["runs"]:
                continue
            rec = run_one(ds, ls, rule, args, data)
            payload = C.locked_update(path, lambda p: update(p, rec),
                                      lambda p: write_outputs(p, args.out_dir, args.name, png=False))
            print(f"[{C.utc_now()}] {key}: acc {100 * rec['test_accuracy']:.2f}% train {rec['train_seconds']:.0f}s "
                  f"eval {rec['eval_seconds']:.0f}s", flush=True)
    C.locked_update(path, lambda p: p, lambda p: write_outputs(p, args.out_dir, args.name, png=True))


if __name__ == "__main__":
    main()
