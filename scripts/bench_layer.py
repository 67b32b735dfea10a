#!/usr/bin/env python
"""Benchmark one Gaussian layer against ``nn.Linear``: forward + backward + update, per training step.

For each (out, in) shape and device, every variant runs the same training step on ``--tokens`` input
rows with a fixed upstream gradient:

* ``dense``      ``nn.Linear`` forward + backward + optimizer step on weight and bias;
* ``RULE/NOISE`` (``gdu/seeded``, ``wdu/resample``, ``backprop/seeded``, ...; ``--configs``)
  :class:`~isogauss_hf.IsoGaussLinear`: sample W (Eq. 2), forward + backward, ``distribution_step``
  (Algorithm 1 / 2; nothing for ``backprop``), optimizer step on the bias (and on the statistics for
  ``backprop``, whose gradient comes through the reparameterised draw);
* ``.../+compile`` (with ``--compile``) GDU/WDU with the ``torch.compile`` kernels;
* ``ref-gdu``/``ref-wdu`` (unless ``--no-reference``) the resample step written as a direct transcription
  of the algorithms (Eq. 2 mean/var materialized, ``torch.var_mean`` statistics, noise drawn apart): the
  baseline the layer's fast path is compared with.

``--draws`` adds, per shape, the time of one seeded draw (the portable generator against the legacy one) and of
an inference forward of ``--eval-tokens`` rows against ``nn.Linear`` (``_bench_draws.py``).

``--aux-threads`` runs everything once per policy for the layer's own memory-bound passes
(``isogauss_hf._runtime.AUX_THREADS``: ``auto``, ``none`` = torch's thread count, or a number).

Variants are interleaved (the order rotates every repeat) after warm-up steps, so slow phases of a
shared machine hit all of them alike; the table gives medians, the spread (IQR / median) and the ratio
to ``dense`` from the same run, both as ratio of medians and as median of per-repeat ratios.

    python scripts/bench_layer.py                 # full sizes, writes results/bench_layer.{json,md}
    python scripts/bench_layer.py --smoke --out /tmp/x   # seconds, for CI
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from isogauss_hf import functional as fn
from isogauss_hf import _runtime, set_compile
from isogauss_hf.layers import IsoGaussConv2d, IsoGaussLinear
from isogauss_hf.noise import derive_seed, standard_normal

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_draws  # noqa: E402
import _repro_common as C  # noqa: E402

FULL_SHAPES = [(768, 768), (3072, 768), (768, 3072), (4096, 1024)]
SMOKE_SHAPES = [(64, 32), (32, 64)]
#: Convolution rows: (out channels, in channels, kernel, spatial size, batch).
FULL_CONVS = [(256, 256, 3, 14, 32)]
SMOKE_CONVS = [(8, 4, 3, 6, 2)]


# ---------------------------------------------------------------------------------------------------
# Direct transcription of the algorithms (the reference the fast layer is measured against)
# ---------------------------------------------------------------------------------------------------
def _ref_stats(w: torch.Tensor, dim: int):
    var, mean = torch.var_mean(w, dim=dim, correction=0)
    return mean, var


def _ref_gdu_side(mean, std, w, g, lr, dim):
    _, vw = _ref_stats(w, dim)
    mg_, vg = _ref_stats(g, dim)
    cov = (w * g).mean(dim) - w.mean(dim) * g.mean(dim)
    step_std = abs(lr) * vg.sqrt()
    denom = vw.sqrt() * vg.sqrt()
    rho = torch.where(denom > 0, -cov / denom.clamp_min(1e-38), 0.0).clamp(-1, 1)
    return mean - lr * mg_, (std.square() + step_std.square() + 2 * std * step_std * rho).clamp_min(0).sqrt()


class ReferenceGaussian:
    """Row/column statistics + bias, trained by a literal transcription of Eq. 2 and Algorithms 1-2."""

    def __init__(self, layer: IsoGaussLinear, rule: str, lr: float) -> None:
        self.stats = [t.clone() for t in layer.statistics]
        self.bias = nn.Parameter(layer.bias.detach().clone())
        self.rule, self.lr, self.seed = rule, lr, 0
        self.optimizer: torch.optim.Optimizer | None = None

    def step(self, x: torch.Tensor, gy: torch.Tensor) -> None:
        n, m = self.stats[0].shape[0], self.stats[2].shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        noise = standard_normal(derive_seed(self.seed), n, m, device=x.device)
        self.seed += 1
        mean, var = fn.eq2_distribution(*self.stats)
        w = (mean + var.sqrt() * noise).requires_grad_(True)
        F.linear(x, w, self.bias).backward(gy)
        with torch.no_grad():
            if self.rule == "gdu":
                rm, rs = _ref_gdu_side(self.stats[0], self.stats[1], w, w.grad, self.lr, 1)
                cm, cs = _ref_gdu_side(self.stats[2], self.stats[3], w, w.grad, self.lr, 0)
            else:
                w_new = w - self.lr * w.grad
                (rm, rv), (cm, cv) = _ref_stats(w_new, 1), _ref_stats(w_new, 0)
                rs, cs = rv.sqrt(), cv.sqrt()
            self.stats = [rm, rs, cm, cs]
        self.optimizer.step()


# ---------------------------------------------------------------------------------------------------
def _make_optimizer(name: str, params, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    return torch.optim.AdamW(params, lr=lr)


#: Gaussian configurations timed by default (rule/noise); --configs picks others.
DEFAULT_CONFIGS = ("gdu/seeded", "gdu/resample", "wdu/seeded", "wdu/resample", "backprop/seeded", "backprop/resample")


def build_variants(out_f: int, in_f: int, tokens: int, device: str, optimizer: str, reference: bool,
                   lr: float = 1e-3, compile_: bool = False, configs=DEFAULT_CONFIGS, conv=None
                   ) -> tuple[dict[str, Callable[[], None]], dict]:
    """The timed steps of one shape; ``conv=(kernel, spatial, batch)`` makes it an ``nn.Conv2d``
    (``out_f`` x ``in_f`` channels, padding kernel // 2) against :class:`IsoGaussConv2d`."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    if conv is None:
        x = torch.randn(tokens, in_f, generator=gen).to(device)
        gy = torch.randn(tokens, out_f, generator=gen).div_(tokens ** 0.5).to(device)
        dense = nn.Linear(in_f, out_f).to(device)
        make = IsoGaussLinear.from_linear
    else:
        kernel, spatial, batch = conv
        x = torch.randn(batch, in_f, spatial, spatial, generator=gen).to(device)
        dense = nn.Conv2d(in_f, out_f, kernel, padding=kernel // 2).to(device)
        gy = torch.randn(dense(x).shape, generator=gen).div_((batch * spatial * spatial) ** 0.5).to(device)
        make = IsoGaussConv2d.from_conv
        reference = False  # the direct transcription is written for the linear layer
    dense_opt = _make_optimizer(optimizer, dense.parameters(), lr)

    def dense_step() -> None:
        set_compile(False)
        dense_opt.zero_grad(set_to_none=True)
        dense(x).backward(gy)
        dense_opt.step()

    variants: dict[str, Callable[[], None]] = {"dense": dense_step}
    for spec in configs:
        rule, noise = spec.split("/")
        for compiled in (False, True) if compile_ and rule in ("gdu", "wdu") else (False,):
            layer = make(dense, rule=rule, noise=noise, seed=1).to(device).train()
            opt = _make_optimizer(optimizer, [p for p in layer.parameters() if p.requires_grad], lr)

            def step(layer=layer, opt=opt, compiled=compiled) -> None:
                set_compile(compiled)
                opt.zero_grad(set_to_none=True)
                layer(x).backward(gy)
                layer.distribution_step(lr=lr)
                opt.step()

            variants[spec + ("+compile" if compiled else "")] = step
    if reference:
        for rule in ("gdu", "wdu"):
            ref = ReferenceGaussian(IsoGaussLinear.from_linear(dense, seed=1), rule, lr)
            ref.optimizer = _make_optimizer(optimizer, [ref.bias], lr)
            variants[f"ref-{rule}"] = lambda ref=ref: (set_compile(False), ref.step(x, gy))
    return variants, {"x": x}


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_variants(variants: dict[str, Callable[[], None]], device: str, warmup: int, repeats: int
                  ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall-clock and process-CPU seconds of every repeat of every variant (interleaved, rotated)."""
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    _sync(device)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        order = names[rep % len(names):] + names[: rep % len(names)]  # rotate: no variant always first
        for name in order:
            _sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            variants[name]()
            _sync(device)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def _quantile(values: list[float], q: float) -> float:
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(times: dict[str, list[float]], cpu: dict[str, list[float]] | None = None) -> dict[str, dict]:
    dense = times["dense"]
    dense_med = statistics.median(dense)
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {
            "median_ms": med * 1e3,
            "iqr_over_median": (_quantile(ts, 0.75) - _quantile(ts, 0.25)) / med,
            "min_ms": min(ts) * 1e3,
            "ratio_to_dense": med / dense_med,
            "paired_ratio_to_dense": statistics.median(t / d for t, d in zip(ts, dense)),
            "times_ms": [t * 1e3 for t in ts],
        }
        if cpu is not None:
            cmed = statistics.median(cpu[name])
            out[name]["cpu_median_ms"] = cmed * 1e3
            out[name]["cpu_ratio_to_dense"] = cmed / statistics.median(cpu["dense"])
    return out


def _load() -> list[float] | None:
    try:
        return list(os.getloadavg())
    except OSError:  # pragma: no cover
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def render_markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# Gaussian layer vs nn.Linear: one training step",
        "",
        f"Command: `{report['command']}`",
        "",
        f"- {env['tokens']} tokens; step = forward + backward + update ({env['optimizer']} on the dense weight+bias, "
        f"on the bias for Gaussian layers (and the statistics for backprop), plus `distribution_step`)",
        f"- torch {env['torch']}, {env['cpu']} ({env.get('cores', os.cpu_count())} cores), intra-op threads {env['threads']}, "
        f"devices: {', '.join(env['devices'])}",
        f"- {env['warmup']} warm-up steps, {env['repeats']} interleaved repeats per variant; load average "
        f"before/after: {env['load_before']} / {env['load_after']}",
        "- wall clock: ratio = median(variant) / median(dense); paired = median over repeats of variant/dense "
        "within a repeat; spread = IQR / median. CPU = process CPU time (all threads; the steadier figure "
        "when other jobs share the cores, but it also counts OpenMP spin-waiting)",
    ]
    if not any(d.startswith("cuda") for d in env["devices"]):
        lines.append("- no CUDA device in this run: no GPU figures")
    lines += [
        "",
        "| device | threads | aux threads | out x in | variant | median ms | spread | ratio | paired ratio | CPU ms "
        "| CPU ratio |",
        "|---|---:|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["results"]:
        for name, r in row["variants"].items():
            lines.append(
                f"| {row['device']} | {row['threads']} | {row.get('aux_threads', 'auto')} | "
                f"{row.get('label', str(row['out_features']) + 'x' + str(row['in_features']))} | {name} | "
                f"{r['median_ms']:.2f} | "
                f"{r['iqr_over_median']:.1%} | {r['ratio_to_dense']:.3f} | {r['paired_ratio_to_dense']:.3f} | "
                f"{r['cpu_median_ms']:.1f} | {r['cpu_ratio_to_dense']:.3f} |"
            )
    lines += _bench_draws.render(report.get("draws", []))
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and few repeats (seconds), for CI")
    parser.add_argument("--shapes", default=None, help="comma list of OUTxIN, e.g. 3072x768,768x768")
    parser.add_argument("--tokens", type=int, default=None, help="input rows per step (default 2048; smoke 16)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per variant (default 15; smoke 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per variant first (default 3; smoke 1)")
    parser.add_argument("--threads", default=None,
                        help="torch intra-op thread counts to run, comma list such as 2,1 (default: torch's)")
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd", help="optimizer of the step")
    parser.add_argument("--devices", default=None, help="comma list among cpu,cuda (default: cpu and cuda if present)")
    parser.add_argument("--no-reference", action="store_true", help="skip the direct-transcription variants")
    parser.add_argument("--compile", action="store_true",
                        help="also time gdu/wdu with the torch.compile kernels (isogauss_hf.set_compile)")
    parser.add_argument("--convs", default=None,
                        help="comma list of OUTxINxKERNEL@SPATIALbBATCH conv rows, e.g. 256x256x3@14b32; 'none' = none")
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help="comma list of RULE/NOISE Gaussian configurations to time")
    parser.add_argument("--aux-threads", default="auto",
                        help="comma list of policies for the layer's own passes: auto, none (torch's count) or N")
    parser.add_argument("--draws", action="store_true",
                        help="also time one seeded draw (portable vs legacy generator) and an inference forward")
    parser.add_argument("--draws-reference", action="store_true",
                        help="with --draws: also the portable generator's torch reference (slow)")
    parser.add_argument("--eval-tokens", type=int, default=1024, help="with --draws: rows of the inference forward")
    parser.add_argument("--out", default="results/bench_layer", help="output path prefix (.json and .md are added)")
    args = parser.parse_args(argv)

    try:
        thread_counts = [int(t) for t in args.threads.split(",")] if args.threads else [torch.get_num_threads()]
    except ValueError:
        parser.error(f"--threads={args.threads!r} is not a comma list of integers such as 2,1")
    if any(t < 1 for t in thread_counts):
        parser.error(f"--threads={args.threads!r}: thread counts must be >= 1")
    shapes = FULL_SHAPES if not args.smoke else SMOKE_SHAPES
    if args.shapes:
        try:
            shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
        except ValueError:
            parser.error(f"--shapes={args.shapes!r} is not a comma list of OUTxIN such as 3072x768")
    convs = SMOKE_CONVS if args.smoke else FULL_CONVS
    if args.convs:
        convs = []
        for spec in ([] if args.convs == "none" else args.convs.split(",")):
            try:
                head, _, tail = spec.partition("@")
                o, i, k = (int(v) for v in head.lower().split("x"))
                sp, _, b = tail.partition("b")
                convs.append((o, i, k, int(sp), int(b)))
            except ValueError:
                parser.error(f"--convs entry {spec!r} is not OUTxINxKERNEL@SPATIALbBATCH such as 256x256x3@14b32")
    if args.shapes and not args.convs:
        convs = []  # explicit linear shapes only, unless conv rows are asked for too
    tokens = args.tokens or (16 if args.smoke else 2048)
    repeats = args.repeats or (2 if args.smoke else 15)
    warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    devices = args.devices.split(",") if args.devices else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for d in devices:
        if d not in ("cpu", "cuda"):
            parser.error(f"--devices entry {d!r} is not valid; choose cpu or cuda")
        if d == "cuda" and not torch.cuda.is_available():
            parser.error("--devices cuda given but no CUDA device is available")

    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    from isogauss_hf.settings import check_noise, check_rule

    for c in configs:
        rule, _, noise = c.partition("/")
        try:
            check_rule(rule), check_noise(noise)
        except ValueError as e:
            parser.error(f"--configs entry {c!r}: {e}")
    policies = []
    for p in args.aux_threads.split(","):
        p = p.strip().lower()
        if p not in ("auto", "none") and not p.isdigit():
            parser.error(f"--aux-threads entry {p!r} is not valid; use auto, none or a thread count")
        policies.append(p)
    load_before = _load()
    results = []
    initial_threads = torch.get_num_threads()
    initial_policy = _runtime.AUX_THREADS
    try:
        for policy in policies:
            _runtime.AUX_THREADS = None if policy == "none" else (policy if policy == "auto" else int(policy))
            for threads in thread_counts:
                torch.set_num_threads(threads)
                for device in devices:
                    rows = [(o, i, None) for o, i in shapes] + [(o, i, (k, sp, b)) for o, i, k, sp, b in convs]
                    for out_f, in_f, conv in rows:
                        variants, _ = build_variants(out_f, in_f, tokens, device, args.optimizer,
                                                     not args.no_reference, compile_=args.compile, configs=configs,
                                                     conv=conv)
                        wall, cpu = time_variants(variants, device, warmup, repeats)
                        summary = summarize(wall, cpu)
                        label = f"{out_f}x{in_f}" if conv is None else f"conv {out_f}x{in_f} k{conv[0]} " \
                                                                        f"{conv[1]}x{conv[1]} b{conv[2]}"
                        results.append({"device": device, "threads": threads, "aux_threads": policy,
                                        "out_features": out_f, "in_features": in_f, "conv": conv, "label": label,
                                        "variants": summary, "load_after": _load()})
                        cells = "  ".join(f"{k}={v['median_ms']:.1f}ms({v['ratio_to_dense']:.2f}x,"
                                          f"cpu {v['cpu_ratio_to_dense']:.2f}x)" for k, v in summary.items())
                        print(f"[{device} {threads}t aux={policy} {label}] {cells}", flush=True)
        draws = []
        if args.draws:
            _runtime.AUX_THREADS = initial_policy
            for threads in thread_counts:
                draws += _bench_draws.run(shapes, threads, args.eval_tokens if not args.smoke else 8, warmup,
                                          repeats, args.draws_reference)
    finally:
        torch.set_num_threads(initial_threads)
        _runtime.AUX_THREADS = initial_policy
        set_compile(False)
    report = {
        "command": "python scripts/bench_layer.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "environment": {
            "torch": torch.__version__, "cpu": _cpu_name(), "cores": os.cpu_count(), "threads": thread_counts,
            "devices": devices + ([torch.cuda.get_device_name()] if "cuda" in devices else []),
            "tokens": tokens, "repeats": repeats, "warmup": warmup, "optimizer": args.optimizer,
            "load_before": load_before, "load_after": _load(), "smoke": args.smoke,
            "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        "results": results,
        "draws": draws,
    }
    C.write_outputs(args.out, report, render_markdown)
    print(render_markdown(report))
    return report


if __name__ == "__main__":
    main()
