"""Shared runner of the MiniLM-L6 experiments (Table 2 analogue with baselines, learning curves, attempts).

One *variant* of one run is a string:

* ``dense`` — plain fine-tuning;
* ``drop`` / ``lowrank`` / ``frozen`` — the baselines of :mod:`isogauss_hf.baselines`;
* ``RULE/NOISE`` — Gaussian blocks, e.g. ``gdu/seeded``, ``wdu/resample``, ``backprop/seeded``;

optionally followed by ``+option`` parts: ``+dlr=X`` (distribution lr for GDU/WDU), ``+slr=X`` (the
optimizer's lr for the statistics under ``backprop``; default the encoder lr), ``+std`` (input
standardization), ``+calib=N`` (N steps of :func:`isogauss_hf.calibrate.calibrate_statistics`: each
converted block fits the dense block's outputs on 512 training texts before fine-tuning), ``+kd=T``
(logit distillation at temperature T from the dense model fine-tuned with the same seed, ``scripts/_distill.py``;
also ``dense+kd=T``). Every run is fine-tuned by the transformers ``Trainer`` (AdamW; a separate lr for the
new classification head) and scored on the test split with a Wilson 95 % interval.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from typing import Any, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _repro_common as C  # noqa: E402


@dataclasses.dataclass
class Budget:
    train_size: int
    test_size: int
    max_length: int = 64
    batch_size: int = 32
    epochs: float = 1.0
    lr: float = 1e-4
    head_lr: float = 1e-3
    warmup: float = 0.1
    num_samples: int = 3


@dataclasses.dataclass
class Data:
    name: str
    train: Any
    test: Any
    labels: list[str]
    tokenizer: Any
    majority: float


def load_data(name: str, budget: Budget, seed: int = 0) -> Data:
    """Seeded subsets of the fixed stratified splits of ``bbc_news`` / ``tweets``, tokenized."""
    from transformers import AutoTokenizer

    from isogauss_hf.tasks import load_bbc_news, load_tweets, minilm_model_dir

    dd = load_bbc_news() if name == "bbc_news" else load_tweets()  # bbc "text" = headline + body
    train = dd["train"].shuffle(seed=1000).select(range(min(budget.train_size, len(dd["train"]))))
    test = dd["test"].shuffle(seed=2000).select(range(min(budget.test_size, len(dd["test"]))))
    tok = AutoTokenizer.from_pretrained(str(minilm_model_dir()))

    def enc(batch):
        return tok(batch["text"], truncation=True, max_length=budget.max_length)

    keep = ("input_ids", "attention_mask", "token_type_ids", "label")
    train, test = (ds.map(enc, batched=True) for ds in (train, test))
    train, test = (ds.select_columns([c for c in keep if c in ds.column_names]) for ds in (train, test))
    names = dd["train"].features["label"].names
    from isogauss_hf.evaluation import majority_rate

    return Data(name, train, test, names, tok, majority_rate(list(test["label"]))[0])


def parse_variant(variant: str) -> tuple[str, dict[str, Any]]:
    base, *opts = variant.split("+")
    options: dict[str, Any] = {}
    for o in opts:
        key, _, value = o.partition("=")
        options[key] = float(value) if value else True
    return base, options


def build(variant: str, layers: Optional[list[int]], data: Data, seed: int, budget: Budget):
    """The model of one variant, its callbacks and its parameter report."""
    from transformers import AutoModelForSequenceClassification

    from isogauss_hf import IsoGaussCallback, IsoGaussConfig, get_isogauss_model
    from isogauss_hf.baselines import prepare_baseline
    from isogauss_hf.tasks import minilm_model_dir

    C.seed_everything(seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(minilm_model_dir()), num_labels=len(data.labels), id2label=dict(enumerate(data.labels)),
        label2id={n: i for i, n in enumerate(data.labels)})
    base, options = parse_variant(variant)
    n = sum(p.numel() for p in model.parameters())
    report = {"dense_model_parameters": n, "isogauss_model_parameters": n, "replaced_weights": 0,
              "gaussian_parameters": 0}
    if base == "dense":  # also dense+kd=T (distilled from the dense model of the same seed)
        return model, [], report
    if base in ("drop", "lowrank", "frozen"):
        run = prepare_baseline(base, model, layers, IsoGaussConfig(layers=layers, noise="seeded", seed=seed,
                                                                   num_samples=budget.num_samples))
        return run.model, ([IsoGaussCallback()] if run.needs_isogauss_callback else []), _short(run.report)
    rule, noise = base.split("/")
    cfg = IsoGaussConfig(layers=layers, rule=rule, noise=noise, seed=seed, num_samples=budget.num_samples,
                         standardize=bool(options.get("std", False)),
                         distribution_lr=options.get("dlr"))
    steps = int(options.get("calib", 0))
    if steps:  # the library's calibration: each converted block fits the dense block's outputs first
        from isogauss_hf.calibrate import calibrate_statistics, keep_dense_units

        units = keep_dense_units(model, cfg)
        model = get_isogauss_model(model, cfg)
        calibrate_statistics(model, units, calibration_batches(data, seed), steps=steps, lr=3e-3, progress=False)
    else:
        model = get_isogauss_model(model, cfg)
    return model, [IsoGaussCallback()], _short(model.parameter_report())


def calibration_batches(data: Data, seed: int, count: int = 512, batch_size: int = 32) -> list[dict]:
    """``count`` training texts (seeded) as padded input batches, without labels."""
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(data.tokenizer)
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(data.train), generator=g)[:count].tolist()
    rows = [{k: v for k, v in data.train[i].items() if k != "label"} for i in idx]
    return [collate(rows[i:i + batch_size]) for i in range(0, len(rows), batch_size)]


def _short(rep: dict) -> dict:
    return {k: rep[k] for k in ("dense_model_parameters", "isogauss_model_parameters", "replaced_weights",
                                "gaussian_parameters") if k in rep}


@torch.no_grad()
def evaluate(model, data: Data, batch_size: int = 64) -> dict[str, Any]:
    """Accuracy with a Wilson 95 % interval; an IsoGaussModel averages its resample draws."""
    from isogauss_hf.evaluation import accuracy_summary

    order = sorted(range(len(data.test)), key=lambda i: len(data.test[i]["input_ids"]))  # little padding
    preds = split_logits(model, data.test, data.tokenizer, order, batch_size).argmax(-1).tolist()
    return accuracy_summary(preds, [data.test[i]["label"] for i in order]).to_dict()


@torch.no_grad()
def split_logits(model, split, tokenizer, order: Optional[list[int]] = None, batch_size: int = 64) -> torch.Tensor:
    """The model's logits (eval mode, padded batches) on the rows of ``split`` in ``order`` (default: as stored)."""
    model.eval()
    order = list(range(len(split))) if order is None else order
    out = []
    for start in range(0, len(order), batch_size):
        rows = [split[i] for i in order[start:start + batch_size]]
        batch = tokenizer.pad([{k: v for k, v in r.items() if k != "label"} for r in rows], return_tensors="pt")
        out.append(model(**batch).logits.float())
    return torch.cat(out)


def _teacher(data: Data, seed: int, budget: Budget) -> dict[str, Any]:
    """The dense run of this seed (the table's ``dense`` cell) and its logits on the training split."""
    model, rec = fit("dense", None, data, seed, budget)
    return {"logits": split_logits(model, data.train, data.tokenizer).tolist(), "accuracy": rec["accuracy"]["accuracy"]}


def train_eval(variant: str, layers: Optional[list[int]], data: Data, seed: int, budget: Budget,
               curve_every: Optional[int] = None) -> dict[str, Any]:
    """Build, fine-tune and evaluate one run; ``curve_every`` also evaluates every that many steps."""
    return fit(variant, layers, data, seed, budget, curve_every)[1]


def fit(variant: str, layers: Optional[list[int]], data: Data, seed: int, budget: Budget,
        curve_every: Optional[int] = None) -> tuple[Any, dict[str, Any]]:
    """:func:`train_eval` that also returns the fine-tuned model."""
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments

    t_build = time.perf_counter()
    model, callbacks, report = build(variant, layers, data, seed, budget)
    build_s = time.perf_counter() - t_build
    _, options = parse_variant(variant)
    stat_names = {"row_mean", "row_std", "col_mean", "col_std"}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    head = [p for n, p in named if "classifier" in n]
    stats = [p for n, p in named if n.rsplit(".", 1)[-1] in stat_names]  # backprop rule: the statistics
    rest = [p for n, p in named if "classifier" not in n and n.rsplit(".", 1)[-1] not in stat_names]
    # group 0 carries the encoder lr (IsoGaussCallback reads param_groups[0] for GDU/WDU)
    groups = [{"params": rest, "lr": budget.lr}, {"params": head, "lr": budget.head_lr}]
    if stats:
        groups.append({"params": stats, "lr": float(options.get("slr", budget.lr))})
    optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
    curve: list[dict[str, Any]] = []

    class Curve(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if curve_every and state.global_step % curve_every == 0:
                acc = evaluate(model, data)
                curve.append({"step": state.global_step, "accuracy": acc["accuracy"]})
                model.train()

    targs = TrainingArguments(
        output_dir=os.path.join("/tmp", "isogauss-runs", f"{data.name}-{variant}-{seed}"),
        per_device_train_batch_size=budget.batch_size, num_train_epochs=budget.epochs, learning_rate=budget.lr,
        lr_scheduler_type="linear", warmup_steps=budget.warmup, weight_decay=0.0, seed=seed, data_seed=seed,
        save_strategy="no", eval_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True,
        use_cpu=True, dataloader_num_workers=0, remove_unused_columns="kd" not in options)  # kd: teacher column
    collate, train, kd, extra = DataCollatorWithPadding(data.tokenizer), data.train, {}, {}
    if "kd" in options:  # distillation from the dense model of this seed (scripts/_distill.py)
        import _distill as D

        teacher = D.cached(D.cache_path(data, seed, budget), lambda: _teacher(data, seed, budget))
        train = data.train.add_column(D.COLUMN, teacher["logits"])
        collate, trainer_cls = D.collator(collate), D.KDTrainer
        kd = {"temperature": float(options["kd"])}
        extra = {"teacher_accuracy": teacher["accuracy"], "kd_alpha": D.ALPHA}
    else:
        trainer_cls = Trainer
    trainer = trainer_cls(model=model, args=targs, train_dataset=train, data_collator=collate,
                          callbacks=callbacks + ([Curve()] if curve_every else []), optimizers=(optimizer, None), **kd)
    t0 = time.perf_counter()
    out = trainer.train()
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    summary = evaluate(model, data)
    eval_s = time.perf_counter() - t0
    return model, {"dataset": data.name, "variant": variant, "layers": list(layers or []), "seed": seed,
            "accuracy": summary, "majority_rate": data.majority, "train_loss": float(out.training_loss),
            "steps": int(out.global_step), "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
            "build_seconds": round(build_s, 1), "parameters": report, "curve": curve,
            "load_average": os.getloadavg()[0], **extra}
