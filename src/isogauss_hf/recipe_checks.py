"""The checks and defaults behind :class:`~isogauss_hf.recipes.Recipe`: presets, block lists, numbers, choices,
the ``gaussian:`` section.

:data:`PRESETS` is the ONE set of defaults shared by custom runs (flags only) and recipes: a value that a
recipe (or a flag) does not give comes from the run's preset (``preset: default`` unless the recipe or
``--preset`` says ``paper``). ``default`` takes the library's rule and noise
(:data:`isogauss_hf.settings.DEFAULT_RULE` / ``DEFAULT_NOISE``, the configuration measured best) and a
budget that learns in a few epochs (lr 1e-4, a 10x lr for the new task head, 10 % warm-up); ``paper``
is the paper's method (WDU, resample, 10 evaluation draws, Table 9's BERT values; the paper recipes
give their model family's Table 9 values themselves). Explicit recipe values win over the preset,
flags win over both.

Each check raises :class:`~isogauss_hf.errors.RecipeError` with one line naming the bad value. The Gaussian
settings themselves are not checked here: :func:`build_isogauss_config` hands them to ``IsoGaussConfig``,
which validates them (and is the one place that knows the allowed rules and noise modes).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from . import settings
from .errors import RecipeError

if TYPE_CHECKING:  # pragma: no cover
    from .config import IsoGaussConfig

__all__ = ["PRESETS", "PRESET_FIELDS", "PRESET_GAUSSIAN_FIELDS", "DEFAULT_PRESET", "preset_values",
           "describe_preset", "RECIPE_GAUSSIAN_DEFAULTS", "gaussian_fields", "parse_layers", "check_auto_layers",
           "check_baselines", "check_run_options", "check_research_options", "DISTILL_TASKS", "positive", "choice", "build_isogauss_config", "PRECISIONS",
           "resolve_precision", "check_generation"]

#: preset -> defaults. Top-level keys are Recipe fields (``head_lr_factor``: the task head's lr = factor x lr
#: when ``head_lr`` is not given); ``gaussian`` holds IsoGaussConfig fields of the ``gaussian:`` section.
PRESETS: dict[str, dict[str, Any]] = {
    "default": {"lr": 1e-4, "head_lr_factor": 10.0, "epochs": 3.0, "max_length": 128, "warmup_ratio": 0.1,
                "calibrate_steps": 200,
                "gaussian": {"rule": settings.DEFAULT_RULE, "noise": settings.DEFAULT_NOISE,
                             "num_samples": settings.DEFAULT_NUM_SAMPLES}},
    "paper": {"lr": 2e-5, "head_lr_factor": 1.0, "epochs": 3.0, "max_length": 128, "warmup_ratio": 0.0,
              "calibrate_steps": 0,
              "gaussian": {"rule": "wdu", "noise": "resample", "num_samples": 10}},
}
DEFAULT_PRESET = "default"
#: Recipe fields a preset fills when a recipe does not give them (``head_lr`` from ``head_lr_factor``).
PRESET_FIELDS = ("lr", "head_lr", "epochs", "max_length", "warmup_ratio", "calibrate_steps")
#: ``gaussian:`` keys a preset fills.
PRESET_GAUSSIAN_FIELDS = ("rule", "noise", "num_samples")
#: The ``gaussian:`` defaults of the default preset (kept for callers of the earlier name).
RECIPE_GAUSSIAN_DEFAULTS: dict[str, Any] = dict(PRESETS[DEFAULT_PRESET]["gaussian"])


def preset_values(name: Any) -> dict[str, Any]:
    """The defaults of preset ``name``; a one-line :class:`RecipeError` naming the presets otherwise."""
    if not isinstance(name, str) or name.lower() not in PRESETS:
        raise RecipeError(f"preset {name!r} invalid; valid choices: {', '.join(PRESETS)}")
    return PRESETS[name.lower()]


def describe_preset(name: str) -> str:
    """``default: rule gdu, noise seeded, 10 draws, lr 0.0001, head lr 10 x lr, 3 epochs, ...`` (the plan)."""
    p = preset_values(name)
    g = p["gaussian"]
    head = "= lr" if p["head_lr_factor"] == 1 else f"{p['head_lr_factor']:g} x lr"
    return (f"{name}: rule {g['rule']}, noise {g['noise']}, {g['num_samples']} evaluation draws, lr {p['lr']:g}, "
            f"head lr {head}, {p['epochs']:g} epochs, max_length {p['max_length']}, warmup {p['warmup_ratio']:g}, "
            f"calibration {p['calibrate_steps']} steps")


def gaussian_fields() -> tuple[str, ...]:
    """The keys a recipe's ``gaussian:`` section accepts: ``IsoGaussConfig``'s fields except ``layers``."""
    from .config import IsoGaussConfig

    return tuple(n for n in IsoGaussConfig.isogauss_fields() if n != "layers")


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


def check_auto_layers(layers: Any, auto_layers: Any) -> tuple[Optional[int], Optional[list[int]]]:
    """``(auto_layers, layers)`` of a recipe: ``layers: auto:K`` -> ``(K, None)``; else the parsed blocks, and
    ``auto_layers`` (K >= 1) only when no blocks are given. ``auto``, ``auto:0``, ``auto:x`` are one-line errors."""
    if isinstance(layers, str) and layers.strip().lower().startswith("auto"):
        from .analysis.select import parse_auto_layers
        from .errors import UsageError

        try:
            return parse_auto_layers(layers), None
        except UsageError as e:
            raise RecipeError(str(e)) from None
    blocks = parse_layers(layers)
    if auto_layers is None:
        return None, blocks
    k = positive("auto_layers", auto_layers, int)
    if blocks is not None:
        raise RecipeError(f"layers {blocks} and auto_layers {k} both given; give one (layers: auto:{k} picks them)")
    return k, None


def check_baselines(value: Any) -> list[str]:
    """``"drop,lowrank"`` / ``["drop"]`` / ``"none"`` -> checked names (:data:`isogauss_hf.baselines.BASELINES`)."""
    from .baselines import parse_baselines
    from .errors import UsageError

    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        return []
    if not isinstance(value, (str, list, tuple)):
        raise RecipeError(f"baselines must be a list of names or 'none', got {value!r}")
    try:
        return parse_baselines(value)
    except UsageError as e:
        raise RecipeError(str(e)) from None


def check_run_options(recipe: Any) -> None:
    """The run options that only make sense together: comparisons need Gaussian layers, ``analyze`` the dense
    run, ``classifier_hidden`` an image classifier."""
    if recipe.compare_dense and recipe.is_dense:
        raise RecipeError("compare_dense needs Gaussian layers to compare with; set layers (e.g. 2,4)")
    if recipe.baselines and recipe.is_dense:
        raise RecipeError(f"baselines {recipe.baselines} need Gaussian layers to compare with; set layers (e.g. 2,4)")
    if recipe.analyze and not (recipe.is_dense or recipe.compare_dense):
        raise RecipeError("analyze measures the dense run's weight drift: set compare_dense (--compare-dense) "
                          "or layers none")
    if recipe.classifier_hidden is not None and recipe.task != "image-classification":
        raise RecipeError(f"classifier_hidden (the Table 6 two-layer head) is for image-classification "
                          f"(ResNet / MobileNetV2), not {recipe.task}")


#: Tasks whose runs can be distilled from the dense run's logits (one logit vector per example).
DISTILL_TASKS = ("text-classification", "image-classification")


def check_research_options(recipe: Any) -> None:
    """The options of the attempts beyond the paper: the statistics' optimizer lr (rule ``backprop`` only),
    logit distillation from the dense run (classification, with the dense run planned) and the subset seeds."""
    if recipe.statistics_lr is not None:
        recipe.statistics_lr = positive("statistics_lr", recipe.statistics_lr)
        rule = recipe.isogauss_config.rule
        if rule != "backprop":
            raise RecipeError(f"statistics_lr {recipe.statistics_lr:g} is the optimizer lr of the statistics under "
                              f"rule backprop, and the rule is {rule}; give --rule backprop or leave it out (GDU / "
                              f"WDU take --distribution-lr)")
    recipe.distill_alpha = positive("distill_alpha", recipe.distill_alpha)
    if recipe.distill_alpha > 1:
        raise RecipeError(f"distill_alpha must be in (0, 1], got {recipe.distill_alpha!r}")
    if recipe.distill_temperature is not None:
        recipe.distill_temperature = positive("distill_temperature", recipe.distill_temperature)
        if recipe.task not in DISTILL_TASKS:
            raise RecipeError(f"distill_temperature: distillation reads one logit vector per example "
                              f"({', '.join(DISTILL_TASKS)}), not {recipe.task}")
        if not recipe.compare_dense:
            raise RecipeError("distill_temperature: the teacher is the dense run of the same seed; set "
                              "compare_dense (--compare-dense) and Gaussian layers")
    for name in ("train_subset_seed", "eval_subset_seed"):
        value = getattr(recipe, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise RecipeError(f"{name} must be a non-negative integer or null, got {value!r}")


def positive(name: str, value: Any, kind: type = float, allow_zero: bool = False) -> Any:
    """``value`` as ``kind`` when it is a finite number > 0 (>= 0 with ``allow_zero``); else a one-line error."""
    ok_type = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_type):
        raise RecipeError(f"{name} must be a {'integer' if kind is int else 'number'}, got {value!r}")
    if not math.isfinite(value):
        raise RecipeError(f"{name} must be a finite number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise RecipeError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return kind(value)


def build_isogauss_config(section: Any, seed: int, preset: str = DEFAULT_PRESET) -> "IsoGaussConfig":
    """The one ``IsoGaussConfig`` of a recipe's ``gaussian:`` section (``layers`` left at None: runs set it);
    rule, noise and num_samples not in the section come from ``preset``."""
    from .config import IsoGaussConfig

    if not isinstance(section, dict):
        raise RecipeError(f"gaussian must be a mapping of Gaussian-layer settings ({', '.join(gaussian_fields())}), "
                          f"got {section!r}")
    if "layers" in section:
        raise RecipeError("gaussian: 'layers' goes at the recipe's top level (layers: [4, 8]), not under gaussian:")
    allowed = gaussian_fields()
    unknown = sorted(set(section) - set(allowed))
    if unknown:
        raise RecipeError(f"gaussian: unknown setting(s) {unknown}; valid settings: {sorted(allowed)}")
    try:
        return IsoGaussConfig(**{**preset_values(preset)["gaussian"], "seed": seed, **section})
    except (TypeError, ValueError) as e:
        raise RecipeError(f"gaussian: {e}") from None


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise RecipeError(f"{name} {value!r} invalid; valid choices: {', '.join(choices)}")
    return value.lower()


#: ``precision`` -> what it means; ``auto`` is resolved per machine by :func:`resolve_precision`.
PRECISIONS: dict[str, str] = {
    "auto": "bf16 autocast on a GPU that supports it, else fp16 with loss scaling on a GPU, fp32 on CPU",
    "fp32": "full precision",
    "bf16": "bf16 autocast (GPU or CPU)",
    "fp16": "fp16 autocast with loss scaling (GPU only)",
}


def resolve_precision(precision: str, cuda: bool, bf16_supported: bool) -> str:
    """``fp32`` / ``bf16`` / ``fp16`` for a machine (``cuda``: a GPU is used; ``bf16_supported``: it has bf16).
    The Gaussian statistics stay fp32 whatever this says."""
    if precision == "auto":
        return ("bf16" if bf16_supported else "fp16") if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise RecipeError("precision fp16 needs a GPU (loss-scaled fp16 autocast); on CPU use bf16 or fp32")
    return precision


def check_generation(section: Any, task: str, max_new_tokens: int) -> dict[str, Any]:
    """The recipe's ``generation:`` settings (``transformers.GenerationConfig`` fields for ``model.generate``),
    checked by ``GenerationConfig.validate``; only summarization generates."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise RecipeError(f"generation must be a mapping of GenerationConfig settings, got {section!r}")
    if not section:
        return {}
    if section and task != "summarization":
        raise RecipeError(f"generation settings are for summarization (model.generate), not {task}")
    for key in ("max_new_tokens", "max_length"):
        if key in section:
            raise RecipeError(f"generation.{key}: set the recipe's max_new_tokens instead (max_length is the "
                              f"input's token budget)")
    from transformers import GenerationConfig

    known = set(GenerationConfig().to_dict())
    unknown = sorted(set(section) - known)
    if unknown:
        raise RecipeError(f"generation: unknown GenerationConfig field(s) {unknown}; e.g. num_beams, do_sample, "
                          f"top_k, top_p, temperature, length_penalty, no_repeat_ngram_size")
    try:
        GenerationConfig(**section, max_new_tokens=max_new_tokens).validate(strict=True)
    except ValueError as e:
        detail = " ".join(line.strip("- ") for line in str(e).splitlines()[1:2]) or str(e)
        raise RecipeError(f"generation {section}: {detail}") from None
    return dict(section)
