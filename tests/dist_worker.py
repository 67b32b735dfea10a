"""Worker for tests/test_distributed.py: train a tiny Gaussian BERT with the Trainer.

Run under ``torchrun --nproc_per_node 2 tests/dist_worker.py OUT_DIR`` (gloo backend, CPU), or import
:func:`train` for the one-process reference over the combined batch. Each rank writes the final
statistics of every Gaussian layer to ``OUT_DIR/{rule}_rank{rank}.safetensors``.
"""

from __future__ import annotations

import os
import sys

import torch

from isogauss_hf import IsoGaussCallback, IsoGaussConfig, get_isogauss_model

RULES = ("gdu", "wdu", "backprop")
#: dL/dW is small at the Trainer's lr: GDU would move the statistics and WDU the refit weights by ~1e-6, below
#: float noise; a large distribution lr makes the comparison with the one-process run discriminating.
#: backprop: the statistics are parameters; the optimizer (and DDP's ordinary gradient sync) does the work.
DISTRIBUTION_LR = {"gdu": 10.0, "wdu": 10.0, "backprop": None}
STEPS = 3
PER_RANK_BATCH = 4
SEQ = 8


class TinyTexts(torch.utils.data.Dataset):
    """Deterministic token sequences with binary labels (example i depends on i only)."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(1000 + i)
        return {"input_ids": torch.randint(0, 100, (SEQ,), generator=g), "labels": torch.tensor(i % 2)}


def build_model(rule: str):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)  # same base weights in every process (no reliance on DDP's initial broadcast)
    cfg = BertConfig(
        num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64, vocab_size=100,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return get_isogauss_model(
        BertForSequenceClassification(cfg),
        IsoGaussConfig(rule=rule, noise="resample", seed=3, distribution_lr=DISTRIBUTION_LR[rule]),
    )


def train(rule: str, out_dir: str, batch_size: int, distributed: bool) -> dict[str, torch.Tensor]:
    """Train STEPS optimizer steps; return {layer name + '.' + statistic: tensor}."""
    from transformers import Trainer, TrainingArguments

    model = build_model(rule)
    # ddp_broadcast_buffers=False: DDP must not copy rank 0's statistics (buffers) over the others before each
    # forward, so equal statistics across ranks come from the callback alone. average_tokens_across_devices=False:
    # BERT's classification loss is a per-rank mean that ignores num_items_in_batch, and the Trainer would
    # otherwise multiply it by the number of processes (dense parameters included).
    kwargs = dict(ddp_backend="gloo", ddp_broadcast_buffers=False, average_tokens_across_devices=False) \
        if distributed else {}
    args = TrainingArguments(
        output_dir=os.path.join(out_dir, f"run_{rule}"),
        max_steps=STEPS,
        per_device_train_batch_size=batch_size,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_strategy="no",
        seed=0,
        **kwargs,
    )
    Trainer(model=model, args=args, train_dataset=TinyTexts(), callbacks=[IsoGaussCallback()]).train()
    return {
        f"{name}.{stat}": getattr(layer, stat).detach().clone()
        for name, layer in model.isogauss_layers().items()
        for stat in layer.STAT_NAMES
    }


def main(out_dir: str) -> None:
    from safetensors.torch import save_file

    from isogauss_hf import distributed as D

    rank = int(os.environ.get("RANK", "0"))
    for rule in RULES:
        stats = train(rule, out_dir, PER_RANK_BATCH, distributed=True)
        save_file(stats, os.path.join(out_dir, f"{rule}_rank{rank}.safetensors"))
    # check_rank_consistency: passes on equal statistics, names the layer when one rank differs.
    import json

    model = build_model("gdu")
    report = {"equal_ok": D.check_rank_consistency(model) == 0.0}
    name, layer = next(iter(model.isogauss_layers().items()))
    if rank == 1:
        layer.row_std[0] += 1e-3
    try:
        D.check_rank_consistency(model)
        report["divergence_error"] = None
    except D.RankDivergenceError as e:
        report["divergence_error"] = str(e)
    report["first_layer"] = name
    with open(os.path.join(out_dir, f"consistency_rank{rank}.json"), "w") as f:
        json.dump(report, f)
    # Control run: without the gradient all-reduce the ranks must drift apart (shows the check can fail).
    D.all_reduce_mean_ = lambda tensors, group=None: None
    stats = train("wdu", out_dir, PER_RANK_BATCH, distributed=True)
    save_file(stats, os.path.join(out_dir, f"noreduce_rank{rank}.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
