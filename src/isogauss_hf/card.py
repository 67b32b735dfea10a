"""The model card of a compressed checkpoint, and the results it quotes.

:func:`build_model_card` writes a ``huggingface_hub.ModelCard``: YAML metadata (base model,
``library_name: isogauss-hf``, tags, datasets, metrics from ``results.json``), the per-block parameter
report and compression ratio, and the exact loading snippet. :func:`load_results` /
:func:`summarize_results` read ``isogauss-finetune``'s ``results.json`` (or a flat metrics dict).
Uploading is in :mod:`isogauss_hf.hub`.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union

from ._version import __version__
from .checkpoint import WEIGHTS_NAME, base_config_dict
from .config import CONFIG_NAME

__all__ = ["build_model_card", "load_results", "summarize_results", "check_checkpoint", "RESULTS_NAME",
           "MODEL_CARD_NAME"]

MODEL_CARD_NAME = "README.md"
#: The results file ``isogauss-finetune`` writes next to the model (read here for the model card).
RESULTS_NAME = "results.json"

# transformers class-name suffix -> Hub pipeline tag
_PIPELINE_TAGS = (
    ("ForSequenceClassification", "text-classification"),
    ("ForTokenClassification", "token-classification"),
    ("ForQuestionAnswering", "question-answering"),
    ("ForImageClassification", "image-classification"),
    ("ForCausalLM", "text-generation"),
    ("LMHeadModel", "text-generation"),
    ("ForConditionalGeneration", "text2text-generation"),
    ("ForMaskedLM", "fill-mask"),
)
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "merges.txt",
                    "spiece.model", "sentencepiece.bpe.model")
_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json", "image_processor_config.json")


def load_results(results: Union[None, str, os.PathLike, dict[str, Any]], checkpoint_dir: Optional[str] = None
                 ) -> dict[str, Any]:
    """Results as a dict: given directly, read from a JSON path, or ``results.json`` in ``checkpoint_dir`` or,
    failing that, in its parent (``isogauss-finetune`` writes ``OUTPUT_DIR/results.json`` and ``OUTPUT_DIR/model``).

    Accepted layouts: ``{"metrics": {"accuracy": 0.91, ...}, "dataset": "ag_news", "task": "...",
    "base_model": "..."}`` or a flat ``{"eval_accuracy": 0.91, ...}`` (numeric values are metrics).
    """
    if results is None:
        candidates = [os.path.join(checkpoint_dir, RESULTS_NAME),  # next to the weights
                      os.path.join(os.path.dirname(os.path.abspath(checkpoint_dir)), RESULTS_NAME)  # finetune CLI
                      ] if checkpoint_dir else []
        path = next((c for c in candidates if os.path.isfile(c)), None)
        if path is None:
            return {}
        results = path
    if isinstance(results, (str, os.PathLike)):
        try:
            with open(results, encoding="utf-8") as f:
                results = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"cannot read results from {os.fspath(results)!r}: {e}") from None
    if not isinstance(results, dict):
        raise ValueError(f"results must be a dict or a JSON object file, got {type(results).__name__}")
    return dict(results)


def _numeric_metrics(source: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in source.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if key.endswith(("_runtime", "_samples_per_second", "_steps_per_second")) or key in ("epoch", "step"):
            continue
        out[key] = float(value)
    return out


def summarize_results(results: dict[str, Any]) -> dict[str, Any]:
    """``metrics``, ``datasets``, ``dataset_name``, ``task`` and ``base_model`` read from a results dict.

    Understands ``isogauss-finetune``'s ``results.json`` (``runs[-1]`` of the Gaussian run: ``metrics``;
    ``dataset.name``; ``recipe.task``), ``{"metrics": {...}, "dataset": ..., "task": ..., "base_model": ...}``
    and a flat ``{"eval_accuracy": ...}`` (numeric values are metrics).
    """
    runs = results.get("runs")
    recipe = results.get("recipe") if isinstance(results.get("recipe"), dict) else {}
    if isinstance(runs, list) and runs and all(isinstance(r, dict) for r in runs):
        run = next((r for r in reversed(runs) if r.get("gaussian")), runs[-1])
        metrics = _numeric_metrics(run.get("metrics") or {})
    elif isinstance(results.get("metrics"), dict):
        metrics = _numeric_metrics(results["metrics"])
    else:
        metrics = _numeric_metrics(results)
    dataset = results.get("dataset", results.get("datasets"))
    dataset_name = results.get("dataset_name")
    if isinstance(dataset, dict):
        dataset = dataset.get("name")
    if dataset is None:
        dataset = recipe.get("dataset")
    datasets = _as_list(dataset)
    return {
        "metrics": metrics,
        "datasets": datasets,
        "dataset_name": dataset_name or (datasets[0] if datasets else None),
        "task": results.get("task") or recipe.get("task"),
        "base_model": results.get("base_model"),
    }


def _hub_model_id(name: Optional[str]) -> Optional[str]:
    """``name`` if it can be a Hub model id (not a local path), else None."""
    if not name or not isinstance(name, str) or os.path.exists(name) or name.startswith((".", "/", "~")):
        return None
    return name if name.count("/") <= 1 and "\\" not in name else None


def _metric_type(name: str) -> str:
    for prefix in ("eval_", "test_", "predict_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def check_checkpoint(checkpoint_dir: str) -> None:
    if not os.path.isdir(checkpoint_dir):
        raise FileNotFoundError(f"checkpoint directory {checkpoint_dir!r} does not exist")
    missing = [n for n in (CONFIG_NAME, "config.json", WEIGHTS_NAME) if not os.path.isfile(os.path.join(checkpoint_dir, n))]
    if missing:
        raise ValueError(
            f"{checkpoint_dir!r} is not an isogauss-hf compressed checkpoint (missing {missing}); "
            "write one with IsoGaussModel.save_pretrained"
        )


# ---------------------------------------------------------------------------------------------- model card
def build_model_card(
    checkpoint_dir: str,
    repo_id: Optional[str] = None,
    results: Union[None, str, dict[str, Any]] = None,
    report: Optional[dict[str, Any]] = None,
    base_model: Optional[str] = None,
    datasets: Union[None, str, list[str]] = None,
    tags: Optional[list[str]] = None,
    license: Optional[str] = None,
):
    """A ``huggingface_hub.ModelCard`` for the compressed checkpoint in ``checkpoint_dir``.

    ``report`` is :meth:`IsoGaussModel.parameter_report`; when None the checkpoint is loaded (on CPU) to compute
    it, which also proves that it loads. ``results`` as in :func:`load_results` (default: ``results.json`` in
    ``checkpoint_dir``). ``base_model`` defaults to ``results["base_model"]``, then to the name recorded at save.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    check_checkpoint(checkpoint_dir)
    config_path = os.path.join(checkpoint_dir, CONFIG_NAME)
    with open(config_path, encoding="utf-8") as f:
        iso = json.load(f)
    with open(os.path.join(checkpoint_dir, "config.json"), encoding="utf-8") as f:
        base_config = json.load(f)
    if report is None:  # rebuild the model from the checkpoint: the report, and proof that it loads
        from .checkpoint import read_checkpoint
        from .convert import parameter_report

        base, _, records = read_checkpoint(checkpoint_dir)
        report = parameter_report(base, records)
    summary = summarize_results(load_results(results, checkpoint_dir))
    metrics = summary["metrics"]
    base_model = base_model or summary["base_model"] or _hub_model_id(iso.get("base_model_name_or_path"))
    datasets = _as_list(datasets) if datasets is not None else summary["datasets"]
    base_class = str(iso.get("base_model_class", "")).rpartition(":")[2]
    pipeline_tag = next((tag for suffix, tag in _PIPELINE_TAGS if base_class.endswith(suffix)), None)
    task = summary["task"] or pipeline_tag
    model_type = base_config_dict(base_config).get("model_type")
    all_tags = ["isogauss-hf", "gaussian-layers", "compressed", f"{iso.get('rule', 'wdu')}"]
    if model_type:
        all_tags.append(str(model_type))
    all_tags += [t for t in (tags or []) if t not in all_tags]
    name = repo_id.split("/")[-1] if repo_id else os.path.basename(os.path.abspath(checkpoint_dir))
    eval_results = None
    if metrics and datasets and task:
        eval_results = [
            EvalResult(task_type=task, dataset_type=datasets[0], dataset_name=summary["dataset_name"] or datasets[0],
                       metric_type=_metric_type(k), metric_value=v, metric_name=k)
            for k, v in metrics.items()
        ]
    data = ModelCardData(
        base_model=base_model,
        library_name="isogauss-hf",
        tags=all_tags,
        datasets=datasets or None,
        metrics=sorted({_metric_type(k) for k in metrics}) or None,
        pipeline_tag=pipeline_tag,
        license=license,
        model_name=name if eval_results else None,
        eval_results=eval_results,
    )

    files = set(os.listdir(checkpoint_dir))
    load_id = repo_id or checkpoint_dir
    lines = [
        f"# {name}",
        "",
        f"A {base_class or 'transformers model'} whose selected fully connected layers are **Isotropic Gaussian "
        "layers** (*An Isotropic Gaussian Perspective on Fully Connected Layers*): each matrix is stored as the "
        "mean and standard deviation of every row and column, and its weights are sampled at run time from "
        "Eq. 2. Distribution update rule: "
        f"{'GDU (Algorithm 1)' if iso.get('rule') == 'gdu' else 'WDU (Algorithm 2)'}."
        + (f" Base model: `{base_model}`." if base_model else ""),
        "",
        "## Load",
        "",
        "```python",
        "# pip install isogauss-hf",
        "from isogauss_hf import IsoGaussModel",
        "",
        f'model = IsoGaussModel.from_pretrained("{load_id}")',
    ]
    if files & set(_TOKENIZER_FILES):
        lines += ["from transformers import AutoTokenizer", f'tokenizer = AutoTokenizer.from_pretrained("{load_id}")']
    elif files & set(_PROCESSOR_FILES):
        lines += ["from transformers import AutoImageProcessor",
                  f'processor = AutoImageProcessor.from_pretrained("{load_id}")']
    lines += [
        "```",
        "",
        "Only the base config, the non-replaced weights and the statistics are downloaded; the base model is built "
        "from its config. `noise=\"seeded\"` (a keyword of `from_pretrained`) gives deterministic outputs; "
        f"`num_samples` averages the outputs over several weight draws (saved value: {iso.get('num_samples', 1)}). "
        "`model.export_dense(\"dense/\")` writes an ordinary transformers checkpoint holding one seeded draw.",
        "",
        "## Gaussian layers",
        "",
        "| setting | value |",
        "|---|---|",
        f"| blocks (1-based) | {iso.get('layers') if iso.get('layers') is not None else 'all'} |",
        f"| matrices | {iso.get('target_modules') or 'query, key, value, attention output, MLP in, MLP out'} |",
        f"| rule | {iso.get('rule')} |",
        f"| noise | {iso.get('noise')} |",
        f"| seed | {iso.get('seed')} |",
        f"| num_samples | {iso.get('num_samples')} |",
        f"| standardize | {iso.get('standardize')} |",
        "",
        "## Parameters",
        "",
        f"- Gaussian matrices: {report['num_matrices']}",
        f"- dense weights replaced: {report['replaced_weights']:,}",
        f"- statistics stored for them: {report['gaussian_parameters']:,} "
        f"(ratio {report['ratio']:.4%} of the replaced weights)",
        f"- whole model: {report['isogauss_model_parameters']:,} parameters stored vs "
        f"{report['dense_model_parameters']:,} dense; compression ratio "
        f"{report['dense_model_parameters'] / max(report['isogauss_model_parameters'], 1):.3f}x",
        "",
        "| block | modules | dense weights replaced | statistics stored | ratio |",
        "|---|---|---|---|---|",
    ]
    for block in sorted(report["per_block"], key=lambda b: (not b.isdigit(), int(b) if b.isdigit() else 0, b)):
        entry = report["per_block"][block]
        lines.append(f"| {block} | {len(entry['modules'])} | {entry['replaced_weights']:,} | "
                     f"{entry['gaussian_parameters']:,} | {entry['ratio']:.4%} |")
    if metrics:
        lines += ["", "## Results", ""]
        if datasets:
            lines.append(f"Dataset: {', '.join(datasets)}.")
            lines.append("")
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items()]
    lines += ["", f"Made with isogauss-hf {iso.get('isogauss_hf_version', __version__)}; "
              f"checkpoint format version {iso.get('format_version')}; noise generator "
              f"`{iso.get('noise_generator', 'torch-cpu/randn-256-row-blocks')}` (the seeded weights are its output: "
              "part of the model).", ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))
