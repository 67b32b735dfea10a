#!/usr/bin/env python
"""Benchmark a BERT-base sized model (random init, no download): dense vs Gaussian blocks.

Measured in one run, ratios against the dense model of the same run:

* **train step** (forward + backward + distribution step of every Gaussian layer + optimizer step),
  wall time and peak memory, for the dense model and for 1, 3 and 6 Gaussian blocks (blocks 12;
  4, 8, 12; 2, 4, ..., 12, 1-based as in the paper) in the ``--rules`` RULE/NOISE configurations (3 blocks
  each; 1 and 6 blocks the first, the library default). The training variants are interleaved (order
  rotated every repeat) after warm-up steps, so a slow phase of a shared machine hits all of them.
* **evaluation** throughput (tokens/s) and memory with ``num_samples`` 1 and 10, with the default inference
  (each draw rebuilt tile by tile from its seed, never kept) and with the kept draw
  (``IsoGaussModel.disable_low_memory``).
* **checkpoint** bytes: ``save_pretrained`` of each Gaussian model vs the dense model's safetensors.
* **fresh** (``--fresh``): time and peak RSS with a fresh process per measurement — BERT-base shape with every
  block Gaussian (eval and training) and GPT-2 small greedy decoding, beside dense (``_bench_fresh.py``).

Memory on CPU is the process RSS (``/proc/self/statm``) sampled every millisecond by a thread:
"peak" is the highest RSS during the measured call minus the RSS just before it (transient memory:
activations, gradients, sampled weights, scratch); "resident" is the RSS growth from building the
model and running one warm-up forward (parameters, statistics, cached draws). On CUDA,
``torch.cuda.max_memory_allocated`` and ``memory_allocated`` play those roles.

    python scripts/bench_model.py            # writes results/bench_model.{json,md} (a few minutes on CPU)
    python scripts/bench_model.py --smoke --out /tmp/x
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager

import torch

from isogauss_hf import IsoGaussConfig, get_isogauss_model
from isogauss_hf._runtime import release_workspace
from isogauss_hf import set_compile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _bench_fresh  # noqa: E402
import _repro_common as C  # noqa: E402

BLOCK_SETS = {1: [12], 3: [4, 8, 12], 6: [2, 4, 6, 8, 10, 12]}


# ---------------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------------
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # pragma: no cover - non-Linux: fall back to the peak counter
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _trim() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # pragma: no cover
        pass


class MemoryMeter:
    """Peak memory during a block, relative to the memory just before it (bytes)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak = 0

    @contextmanager
    def measure(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            start = torch.cuda.memory_allocated()
            yield
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - start
            return
        start = _rss()
        stop = threading.Event()
        peak = [start]

        def poll() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                stop.wait(0.001)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            self.peak = max(peak[0], _rss()) - start


def _resident(device: str) -> int:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.memory_allocated()
    _trim()
    return _rss()


# ---------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------
def bert_config(smoke: bool):
    from transformers import BertConfig

    if smoke:
        return BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                          vocab_size=100, max_position_embeddings=64, num_labels=2)
    return BertConfig(num_labels=2)  # bert-base-uncased sizes: 12 x (768, 3072), vocab 30522


def build(config, blocks: int, rule: str, noise: str, device: str, num_samples: int = 1):
    from transformers import BertForSequenceClassification

    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    if blocks:
        num = config.num_hidden_layers
        layers = BLOCK_SETS[blocks]
        if max(layers) > num:  # a smaller model (smoke): the last min(blocks, num) blocks
            layers = list(range(num - min(blocks, num) + 1, num + 1))
        model = get_isogauss_model(model, IsoGaussConfig(layers=layers, rule=rule, noise=noise,
                                                         num_samples=num_samples, seed=0))
    return model.to(device)


def make_batch(config, batch: int, seq: int, device: str):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (batch, seq), generator=gen)
    labels = torch.randint(0, 2, (batch,), generator=gen)
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "labels": labels.to(device)}


class Trainee:
    """One model + optimizer doing the same step as Trainer + IsoGaussCallback (without clipping)."""

    def __init__(self, name, model, rule, optimizer, lr, batch, compiled=False):
        self.name, self.model, self.rule, self.lr, self.batch = name, model, rule, lr, batch
        self.compiled = compiled
        params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = (torch.optim.AdamW(params, lr=lr) if optimizer == "adamw" else torch.optim.SGD(params, lr=lr))
        self.layers = list(model.isogauss_layers().values()) if hasattr(model, "isogauss_layers") else []
        for layer in self.layers:
            layer.hold_draw = True  # as IsoGaussCallback: one draw per optimizer step
        model.train()

    def step(self) -> None:
        set_compile(self.compiled)
        self.optimizer.zero_grad(set_to_none=True)
        self.model(**self.batch).loss.backward()
        for layer in self.layers:  # the callback's on_pre_optimizer_step (each layer's own rule)
            layer.distribution_step(lr=self.lr)
        self.optimizer.step()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------------------------------
# phases
# ---------------------------------------------------------------------------------------------------
def bench_train(args, config, device) -> dict:
    batch = make_batch(config, args.batch, args.seq, device)
    variants = [("dense", 0, "wdu/resample", False)] + [(f"{b} blocks {r}", b, r, False) for b, r in args.train_variants]
    if args.compile:
        variants += [(f"3 blocks {r}+compile", 3, r, True) for r in args.rules_list]
    trainees = []
    for name, blocks, rule, compiled in variants:
        rule_name, noise = rule.split("/") if "/" in rule else (rule, "resample")
        model = build(config, blocks, rule_name, noise, device)
        trainees.append(Trainee(name, model, rule, args.optimizer, args.lr, batch, compiled))
    meter = MemoryMeter(device)
    for _ in range(args.warmup):
        for t in trainees:
            t.step()
    wall = {t.name: [] for t in trainees}
    cpu = {t.name: [] for t in trainees}
    peak = {t.name: [] for t in trainees}
    for rep in range(args.repeats):  # timing: no memory polling thread competing for the cores
        order = trainees[rep % len(trainees):] + trainees[: rep % len(trainees)]
        for t in order:
            _sync(device)
            c0, t0 = time.process_time(), time.perf_counter()
            t.step()
            _sync(device)
            wall[t.name].append(time.perf_counter() - t0)
            cpu[t.name].append(time.process_time() - c0)
    for t in trainees:  # memory: one more step each, measured separately
        _resident(device)
        with meter.measure():
            t.step()
        peak[t.name].append(meter.peak)
    dense_med = statistics.median(wall["dense"])
    dense_peak = statistics.median(peak["dense"])
    out = {}
    for t in trainees:
        med = statistics.median(wall[t.name])
        pk = statistics.median(peak[t.name])
        out[t.name] = {
            "median_s": med,
            "iqr_over_median": (_q(wall[t.name], 0.75) - _q(wall[t.name], 0.25)) / med,
            "ratio_to_dense": med / dense_med,
            "paired_ratio_to_dense": statistics.median(a / b for a, b in zip(wall[t.name], wall["dense"])),
            "cpu_median_s": statistics.median(cpu[t.name]),
            "cpu_ratio_to_dense": statistics.median(cpu[t.name]) / statistics.median(cpu["dense"]),
            "peak_step_mb": pk / 2**20,
            "peak_ratio_to_dense": pk / dense_peak if dense_peak > 0 else None,
            "gaussian_matrices": len(t.layers),
            "times_s": wall[t.name],
        }
        print(f"[train] {t.name}: {med * 1e3:.0f} ms ({med / dense_med:.3f}x, CPU {out[t.name]['cpu_ratio_to_dense']:.3f}x), "
              f"peak +{pk / 2**20:.0f} MB", flush=True)
    del trainees
    set_compile(False)
    _trim()
    return out


def bench_eval(args, config, device) -> dict:
    batch = make_batch(config, args.eval_batch, args.seq, device)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    tokens = batch["input_ids"].numel()
    variants = [("dense", 0, 1, False)]
    for blocks in args.eval_blocks:
        variants += [(f"{blocks} blocks, k=1", blocks, 1, False), (f"{blocks} blocks, k=1, kept draw", blocks, 1, True),
                     (f"{blocks} blocks, k={args.num_samples}", blocks, args.num_samples, False),
                     (f"{blocks} blocks, k={args.num_samples}, kept draw", blocks, args.num_samples, True)]
    meter = MemoryMeter(device)
    out = {}
    for name, blocks, k, kept in variants:
        _trim()
        release_workspace()
        before = _resident(device)
        # averaging over draws applies to resample layers only (a seeded layer has its one draw)
        model = build(config, blocks, "wdu", "resample" if k > 1 else "seeded", device, num_samples=k).eval()
        if kept:
            model.disable_low_memory()
        elif blocks:
            model.enable_low_memory(args.block_rows)
        with torch.no_grad():
            model(**inputs)  # warm-up: a kept draw is made here
        resident = _resident(device) - before
        times, peaks = [], []
        with torch.no_grad():
            for _ in range(args.eval_repeats):
                with meter.measure():
                    t0 = time.perf_counter()
                    model(**inputs)
                    _sync(device)
                    times.append(time.perf_counter() - t0)
                peaks.append(meter.peak)
        med = statistics.median(times)
        out[name] = {"median_s": med, "tokens_per_s": tokens / med, "resident_mb": resident / 2**20,
                     "peak_forward_mb": statistics.median(peaks) / 2**20, "num_samples": k, "kept_draw": kept,
                     "blocks": blocks, "times_s": times}
        print(f"[eval] {name}: {tokens / med:.0f} tok/s, resident {resident / 2**20:.0f} MB, "
              f"forward peak +{statistics.median(peaks) / 2**20:.0f} MB", flush=True)
        del model
        release_workspace()
    dense = out["dense"]
    for r in out.values():
        r["throughput_ratio_to_dense"] = r["tokens_per_s"] / dense["tokens_per_s"]
        r["resident_ratio_to_dense"] = r["resident_mb"] / dense["resident_mb"] if dense["resident_mb"] > 0 else None
    return out


def bench_checkpoint(args, config) -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {}
        for blocks in [0] + sorted(BLOCK_SETS):
            model = build(config, blocks, "wdu", "seeded", "cpu")
            path = os.path.join(tmp, f"b{blocks}")
            model.save_pretrained(path)
            sizes[blocks] = sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)
                                if f.endswith(".safetensors"))
            del model
        for blocks, size in sizes.items():
            name = "dense" if blocks == 0 else f"{blocks} blocks"
            out[name] = {"safetensors_bytes": size, "ratio_to_dense": size / sizes[0]}
            print(f"[checkpoint] {name}: {size / 2**20:.2f} MB ({size / sizes[0]:.3f}x)", flush=True)
    return out


def _q(values, q):
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def render_markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        "# BERT-base sized model: dense vs Gaussian blocks", "",
        f"Command: `{report['command']}`", "",
        f"- random-init `BertForSequenceClassification` ({env['model']}); torch {env['torch']}, device {env['device']}, "
        f"{env['threads']} threads; load average before/after {env['load_before']} / {env['load_after']}",
        f"- train: batch {env['batch']} x seq {env['seq']}, {env['optimizer']}, {env['warmup']} warm-up + "
        f"{env['repeats']} interleaved repeats; step = forward + backward + distribution step + optimizer step",
        f"- eval: batch {env['eval_batch']} x seq {env['seq']}, {env['eval_repeats']} repeats, seeded noise for k=1, resample noise for k>1 (seeded models evaluate their one draw), "
        f"tile rows {env['block_rows'] or 'automatic'} (kept draw: the whole draw kept between forwards)",
        "- memory: " + env["memory_method"],
        "- ratio = median(variant) / median(dense) wall time; paired = median over repeats of the per-repeat ratio; "
        "CPU = process CPU time (steadier when other jobs share the cores)", "",
        "## Train step", "",
        "| variant | median ms | spread | ratio | paired ratio | CPU ms | CPU ratio | step peak MB | peak ratio |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["train"].items() or [("(skipped)", None)]:
        if r is None:
            continue
        pr = "" if r["peak_ratio_to_dense"] is None else f"{r['peak_ratio_to_dense']:.2f}"
        lines.append(f"| {name} | {r['median_s'] * 1e3:.0f} | {r['iqr_over_median']:.1%} | {r['ratio_to_dense']:.3f} | "
                     f"{r['paired_ratio_to_dense']:.3f} | {r['cpu_median_s'] * 1e3:.0f} | {r['cpu_ratio_to_dense']:.3f} | "
                     f"{r['peak_step_mb']:.0f} | {pr} |")
    lines += ["", "## Evaluation", "",
              "| variant | tokens/s | throughput ratio | resident MB | forward peak MB |", "|---|---:|---:|---:|---:|"]
    for name, r in report["eval"].items():
        lines.append(f"| {name} | {r['tokens_per_s']:.0f} | {r['throughput_ratio_to_dense']:.3f} | "
                     f"{r['resident_mb']:.0f} | {r['peak_forward_mb']:.0f} |")
    lines += ["", "## Checkpoint (safetensors)", "", "| variant | MB | ratio |", "|---|---:|---:|"]
    for name, r in report["checkpoint"].items():
        lines.append(f"| {name} | {r['safetensors_bytes'] / 2**20:.2f} | {r['ratio_to_dense']:.3f} |")
    if report.get("fresh"):
        lines += _bench_fresh.render(report["fresh"], argparse.Namespace(**report["fresh_args"]))
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny BERT and few repeats (seconds), for CI")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads on CPU (default: torch's)")
    parser.add_argument("--batch", type=int, default=None, help="train batch size (default 8; smoke 2)")
    parser.add_argument("--seq", type=int, default=None, help="sequence length (default 128; smoke 8)")
    parser.add_argument("--eval-batch", type=int, default=None, help="eval batch size (default 4; smoke 2)")
    parser.add_argument("--repeats", type=int, default=None, help="timed train steps per variant (default 5; smoke 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed train steps per variant (default 1)")
    parser.add_argument("--eval-repeats", type=int, default=None, help="timed eval forwards (default 3; smoke 1)")
    parser.add_argument("--num-samples", type=int, default=10, help="eval draws averaged (the paper's 10)")
    parser.add_argument("--block-rows", type=int, default=None, help="inference tile rows (default: automatic)")
    parser.add_argument("--fresh", default="bert-eval,bert-eval-paired,gpt2-generate,bert-train",
                        help="fresh-process cases: comma list of bert-eval, bert-eval-paired, gpt2-generate, "
                             "bert-train; 'none' skips")
    parser.add_argument("--rounds", type=int, default=2, help="fresh-process rounds (each variant once per round)")
    parser.add_argument("--fresh-threads", type=int, default=None, help="threads in the fresh processes")
    parser.add_argument("--fresh-batch", type=int, default=8, help="BERT batch in the fresh processes")
    parser.add_argument("--fresh-seq", type=int, default=128, help="BERT sequence length in the fresh processes")
    parser.add_argument("--fresh-repeats", type=int, default=3, help="timed calls per fresh process")
    parser.add_argument("--new-tokens", type=int, default=32, help="GPT-2 greedy decoding: new tokens")
    parser.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    parser.add_argument("--lr", type=float, default=2e-5)
    parser.add_argument("--rules", default="gdu/seeded,wdu/resample,backprop/seeded",
                        help="RULE/NOISE configurations to train with 3 blocks (1 and 6 blocks use the first, the "
                             "library default)")
    parser.add_argument("--compile", action="store_true",
                        help="also train 3 blocks with the torch.compile kernels (isogauss_hf.set_compile)")
    parser.add_argument("--skip", default="", help="comma list of phases to skip: train,eval,checkpoint,fresh")
    parser.add_argument("--out", default="results/bench_model", help="output path prefix (.json and .md are added)")
    args = parser.parse_args(argv)

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda given but no CUDA device is available")
    if args.threads:
        torch.set_num_threads(args.threads)
    smoke = args.smoke
    args.batch = args.batch or (2 if smoke else 8)
    args.seq = args.seq or (8 if smoke else 128)
    args.eval_batch = args.eval_batch or (2 if smoke else 4)
    args.repeats = args.repeats or (1 if smoke else 5)
    args.warmup = 1 if args.warmup is None else args.warmup
    args.eval_repeats = args.eval_repeats or (1 if smoke else 3)
    if smoke:
        args.num_samples = min(args.num_samples, 2)
    from isogauss_hf.settings import check_noise, check_rule

    rules = [r.strip() if "/" in r else f"{r.strip()}/resample" for r in args.rules.split(",") if r.strip()]
    for r in rules:
        try:
            check_rule(r.split("/")[0]), check_noise(r.split("/")[1])
        except ValueError as e:
            parser.error(f"--rules entry {r!r}: {e}")
    if not rules:
        parser.error(f"--rules={args.rules!r}: give RULE/NOISE configurations such as gdu/seeded")
    args.rules_list = rules
    args.train_variants = [(1, rules[0])] + [(3, r) for r in rules] + [(6, rules[0])]
    args.eval_blocks = [3]
    skip = {s for s in args.skip.split(",") if s}
    config = bert_config(smoke)
    args.fresh = [] if args.fresh == "none" else [c.strip() for c in args.fresh.split(",") if c.strip()]
    for c in args.fresh:
        if c not in ("bert-eval", "bert-eval-paired", "gpt2-generate", "bert-train"):
            parser.error(f"--fresh entry {c!r} is not valid; choose among bert-eval, bert-eval-paired, gpt2-generate, "
                         "bert-train, none")
    args.fresh_threads = args.fresh_threads or torch.get_num_threads()
    args.tiny = smoke
    if smoke:  # tiny models, one case, one round
        args.fresh = ["bert-eval", "bert-eval-paired", "gpt2-generate"]
        args.rounds, args.fresh_batch, args.fresh_seq, args.fresh_repeats, args.new_tokens = 1, 2, 8, 1, 3

    load_before = list(os.getloadavg())
    report = {
        "command": "python scripts/bench_model.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "train": bench_train(args, config, device) if "train" not in skip else {},
        "eval": bench_eval(args, config, device) if "eval" not in skip else {},
        "checkpoint": bench_checkpoint(args, config) if "checkpoint" not in skip else {},
    }
    if args.fresh and "fresh" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            report["fresh"] = _bench_fresh.run_cases(args, tmp)
        report["fresh_args"] = {k: getattr(args, k) for k in ("rounds", "fresh_threads", "fresh_batch", "fresh_seq",
                                                              "new_tokens", "fresh_repeats")}
    report["environment"] = {
        "torch": torch.__version__, "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "threads": torch.get_num_threads(), "model": f"{config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"intermediate {config.intermediate_size}", "batch": args.batch, "seq": args.seq,
        "eval_batch": args.eval_batch, "optimizer": args.optimizer, "lr": args.lr, "warmup": args.warmup,
        "repeats": args.repeats, "eval_repeats": args.eval_repeats, "block_rows": args.block_rows,
        "num_samples": args.num_samples, "smoke": smoke, "load_before": load_before, "load_after": list(os.getloadavg()),
        "memory_method": ("torch.cuda max_memory_allocated / memory_allocated" if device.startswith("cuda") else
                          "process RSS sampled every 1 ms (peak = max RSS during the call minus RSS before it, after "
                          "gc + malloc_trim; resident = RSS growth from building the model + one warm-up forward)"),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    C.write_outputs(args.out, report, render_markdown)
    print(render_markdown(report))
    return report


if __name__ == "__main__":
    main()
