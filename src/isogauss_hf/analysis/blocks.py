"""The per-block calibration scan: Block Influence, and the loss when a block turns Gaussian or is removed.

:func:`scan_blocks` runs forward passes only, in eval mode under ``torch.no_grad``:

1. one dense pass over the calibration batches gives the dense task loss and, per block, the
   **Block Influence** ``1 - cos(input, output)`` of its hidden states, averaged over the tokens the
   attention mask keeps (all tokens without a mask); it also keeps each needed block output;
2. per scanned block ``b``, the **replacement** pass makes the block's matrices a seeded draw of their
   fitted statistics (``get_isogauss_model(model, IsoGaussConfig(layers=[b], noise="seeded"))`` on the
   model itself; the original modules are put back afterwards) and the **removal** pass lets the hidden
   states pass through block ``b`` unchanged. Both report the loss increase over the dense loss.

The blocks before ``b`` are not recomputed in step 2: their places in the block list temporarily hold
a pass-through, and block ``b - 1``'s place returns the output stored in step 1 (bit for bit what the
block computed). So the whole scan costs exactly ``blocks + 1`` dense passes of block compute
(``B`` for step 1, ``B - b + 1`` and ``B - b`` for block ``b``), for ``1 + 2 x scanned blocks``
model calls per batch. Removal by pass-through is what deleting the block from the block list does
(the next block receives this block's input); no copy of the model is made.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UsageError
from .calibration import HeadProbe, batch_size_of, sequence_of_batches, to_device
from .fit import DEFAULT_MAX_ELEMENTS
from .matrices import MatrixFit, block_fit_summary, fit_model, unwrap

__all__ = ["MEASURES", "BlockScan", "ScanResult", "scan_blocks", "find_blocks", "default_loss"]

#: What step 2 can measure; ``influence`` comes with the dense pass.
MEASURES = ("influence", "replacement", "removal")

LossFn = Callable[[nn.Module, dict], torch.Tensor]


@dataclass
class BlockScan:
    """Scan results of one block (1-based); losses are increases over the dense calibration loss."""

    block: int
    block_influence: Optional[float] = None
    replacement_loss: Optional[float] = None
    removal_loss: Optional[float] = None
    fit: dict[str, float] = field(default_factory=dict)  # mean fit metrics over the block's matrices


@dataclass
class ScanResult:
    """Everything :func:`scan_blocks` measured (``to_dict`` is JSON-ready)."""

    num_blocks: int
    base_loss: Optional[float]
    blocks: list[BlockScan]
    matrices: list[MatrixFit]
    meta: dict[str, Any] = field(default_factory=dict)

    def block(self, index: int) -> BlockScan:
        for b in self.blocks:
            if b.block == index:
                return b
        raise KeyError(index)

    def to_dict(self) -> dict[str, Any]:
        return {"num_blocks": self.num_blocks, "base_loss": self.base_loss,
                "blocks": [asdict(b) for b in self.blocks], "matrices": [m.to_dict() for m in self.matrices],
                "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ScanResult":
        matrices = [MatrixFit(m["name"], m["block"], m["kind"], tuple(m["shape"]), dict(m["metrics"]))
                    for m in data.get("matrices", [])]
        return cls(int(data["num_blocks"]), data.get("base_loss"), [BlockScan(**b) for b in data["blocks"]],
                   matrices, dict(data.get("meta", {})))


def find_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """Name and ``ModuleList`` of the transformer blocks of a mapped architecture."""
    from ..mapping import ARCHITECTURES, _find_block_list

    base = unwrap(model)
    model_type = getattr(getattr(base, "config", None), "model_type", None)
    spec = ARCHITECTURES.get(model_type or "")
    if spec is None:
        known = ", ".join(sorted(ARCHITECTURES))
        raise UsageError(f"the block scan needs the transformer blocks, and model_type {model_type!r} "
                         f"({type(base).__name__}) has no layer map; known architectures: {known}")
    try:
        return _find_block_list(base, spec)
    except ValueError as e:
        raise UsageError(str(e)) from None


def default_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """``model(**batch).loss`` (the task loss transformers computes from the batch's labels)."""
    out = model(**batch)
    loss = out.get("loss") if isinstance(out, dict) else getattr(out, "loss", None)
    if loss is None:
        raise UsageError("the model returned no loss for the calibration batches; they need labels")
    return loss


def _hidden_in(args: tuple, kwargs: dict) -> torch.Tensor:
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, torch.Tensor):
        raise UsageError("a block was called without its hidden states as first argument or `hidden_states=`")
    return hidden


def _hidden_out(output: Any) -> torch.Tensor:
    hidden = output[0] if isinstance(output, (tuple, list)) else output
    if not isinstance(hidden, torch.Tensor):
        raise UsageError(f"a block returned {type(output).__name__}; expected a tensor or a tuple starting with one")
    return hidden


class _PassThrough(nn.Module):
    """Stands in for a block: returns ``value`` when set (a stored block output), else its input."""

    def __init__(self, tuple_len: Optional[int]) -> None:
        super().__init__()
        self.tuple_len = tuple_len
        self.value: Optional[torch.Tensor] = None

    def forward(self, *args, **kwargs):
        hidden = self.value if self.value is not None else _hidden_in(args, kwargs)
        return hidden if self.tuple_len is None else (hidden,) + (None,) * (self.tuple_len - 1)


class _Runner:
    """Loss passes over the calibration batches with the scan's progress bar."""

    def __init__(self, model, batches, loss_fn, bar, use_cache_off: bool) -> None:
        self.model, self.batches, self.loss_fn, self.bar = model, batches, loss_fn, bar
        self.extra = {"use_cache": False} if use_cache_off else {}
        self.calls = 0

    def mean_loss(self, before_batch: Optional[Callable[[int, dict], None]] = None, desc: str = "") -> float:
        total, count = 0.0, 0
        if self.bar is not None and desc:
            self.bar.set_postfix_str(desc)
        for i, batch in enumerate(self.batches):
            if before_batch is not None:
                before_batch(i, batch)
            n = batch_size_of(batch)
            total += float(self.loss_fn(self.model, {**batch, **self.extra})) * n
            count += n
            self.calls += 1
            if self.bar is not None:
                self.bar.update(1)
        return total / max(count, 1)


def _swap_to_gaussian(model: nn.Module, block: int, targets, seed: int) -> list[tuple[str, nn.Module]]:
    """Make block ``block``'s matrices seeded Gaussian layers in place; the original modules, to put back."""
    from .. import IsoGaussConfig, get_isogauss_model
    from ..mapping import resolve_targets

    config = IsoGaussConfig(layers=[block], target_modules=list(targets) if targets else None, noise="seeded",
                            seed=seed)
    originals = [(t.name, model.get_submodule(t.name)) for t in resolve_targets(model, config)]
    get_isogauss_model(model, config)  # converts in place; the wrapper itself is not needed
    for name, _ in originals:
        model.get_submodule(name).eval()
    return originals


def _put_back(model: nn.Module, originals: list[tuple[str, nn.Module]]) -> None:
    for name, module in originals:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, module)


def scan_blocks(model: nn.Module, batches: Optional[Sequence[dict]] = None, *, layers: Optional[Sequence[int]] = None,
                targets: Optional[Sequence[str]] = None, seed: int = 0, loss_fn: Optional[LossFn] = None,
                probe_head: bool = False, measure: Sequence[str] = MEASURES, fit: bool = True,
                max_elements: Optional[int] = DEFAULT_MAX_ELEMENTS, progress: bool = True) -> ScanResult:
    """Fit metrics of every matrix and, given ``batches``, the calibration scan of each block.

    ``batches``: collated calibration batches with labels (:func:`make_calibration_batches`); ``None``
    measures the fit metrics only. ``layers``: 1-based blocks to scan (default all); ``targets``: the
    matrices per block (canonical names, default all six). ``seed``: seed of the Gaussian draws (as
    ``IsoGaussConfig.seed``, so the draw is the one a seeded fine-tuning run starts from). ``loss_fn``
    (model, batch) -> mean loss, default ``model(**batch).loss``. ``probe_head``: fit the classification
    head on the dense pass first (:class:`~isogauss_hf.analysis.calibration.HeadProbe`; for a new head).
    ``measure``: a subset of :data:`MEASURES`. The model's weights and modules are the same afterwards.
    """
    unknown = [m for m in measure if m not in MEASURES]
    if unknown:
        raise UsageError(f"measure {unknown} unknown; choose from {', '.join(MEASURES)}")
    base = unwrap(model)
    list_name, block_list = find_blocks(base)
    num_blocks = len(block_list)
    scan = sorted(set(layers)) if layers is not None else list(range(1, num_blocks + 1))
    bad = [b for b in scan if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= num_blocks]
    if bad or not scan:
        raise UsageError(f"layers {bad or list(layers or [])} out of range: {type(base).__name__} has {num_blocks} "
                         f"blocks (1-based indices 1..{num_blocks})")
    started = time.perf_counter()
    fits = fit_model(base, layers=scan, targets=targets, max_elements=max_elements, seed=seed,
                     progress=progress) if fit else []
    summary = block_fit_summary(fits)
    rows = {b: BlockScan(b, fit=summary.get(b, {})) for b in scan}
    meta: dict[str, Any] = {"blocks_scanned": scan, "targets": list(targets) if targets else "all", "seed": seed,
                            "block_list": list_name, "removal": "pass-through (hidden states skip the block)"}
    batches = sequence_of_batches(batches)
    base_loss = None
    if batches:
        base_loss = _calibration_scan(base, block_list, scan, batches, rows, meta, targets=targets, seed=seed,
                                      loss_fn=loss_fn or default_loss, probe_head=probe_head, measure=measure,
                                      progress=progress)
    meta["seconds"] = round(time.perf_counter() - started, 3)
    return ScanResult(num_blocks, base_loss, [rows[b] for b in scan], fits, meta)


def _calibration_scan(model, block_list, scan, batches, rows, meta, *, targets, seed, loss_fn, probe_head, measure,
                      progress) -> float:
    from .calibration import model_input_names

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    batches = [to_device(b, device) for b in batches]
    num_blocks = len(block_list)
    step2 = [m for m in ("replacement", "removal") if m in measure]
    need = {b - 1 for b in scan if b >= 2} if step2 else set()  # 1-based blocks whose outputs are replayed
    cache: dict[int, list[torch.Tensor]] = {b: [] for b in need}
    influence = {b: [0.0, 0.0] for b in scan}
    structure: dict[int, Optional[int]] = {}
    current: dict[str, Any] = {}
    names = model_input_names(model) or set()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(batches) * (1 + len(step2) * len(scan)), desc="block scan", unit="pass")
    runner = _Runner(model, batches, loss_fn, bar, use_cache_off="use_cache" in names)

    def make_hook(b: int):
        def hook(module, args, kwargs, output):
            y = _hidden_out(output)
            structure[b] = len(output) if isinstance(output, (tuple, list)) else None
            if b in influence:
                x = _hidden_in(args, kwargs)
                cos = F.cosine_similarity(x.to(torch.float64), y.to(torch.float64), dim=-1)
                mask = current.get("mask")
                if mask is None or tuple(mask.shape) != tuple(cos.shape):
                    mask = torch.ones_like(cos)
                mask = mask.to(cos.dtype)
                influence[b][0] += float((cos * mask).sum())
                influence[b][1] += float(mask.sum())
            if b in cache:
                cache[b].append(y.detach().clone())
        return hook

    was_training = model.training
    model.eval()
    handles = [block_list[b - 1].register_forward_hook(make_hook(b), with_kwargs=True)
               for b in range(1, num_blocks + 1)]
    probe = HeadProbe(model) if probe_head else None
    if probe is not None:
        probe.attach()

    def dense_batch(i, batch):
        current["mask"] = batch.get("attention_mask")
        if probe is not None:
            probe.add_labels(batch)

    try:
        with torch.no_grad():
            try:
                base_loss = runner.mean_loss(dense_batch, desc="dense")
            finally:
                for h in handles:
                    h.remove()
                current.clear()
            if probe is not None:
                probed = probe.fit()
                meta["head"] = probe.status
                if probed is not None:
                    base_loss = probed
            for b in scan:
                total, count = influence[b]
                rows[b].block_influence = 1.0 - total / count if count else None
            for b in scan:
                if "replacement" in step2:
                    originals = _swap_to_gaussian(model, b, targets, seed)
                    try:
                        loss = _tail_pass(runner, block_list, b, cache, structure, f"block {b} Gaussian")
                    finally:
                        _put_back(model, originals)
                    rows[b].replacement_loss = loss - base_loss
                if "removal" in step2:
                    saved = block_list[b - 1]
                    block_list[b - 1] = _PassThrough(structure.get(b))
                    try:
                        loss = _tail_pass(runner, block_list, b, cache, structure, f"block {b} removed")
                    finally:
                        block_list[b - 1] = saved
                    rows[b].removal_loss = loss - base_loss
                cache.pop(b - 1, None)  # each stored output serves one scanned block
    finally:
        if probe is not None:
            probe.restore()
        model.train(was_training)
        if bar is not None:
            bar.close()
    per_block_calls = len(batches)
    block_forwards = per_block_calls * (num_blocks + sum(
        (num_blocks - b + 1 if "replacement" in step2 else 0) + (num_blocks - b if "removal" in step2 else 0)
        for b in scan))
    meta.update({"calibration_batches": len(batches), "calibration_examples": sum(batch_size_of(b) for b in batches),
                 "model_calls": runner.calls, "block_forwards": block_forwards,
                 "dense_pass_equivalents": round(block_forwards / (per_block_calls * num_blocks), 3),
                 "measured": ["influence"] + step2, "head": meta.get("head", "kept")})
    return base_loss


def _tail_pass(runner: _Runner, block_list: nn.ModuleList, b: int, cache, structure, desc: str) -> float:
    """Mean loss with blocks ``1 .. b-1`` replayed from the dense pass (not recomputed)."""
    saved = [block_list[i] for i in range(b - 1)]
    stand_ins = [_PassThrough(structure.get(i + 1)) for i in range(b - 1)]
    for i, stand_in in enumerate(stand_ins):
        block_list[i] = stand_in
    replay = stand_ins[-1] if stand_ins else None

    def before(i, batch):
        if replay is not None:
            replay.value = cache[b - 1][i]

    try:
        return runner.mean_loss(before, desc=desc)
    finally:
        for i, module in enumerate(saved):
            block_list[i] = module
