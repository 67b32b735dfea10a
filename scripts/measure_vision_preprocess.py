#!/usr/bin/env python
"""Images per second of the CLI's image-classification input path, as a Trainer reads it.

What is timed is exactly what ``isogauss-finetune`` runs before the model sees a batch: the run phase's
shared loading (:func:`isogauss_hf.cli.run.load_shared`: model config, image preprocessing, the task
pipeline's ``prepare``) and then ``Trainer.get_train_dataloader()`` of the variant's Trainer
(:func:`isogauss_hf.cli.trainer.make_trainer`: its collator, batch size and dataloader workers), iterated
for ``--batches`` batches after one warm-up batch. Nothing is trained. Each dataset is stored the way the
Hub stores it (``datasets.Image`` columns of encoded PNG / JPEG bytes, written with ``save_to_disk``) and
read as a local dataset directory; the model is a small ViT-B/16-shaped checkpoint (patch 16, input 224)
saved with its image processor (``ViTImageProcessor``: resize to 224, rescale, normalise 0.5 / 0.5).

Datasets:

* ``fashion-mnist``: the first images of the offline Fashion-MNIST (28x28 grayscale PNG), resized to 224;
* ``standin-512``: JPEG stand-ins of Food-101 / mini-ImageNet photographs (512x384 and 500x375, RGB),
  resized to 224;
* ``standin-224``: 224x224 RGB JPEG stand-ins (already the model's size: decoding and normalising only).

    python scripts/measure_vision_preprocess.py --label after        # writes results/vision_preprocess.{json,md}
    python scripts/measure_vision_preprocess.py --smoke --out /tmp/x  # a few images, for the test suite
    # the 'before' row: the library as of fcf66c0 (numpy resize on the fly in the collator's transform)
    git archive fcf66c0 src | tar -x -C /tmp/old && PYTHONPATH=/tmp/old/src \
        python scripts/measure_vision_preprocess.py --label before --code "fcf66c0 (numpy resize on the fly)"

Results of several labels (``before`` = the library as of fcf66c0, ``after`` = this one) accumulate in the
JSON file; the markdown table is rewritten from it.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATASETS = ("fashion-mnist", "standin-512", "standin-224")


def _encode(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _photo(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth colour field with texture: compresses like a photograph (not like noise, not like flat colour)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = []
    for _ in range(3):
        fy, fx, phase = rng.uniform(0.005, 0.05, size=2).tolist() + [rng.uniform(0, 6.3)]
        channels.append(127 + 80 * np.sin(fy * yy + phase) * np.cos(fx * xx))
    image = np.stack(channels, axis=-1) + rng.normal(0, 12, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def build_dataset(name: str, count: int, root: Path, seed: int = 0) -> Path:
    """``count`` train + 4 test images of ``name`` as a Hub-like ``DatasetDict`` saved under ``root``."""
    import datasets

    rng = np.random.default_rng(seed)
    if name == "fashion-mnist":
        from isogauss_hf.tasks import fashion_mnist_dir, read_idx

        path = fashion_mnist_dir()
        stem = "train-images-idx3-ubyte"
        file = path / stem if (path / stem).exists() else path / f"{stem}.gz"
        arrays = read_idx(file)[: count + 4].reshape(-1, 28, 28).astype(np.uint8)
        images = [_encode(a, "PNG") for a in arrays]
    else:
        sizes = [(384, 512), (375, 500)] if name == "standin-512" else [(224, 224)]
        images = [_encode(_photo(rng, *sizes[i % len(sizes)]), "JPEG") for i in range(count + 4)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=10)})
    rows = [{"image": {"bytes": b, "path": None}, "label": i % 10} for i, b in enumerate(images)]
    data = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(rows[:count], features=features),
        "test": datasets.Dataset.from_list(rows[count:], features=features),
    })
    out = root / name
    data.save_to_disk(str(out))
    return out


def build_model(root: Path) -> Path:
    """A ViT-B/16-shaped checkpoint at small width (patch 16, input 224) with its image processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=224, patch_size=16, num_labels=10)
    path = root / "vit"
    ViTForImageClassification(config).save_pretrained(str(path))
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(str(path))
    return path


def measure(model_dir: Path, data_dir: Path, batches: int, batch_size: int, out: Path, repeats: int = 3) -> dict:
    """Images/s of ``batches`` batches from the Trainer's train dataloader (after one warm-up batch), the median of
    ``repeats`` timings; ``setup_s``: the run's one-off loading and preprocessing before it."""
    from isogauss_hf.cli.context import RunContext
    from isogauss_hf.cli.pipelines import load_model
    from isogauss_hf.cli.run import load_shared
    from isogauss_hf.cli.trainer import make_trainer
    from isogauss_hf.cli.variants import Variant
    from isogauss_hf.recipes import Recipe

    recipe = Recipe(name="measure-vision", task="image-classification", model=str(model_dir), dataset=str(data_dir),
                    purpose="custom", image_size=224, batch_size=batch_size, layers=None, max_steps=1)
    ctx = RunContext(recipe=recipe, out=out)

    start = time.perf_counter()
    load_shared(ctx)
    setup_s = time.perf_counter() - start
    variant = Variant("dense", "dense", None, out / "model")
    trainer = make_trainer(ctx, variant, load_model(recipe, ctx.source, ctx.labels), False)
    loader = trainer.get_train_dataloader()
    iterator = iter(loader)
    first = next(iterator)
    shape = tuple(first["pixel_values"].shape)
    rates = []
    for _ in range(repeats):  # the median of `repeats` timings of `batches` batches (the machine may be shared)
        images, start = 0, time.perf_counter()
        for _ in range(batches):
            try:
                batch = next(iterator)
            except StopIteration:
                iterator = iter(loader)
                batch = next(iterator)
            images += len(batch["labels"])
        rates.append((images, time.perf_counter() - start))
    images, elapsed = sorted(rates, key=lambda r: r[0] / r[1])[len(rates) // 2]
    rows = len(ctx.task_data.data["train"]) + len(ctx.task_data.data["test"])
    return {"images": images, "seconds": round(elapsed, 3), "images_per_s": round(images / elapsed, 1),
            "batch_shape": list(shape), "setup_s": round(setup_s, 2), "rows": rows,
            "train_rows": len(ctx.task_data.data["train"]),
            "dataloader_num_workers": trainer.args.dataloader_num_workers}


def effective_rate(run: dict, epochs: int = 3) -> float:
    """Train images per second over ``epochs`` epochs, the one-off preparation (``setup_s``) included."""
    train = run.get("train_rows", run["rows"] - 4)
    return epochs * train / (run["setup_s"] + epochs * train / run["images_per_s"])


def write_markdown(results: dict, path: Path) -> None:
    runs = results["runs"]
    lines = ["# Image preprocessing throughput (the Trainer's train dataloader, batch 32, 224x224 output)", "",
             "`python scripts/measure_vision_preprocess.py --label LABEL` (see the script's docstring). "
             "*prepare*: the run's one-off preprocessing (images of both splits per second of `load_shared`); "
             "*epoch*: images/s of the train dataloader afterwards; *3 epochs*: train images/s over three epochs "
             "with the preparation included.", "",
             "| dataset | label | prepare (images/s) | epoch (images/s) | 3 epochs (images/s) | 3 epochs vs before |",
             "|---|---|---:|---:|---:|---:|"]
    for name in DATASETS:
        base = runs.get("before", {}).get(name)
        for label, run in runs.items():
            if name not in run:
                continue
            r = run[name]
            rows = r.get("rows", run.get("_meta", {}).get("images", 0) + 4)
            prepare = rows / r["setup_s"] if r["setup_s"] >= 0.2 else None  # below: nothing is prepared up front
            ratio = f"{effective_rate(r) / effective_rate(base):.1f}x" if base and label != "before" else ""
            lines.append(f"| {name} | {label} | {'-' if prepare is None else f'{prepare:,.0f}'} | "
                         f"{r['images_per_s']:,.0f} | {effective_rate(r):,.0f} | {ratio} |")
    lines += ["", "Machine and settings per label:", ""]
    for label, run in runs.items():
        meta = run.get("_meta", {})
        lines.append(f"- `{label}`: commit {meta.get('commit', '?')}, {meta.get('cpus', '?')} CPUs, load average "
                     f"{meta.get('load_before', '?')} before / {meta.get('load_after', '?')} after, dataloader workers "
                     f"{meta.get('workers', '?')}, {meta.get('images', '?')} train images per dataset")
    path.write_text("\n".join(lines) + "\n")


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="name of this measurement in the results (before / after)")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=DATASETS)
    parser.add_argument("--images", type=int, default=640, help="train images per dataset")
    parser.add_argument("--batches", type=int, default=12, help="batches timed (after one warm-up batch)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timings of --batches batches; the median is kept")
    parser.add_argument("--out", default="results/vision_preprocess", help="output path without suffix")
    parser.add_argument("--smoke", action="store_true", help="a few images and batches (checks that it runs)")
    parser.add_argument("--code", help="which library code ran (default: the checkout's commit); e.g. for 'before': "
                                       "git archive fcf66c0 src | tar -x -C /tmp/old && PYTHONPATH=/tmp/old/src ...")
    args = parser.parse_args(argv)
    if args.smoke:
        args.images, args.batches, args.batch_size, args.repeats = 12, 2, 4, 1
        args.datasets = [d for d in args.datasets if d != "fashion-mnist"]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path = out.with_suffix(".json")
    results = json.loads(json_path.read_text()) if json_path.exists() else {"runs": {}}
    run: dict = {}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model(root)
        for name in args.datasets:
            data_dir = build_dataset(name, args.images, root)
            run[name] = measure(model_dir, data_dir, args.batches, args.batch_size, root / f"run-{name}", args.repeats)
            print(f"{args.label} {name}: {run[name]['images_per_s']:,.1f} images/s "
                  f"({run[name]['images']} images in {run[name]['seconds']} s, batch {run[name]['batch_shape']}, "
                  f"workers {run[name]['dataloader_num_workers']})", flush=True)
    run["_meta"] = {"commit": args.code or _commit(), "cpus": os.cpu_count(), "python": platform.python_version(),
                    "load_before": round(load_before, 2) if load_before is not None else None,
                    "load_after": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
                    "workers": sorted({r["dataloader_num_workers"] for k, r in run.items() if k != "_meta"}),
                    "images": args.images, "batches": args.batches, "batch_size": args.batch_size,
                    "repeats": args.repeats}
    results["runs"][args.label] = run
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, out.with_suffix(".md"))
    print(f"wrote {json_path} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
