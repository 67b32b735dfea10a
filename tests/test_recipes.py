"""Recipe YAML loading, validation, flag overrides, and the bundled recipes' Table 9 hyperparameters."""

import pytest

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
         "gpt2-samsum", "ffn8-mnist-full"]
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
    assert (r.model, r.task, r.batch_size, r.optimizer, r.num_samples) == (model, task, batch, optimizer, samples)
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


def test_main_job_recipe_compares_dense_and_gaussian():
    r = load_recipe("minilm-bbc-news")
    assert r.compare_dense and r.layers and r.model == "minilm" and r.dataset == "bbc_news"


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
    assert r.name == "my-run" and r.layers == [2, 4] and r.rule == "wdu"


@pytest.mark.parametrize(
    "body, message",
    [
        ("task: text-classification\nmodel: bert\ndataset: x\nlerning_rate: 1\n", r"unknown recipe field\(s\) \['lerning_rate'\]"),
        ("task: text-classification\nmodel: bert\n", r"missing required recipe field\(s\) \['dataset'\]"),
        ("task: translation\nmodel: bert\ndataset: x\n", "task 'translation' invalid; valid choices"),
        ("task: text-classification\nmodel: bert\ndataset: x\nrule: sgd\n", "rule"),
        ("task: text-classification\nmodel: bert\ndataset: x\nlr: -1\n", "lr must be > 0"),
        ("task: text-classification\nmodel: bert\ndataset: x\nbatch_size: 0\n", "batch_size must be > 0"),
        ("task: text-classification\nmodel: bert\ndataset: x\nmax_steps: 0\n", "max_steps"),
        ("task: text-classification\nmodel: bert\ndataset: x\ncompare_dense: true\n", "compare_dense needs"),
        ("task: text-classification\nmodel: x\ndataset: y\nfrom_scratch: true\n", "model_config.model_type"),
        ("task: question-answering\nmodel: bert\ndataset: squad\nmax_length: 128\ndoc_stride: 64\n", "doc_stride"),
        ("task: text-classification\nmodel: bert\ndataset: x\nmomentum: 0.9\n", "for optimizer 'sgd' only"),
        ("task: text-classification\nmodel: bert\ndataset: x\noptimizer: sgd\nmomentum: 1.0\n", "momentum must be"),
        ("- a\n- b\n", "YAML mapping"),
        ("task: [unclosed\n", "not valid YAML"),
    ],
)
def test_invalid_recipes(tmp_path, body, message):
    with pytest.raises(RecipeError, match=message):
        load_recipe(str(_write(tmp_path, body)))


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(RecipeError, match=r"unknown recipe 'nope'; known recipes: .*minilm-bbc-news"):
        find_recipe("nope")
    with pytest.raises(RecipeError, match="not found"):
        find_recipe("missing/dir/r.yaml")


def test_overrides_replace_values_and_are_validated():
    base = load_recipe("minilm-bbc-news")
    r = apply_overrides(base, {"lr": 1e-3, "layers": "2,4", "rule": "gdu", "num_samples": None})
    assert (r.lr, r.layers, r.rule, r.num_samples) == (1e-3, [2, 4], "gdu", base.num_samples)
    assert base.lr != 1e-3  # the original is unchanged
    dense = apply_overrides(base, {"layers": "none"})
    assert dense.layers is None and dense.is_dense and dense.compare_dense is False
    with pytest.raises(RecipeError, match="batch_size"):
        apply_overrides(base, {"batch_size": -3})
    with pytest.raises(RecipeError, match="unknown recipe field"):
        apply_overrides(base, {"bogus": 1})


def test_recipes_dir_env_override(tmp_path, monkeypatch):
    _write(tmp_path, "task: summarization\nmodel: gpt2\ndataset: samsum\n", "only.yaml")
    monkeypatch.setenv("ISOGAUSS_RECIPES_DIR", str(tmp_path))
    assert recipes_dir() == tmp_path and list_recipes() == ["only"]
    assert load_recipe("only").task == "summarization"


def test_to_dict_round_trip():
    r = load_recipe("gpt2-tiny-bbc-headlines")
    assert Recipe.from_dict(r.to_dict()) == r
