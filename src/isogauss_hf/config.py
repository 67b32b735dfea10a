"""``IsoGaussConfig``: which layers become Gaussian and how their statistics are learned."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from .layer import NOISE_MODES, RULES, check_choice

__all__ = ["IsoGaussConfig", "CONFIG_NAME", "FORMAT_VERSION"]

CONFIG_NAME = "isogauss_config.json"
#: Version of the on-disk format (isogauss_config.json + safetensors layout). Bumped on breaking change.
FORMAT_VERSION = 1

CANONICAL_TARGETS = ("query", "key", "value", "attention_output", "mlp_in", "mlp_out")


@dataclass
class IsoGaussConfig:
    """Configuration of Isotropic Gaussian layers, in the style of a PEFT config.

    Example: ``IsoGaussConfig(layers=[4, 8, 12], rule="wdu")`` turns the query, key, value, attention
    output, MLP-in and MLP-out matrices of blocks 4, 8 and 12 (1-based, as in the paper's tables)
    into Gaussian layers trained by WDU.
    """

    layers: Optional[list[int]] = field(
        default=None,
        metadata={"help": "1-based indices of the transformer blocks to convert (e.g. [4, 8, 12]). "
                          "None converts every block."},
    )
    target_modules: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Matrices to convert inside each chosen block. For a known architecture, names from "
                          f"{list(CANONICAL_TARGETS)} (None = all six). Otherwise regular expressions matched "
                          "against full module names (the generic path)."},
    )
    layers_pattern: str = field(
        default=r"\.(\d+)\.",
        metadata={"help": "Generic path only: regex whose first group is the 0-based block index inside a "
                          "module name; used to apply `layers` to modules matched by patterns."},
    )
    rule: str = field(
        default="wdu",
        metadata={"help": "Distribution update: 'gdu' (Algorithm 1, add the distribution of the step) or "
                          "'wdu' (Algorithm 2, refit the statistics of the SGD-updated sampled weights)."},
    )
    noise: str = field(
        default="resample",
        metadata={"help": "'resample': a fresh weight draw at every step/forward (the paper's run-time sampling). "
                          "'seeded': one fixed draw per layer seed, deterministic and reproducible bit for bit."},
    )
    seed: int = field(
        default=0,
        metadata={"help": "Base seed; each layer's noise seed derives from it and the layer's module name."},
    )
    num_samples: int = field(
        default=1,
        metadata={"help": "Evaluation: average the model outputs over this many weight draws (the paper's "
                          "sampling number: 10 for transformers, 100 for the 8-layer network). 1 = one draw."},
    )
    standardize: bool = field(
        default=False,
        metadata={"help": "Standardize each Gaussian layer's input to zero mean / unit variance (Appendix D)."},
    )
    distribution_lr: Optional[float] = field(
        default=None,
        metadata={"help": "Learning rate of the distribution step; None uses the optimizer's current learning rate."},
    )
    std_floor: float = field(
        default=0.0,
        metadata={"help": "Lower bound applied to every row/column std after a distribution step (>= 0)."},
    )

    def __post_init__(self) -> None:
        if self.layers is not None:
            if isinstance(self.layers, (int, str)) or not hasattr(self.layers, "__iter__"):
                raise ValueError(f"layers must be a list of 1-based block indices, got {self.layers!r}")
            layers = list(self.layers)
            bad = [x for x in layers if isinstance(x, bool) or not isinstance(x, int)]
            if bad:
                raise ValueError(f"layers must be integers (1-based block indices), got {bad!r}")
            if not layers:
                raise ValueError("layers is empty; give at least one 1-based block index, or None for all blocks")
            low = [x for x in layers if x < 1]
            if low:
                raise ValueError(
                    f"layers {low} invalid: block indices are 1-based (the first block is 1), as in the paper's tables"
                )
            dups = sorted({x for x in layers if layers.count(x) > 1})
            if dups:
                raise ValueError(f"layers lists block(s) {dups} more than once; give each block once")
            self.layers = layers
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                self.target_modules = [self.target_modules]
            self.target_modules = list(self.target_modules)
            if not self.target_modules:
                raise ValueError(
                    f"target_modules is empty; use None for all of {list(CANONICAL_TARGETS)} or name some"
                )
            if not all(isinstance(t, str) and t for t in self.target_modules):
                raise ValueError(f"target_modules must be non-empty strings, got {self.target_modules!r}")
        self.rule = check_choice("rule", self.rule, RULES)
        self.noise = check_choice("noise", self.noise, NOISE_MODES)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {self.num_samples!r}")
        if not isinstance(self.standardize, bool):
            raise ValueError(f"standardize must be true or false, got {self.standardize!r}")
        if self.distribution_lr is not None:
            if isinstance(self.distribution_lr, bool) or not isinstance(self.distribution_lr, (int, float)) \
                    or not self.distribution_lr > 0:
                raise ValueError(f"distribution_lr must be a positive number or None, got {self.distribution_lr!r}")
            self.distribution_lr = float(self.distribution_lr)
        if isinstance(self.std_floor, bool) or not isinstance(self.std_floor, (int, float)) or self.std_floor < 0:
            raise ValueError(f"std_floor must be a number >= 0, got {self.std_floor!r}")
        self.std_floor = float(self.std_floor)

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["format_version"] = FORMAT_VERSION
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IsoGaussConfig":
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{CONFIG_NAME} has format_version {version!r}, but this isogauss-hf supports up to "
                f"{FORMAT_VERSION}; upgrade isogauss-hf to load it"
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown IsoGaussConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    def save_pretrained(self, save_directory: str, extra: Optional[dict[str, Any]] = None) -> str:
        """Write ``isogauss_config.json`` (with ``extra`` metadata merged in) and return its path."""
        os.makedirs(save_directory, exist_ok=True)
        payload = self.to_dict()
        if extra:
            payload.update(extra)
        path = os.path.join(save_directory, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
        return path

    @classmethod
    def from_pretrained(cls, directory: str) -> "IsoGaussConfig":
        config, _ = cls.load_with_metadata(directory)
        return config

    @classmethod
    def load_with_metadata(cls, directory: str) -> tuple["IsoGaussConfig", dict[str, Any]]:
        """Read ``isogauss_config.json``: the config and the remaining (non-field) metadata."""
        path = os.path.join(directory, CONFIG_NAME) if os.path.isdir(directory) else directory
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no {CONFIG_NAME} in {directory!r}: is it an isogauss-hf checkpoint?")
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        known = {f.name for f in fields(cls)} | {"format_version"}
        meta = {k: v for k, v in data.items() if k not in known}
        config = cls.from_dict({k: v for k, v in data.items() if k in known})
        return config, meta
