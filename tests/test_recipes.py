"""Recipe YAML loading, validation, flag overrides, the one IsoGaussConfig of the gaussian: section, and the
bundled recipes' Table 9 hyperparameters."""

import dataclasses
import math
from pathlib import Path

import pytest

from isogauss_hf import IsoGaussConfig, settings
from isogauss_hf.recipe_checks import PRESETS, describe_preset

from isogauss_hf.recipes import (
    Recipe,
    RecipeError,
    apply_overrides,
    find_recipe,
    list_recipes,
    load_recipe,
    parse_layers,
    recipes_dir,
)

PAPER = ["vit-mini-imagenet", "vit-food101", "bert-ag-news", "bert-yelp", "bert-emotion", "bert-large-squad",
         "gpt2-samsum", "ffn8-mnist-full", "resnet18-svhn-head", "mobilenetv2-svhn-head"]
OFFLINE = ["minilm-bbc-news", "minilm-tweets", "ffn8-mnist", "ffn8-fashion-mnist", "gpt2-tiny-bbc-headlines",
           "vit-tiny-fashion-mnist"]


def _write(tmp_path, text, name="r.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_bundled_recipes_are_all_present_and_valid():
    assert set(PAPER + OFFLINE) <= set(list_recipes())
    for name in list_recipes():
        recipe = load_recipe(name)
        assert recipe.name == name


# Table 9: (recipe, model, task, batch size, optimizer, lr, weight decay, max length, num_samples)
TABLE9 = [
    ("vit-mini-imagenet", "vit", "image-classification", 32, "adamw", 5e-5, 0.0, None, 10),
    ("vit-food101", "vit", "image-classification", 32, "adamw", 5e-5, 0.0, None, 10),
    ("bert-ag-news", "bert", "text-classification", 16, "adamw", 2e-5, 0.0, 128, 10),
    ("bert-yelp", "bert", "text-classification", 16, "adamw", 2e-5, 0.0, 128, 10),
    ("bert-emotion", "bert", "text-classification", 16, "adamw", 2e-5, 0.0, 128, 10),
    ("bert-large-squad", "bert-large", "question-answering", 16, "adamw", 3e-5, 3e-5, 384, 10),
    ("gpt2-samsum", "gpt2", "summarization", 16, "adamw", 2e-5, 0.01, 1024, 10),
    ("ffn8-mnist-full", "ffn8", "image-classification", 32, "sgd", 1e-3, 0.0, None, 100),
    ("ffn8-mnist", "ffn8", "image-classification", 32, "sgd", 1e-3, 0.0, None, 100),
]


@pytest.mark.parametrize("name, model, task, batch, optimizer, lr, wd, max_length, samples", TABLE9)
def test_paper_hyperparameters(name, model, task, batch, optimizer, lr, wd, max_length, samples):
    r = load_recipe(name)
    assert (r.model, r.task, r.batch_size, r.optimizer, r.isogauss_config.num_samples) == (model, task, batch, optimizer,
                                                                                          samples)
    assert r.lr == pytest.approx(lr) and r.weight_decay == pytest.approx(wd)
    if max_length is not None:
        assert r.max_length == max_length


def test_dataset_specific_paper_settings():
    assert load_recipe("bert-yelp").dataset_options["sample_size"] == 100_000
    assert load_recipe("bert-emotion").dataset_options["test_size"] == 0.1
    assert load_recipe("gpt2-samsum").metric == "rougeL"
    assert load_recipe("bert-large-squad").metric == "f1"
    assert {load_recipe(n).purpose for n in PAPER} == {"paper"}
    assert {load_recipe(n).purpose for n in ("gpt2-tiny-bbc-headlines", "vit-tiny-fashion-mnist")} == {"pipeline-check"}


def test_main_job_recipe_compares_dense_gaussian_drop_and_lowrank():
    r = load_recipe("minilm-tweets")
    assert r.compare_dense and r.layers == [2, 4, 6] and r.model == "minilm" and r.dataset == "tweets"
    assert r.baselines == ["drop", "lowrank"] and (r.train_samples, r.eval_samples) == (3000, 1500)
    assert (r.max_length, r.batch_size, r.epochs, r.lr, r.head_lr) == (64, 32, 1.5, 1e-4, 1e-3)
    assert r.preset == "default" and "gaussian.rule" in r.preset_filled  # the rule follows the default preset


def test_make_demo_runs_the_main_job():
    from pathlib import Path

    makefile = (Path(__file__).resolve().parent.parent / "Makefile").read_text()
    demo = makefile.split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "--recipe minilm-tweets --output-dir runs/minilm-tweets --overwrite" in demo


@pytest.mark.parametrize(
    "value, expected",
    [("4,8,12", [4, 8, 12]), ("12, 4", [4, 12]), ([3], [3]), (5, [5]), ("none", None), ("NONE", None), (None, None),
     ([], None)],
)
def test_parse_layers(value, expected):
    assert parse_layers(value) == expected


@pytest.mark.parametrize(
    "value, message",
    [("a,b", "1-based block indices"), ("0,1", "invalid"), ([2, 2], "more than once"), ({"x": 1}, "list"),
     ([1.5], "invalid")],
)
def test_parse_layers_errors(value, message):
    with pytest.raises(RecipeError, match=message):
        parse_layers(value)


def test_load_from_path_and_name_defaults_to_file_stem(tmp_path):
    path = _write(tmp_path, "task: text-classification\nmodel: bert\ndataset: ag_news\nlayers: 2,4\n", "my-run.yaml")
    r = load_recipe(str(path))
    assert r.name == "my-run" and r.layers == [2, 4] and r.isogauss_config.rule == settings.DEFAULT_RULE


@pytest.mark.parametrize(
    "body, message",
    [
        ("task: text-classification\nmodel: bert\ndataset: x\nlerning_rate: 1\n", r"unknown recipe field\(s\) \['lerning_rate'\]"),
        ("task: text-classification\nmodel: bert\n", r"missing required recipe field\(s\) \['dataset'\]"),
        ("task: translation\nmodel: bert\ndataset: x\n", "task 'translation' invalid; valid choices"),
        ("task: text-classification\nmodel: bert\ndataset: x\ngaussian: {rule: sgd}\n", "rule"),
        ("task: text-classification\nmodel: bert\ndataset: x\nrule: gdu\n", r"rule belong\(s\) under 'gaussian:'"),
        ("task: text-classification\nmodel: bert\ndataset: x\ngaussian: {noise: random}\n",
         r"gaussian: noise='random' is not valid"),
        ("task: text-classification\nmodel: bert\ndataset: x\ngaussian: {layers: [1]}\n", "top level"),
        ("task: text-classification\nmodel: bert\ndataset: x\ngaussian: {lr: 1}\n", r"unknown setting\(s\) \['lr'\]"),
        ("task: text-classification\nmodel: bert\ndataset: x\ngaussian: [gdu]\n", "gaussian must be a mapping"),
        ("task: text-classification\nmodel: bert\ndataset: x\ngaussian: {num_samples: 0}\n", "num_samples"),
        ("task: text-classification\nmodel: bert\ndataset: x\nlr: .nan\n", "lr must be a finite number"),
        ("task: text-classification\nmodel: bert\ndataset: x\nepochs: .inf\n", "epochs must be a finite number"),
        ("task: text-classification\nmodel: bert\ndataset: x\nlr: -1\n", "lr must be > 0"),
        ("task: text-classification\nmodel: bert\ndataset: x\nbatch_size: 0\n", "batch_size must be > 0"),
        ("task: text-classification\nmodel: bert\ndataset: x\nmax_steps: 0\n", "max_steps"),
        ("task: text-classification\nmodel: bert\ndataset: x\ncompare_dense: true\n", "compare_dense needs"),
        ("task: text-classification\nmodel: x\ndataset: y\nfrom_scratch: true\n", "model_config.model_type"),
        ("task: question-answering\nmodel: bert\ndataset: squad\nmax_length: 128\ndoc_stride: 64\n", "doc_stride"),
        ("task: text-classification\nmodel: bert\ndataset: x\nmomentum: 0.9\n", "for optimizer 'sgd' only"),
        ("task: text-classification\nmodel: bert\ndataset: x\noptimizer: sgd\nmomentum: 1.0\n", "momentum must be"),
        ("task: text-classification\nmodel: bert\ndataset: x\npreset: fast\n", "preset 'fast' invalid"),
        ("task: text-classification\nmodel: bert\ndataset: x\nhead_lr: 0\n", "head_lr must be > 0"),
        ("task: text-classification\nmodel: bert\ndataset: x\nlayers: 2\nbaselines: [dorp]\n",
         "baseline 'dorp' is not known; choose from drop, lowrank, frozen"),
        ("task: text-classification\nmodel: bert\ndataset: x\nbaselines: [drop]\n", "need Gaussian layers"),
        ("task: text-classification\nmodel: bert\ndataset: x\nlayers: auto:0\n", "auto:K with K a positive"),
        ("task: text-classification\nmodel: bert\ndataset: x\nlayers: auto:1.5\n", "auto:K with K a positive"),
        ("task: text-classification\nmodel: bert\ndataset: x\nlayers: [2]\nauto_layers: 2\n", "both given"),
        ("task: text-classification\nmodel: bert\ndataset: x\nlayers: 2\nanalyze: true\n", "needs|dense run"),
        ("task: text-classification\nmodel: bert\ndataset: x\nclassifier_hidden: 32\n", "image-classification"),
        ("task: image-classification\nmodel: bert\ndataset: x\nclassifier_hidden: 0\n", "classifier_hidden must"),
        ("task: summarization\nmodel: gpt2\ndataset: x\ngeneration: {beams: 4}\n",
         r"unknown GenerationConfig field\(s\) \['beams'\]"),
        ("task: summarization\nmodel: gpt2\ndataset: x\ngeneration: {max_new_tokens: 9}\n", "set the recipe's max_new"),
        ("task: summarization\nmodel: gpt2\ndataset: x\ngeneration: {temperature: 0.7}\n", "do_sample"),
        ("task: summarization\nmodel: gpt2\ndataset: x\ngeneration: [greedy]\n", "generation must be a mapping"),
        ("task: text-classification\nmodel: bert\ndataset: x\ngeneration: {num_beams: 2}\n", "for summarization"),
        ("task: text-classification\nmodel: bert\ndataset: x\nprecision: fp8\n", "precision 'fp8' invalid"),
        ("- a\n- b\n", "YAML mapping"),
        ("task: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_recipes(tmp_path, body, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(str(_write(tmp_path, body)))


def test_generation_settings_reach_a_generation_config(tmp_path):
    from transformers import GenerationConfig

    body = ("task: summarization\nmodel: gpt2\ndataset: x\nmax_new_tokens: 20\n"
            "generation: {num_beams: 4, length_penalty: 0.8}\n")
    recipe = load_recipe(str(_write(tmp_path, body)))
    assert recipe.generation == {"num_beams": 4, "length_penalty": 0.8}
    config = GenerationConfig(**recipe.generation, max_new_tokens=recipe.max_new_tokens)
    assert (config.num_beams, config.length_penalty, config.max_new_tokens) == (4, 0.8, 20)
    assert load_recipe("gpt2-samsum").generation == {"num_beams": 1, "do_sample": False}  # greedy, stated


@pytest.mark.parametrize("precision, cuda, bf16, expected", [
    ("auto", False, False, "fp32"), ("auto", True, True, "bf16"), ("auto", True, False, "fp16"),
    ("bf16", False, False, "bf16"), ("fp32", True, True, "fp32"), ("fp16", True, True, "fp16"),
])
def test_precision_per_machine(precision, cuda, bf16, expected):
    from isogauss_hf.recipe_checks import resolve_precision

    assert resolve_precision(precision, cuda, bf16) == expected


def test_fp16_without_a_gpu_is_refused():
    from isogauss_hf.recipe_checks import resolve_precision

    with pytest.raises(RecipeError, match="fp16 needs a GPU"):
        resolve_precision("fp16", False, False)
    assert {load_recipe(n).precision for n in list_recipes()} == {"auto"}


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(RecipeError, match=r"unknown recipe 'nope'; known recipes: .*minilm-bbc-news"):
        find_recipe("nope")
    with pytest.raises(RecipeError, match="not found"):
        find_recipe("missing/dir/r.yaml")


def test_overrides_replace_values_and_are_validated():
    base = load_recipe("minilm-bbc-news")
    r = apply_overrides(base, {"lr": 1e-3, "layers": "2,4", "gaussian": {"rule": "gdu", "num_samples": None}})
    assert (r.lr, r.layers, r.isogauss_config.rule, r.isogauss_config.num_samples) == (
        1e-3, [2, 4], "gdu", base.isogauss_config.num_samples)
    assert base.lr != 1e-3  # the original is unchanged
    dense = apply_overrides(base, {"layers": "none"})
    assert dense.layers is None and dense.is_dense and dense.compare_dense is False
    with pytest.raises(RecipeError, match="batch_size"):
        apply_overrides(base, {"batch_size": -3})
    with pytest.raises(RecipeError, match="unknown recipe field"):
        apply_overrides(base, {"bogus": 1})
    with pytest.raises(RecipeError, match="is a Gaussian setting"):
        apply_overrides(base, {"rule": "gdu"})
    with pytest.raises(RecipeError, match="rule='adam' is not valid"):
        apply_overrides(base, {"gaussian": {"rule": "adam"}})


def test_recipes_dir_env_override(tmp_path, monkeypatch):
    _write(tmp_path, "task: summarization\nmodel: gpt2\ndataset: samsum\n", "only.yaml")
    monkeypatch.setenv("ISOGAUSS_RECIPES_DIR", str(tmp_path))
    assert recipes_dir() == tmp_path and list_recipes() == ["only"]
    assert load_recipe("only").task == "summarization"


def test_to_dict_round_trip():
    r = load_recipe("gpt2-tiny-bbc-headlines")
    assert Recipe.from_dict(r.to_dict()) == r


# ------------------------------------------------------------------ the gaussian: section builds one IsoGaussConfig
def test_gaussian_section_builds_one_isogauss_config(tmp_path):
    path = _write(tmp_path, "task: text-classification\nmodel: bert\ndataset: ag_news\nlayers: [2, 4]\nseed: 7\n"
                            "gaussian:\n  rule: gdu\n  noise: seeded\n  distribution_lr: 1.0e-3\n  std_floor: 0.01\n"
                            "  standardize: true\n  target_modules: [query, value]\n")
    r = load_recipe(str(path))
    config = r.isogauss_config
    assert isinstance(config, IsoGaussConfig) and config.layers is None
    assert (config.rule, config.noise, config.distribution_lr, config.std_floor, config.standardize) == (
        "gdu", "seeded", 1e-3, 0.01, True)
    assert config.target_modules == ["query", "value"]
    assert config.num_samples == 10 and config.seed == 7  # recipe defaults: Table 9's 10 draws, the recipe's seed
    run = r.config_for(r.layers)
    assert run == dataclasses.replace(config, layers=[2, 4]) and run.layers == [2, 4] and run.rule == "gdu"


def test_recipe_holds_no_copies_of_the_gaussian_settings():
    names = set(Recipe.field_names())
    assert not names & {"rule", "noise", "num_samples", "standardize", "distribution_lr", "std_floor",
                        "target_modules"}
    assert "gaussian" in names and "layers" in names


def test_gaussian_seed_follows_the_recipe_seed_unless_given():
    base = load_recipe("minilm-bbc-news")
    assert base.seed == 42 and base.isogauss_config.seed == 42  # today's behaviour: noise seed = training seed
    assert apply_overrides(base, {"seed": 7}).isogauss_config.seed == 7
    pinned = apply_overrides(base, {"gaussian": {"seed": 3}})
    assert pinned.isogauss_config.seed == 3 and apply_overrides(pinned, {"seed": 9}).isogauss_config.seed == 3


def test_every_bundled_recipe_nests_its_gaussian_settings():
    import yaml

    for name in list_recipes():
        data = yaml.safe_load(find_recipe(name).read_text())
        assert "rule" not in data and "noise" not in data and "num_samples" not in data, name
        if data.get("purpose") == "paper":  # the paper's method, written out; the demos follow the preset
            assert isinstance(data.get("gaussian"), dict) and "rule" in data["gaussian"], name
            assert data.get("preset") == "paper", name


def test_to_dict_keeps_the_gaussian_section_as_written():
    r = load_recipe("ffn8-mnist")
    assert r.to_dict()["gaussian"] == {"rule": "gdu", "noise": "seeded", "num_samples": 100}
    assert "isogauss_config" not in r.to_dict()


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_refused(value):
    base = load_recipe("minilm-bbc-news")
    for name in ("lr", "epochs", "weight_decay", "warmup_ratio"):
        with pytest.raises(RecipeError, match=f"{name} must be"):
            apply_overrides(base, {name: value})


@pytest.mark.parametrize("value", [math.nan, -math.inf, math.inf])
def test_non_finite_gaussian_numbers_are_refused_by_isogauss_config(value):
    with pytest.raises(RecipeError, match="distribution_lr"):
        apply_overrides(load_recipe("minilm-bbc-news"), {"gaussian": {"distribution_lr": value}})


def test_custom_purpose_and_column_fields():
    r = Recipe(name="mine", task="text-classification", model="bert", dataset="x.csv", purpose="custom",
               text_column="review", label_column="class")
    assert r.purpose == "custom" and (r.text_column, r.text_pair_column, r.label_column) == ("review", None, "class")
    with pytest.raises(RecipeError, match="label_column must be a column name"):
        Recipe(name="mine", task="text-classification", model="bert", dataset="x.csv", label_column="")


# ------------------------------------------------------------------ presets: one set of defaults
def test_default_preset_takes_the_library_rule_and_noise():
    assert PRESETS["default"]["gaussian"]["rule"] == settings.DEFAULT_RULE
    assert PRESETS["default"]["gaussian"]["noise"] == settings.DEFAULT_NOISE
    assert PRESETS["paper"]["gaussian"] == {"rule": "wdu", "noise": "resample", "num_samples": 10}


@pytest.mark.parametrize("preset", list(PRESETS))
def test_unset_values_come_from_the_preset_for_custom_runs_and_recipes(preset):
    p = PRESETS[preset]
    r = Recipe(name="c", task="text-classification", model="bert", dataset="x.csv", preset=preset)
    assert (r.lr, r.epochs, r.max_length, r.warmup_ratio, r.calibrate_steps) == (
        p["lr"], p["epochs"], p["max_length"], p["warmup_ratio"], p["calibrate_steps"])
    assert r.head_lr == pytest.approx(p["lr"] * p["head_lr_factor"])
    c = r.isogauss_config
    assert (c.rule, c.noise, c.num_samples) == tuple(p["gaussian"][k] for k in ("rule", "noise", "num_samples"))
    assert set(r.preset_filled) == {"lr", "epochs", "max_length", "warmup_ratio", "head_lr", "calibrate_steps",
                                    "gaussian.rule", "gaussian.noise", "gaussian.num_samples"}
    assert describe_preset(preset).startswith(f"{preset}: rule {p['gaussian']['rule']}")


def test_recipe_values_win_over_the_preset_and_overrides_over_both():
    r = Recipe(name="c", task="text-classification", model="bert", dataset="x.csv", lr=3e-4, gaussian={"rule": "gdu"})
    assert r.lr == 3e-4 and r.head_lr == pytest.approx(3e-3) and r.isogauss_config.rule == "gdu"
    paper = apply_overrides(r, {"preset": "paper"})
    assert paper.lr == 3e-4 and paper.head_lr == 3e-4  # explicit lr kept; head lr = the paper preset's 1 x lr
    assert paper.isogauss_config.rule == "gdu" and paper.isogauss_config.noise == "resample"
    assert paper.warmup_ratio == PRESETS["paper"]["warmup_ratio"]
    flagged = apply_overrides(paper, {"lr": 1e-5, "head_lr": 5e-4, "gaussian": {"noise": "seeded"}})
    assert (flagged.lr, flagged.head_lr, flagged.isogauss_config.noise) == (1e-5, 5e-4, "seeded")
    assert "head_lr" not in flagged.preset_filled and "lr" not in flagged.preset_filled


def test_paper_preset_on_a_demo_recipe_switches_to_the_papers_method():
    r = apply_overrides(load_recipe("minilm-tweets"), {"preset": "paper"})
    assert (r.isogauss_config.rule, r.isogauss_config.noise, r.isogauss_config.num_samples) == ("wdu", "resample", 10)
    assert r.lr == 1e-4 and r.head_lr == 1e-3  # the recipe's own values stay


def test_layers_auto_and_baselines_fields():
    r = Recipe(name="c", task="text-classification", model="bert", dataset="x.csv", layers="auto:2",
               baselines="drop,lowrank,drop", compare_dense=True)
    assert (r.auto_layers, r.layers, r.baselines, r.is_dense) == (2, None, ["drop", "lowrank"], False)
    picked = apply_overrides(r, {"layers": "3,5"})
    assert (picked.auto_layers, picked.layers) == (None, [3, 5])
    dense = apply_overrides(r, {"layers": "none"})
    assert dense.is_dense and dense.baselines == [] and not dense.compare_dense
    assert apply_overrides(picked, {"baselines": "none"}).baselines == []


@pytest.mark.parametrize("overrides, message", [
    ({"statistics_lr": 1e-3}, "statistics_lr 0.001 is the optimizer lr of the statistics under rule backprop"),
    ({"statistics_lr": -1.0, "gaussian": {"rule": "backprop"}}, "statistics_lr must be > 0"),
    ({"distill_temperature": 2.0, "compare_dense": False}, "the teacher is the dense run of the same seed"),
    ({"distill_temperature": 0.0}, "distill_temperature must be > 0"),
    ({"distill_temperature": 2.0, "distill_alpha": 1.5}, r"distill_alpha must be in \(0, 1\]"),
    ({"train_subset_seed": -1}, "train_subset_seed must be a non-negative integer"),
    ({"eval_subset_seed": 1.5}, "eval_subset_seed must be a non-negative integer"),
    ({"eval_every": 0}, "eval_every must be > 0"),
])
def test_research_fields_are_checked(overrides, message):
    with pytest.raises(RecipeError, match=message):
        apply_overrides(load_recipe("minilm-bbc-news"), overrides)


def test_research_fields_and_their_labels():
    from isogauss_hf.cli.variants import plan_variants

    r = apply_overrides(load_recipe("minilm-tweets-table2"), {"gaussian": {"rule": "backprop"}, "statistics_lr": 1e-3,
                                                               "distill_temperature": 2.0})
    assert (r.train_subset_seed, r.eval_subset_seed, r.distill_alpha) == (1000, 2000, 0.5)
    labels = [v.label for v in plan_variants(r, Path("out"))]
    assert labels == ["dense", "dense+kd=2", "backprop/seeded+calib=200+slr=0.001+kd=2", "drop+kd=2", "lowrank+kd=2"]
    with pytest.raises(RecipeError, match="distillation reads one logit vector per example"):
        apply_overrides(load_recipe("bert-large-squad"), {"distill_temperature": 2.0, "compare_dense": True})
