"""The checks behind :class:`~isogauss_hf.recipes.Recipe`: block lists, numbers, choices, the ``gaussian:`` section.

Each raises :class:`~isogauss_hf.errors.RecipeError` with one line naming the bad value. The Gaussian
settings themselves are not checked here: :func:`build_isogauss_config` hands them to ``IsoGaussConfig``,
which validates them (and is the one place that knows the allowed rules and noise modes).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Optional

from .errors import RecipeError

if TYPE_CHECKING:  # pragma: no cover
    from .config import IsoGaussConfig

__all__ = ["RECIPE_GAUSSIAN_DEFAULTS", "gaussian_fields", "parse_layers", "positive", "choice", "build_isogauss_config"]

#: Where a recipe's ``gaussian:`` section differs from ``IsoGaussConfig``'s defaults when a key is not
#: given: Table 9's sampling number. ``seed`` not given = the recipe's (training) ``seed``.
RECIPE_GAUSSIAN_DEFAULTS: dict[str, Any] = {"num_samples": 10}


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


def build_isogauss_config(section: Any, seed: int) -> "IsoGaussConfig":
    """The one ``IsoGaussConfig`` of a recipe's ``gaussian:`` section (``layers`` left at None: runs set it)."""
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
        return IsoGaussConfig(**{**RECIPE_GAUSSIAN_DEFAULTS, "seed": seed, **section})
    except (TypeError, ValueError) as e:
        raise RecipeError(f"gaussian: {e}") from None


def choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.lower() not in choices:
        raise RecipeError(f"{name} {value!r} invalid; valid choices: {', '.join(choices)}")
    return value.lower()
