#!/usr/bin/env python
"""GPU check of the portable noise generator (issue 21, point 6): run it once on a CUDA machine.

1. The noise field and seeded Eq. (2) draws on CUDA against the CPU (the contract: identical; at most 2e-6),
   for the portable generator on every backend present there (Triton kernels, torch ops) and for the
   legacy generator of formats 1-2 (which always draws on the CPU).
2. A BERT with seeded Gaussian blocks fine-tuned a few steps on the GPU (the callback's loop), saved,
   reloaded on the CPU: the same logits (at most 1e-4).
3. Inference time on the GPU, BERT-base shape with every block Gaussian, batch 8 x 128: dense, the default
   (tile by tile, nothing kept) and the kept draw (``disable_low_memory``).

    PYTHONPATH=src python scripts/device_check.py --out device_check.json

No CUDA device: prints that and exits 0 (nothing to check here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().cpu().double() - b.detach().cpu().double()).abs().max())


def check_draws(report: dict) -> None:
    from isogauss_hf.functional import RowColStats
    from isogauss_hf.noise import (NOISE_GENERATORS, noise_backend, set_noise_backend, standard_normal)

    v = standard_normal(42, 4, 3072)  # portable inputs
    stats_cpu = RowColStats(v[0] * 0.02, v[1].abs() * 0.04, v[2, :768] * 0.02, v[3, :768].abs() * 0.04)
    stats_gpu = RowColStats(*(t.cuda() for t in stats_cpu))
    rows = {}
    for backend in ("auto", "torch"):
        set_noise_backend(backend)
        used = noise_backend("cuda")
        for name, gen in NOISE_GENERATORS.items():
            if name.startswith("torch-cpu") and backend != "auto":
                continue
            start = 256 if name.startswith("torch-cpu") else 5
            cpu = gen.draw_rows(stats_cpu, 987654321, start, 3072)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            gpu = gen.draw_rows(stats_gpu, 987654321, start, 3072)
            torch.cuda.synchronize()
            ms = (time.perf_counter() - t0) * 1e3
            noise_cpu = gen.normal(123, 3072 - start, 768, row_start=start)
            noise_gpu = gen.normal(123, 3072 - start, 768, row_start=start, device="cuda")
            rows[f"{name} [{used}]"] = {
                "draw_equal": bool(torch.equal(cpu, gpu.cpu())), "draw_max_abs_diff": _max_diff(cpu, gpu),
                "noise_equal": bool(torch.equal(noise_cpu, noise_gpu.cpu())),
                "noise_max_abs_diff": _max_diff(noise_cpu, noise_gpu), "gpu_draw_ms_first_call": ms,
                "within_2e-6": _max_diff(cpu, gpu) <= 2e-6,
            }
            print(f"[draws] {name} [{used}]: {rows[f'{name} [{used}]']}", flush=True)
    set_noise_backend("auto")
    report["draws"] = rows


def _tiny_bert(layers=4, hidden=128):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=4,
                        intermediate_size=4 * hidden, vocab_size=1000, num_labels=3)
    return BertForSequenceClassification(config)


def check_finetune_round_trip(report: dict) -> None:
    from isogauss_hf import IsoGaussConfig, IsoGaussModel, get_isogauss_model

    model = get_isogauss_model(_tiny_bert(), IsoGaussConfig(layers=[2, 4], noise="seeded", rule="gdu")).cuda().train()
    layers = list(model.isogauss_layers().values())
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (8, 32), generator=g).cuda()
    labels = torch.randint(0, 3, (8,), generator=g).cuda()
    losses = []
    for _ in range(5):  # the callback's step: loss, backward, distribution step, optimizer step
        opt.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        for layer in layers:
            layer.distribution_step(lr=1e-3)
        opt.step()
        losses.append(float(loss))
    model.eval()
    with torch.no_grad():
        gpu_logits = model(input_ids=ids).logits.float().cpu()
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        cpu_model = IsoGaussModel.from_pretrained(tmp).eval()
        with torch.no_grad():
            cpu_logits = cpu_model(input_ids=ids.cpu()).logits
    diff = _max_diff(gpu_logits, cpu_logits)
    report["finetune_gpu_reload_cpu"] = {"losses": losses, "logits_max_abs_diff": diff, "within_1e-4": diff <= 1e-4}
    print(f"[round trip] {report['finetune_gpu_reload_cpu']}", flush=True)


def check_inference_time(report: dict, repeats: int) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    from isogauss_hf import IsoGaussConfig, get_isogauss_model

    config = BertConfig(num_labels=2)
    ids = torch.randint(0, config.vocab_size, (8, 128), generator=torch.Generator().manual_seed(0)).cuda()
    out = {}
    for name in ("dense", "gaussian (tiles, default)", "gaussian (kept draw)"):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config)
        if name != "dense":
            model = get_isogauss_model(model, IsoGaussConfig(noise="seeded"))
            if "kept" in name:
                model.disable_low_memory()
        model = model.cuda().eval()
        times = []
        with torch.no_grad():
            for i in range(repeats + 2):
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                model(input_ids=ids)
                torch.cuda.synchronize()
                if i >= 2:
                    times.append(time.perf_counter() - t0)
        out[name] = {"median_ms": statistics.median(times) * 1e3, "times_ms": [t * 1e3 for t in times],
                     "max_memory_allocated_mb": torch.cuda.max_memory_allocated() / 2**20}
        torch.cuda.reset_peak_memory_stats()
        del model
        torch.cuda.empty_cache()
    for r in out.values():
        r["ratio_to_dense"] = r["median_ms"] / out["dense"]["median_ms"]
    report["inference_bert_base_12_blocks"] = out
    print(f"[inference] {json.dumps(out, indent=1)}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="device_check.json", help="where the JSON report goes")
    parser.add_argument("--repeats", type=int, default=10, help="timed inference forwards per variant")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check here")
        return 0
    report = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "python": sys.version.split()[0]}
    for module in ("triton", "numba", "transformers"):
        try:
            report[module] = __import__(module).__version__
        except ImportError:
            report[module] = None
    failures = []
    for name, check in (("draws", check_draws), ("round trip", check_finetune_round_trip),
                        ("inference", lambda r: check_inference_time(r, args.repeats))):
        try:
            check(report)
        except Exception as e:  # noqa: BLE001 - report every check, even when one breaks
            failures.append(f"{name}: {type(e).__name__}: {e}")
            print(f"[{name}] FAILED: {type(e).__name__}: {e}", flush=True)
    report["failures"] = failures
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
