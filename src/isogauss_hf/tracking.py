"""``StatisticsLogger``: trajectories of the row/column statistics of Gaussian layers during training.

The paper's Figures 3-4 plot, for one layer, every row's and every column's mean and std over training
(GDU vs WDU; GDU with and without the input standardization of Appendix D). ``StatisticsLogger``
records exactly those vectors — ``row_mean``, ``row_std`` (length ``out_features``) and ``col_mean``,
``col_std`` (length ``in_features``) of every :class:`~isogauss_hf.layers.IsoGaussLayer` — every
``every`` optimizer steps, into a plain JSON-able dict.

Use it from any loop, or from a callback, after the distribution step of an optimizer step::

    logger = StatisticsLogger(every=50, rows=16, cols=16)
    logger.record(0, model)                       # initial state (always recorded)
    for step in range(1, num_steps + 1):
        ...                                        # forward, backward, distribution_step, optimizer.step
        logger.record(step, model)                 # records when step % every == 0
    logger.save("stats.json")

Recording only reads the buffers (no RNG, no draw, no autograd); the values are fp32 copies.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from .layers import IsoGaussLayer, iter_isogauss_layers

__all__ = ["StatisticsLogger", "LOG_FORMAT", "LOG_VERSION", "STAT_NAMES"]

LOG_FORMAT = "isogauss-statistics-log"
LOG_VERSION = 1
STAT_NAMES = IsoGaussLayer.STAT_NAMES

IndexSpec = Union[None, int, Sequence[int]]


def _check_index_spec(name: str, spec: IndexSpec) -> IndexSpec:
    if spec is None:
        return None
    if isinstance(spec, bool):
        raise ValueError(f"{name} must be None (all), a count >= 1 or a list of indices, got {spec!r}")
    if isinstance(spec, int):
        if spec < 1:
            raise ValueError(f"{name} must be None (all), a count >= 1 or a list of indices, got {spec!r}")
        return spec
    try:
        indices = [int(i) for i in spec]
    except TypeError:
        raise ValueError(f"{name} must be None (all), a count >= 1 or a list of indices, got {spec!r}") from None
    if not indices or any(i < 0 for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(f"{name} must list distinct non-negative indices, got {spec!r}")
    return indices


def _resolve_indices(spec: IndexSpec, size: int, what: str, layer: str) -> list[int]:
    """All indices (None), ``spec`` evenly spaced ones (int, first and last included), or the given list."""
    if spec is None or (isinstance(spec, int) and spec >= size):
        return list(range(size))
    if isinstance(spec, int):
        if spec == 1:
            return [0]
        return sorted({round(i * (size - 1) / (spec - 1)) for i in range(spec)})
    bad = [i for i in spec if i >= size]
    if bad:
        raise ValueError(f"{what} indices {bad} out of range for layer {layer!r} with {size} {what}s")
    return list(spec)


class StatisticsLogger:
    """Record per-row and per-column mean/std of every Gaussian layer every ``every`` optimizer steps.

    Args:
        every: record when ``step % every == 0`` (``record(..., force=True)`` records any step).
        rows: which rows (output features) to keep: None = all, an int k = k evenly spaced rows (first and
            last included), or a list of row indices (the same for every layer).
        cols: the same for columns (input features).
        layers: qualified layer names to record (as in ``IsoGaussModel.isogauss_layers()``); None = all.

    The recorded data (``to_dict()``) is JSON-able::

        {"format": "isogauss-statistics-log", "version": 1, "every": 50, "steps": [0, 50, ...],
         "layers": {"layers.2": {"shape": [128, 128], "rows": [...], "cols": [...],
                                  "row_mean": [[...], ...],  # one list per recorded step
                                  "row_std": ..., "col_mean": ..., "col_std": ...}}}
    """

    def __init__(
        self,
        every: int = 1,
        rows: IndexSpec = None,
        cols: IndexSpec = None,
        layers: Optional[Sequence[str]] = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1 (record every N optimizer steps), got {every!r}")
        self.every = every
        self.rows = _check_index_spec("rows", rows)
        self.cols = _check_index_spec("cols", cols)
        if layers is not None:
            if isinstance(layers, str):
                layers = [layers]
            layers = list(layers)
            if not layers or not all(isinstance(n, str) and n for n in layers):
                raise ValueError(f"layers must be a non-empty list of layer names or None, got {layers!r}")
        self.layers = layers
        self.steps: list[int] = []
        self.data: "OrderedDict[str, dict[str, Any]]" = OrderedDict()

    # -------------------------------------------------------------------------------------- recording
    def should_record(self, step: int) -> bool:
        """Whether :meth:`record` at ``step`` would record (a multiple of ``every``, not yet recorded)."""
        return int(step) % self.every == 0 and not (self.steps and self.steps[-1] == int(step))

    def _select(self, model: nn.Module) -> "OrderedDict[str, IsoGaussLayer]":
        found = OrderedDict(iter_isogauss_layers(model))
        if not found:
            raise ValueError("StatisticsLogger.record: the model has no Gaussian layers (IsoGaussLayer) to record")
        if self.layers is None:
            return found
        missing = [n for n in self.layers if n not in found]
        if missing:
            raise ValueError(f"StatisticsLogger: layer(s) {missing} not found; Gaussian layers: {list(found)}")
        return OrderedDict((n, found[n]) for n in self.layers)

    @torch.no_grad()
    def record(self, step: int, model: nn.Module, force: bool = False) -> bool:
        """Record the statistics of ``model``'s Gaussian layers at optimizer step ``step``.

        Returns True when recorded; False when ``step`` is not a multiple of ``every`` (unless ``force``)
        or was the step recorded last (a callback may fire twice for one step). Steps must not decrease.
        """
        step = int(step)
        if self.steps and step == self.steps[-1]:
            return False
        if not force and step % self.every:
            return False
        if self.steps and step < self.steps[-1]:
            raise ValueError(f"StatisticsLogger.record: step {step} is before the last recorded step {self.steps[-1]}")
        selected = self._select(model)
        for name, layer in selected.items():
            entry = self.data.get(name)
            shape = list(layer.matrix_shape)
            if entry is None:
                entry = {
                    "shape": shape,
                    "rows": _resolve_indices(self.rows, shape[0], "row", name),
                    "cols": _resolve_indices(self.cols, shape[1], "column", name),
                    "first_step_index": len(self.steps),
                    **{stat: [] for stat in STAT_NAMES},
                }
                self.data[name] = entry
            elif entry["shape"] != shape:
                raise ValueError(f"StatisticsLogger: layer {name!r} changed shape from {entry['shape']} to {shape}")
            for stat in STAT_NAMES:
                values = getattr(layer, stat).detach().to(device="cpu", dtype=torch.float32)
                idx = entry["rows"] if stat.startswith("row") else entry["cols"]
                entry[stat].append(values[idx].tolist())
        self.steps.append(step)
        return True

    # -------------------------------------------------------------------------------------- access
    def series(self, layer: str, stat: str) -> torch.Tensor:
        """Recorded values of ``stat`` of ``layer`` as a (recorded steps, selected rows/cols) tensor."""
        if stat not in STAT_NAMES:
            raise ValueError(f"stat {stat!r} unknown; valid: {list(STAT_NAMES)}")
        if layer not in self.data:
            raise ValueError(f"layer {layer!r} was not recorded; recorded: {list(self.data)}")
        return torch.tensor(self.data[layer][stat], dtype=torch.float32)

    def layer_steps(self, layer: str) -> list[int]:
        """The steps at which ``layer`` was recorded."""
        if layer not in self.data:
            raise ValueError(f"layer {layer!r} was not recorded; recorded: {list(self.data)}")
        return self.steps[self.data[layer]["first_step_index"]:]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able copy of everything recorded."""
        return {
            "format": LOG_FORMAT,
            "version": LOG_VERSION,
            "every": self.every,
            "steps": list(self.steps),
            "layers": json.loads(json.dumps(self.data)),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "StatisticsLogger":
        if data.get("format") != LOG_FORMAT:
            raise ValueError(f"not a statistics log: format {data.get('format')!r}, expected {LOG_FORMAT!r}")
        version = data.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version > LOG_VERSION:
            raise ValueError(f"statistics log version {version!r} unsupported; this isogauss-hf reads up to {LOG_VERSION}")
        logger = cls(every=int(data["every"]))
        logger.steps = [int(s) for s in data["steps"]]
        logger.data = OrderedDict((name, dict(entry)) for name, entry in data["layers"].items())
        return logger

    def save(self, path: Union[str, os.PathLike]) -> None:
        """Write :meth:`to_dict` as JSON to ``path``."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f)

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "StatisticsLogger":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"StatisticsLogger(every={self.every}, recorded_steps={len(self.steps)}, layers={list(self.data)})"
