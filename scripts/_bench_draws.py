"""Draw and inference timings of one Gaussian matrix, for ``bench_layer.py`` (``--draws``).

* **draw** — one seeded (n, m) weight from its statistics, noise + Eq. (2): ``legacy`` is the generator of
  checkpoint formats 1-2 (``torch.randn`` in 256-row blocks on a thread pool, then Eq. 2; what every draw
  cost before the portable generator), ``portable`` the Philox4x32-10 / box-muller-v1 generator on the
  CPU kernels (numba), ``portable-torch`` the same numbers from its torch reference (``--draws-reference``;
  the path of a user without numba). The noise alone of each is timed too.
* **inference** — ``y = x W^T + b`` for ``--eval-tokens`` rows outside training: ``dense`` ``nn.Linear``,
  ``gaussian`` the default path (tile by tile, nothing kept), ``gaussian-kept`` with the draw kept.

Variants are interleaved and rotated, as the training rows of bench_layer.py.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch import nn

from isogauss_hf.functional import RowColStats
from isogauss_hf.layers import IsoGaussLinear
from isogauss_hf.noise import derive_seed, get_noise_generator, set_noise_backend, standard_normal
from isogauss_hf.settings import DEFAULT_NOISE_GENERATOR, LEGACY_NOISE_GENERATOR


def _interleaved(variants: dict[str, Callable[[], object]], warmup: int, repeats: int) -> dict[str, list[float]]:
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            t0 = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t0)
    return times


def _with_backend(backend: str, fn: Callable[[], object]) -> Callable[[], object]:
    def run():
        set_noise_backend(backend)
        try:
            return fn()
        finally:
            set_noise_backend("auto")

    return run


def draw_variants(out_f: int, in_f: int, reference: bool) -> dict[str, Callable[[], object]]:
    v = standard_normal(7, 4, max(out_f, in_f))
    stats = RowColStats(v[0, :out_f] * 0.02, v[1, :out_f].abs() * 0.04, v[2, :in_f] * 0.02, v[3, :in_f].abs() * 0.04)
    seed = derive_seed(1, "fixed", 0)
    legacy, portable = get_noise_generator(LEGACY_NOISE_GENERATOR), get_noise_generator(DEFAULT_NOISE_GENERATOR)
    out = {
        "draw legacy": lambda: legacy.draw_rows(stats, seed, 0, out_f),
        "draw portable": lambda: portable.draw_rows(stats, seed, 0, out_f),
        "noise legacy": lambda: legacy.normal(seed, out_f, in_f),
        "noise portable": lambda: portable.normal(seed, out_f, in_f),
    }
    if reference:
        out["draw portable-torch"] = _with_backend("torch", out["draw portable"])
    return out


def inference_variants(out_f: int, in_f: int, tokens: int) -> dict[str, Callable[[], object]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tokens, in_f, generator=gen)
    dense = nn.Linear(in_f, out_f).eval()
    tiled = IsoGaussLinear.from_linear(dense, noise="seeded", seed=1).eval()
    kept = IsoGaussLinear.from_linear(dense, noise="seeded", seed=1).eval()
    kept.cache_eval_weight = True

    def run(module):
        def call():
            with torch.no_grad():
                return module(x)

        return call

    return {"dense": run(dense), "gaussian": run(tiled), "gaussian-kept": run(kept)}


def summarize(times: dict[str, list[float]], baseline: str) -> dict[str, dict]:
    base = statistics.median(times[baseline])
    return {name: {"median_ms": statistics.median(ts) * 1e3, "ratio": statistics.median(ts) / base,
                   "paired_ratio": statistics.median(t / b for t, b in zip(ts, times[baseline])),
                   "times_ms": [t * 1e3 for t in ts]} for name, ts in times.items()}


def run(shapes, threads: int, tokens: int, warmup: int, repeats: int, reference: bool) -> list[dict]:
    rows = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for out_f, in_f in shapes:
            draws = summarize(_interleaved(draw_variants(out_f, in_f, reference), warmup, repeats), "draw legacy")
            infer = summarize(_interleaved(inference_variants(out_f, in_f, tokens), warmup, repeats), "dense")
            rows.append({"shape": f"{out_f}x{in_f}", "threads": threads, "tokens": tokens, "draws": draws,
                         "inference": infer})
            print(f"[draws {out_f}x{in_f} {threads}t] " + "  ".join(
                f"{k}={v['median_ms']:.1f}ms({v['ratio']:.2f}x)" for k, v in {**draws, **infer}.items()), flush=True)
    finally:
        torch.set_num_threads(before)
    return rows


def render(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "## Draws: one seeded weight (noise + Eq. 2), ratio to the legacy draw", "",
             "| shape | threads | variant | median ms | ratio to legacy draw | paired |", "|---|---:|---|---:|---:|---:|"]
    for row in rows:
        for name, r in row["draws"].items():
            lines.append(f"| {row['shape']} | {row['threads']} | {name} | {r['median_ms']:.2f} | {r['ratio']:.3f} | "
                         f"{r['paired_ratio']:.3f} |")
    lines += ["", "## Inference: y = x W^T + b outside training, ratio to nn.Linear", "",
              "| shape | threads | tokens | variant | median ms | ratio to dense | paired |",
              "|---|---:|---:|---|---:|---:|---:|"]
    for row in rows:
        for name, r in row["inference"].items():
            lines.append(f"| {row['shape']} | {row['threads']} | {row['tokens']} | {name} | {r['median_ms']:.2f} | "
                         f"{r['ratio']:.3f} | {r['paired_ratio']:.3f} |")
    return lines
