"""Whole-model measurements of ``bench_model.py`` that each run in a fresh process (time and peak RSS).

Cases (``--fresh`` in bench_model.py), each variant measured in its own process, in alternating rounds:

* ``bert-eval``: a BERT-base shape (12 blocks, random init) loaded from a checkpoint — the dense one saved by
  transformers, the Gaussian one (every block, seeded) by ``save_pretrained`` — then eval forwards of a
  batch; variants ``dense``, ``gaussian`` (the default: tile by tile, no weight kept) and ``gaussian-kept``
  (``disable_low_memory``: each draw kept).
* ``gpt2-generate``: GPT-2 small shape, greedy decoding of batch 1; the same variants, plus the cost of
  drawing every Gaussian matrix once (``draw_all_ms``: the generator's share of one decoding step).
* ``bert-train``: training steps (AdamW; the callback's loop) of the BERT-base shape, dense vs every block
  Gaussian (gdu/seeded), built from the dense model as a user does.

Memory: ``peak_rss_mb`` is the process's peak RSS (``VmHWM``: loading included); ``phase_peak_rss_mb``
the highest RSS sampled every millisecond while the timed calls ran; ``loaded_rss_mb`` the RSS after the
warm-up call, before them.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _peak_rss_mb() -> float:
    """The process's peak RSS (``VmHWM``; ``ru_maxrss`` would carry the parent's peak across fork + exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


class _Peak:
    """Highest RSS while the block runs (sampled every millisecond by a thread)."""

    def __enter__(self):
        self.peak, self._stop = _rss_mb(), threading.Event()

        def poll():
            while not self._stop.is_set():
                self.peak = max(self.peak, _rss_mb())
                self._stop.wait(0.001)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


# ---------------------------------------------------------------------------------------------------- workers
def _load(spec):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    import isogauss_hf  # noqa: F401 - registers the checkpoint type with the Auto classes

    cls = AutoModelForCausalLM if spec["case"] == "gpt2-generate" else AutoModelForSequenceClassification
    model = cls.from_pretrained(spec["checkpoint"]).eval()
    if spec["variant"] == "gaussian-kept":
        model.disable_low_memory()
    return model


def _draw_all_ms(model) -> float:
    """Drawing every Gaussian matrix once, tile by tile as a forward does, without the products."""
    from isogauss_hf import _runtime

    layers = list(model.isogauss_layers().values())
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for layer in layers:
            tile = layer._tile_rows(torch.device("cpu"))
            for r0 in range(0, layer.matrix_shape[0], tile):
                r1 = min(layer.matrix_shape[0], r0 + tile)
                layer.sample_rows(r0, r1, *layer.current_draw_key(),
                                  out=_runtime.workspace(5, (r1 - r0, layer.matrix_shape[1])))
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _zero_products_s(model, call) -> float:
    """One call with every Gaussian product replaced by zeros of its shape: what is left besides the matrices."""
    layers = list(model.isogauss_layers().values())
    forwards = [layer.forward for layer in layers]
    for layer in layers:
        layer.forward = lambda x, layer=layer: x.new_zeros(*x.shape[:-1], layer.matrix_shape[0])
    try:
        call()
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
    finally:
        for layer, forward in zip(layers, forwards):
            layer.forward = forward
    return min(times)


def _calls(spec, model):
    g = torch.Generator().manual_seed(0)
    if spec["case"].startswith("bert-eval"):
        ids = torch.randint(0, model.config.vocab_size, (spec["batch"], spec["seq"]), generator=g)
        return lambda: model(input_ids=ids)
    ids = torch.randint(0, model.config.vocab_size, (1, spec["prompt"]), generator=g)
    return lambda: model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                  max_new_tokens=spec["new_tokens"], min_new_tokens=spec["new_tokens"], pad_token_id=0)


def _paired(spec, out) -> dict:
    """Dense and Gaussian in one process, forwards alternated: the time ratio without process-to-process noise."""
    calls = {}
    for variant in ("dense", "gaussian"):
        calls[variant] = _calls(spec, _load({**spec, "variant": variant, "checkpoint": spec["checkpoints"][variant]}))
    times = {v: [] for v in calls}
    with torch.inference_mode():
        for call in calls.values():
            call()
        for rep in range(spec["repeats"]):
            for variant in (("dense", "gaussian") if rep % 2 == 0 else ("gaussian", "dense")):
                t0 = time.perf_counter()
                calls[variant]()
                times[variant].append(time.perf_counter() - t0)
    out.update(times_s=times, median_s=statistics.median(times["gaussian"]),
               dense_median_s=statistics.median(times["dense"]),
               paired_ratio=statistics.median(g / d for g, d in zip(times["gaussian"], times["dense"])))
    return out


def _worker(spec) -> dict:
    torch.set_num_threads(spec["threads"])
    import transformers  # noqa: F401 - the imports every variant pays for, before any model

    import isogauss_hf  # noqa: F401

    out = {"baseline_rss_mb": _rss_mb()}
    if spec["case"] == "bert-eval-paired":
        return _paired(spec, out)
    if spec["case"] == "bert-train":
        model, calls = _trainee(spec)
    else:
        model = _load(spec)
        calls = _calls(spec, model)
    times = []
    with torch.inference_mode() if spec["case"] != "bert-train" else torch.enable_grad():
        for _ in range(spec["warmup"]):
            calls()
        out["loaded_rss_mb"] = _rss_mb()  # after the warm-up: kernels loaded, kept draws made
        with _Peak() as peak:
            for _ in range(spec["repeats"]):
                t0 = time.perf_counter()
                calls()
                times.append(time.perf_counter() - t0)
        if spec["case"] == "gpt2-generate" and spec["variant"] == "gaussian":
            out["draw_all_ms"] = _draw_all_ms(model)
            out["zero_products_s"] = _zero_products_s(model, calls)
    out.update(times_s=times, median_s=statistics.median(times), phase_peak_rss_mb=peak.peak,
               peak_rss_mb=_peak_rss_mb())
    return out


def _trainee(spec):
    from transformers import BertForSequenceClassification

    from isogauss_hf import IsoGaussConfig, get_isogauss_model

    torch.manual_seed(0)
    model = BertForSequenceClassification(_bert_config(spec["tiny"]))
    if spec["variant"] != "dense":
        model = get_isogauss_model(model, IsoGaussConfig(rule="gdu", noise="seeded"))
    model.train()
    layers = list(model.isogauss_layers().values()) if hasattr(model, "isogauss_layers") else []
    for layer in layers:
        layer.hold_draw = True
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (spec["batch"], spec["seq"]), generator=g)
    labels = torch.randint(0, 2, (spec["batch"],), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, labels=labels).loss.backward()
        for layer in layers:
            layer.distribution_step(lr=2e-5)
        opt.step()

    return model, step


# ---------------------------------------------------------------------------------------------------- parent
def _bert_config(tiny: bool):
    from transformers import BertConfig

    if tiny:
        return BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                          vocab_size=100, max_position_embeddings=64, num_labels=2)
    return BertConfig(num_labels=2)  # bert-base-uncased sizes


def prepare_checkpoints(directory: str, cases, tiny: bool = False) -> dict:
    """Dense and Gaussian (every block, seeded) checkpoints of the BERT-base and GPT-2 small shapes."""
    from transformers import BertForSequenceClassification, GPT2Config, GPT2LMHeadModel

    from isogauss_hf import IsoGaussConfig, get_isogauss_model

    gpt2 = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64) if tiny else GPT2Config()
    paths = {}
    for case, make in (("bert-eval", lambda: BertForSequenceClassification(_bert_config(tiny))),
                       ("gpt2-generate", lambda: GPT2LMHeadModel(gpt2))):
        if case not in cases:
            continue
        for variant in ("dense", "gaussian"):
            torch.manual_seed(0)
            model = make().eval()
            if variant == "gaussian":
                model = get_isogauss_model(model, IsoGaussConfig(noise="seeded"))
            path = os.path.join(directory, f"{case}-{variant}")
            model.save_pretrained(path)
            paths[(case, variant)] = path
            del model
    return paths


def run_cases(args, directory: str) -> dict:
    cases = [c for c in ("bert-eval", "bert-eval-paired", "gpt2-generate", "bert-train") if c in args.fresh]
    paths = prepare_checkpoints(directory, [c.replace("-paired", "") for c in cases], args.tiny)
    variants = {"bert-eval": ("dense", "gaussian", "gaussian-kept"), "bert-eval-paired": ("paired",),
                "gpt2-generate": ("dense", "gaussian", "gaussian-kept"), "bert-train": ("dense", "gaussian")}
    results: dict = {c: {v: [] for v in variants[c]} for c in cases}
    for _ in range(args.rounds):
        for case in cases:
            for variant in variants[case]:
                spec = {"case": case, "variant": variant, "threads": args.fresh_threads, "batch": args.fresh_batch,
                        "seq": args.fresh_seq, "prompt": 8, "new_tokens": args.new_tokens,
                        "tiny": args.tiny, "warmup": 1,
                        "repeats": {"bert-train": 2, "bert-eval-paired": 2 * args.fresh_repeats}.get(case, args.fresh_repeats),
                        "checkpoint": paths.get((case, "dense" if variant == "dense" else "gaussian")),
                        "checkpoints": {v: paths.get(("bert-eval", v)) for v in ("dense", "gaussian")}}
                done = subprocess.run([sys.executable, __file__, json.dumps(spec)], capture_output=True, text=True)
                if done.returncode:
                    raise RuntimeError(f"{case}/{variant} failed: {done.stderr[-3000:]}")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                results[case][variant].append(row)
                if case == "bert-eval-paired":
                    print(f"[fresh {case}] gaussian {row['median_s'] * 1e3:.0f} ms, dense {row['dense_median_s'] * 1e3:.0f}"
                          f" ms, paired ratio {row['paired_ratio']:.3f}", flush=True)
                    continue
                print(f"[fresh {case}] {variant}: {row['median_s'] * 1e3:.0f} ms, peak RSS {row['peak_rss_mb']:.0f} MB "
                      f"(timed phase {row['phase_peak_rss_mb']:.0f} MB, imports {row['baseline_rss_mb']:.0f} MB)" +
                      (f", draw all {row['draw_all_ms']:.0f} ms, without the products {row['zero_products_s']:.2f} s"
                       if "draw_all_ms" in row else ""), flush=True)
    return summarize(results, args)


def summarize(results: dict, args) -> dict:
    out = {}
    for case, by_variant in results.items():
        if case == "bert-eval-paired":
            runs = by_variant["paired"]
            out[case] = {"paired": {"gaussian_median_s": statistics.median(r["median_s"] for r in runs),
                                    "dense_median_s": statistics.median(r["dense_median_s"] for r in runs),
                                    "paired_ratio": statistics.median(r["paired_ratio"] for r in runs),
                                    "per_round_paired_ratio": [r["paired_ratio"] for r in runs]}}
            continue
        dense_t = statistics.median(r["median_s"] for r in by_variant["dense"])
        dense_m = statistics.median(r["peak_rss_mb"] for r in by_variant["dense"])
        dense_model = statistics.median(r["phase_peak_rss_mb"] - r["baseline_rss_mb"] for r in by_variant["dense"])
        rows = {}
        for variant, runs in by_variant.items():
            t = statistics.median(r["median_s"] for r in runs)
            row = {"median_s": t, "ratio_to_dense": t / dense_t, "per_round_s": [r["median_s"] for r in runs]}
            for key in ("peak_rss_mb", "phase_peak_rss_mb", "loaded_rss_mb", "baseline_rss_mb"):
                row[key] = statistics.median(r[key] for r in runs)
            row["peak_rss_ratio_to_dense"] = row["peak_rss_mb"] / dense_m
            # memory the model and its run add to the imports (torch, transformers, isogauss_hf)
            row["model_rss_mb"] = statistics.median(r["phase_peak_rss_mb"] - r["baseline_rss_mb"] for r in runs)
            row["model_rss_ratio_to_dense"] = row["model_rss_mb"] / dense_model
            if any("draw_all_ms" in r for r in runs):
                draw = statistics.median(r["draw_all_ms"] for r in runs) / 1e3
                rest = statistics.median(r["zero_products_s"] for r in runs)
                row.update(draw_all_s=draw, zero_products_s=rest,
                           generator_floor_s=rest + args.new_tokens * draw)  # the rest + every weight drawn per step
                row["ratio_to_generator_floor"] = t / row["generator_floor_s"]
            rows[variant] = row
        out[case] = rows
    return out


def render(fresh: dict, args) -> list[str]:
    lines = ["", "## Fresh process per measurement (time and peak RSS)", "",
             f"{args.rounds} rounds, each variant in its own process; {args.fresh_threads} threads; BERT: batch "
             f"{args.fresh_batch} x {args.fresh_seq}; GPT-2: prompt 8, {args.new_tokens} new tokens greedy, batch 1. "
             "Peak RSS = the process's maximum (loading included); timed phase = the highest RSS while the timed "
             "calls ran; model = timed phase minus the RSS after the imports (torch, transformers, isogauss_hf). "
             "Generator floor (decoding) = the same generate with every Gaussian product replaced by zeros, plus "
             "drawing every Gaussian matrix once per new token.", "",
             "| case | variant | median s | ratio to dense | peak RSS MB | ratio | timed-phase RSS MB | model MB | "
             "model ratio | generator floor s | ratio to floor |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for case, rows in fresh.items():
        if case == "bert-eval-paired":
            r = rows["paired"]
            lines.append(f"| {case} | gaussian vs dense, alternated in one process | {r['gaussian_median_s']:.3f} "
                         f"(dense {r['dense_median_s']:.3f}) | {r['paired_ratio']:.3f} (paired) | | | | | | | |")
            continue
        for variant, r in rows.items():
            floor = (f"{r['generator_floor_s']:.2f} | {r['ratio_to_generator_floor']:.2f}"
                     if "generator_floor_s" in r else " | ")
            lines.append(f"| {case} | {variant} | {r['median_s']:.3f} | {r['ratio_to_dense']:.3f} | "
                         f"{r['peak_rss_mb']:.0f} | {r['peak_rss_ratio_to_dense']:.2f} | {r['phase_peak_rss_mb']:.0f} | "
                         f"{r['model_rss_mb']:.0f} | {r['model_rss_ratio_to_dense']:.2f} | {floor} |")
    return lines


if __name__ == "__main__":
    print(json.dumps(_worker(json.loads(sys.argv[1]))))
