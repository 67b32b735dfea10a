"""``IsoGaussConfig``: which layers become Gaussian and how their statistics are learned."""

from __future__ import annotations

import enum
import json
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from peft import PeftConfig

from .errors import CheckpointError
from .settings import (DEFAULT_NOISE, DEFAULT_NOISE_GENERATOR, DEFAULT_NUM_SAMPLES, DEFAULT_RULE, LEGACY_NOISE_GENERATOR,
                       NOISE_GENERATOR_HELP, NOISE_HELP, RULE_HELP, LayerOptions)

__all__ = ["IsoGaussConfig", "CONFIG_NAME", "FORMAT_VERSION", "CHECKPOINT_METADATA_KEYS", "IsoGaussPeftType",
           "PEFT_TYPE"]

CONFIG_NAME = "isogauss_config.json"
#: Version of the on-disk format (config files + safetensors layout); files of a newer version are refused with
#: "upgrade isogauss-hf". 1: ``config.json`` is the plain base config (release 0.1.0; still read). 2: ``config.json``
#: carries the isogauss model type, so transformers refuses it without ``import isogauss_hf`` (see
#: :mod:`isogauss_hf.checkpoint`). 3: ``isogauss_config.json`` names the noise generator (``noise_generator``);
#: files of versions 1-2 have none and were made by the legacy generator, which they keep
#: (:data:`~isogauss_hf.settings.LEGACY_NOISE_GENERATOR`); ``model.safetensors`` records a SHA-256 per tensor
#: (``isogauss_sha256``, verified at load when present). Adapters share the number.
FORMAT_VERSION = 3
#: The first format whose files name their noise generator.
NOISE_GENERATOR_FORMAT = 3
#: The keys of ``isogauss_config.json`` besides the config fields and ``format_version`` (written by
#: :func:`isogauss_hf.checkpoint.checkpoint_metadata`); a checkpoint with any other key is refused at load.
CHECKPOINT_METADATA_KEYS = ("base_model_class", "base_config_fingerprint", "replaced_modules", "isogauss_hf_version",
                            "base_model_name_or_path")

CANONICAL_TARGETS = ("query", "key", "value", "attention_output", "mlp_in", "mlp_out")


class IsoGaussPeftType(str, enum.Enum):
    """PEFT method type of isogauss adapters. PEFT's own ``PeftType`` enum cannot be extended, so this str-valued
    member is the key under which :mod:`isogauss_hf.peft_integration` registers the method in PEFT's mapping tables
    (it compares and hashes equal to the string ``"ISOGAUSS"`` written in ``adapter_config.json``)."""

    ISOGAUSS = "ISOGAUSS"


PEFT_TYPE = IsoGaussPeftType.ISOGAUSS


@dataclass
class IsoGaussConfig(PeftConfig):
    """Configuration of Isotropic Gaussian layers; also a ``peft.PeftConfig``.

    Example: ``IsoGaussConfig(layers=[4, 8, 12], rule="wdu")`` turns the query, key, value, attention
    output, MLP-in and MLP-out matrices of blocks 4, 8 and 12 (1-based, as in the paper's tables)
    into Gaussian layers trained by WDU.

    Two uses: ``get_isogauss_model(model, config)`` (full fine-tune, compressed checkpoint with
    ``isogauss_config.json``) or ``peft.get_peft_model(model, config)`` (adapter; ``adapter_config.json``,
    needs ``import isogauss_hf``). The keyword-only PEFT bookkeeping fields (``task_type``,
    ``modules_to_save``, ...) matter for the adapter use only and are not written to ``isogauss_config.json``.
    """

    layers: Optional[list[int]] = field(
        default=None,
        metadata={"help": "1-based indices of the transformer blocks to convert (e.g. [4, 8, 12]); for ResNet / "
                          "MobileNetV2 the paper's convolution-module numbers (isogauss_hf.mapping_cnn). None "
                          "converts every block."},
    )
    target_modules: Optional[list[str]] = field(
        default=None,
        metadata={"help": "Matrices to convert inside each chosen block. For a known architecture, names from "
                          f"{list(CANONICAL_TARGETS)} (None = all six); for ResNet / MobileNetV2 selector words "
                          "such as 'stage2', 'shortcut', 'depthwise' (isogauss_hf.mapping_cnn). Otherwise regular "
                          "expressions matched against full module names (the generic path)."},
    )
    layers_pattern: str = field(
        default=r"\.(\d+)\.",
        metadata={"help": "Generic path only: regex whose first group is the 0-based block index inside a "
                          "module name; used to apply `layers` to modules matched by patterns."},
    )
    rule: str = field(
        default=DEFAULT_RULE,
        metadata={"help": "How the statistics learn: " + "; ".join(f"'{k}': {v}" for k, v in RULE_HELP.items())},
    )
    noise: str = field(
        default=DEFAULT_NOISE,
        metadata={"help": "How weights are drawn: " + "; ".join(f"'{k}': {v}" for k, v in NOISE_HELP.items())},
    )
    seed: int = field(
        default=0,
        metadata={"help": "Base seed; each layer's noise seed derives from it and the layer's module name."},
    )
    num_samples: int = field(
        default=DEFAULT_NUM_SAMPLES,
        metadata={"help": "Evaluation: average the model outputs over this many weight draws of resample layers "
                          "(the paper's sampling number: 10 for transformers, 100 for the 8-layer network); seeded "
                          "layers always run their one draw. 1 = one draw."},
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
    noise_generator: str = field(
        default=DEFAULT_NOISE_GENERATOR,
        metadata={"help": "Where the draws' noise comes from (part of the model: a checkpoint records it): "
                          + "; ".join(f"'{k}': {v}" for k, v in NOISE_GENERATOR_HELP.items())},
    )
    # ---- PEFT bookkeeping (adapter use only; keyword-only, so the fields above keep their positions)
    modules_to_save: Optional[list[str]] = field(
        default=None, kw_only=True,
        metadata={"help": "PEFT adapter use only: modules trained and saved with the adapter besides the Gaussian "
                          "layers (e.g. ['classifier']; task_type='SEQ_CLS' adds the classifier itself)."},
    )
    task_type: Optional[str] = field(
        default=None, kw_only=True,
        metadata={"help": "PEFT adapter use only: PEFT task type ('SEQ_CLS', 'CAUSAL_LM', ...) picking the PeftModel "
                          "subclass."},
    )
    peft_type: Optional[str] = field(
        default=None, kw_only=True, metadata={"help": "PEFT method type; always 'ISOGAUSS' (set automatically)."}
    )
    auto_mapping: Optional[dict] = field(
        default=None, kw_only=True, metadata={"help": "PEFT bookkeeping: base model class of a saved adapter."}
    )
    peft_version: Optional[str] = field(
        default=None, kw_only=True, metadata={"help": "PEFT bookkeeping: PEFT version (filled automatically)."}
    )
    base_model_name_or_path: Optional[str] = field(
        default=None, kw_only=True, metadata={"help": "PEFT adapter use only: the base model the adapter belongs to."}
    )
    revision: Optional[str] = field(
        default=None, kw_only=True, metadata={"help": "PEFT adapter use only: revision of the base model."}
    )
    inference_mode: bool = field(
        default=False, kw_only=True, metadata={"help": "PEFT adapter use only: load the adapter frozen."}
    )

    #: PEFT bookkeeping fields: absent from isogauss_config.json, present in a PEFT adapter_config.json.
    PEFT_FIELDS = ("modules_to_save", "task_type", "peft_type", "auto_mapping", "peft_version",
                   "base_model_name_or_path", "revision", "inference_mode")

    @classmethod
    def isogauss_fields(cls) -> list[str]:
        """Names of the fields stored in ``isogauss_config.json`` (all but :attr:`PEFT_FIELDS`)."""
        return [f.name for f in fields(cls) if f.name not in cls.PEFT_FIELDS]

    def __post_init__(self) -> None:
        super().__post_init__()  # PEFT: validates task_type, fills peft_version
        if self.peft_type is None or self.peft_type == PEFT_TYPE:
            self.peft_type = PEFT_TYPE
        else:
            raise ValueError(f"peft_type must be {PEFT_TYPE.value!r} for IsoGaussConfig, got {self.peft_type!r}")
        if self.modules_to_save is not None:
            if isinstance(self.modules_to_save, str):
                self.modules_to_save = [self.modules_to_save]
            self.modules_to_save = list(self.modules_to_save)
            if not all(isinstance(m, str) and m for m in self.modules_to_save):
                raise ValueError(f"modules_to_save must be module names (strings), got {self.modules_to_save!r}")
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
        options = LayerOptions.build(self)  # rule, noise, standardize, std_floor, generator: as the layer validates
        self.rule, self.noise, self.std_floor = options.rule, options.noise, options.std_floor
        self.noise_generator = options.noise_generator
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if isinstance(self.num_samples, bool) or not isinstance(self.num_samples, int) or self.num_samples < 1:
            raise ValueError(f"num_samples must be an integer >= 1, got {self.num_samples!r}")
        if self.distribution_lr is not None:
            if isinstance(self.distribution_lr, bool) or not isinstance(self.distribution_lr, (int, float)) \
                    or not 0 < self.distribution_lr < float("inf"):
                raise ValueError(f"distribution_lr must be a positive number (finite) or None, got {self.distribution_lr!r}")
            self.distribution_lr = float(self.distribution_lr)

    # ------------------------------------------------------------------ (de)serialization
    def to_dict(self) -> dict[str, Any]:
        """The ``isogauss_config.json`` fields and ``format_version`` (PEFT bookkeeping fields excluded)."""
        d = {k: v for k, v in asdict(self).items() if k not in self.PEFT_FIELDS}
        d["format_version"] = FORMAT_VERSION
        return d

    def to_adapter_dict(self) -> dict[str, Any]:
        """The content of a PEFT ``adapter_config.json``: every field, ``format_version``, plain strings."""
        d = asdict(self)
        for key in ("peft_type", "task_type"):
            if isinstance(d[key], enum.Enum):
                d[key] = d[key].value
        d["format_version"] = FORMAT_VERSION
        return d

    @staticmethod
    def _check_format_version(version: Any, source: str = CONFIG_NAME) -> None:
        if isinstance(version, bool) or not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{source} has format_version {version!r}, but this isogauss-hf supports up to "
                f"{FORMAT_VERSION}; upgrade isogauss-hf to load it"
            )

    @staticmethod
    def _upgrade(data: dict[str, Any], version: int) -> dict[str, Any]:
        """Fields of an older format as this version reads them: formats 1-2 drew with the legacy generator."""
        if version < NOISE_GENERATOR_FORMAT:
            data.setdefault("noise_generator", LEGACY_NOISE_GENERATOR)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IsoGaussConfig":
        data = dict(data)
        version = data.pop("format_version", FORMAT_VERSION)
        cls._check_format_version(version)
        data = cls._upgrade(data, version)
        known = set(cls.isogauss_fields())
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown IsoGaussConfig field(s) {unknown}; valid fields: {sorted(known)}")
        return cls(**data)

    @classmethod
    def check_kwargs(cls, **kwargs):
        """PEFT hook run on the fields read from ``adapter_config.json``: refuse a newer ``format_version``."""
        version = kwargs.pop("format_version", FORMAT_VERSION)
        cls._check_format_version(version, source="adapter_config.json")
        return cls._upgrade(kwargs, version)

    def save_pretrained(self, save_directory: str, extra: Optional[dict[str, Any]] = None, **kwargs) -> str:
        """Write ``isogauss_config.json`` (with ``extra`` metadata merged in) and return its path.

        Called by ``peft.PeftModel.save_pretrained`` (recognised by its ``auto_mapping_dict`` keyword), it writes
        the PEFT ``adapter_config.json`` instead.
        """
        if "auto_mapping_dict" in kwargs:
            return self._save_adapter_config(save_directory, kwargs["auto_mapping_dict"])
        if kwargs:
            raise TypeError(f"IsoGaussConfig.save_pretrained got unexpected keyword argument(s) {sorted(kwargs)}")
        os.makedirs(save_directory, exist_ok=True)
        payload = self.to_dict()
        if extra:
            payload.update(extra)
        path = os.path.join(save_directory, CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
        return path

    def _save_adapter_config(self, save_directory: str, auto_mapping_dict: Optional[dict] = None) -> str:
        from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_NAME

        if os.path.isfile(save_directory):
            raise ValueError(f"{save_directory!r} is a file; give a directory to save the adapter config in")
        os.makedirs(save_directory, exist_ok=True)
        payload = self.to_adapter_dict()
        if auto_mapping_dict is not None:
            payload["auto_mapping"] = auto_mapping_dict
        path = os.path.join(save_directory, ADAPTER_CONFIG_NAME)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
        return path

    @classmethod
    def from_pretrained(cls, directory: str, subfolder: Optional[str] = None, **kwargs) -> "IsoGaussConfig":
        """Read ``isogauss_config.json`` from ``directory``; failing that, a PEFT ``adapter_config.json``.

        The second case is how ``peft.PeftModel.from_pretrained`` loads the config of an isogauss adapter (local
        directory or Hub repo; ``kwargs`` go to ``hf_hub_download``).
        """
        from peft.utils import CONFIG_NAME as ADAPTER_CONFIG_NAME

        path = os.path.join(directory, subfolder) if subfolder else directory
        if os.path.isfile(path) or os.path.isfile(os.path.join(path, CONFIG_NAME)):
            config, _ = cls.load_with_metadata(path)
            return config
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, ADAPTER_CONFIG_NAME)):
            raise FileNotFoundError(
                f"no {CONFIG_NAME} (compressed checkpoint) or {ADAPTER_CONFIG_NAME} (PEFT adapter) in {path!r}: "
                f"is it an isogauss-hf checkpoint?"
            )
        return super().from_pretrained(directory, subfolder=subfolder, **kwargs)

    @classmethod
    def load_with_metadata(cls, directory: str) -> tuple["IsoGaussConfig", dict[str, Any]]:
        """Read ``isogauss_config.json``: the config and the remaining (non-field) metadata.

        A file that is not a JSON object, or whose fields do not validate, is a
        :class:`~isogauss_hf.errors.CheckpointError` naming the file.
        """
        path = os.path.join(directory, CONFIG_NAME) if os.path.isdir(directory) else directory
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no {CONFIG_NAME} in {directory!r}: is it an isogauss-hf checkpoint?")
        with open(path, encoding="utf-8") as f:
            try:
                data = json.load(f)
            except ValueError as e:
                raise CheckpointError(f"{path!r} is not valid JSON (corrupted or truncated?): {e}") from None
        if not isinstance(data, dict):
            raise CheckpointError(f"{path!r} must hold a JSON object, got {type(data).__name__}")
        known = set(cls.isogauss_fields()) | {"format_version"}
        meta = {k: v for k, v in data.items() if k not in known}
        try:
            config = cls.from_dict({k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path!r}: {e}") from None
        return config, meta
