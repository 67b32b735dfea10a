"""The Gaussian settings every other module agrees on: allowed rules and noise modes, and their checks.

This module sits below :mod:`isogauss_hf.config` (``IsoGaussConfig``), the layers and the recipes: each
of them validates a rule or a noise mode with :func:`check_rule` / :func:`check_noise`, so the allowed
values and the wording of the error exist once. It imports nothing from the package (and not torch).

Rules (how a Gaussian layer's row/column statistics learn):

* ``gdu`` — Gradient Distribution Update (Algorithm 1, Eqs. 5-6);
* ``wdu`` — Weight Distribution Update (Algorithm 2);
* ``backprop`` — beyond the paper: the statistics are ``nn.Parameter`` s trained by the optimizer through
  the reparameterised draw W = mean + std * noise;
* ``frozen`` — no update: the statistics keep their initial fit (a baseline).

Noise modes (how a weight is drawn from Eq. 2):

* ``resample`` — a fresh draw every training step and every evaluation forward;
* ``seeded`` — one fixed draw per layer seed (deterministic, reproducible bit for bit).

Noise generators (what a seeded draw's numbers are; recorded in checkpoints, see :mod:`isogauss_hf.noise`):

* ``philox4x32-10/box-muller-v1`` — the portable generator (default, checkpoint format 3): the same
  numbers on every device, thread count and CPU build;
* ``torch-cpu/randn-256-row-blocks`` — the generator of checkpoint formats 1-2 (``torch.randn`` on the
  CPU, 256-row blocks), kept so that old checkpoints load as the same model.

The update each (rule, noise) pair runs is chosen in :data:`isogauss_hf.layers.updates.DISTRIBUTION_UPDATES`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from typing import Any

__all__ = [
    "RULES", "NOISE_MODES", "RULE_HELP", "NOISE_HELP", "DEFAULT_RULE", "DEFAULT_NOISE", "DEFAULT_NUM_SAMPLES", "LayerOptions",
    "check_choice", "check_rule", "check_noise", "check_std_floor", "NOISE_GENERATOR_HELP", "NOISE_GENERATOR_NAMES",
    "DEFAULT_NOISE_GENERATOR", "LEGACY_NOISE_GENERATOR", "check_noise_generator",
]

#: rule -> one-line description (the keys are the allowed values of ``rule``).
RULE_HELP: dict[str, str] = {
    "gdu": "Gradient Distribution Update (Algorithm 1): add the row/column distribution of the step -lr*dL/dW",
    "wdu": "Weight Distribution Update (Algorithm 2): refit row/column statistics of the SGD-updated draw",
    "backprop": "beyond the paper: the statistics are parameters trained by the model's optimizer through "
                "W = mean + std * noise (Eq. 2 reparameterised)",
    "frozen": "the statistics stay at their initial fit, never updated (the paper's Table 8 "
              "back-propagation-statistics baseline)",
}
#: noise mode -> one-line description (the keys are the allowed values of ``noise``).
NOISE_HELP: dict[str, str] = {
    "resample": "a fresh weight draw every training step and every evaluation forward",
    "seeded": "one fixed draw per layer seed: deterministic, reproducible bit for bit from a checkpoint",
}
#: noise generator -> one-line description (the keys are the names checkpoints record).
NOISE_GENERATOR_HELP: dict[str, str] = {
    "philox4x32-10/box-muller-v1": "portable: Philox4x32-10 counters keyed by the draw seed, Box-Muller with "
                                   "correctly rounded float32 arithmetic; the same weights on every device and build",
    "torch-cpu/randn-256-row-blocks": "checkpoint formats 1-2: torch.randn on the CPU in 256-row blocks (kept so "
                                      "old checkpoints stay the same model; runs on the CPU, then moves)",
}
RULES: tuple[str, ...] = tuple(RULE_HELP)
NOISE_GENERATOR_NAMES: tuple[str, ...] = tuple(NOISE_GENERATOR_HELP)
DEFAULT_NOISE_GENERATOR = "philox4x32-10/box-muller-v1"
LEGACY_NOISE_GENERATOR = "torch-cpu/randn-256-row-blocks"
NOISE_MODES: tuple[str, ...] = tuple(NOISE_HELP)


def check_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``; else a one-line ``ValueError`` naming it, the choices and the closest."""
    if isinstance(value, str) and value in choices:
        return value
    close = difflib.get_close_matches(str(value), choices, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}.{hint}")


def check_rule(value: Any) -> str:
    """A valid distribution-update rule (see :data:`RULES`)."""
    return check_choice("rule", value, RULES)


def check_noise(value: Any) -> str:
    """A valid noise mode (see :data:`NOISE_MODES`)."""
    return check_choice("noise", value, NOISE_MODES)


#: The library's default rule, noise mode and evaluation draws (``IsoGaussConfig``, the layers, the recipes'
#: ``default`` preset and the CLI read them here): the configuration measured best on the offline tasks
#: (README, "Defaults"; with the statistics calibrated first, ``isogauss_hf.calibrate``). The paper's method,
#: WDU with a fresh draw every step, is the CLI's ``--preset paper``.
DEFAULT_RULE = "gdu"
DEFAULT_NOISE = "seeded"
DEFAULT_NUM_SAMPLES = 10


def check_noise_generator(value: Any) -> str:
    """A known noise generator name (see :data:`NOISE_GENERATOR_HELP`)."""
    return check_choice("noise_generator", value, NOISE_GENERATOR_NAMES)


def check_std_floor(value: Any) -> float:
    """A lower bound for every row/column std: a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"std_floor must be a number >= 0 (finite), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class LayerOptions:
    """Everything a Gaussian layer is built with besides its shape and seed (validated once, here).

    ``IsoGaussConfig`` validates its own fields by building one; a layer takes one from a config
    (``config=``) with explicit keyword arguments taking precedence (:meth:`build`).
    """

    rule: str = field(default=DEFAULT_RULE, metadata={"help": f"Distribution update, one of {list(RULES)}."})
    noise: str = field(default=DEFAULT_NOISE, metadata={"help": f"Weight sampling, one of {list(NOISE_MODES)}."})
    standardize: bool = field(default=False, metadata={"help": "Standardize the layer input (Appendix D)."})
    std_floor: float = field(default=0.0, metadata={"help": "Lower bound of every row/column std after a step."})
    noise_generator: str = field(default=DEFAULT_NOISE_GENERATOR,
                                 metadata={"help": f"Generator of the draws' noise, one of {list(NOISE_GENERATOR_NAMES)}."})

    def __post_init__(self) -> None:
        object.__setattr__(self, "rule", check_rule(self.rule))
        object.__setattr__(self, "noise", check_noise(self.noise))
        if not isinstance(self.standardize, bool):
            raise ValueError(f"standardize must be true or false, got {self.standardize!r}")
        object.__setattr__(self, "std_floor", check_std_floor(self.std_floor))
        object.__setattr__(self, "noise_generator", check_noise_generator(self.noise_generator))

    @classmethod
    def build(cls, config: Any = None, **overrides: Any) -> "LayerOptions":
        """Options read from ``config`` (any object with these attribute names, e.g. ``IsoGaussConfig``),
        replaced by the ``overrides`` that are not None."""
        values = {f.name: getattr(config, f.name) for f in fields(cls) if config is not None and hasattr(config, f.name)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown layer option(s) {unknown}; valid: {[f.name for f in fields(cls)]}")
        return cls(**values)
