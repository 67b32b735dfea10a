"""Every ``purpose: paper`` recipe end to end through the code a Hub user runs, on local stand-ins.

``isogauss-finetune --recipe NAME`` runs as it would with the Hub reachable: the project's Hub check says
yes, the recipe's dataset id, config and splits go to ``datasets.load_dataset`` (answered by
:func:`hub_standins.fake_load_dataset`: a few rows per split in the dataset's real schema) and its model id
to ``from_pretrained`` (answered by a Hub cache holding a stand-in of the real architecture and block count
at tiny width, with its tokenizer or image processor; huggingface_hub stays in offline mode, so nothing
reaches the network). Each recipe fine-tunes its Gaussian layers and its dense baseline for one step, scores
with the recipe's metric, saves, and the saved checkpoints are reloaded with the Auto classes and run.
A new paper recipe whose model or dataset has no stand-in fails here, naming what to add.
"""

import math
from pathlib import Path

import pytest
import torch

from isogauss_hf.recipes import list_recipes, load_recipe

from cli_support import offline, results_of, run_cli  # noqa: F401  (offline: autouse fixture)
from hub_standins import MODEL_STANDINS, fake_load_dataset, write_hub_cache

PAPER_RECIPES = [name for name in list_recipes() if load_recipe(name).purpose == "paper"]

#: metric -> (low, high) of its scale: accuracy 0-1, SQuAD EM / F1 in percent, ROUGE / BLEU 0-1 (Table 3)
METRIC_RANGES = {"accuracy": (0.0, 1.0), "exact_match": (0.0, 100.0), "f1": (0.0, 100.0), "rouge1": (0.0, 1.0),
                 "rougeL": (0.0, 1.0), "bleu": (0.0, 1.0)}
TASK_METRICS = {"text-classification": {"accuracy"}, "image-classification": {"accuracy"},
                "question-answering": {"exact_match", "f1"}, "summarization": {"rouge1", "rougeL", "bleu"}}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The stand-ins are tiny: one torch thread (two measured 7x slower per forward on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("hub-cache")


@pytest.fixture
def the_hub(monkeypatch, hub_cache):
    """The Hub as a user with network sees it, answered locally; returns the ``load_dataset`` calls."""
    import datasets
    import huggingface_hub.constants as constants

    from isogauss_hf.cli import data

    calls = []
    monkeypatch.delenv("HF_HUB_OFFLINE")  # the project's own check now probes the Hub ...
    monkeypatch.setattr(data, "_probe_hub", lambda: True)  # ... and finds it
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # huggingface_hub: the cache answers, never the network
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub_cache))
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset(calls))
    return calls


def test_there_are_paper_recipes_to_run():
    assert len(PAPER_RECIPES) >= 16, PAPER_RECIPES  # Tables 1-7, 17 and 18


def _reloaded_outputs(task, model_dir: Path, config) -> torch.Tensor:
    """Load a saved model with the Auto class of its task and run one input through it."""
    import transformers

    import isogauss_hf  # noqa: F401  (registers the compressed checkpoints with the Auto classes)

    auto = {"text-classification": transformers.AutoModelForSequenceClassification,
            "question-answering": transformers.AutoModelForQuestionAnswering,
            "summarization": transformers.AutoModelForCausalLM,
            "image-classification": transformers.AutoModelForImageClassification}[task]
    model = auto.from_pretrained(str(model_dir)).eval()
    with torch.no_grad():
        if task == "image-classification":
            shape = (1, config.input_size) if config.model_type == "isogauss-ffn8" else (1, 3, 224, 224)
            return model(pixel_values=torch.rand(shape)).logits
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
        batch = tokenizer(["amanda baked cookies"], return_tensors="pt")
        if task == "summarization":
            return model.generate(**batch, max_new_tokens=2, do_sample=False, pad_token_id=tokenizer.eos_token_id)
        out = model(**batch)
        return out.start_logits if task == "question-answering" else out.logits


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_paper_recipe_runs_its_hub_path_on_standins(capsys, the_hub, hub_cache, name):
    from isogauss_hf import IsoGaussModel
    from isogauss_hf.cli.pipelines import resolve_model_source

    recipe = load_recipe(name)
    source = resolve_model_source(recipe)
    if source.kind == "hub":
        assert source.location in MODEL_STANDINS, (
            f"recipe {name}: no stand-in for model {source.location!r}; add one of its architecture and block "
            f"count to tests/hub_standins.py MODEL_STANDINS")
        write_hub_cache(hub_cache, [source.location])
    code, out, err = run_cli(capsys, "--recipe", name, "--max-steps", "1", "--batch-size", "2", "--compare-dense",
                             "--output-dir", "out")
    assert code == 0, err
    assert the_hub, "the recipe's dataset did not come through datasets.load_dataset"
    results = results_of("out")
    assert results["status"] == "completed" and results["model"]["source"] == (
        f"hub {source.location}" if source.kind == "hub" else "random initialisation (from scratch)")
    runs = {run["name"]: run for run in results["runs"]}
    assert set(runs) == {"dense", "isogauss"}
    for run in runs.values():
        assert run["train_steps"] == 1 and math.isfinite(run["train_loss"])
        metrics = run["metrics"]
        assert TASK_METRICS[recipe.task] <= set(metrics) and recipe.metric in metrics
        for metric in TASK_METRICS[recipe.task]:
            low, high = METRIC_RANGES[metric]
            assert low <= metrics[metric] <= high, (metric, metrics[metric])
    gauss = runs["isogauss"]
    assert gauss["layers"] == recipe.layers and gauss["isogauss_config"]["rule"] == recipe.isogauss_config.rule
    assert sorted(int(b) for b in gauss["parameter_report"]["per_block"]) == sorted(recipe.layers)
    # save -> reload: the compressed checkpoint comes back as the Gaussian model it was (same modules, same
    # parameter report), through the Auto classes like any transformers model; the dense baseline loads plainly
    loaded = IsoGaussModel.from_pretrained("out/model")
    report = loaded.parameter_report()
    assert {k: report[k] for k in ("replaced_weights", "gaussian_parameters", "num_matrices")} == {
        k: gauss["parameter_report"][k] for k in ("replaced_weights", "gaussian_parameters", "num_matrices")}
    config = loaded.base_model.config
    for directory in ("out/model", "out/dense-baseline"):
        outputs = _reloaded_outputs(recipe.task, Path(directory), config)
        assert outputs.numel() > 0 and torch.isfinite(outputs.float()).all()
    if recipe.classifier_hidden:  # Table 6: the two-layer head of the Gaussian run, reloaded
        assert loaded.base_model.config.isogauss_head_hidden == recipe.classifier_hidden


@pytest.mark.parametrize("name, layers", [("bert-emotion", "2;3"), ("bert-large-squad", "3")])
def test_a_sweep_runs_on_a_hub_recipe(capsys, the_hub, hub_cache, name, layers):
    """The one-command paired comparison on a paper recipe (its Hub path, on stand-ins), with its own metric."""
    import json

    from isogauss_hf.cli.pipelines import resolve_model_source

    recipe = load_recipe(name)
    write_hub_cache(hub_cache, [resolve_model_source(recipe).location])
    code, out, err = run_cli(capsys, "--recipe", name, "--seeds", "0,1", "--layers", layers, "--baselines", "drop",
                             "--compare-dense", "--max-steps", "1", "--batch-size", "2", "--no-save-models",
                             "--output-dir", "sw")
    assert code == 0, err
    comparison = json.loads(Path("sw/comparison.json").read_text())
    assert comparison["metric"] == recipe.metric and comparison["seeds"] == [0, 1]
    assert comparison["block_sets"] == layers.split(";")
    assert len(comparison["runs"]) == 2 * (1 + 2 * len(layers.split(";")))
    paired = {(p["variant"], p["reference"]) for p in comparison["paired"]}
    gauss = next(v for v in comparison["variants"] if "/" in v)
    assert {(gauss, "dense"), (gauss, "drop")} <= paired and "Seed-paired differences" in out
