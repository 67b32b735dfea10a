"""``get_isogauss_model`` and ``IsoGaussModel``: a transformers model with Gaussian layers."""

from __future__ import annotations

import contextlib
import importlib
import inspect
import os
from collections import OrderedDict
from typing import Any, Iterator, Optional, Union

import torch
from torch import nn

from .config import CONFIG_NAME, FORMAT_VERSION, IsoGaussConfig
from .functional import derive_seed
from .layer import IsoGaussFusedLinear, IsoGaussLinear
from .mapping import Target, resolve_targets

__all__ = ["IsoGaussModel", "get_isogauss_model", "WEIGHTS_NAME"]

WEIGHTS_NAME = "model.safetensors"
_STREAM_SCOPE = "scope"
# Base-config attributes compared between a checkpoint and the model it is loaded into.
_FINGERPRINT_KEYS = (
    "model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
    "vocab_size", "n_embd", "n_layer", "n_inner", "n_head", "image_size", "patch_size", "num_channels",
)
_ALLOWED_CLASS_MODULES = ("transformers", "isogauss_hf")


def _config_fingerprint(config) -> dict[str, Any]:
    fp = {k: getattr(config, k) for k in _FINGERPRINT_KEYS if getattr(config, k, None) is not None}
    id2label = getattr(config, "id2label", None)
    if id2label:
        fp["num_labels"] = len(id2label)
    return fp


def scope_key(layer: IsoGaussLinear, round_: int) -> tuple[str, int]:
    """The draw a layer uses inside sampling scope number ``round_``."""
    return ("fixed", 0) if layer.noise == "seeded" else (_STREAM_SCOPE, round_)


def has_resample_layers(model: nn.Module) -> bool:
    """Whether any Gaussian layer of ``model`` draws fresh weights (so averaging draws means anything)."""
    return any(isinstance(m, IsoGaussLinear) and m.noise != "seeded" for m in model.modules())


@contextlib.contextmanager
def pin_draws(layers, round_: int):
    """Hold the draw of sampling scope ``round_`` in every layer of ``layers`` (cached), then release it."""
    layers = list(layers)
    for layer in layers:
        layer._draw_override = scope_key(layer, round_)
    try:
        yield
    finally:
        for layer in layers:
            layer._draw_override = None
            layer.clear_cache()


def forward_over_draws(owner, inner: nn.Module, args, kwargs):
    """``inner(*args, **kwargs)``, averaged over ``owner.isogauss_config.num_samples`` draws in eval mode.

    ``owner`` provides ``sampling_scope`` and ``training``; seeded-only models run once (see ``forward``).
    """
    k = owner.isogauss_config.num_samples
    if owner.training or k <= 1 or not has_resample_layers(inner):
        return inner(*args, **kwargs)
    outputs = []
    for i in range(k):
        with owner.sampling_scope(i):
            outputs.append(inner(*args, **kwargs))
    return _average_outputs(outputs)


def _split_name(name: str) -> tuple[str, str]:
    parent, _, child = name.rpartition(".")
    return parent, child


def _class_path(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    if not module_name.split(".")[0] in _ALLOWED_CLASS_MODULES:
        raise ValueError(
            f"refusing to import base model class {path!r}: only classes from {_ALLOWED_CLASS_MODULES} are loaded"
        )
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _average_outputs(outputs: list[Any]) -> Any:
    """Average floating-point tensors across per-draw outputs (others are taken from the first draw)."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        if first.is_floating_point():
            return torch.stack(outputs).mean(0)
        return first
    if isinstance(first, dict):  # ModelOutput is an OrderedDict
        merged = {k: _average_outputs([o[k] for o in outputs]) if _averageable(first[k], outputs, k) else first[k]
                  for k in first.keys()}
        return type(first)(**merged)
    if isinstance(first, tuple) and all(isinstance(x, torch.Tensor) or x is None for x in first):
        return tuple(
            _average_outputs([o[i] for o in outputs]) if isinstance(first[i], torch.Tensor) else first[i]
            for i in range(len(first))
        )
    return first


def _averageable(value, outputs, key) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point() and all(
        isinstance(o[key], torch.Tensor) and o[key].shape == value.shape for o in outputs
    )


class IsoGaussModel(nn.Module):
    """A transformers model whose selected fully connected layers are Gaussian layers.

    Behaves like the wrapped model (forward, ``generate``, ``config``, Trainer, ``.to()``): unknown
    attributes are looked up on it. In eval mode with ``num_samples > 1`` the outputs are averaged
    over that many weight draws. ``save_pretrained`` writes a compressed checkpoint (statistics, not
    dense weights) that :meth:`from_pretrained` rebuilds without the dense base weights.

    ``get_isogauss_model`` returns an instance of a subclass named after the wrapped class
    (``IsoGaussBertForSequenceClassification``) whose ``forward`` carries the wrapped signature, so
    Trainer finds the label and input columns as for the plain model.
    """

    _wrapper_classes: dict[type, type] = {}

    def __init__(self, model: nn.Module, config: IsoGaussConfig, replaced: list[dict[str, Any]]) -> None:
        super().__init__()
        self.base_model = model
        self.isogauss_config = config
        self.replaced_modules = replaced
        self._scope_round = 0

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def _wrapper_for(cls, base_cls: type) -> type:
        wrapper = cls._wrapper_classes.get(base_cls)
        if wrapper is None:
            def forward(self, *args, **kwargs):
                return IsoGaussModel.forward(self, *args, **kwargs)

            try:
                forward.__signature__ = inspect.signature(base_cls.forward)
            except (TypeError, ValueError):  # pragma: no cover
                pass
            forward.__doc__ = IsoGaussModel.forward.__doc__
            wrapper = type(f"IsoGauss{base_cls.__name__}", (IsoGaussModel,), {"forward": forward,
                                                                               "__module__": __name__})
            cls._wrapper_classes[base_cls] = wrapper
        return wrapper

    @classmethod
    def _wrap(cls, model: nn.Module, config: IsoGaussConfig, replaced: list[dict[str, Any]]) -> "IsoGaussModel":
        return cls._wrapper_for(type(model))(model, config, replaced)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model" or "base_model" not in self._modules:
                raise
            return getattr(self._modules["base_model"], name)

    def get_base_model(self) -> nn.Module:
        """The wrapped transformers model (its Gaussian modules in place)."""
        return self.base_model

    # ------------------------------------------------------------------ introspection
    def isogauss_layers(self) -> "OrderedDict[str, IsoGaussLinear]":
        """Every Gaussian matrix by qualified name (fused modules contribute one entry per part)."""
        return OrderedDict(
            (name, module) for name, module in self.base_model.named_modules() if isinstance(module, IsoGaussLinear)
        )

    def _gaussian_modules(self) -> Iterator[tuple[str, nn.Module]]:
        for record in self.replaced_modules:
            yield record["name"], self.base_model.get_submodule(record["name"])

    def parameter_report(self) -> dict[str, Any]:
        """How many dense weight entries were replaced and how many statistics stand for them.

        ``replaced_weights`` counts the weight-matrix entries of the replaced modules; ``gaussian_parameters``
        the statistics stored for them (2 per row + 2 per column of each matrix). Biases are in neither.
        """
        per_block: dict[str, dict[str, Any]] = {}
        total_replaced = total_gauss = 0
        for record in self.replaced_modules:
            module = self.base_model.get_submodule(record["name"])
            parts = module.parts if isinstance(module, IsoGaussFusedLinear) else [module]
            replaced = sum(p.num_replaced_weights for p in parts)
            gauss = sum(p.num_gaussian_parameters for p in parts)
            total_replaced += replaced
            total_gauss += gauss
            key = str(record["block"]) if record["block"] is not None else "-"
            entry = per_block.setdefault(key, {"replaced_weights": 0, "gaussian_parameters": 0, "modules": []})
            entry["replaced_weights"] += replaced
            entry["gaussian_parameters"] += gauss
            entry["modules"].append(record["name"])
        for entry in per_block.values():
            entry["ratio"] = entry["gaussian_parameters"] / entry["replaced_weights"] if entry["replaced_weights"] else 0.0
        other = sum(p.numel() for p in self.base_model.parameters())
        return {
            "replaced_weights": total_replaced,
            "gaussian_parameters": total_gauss,
            "ratio": total_gauss / total_replaced if total_replaced else 0.0,
            "num_matrices": len(self.isogauss_layers()),
            "per_block": per_block,
            "dense_model_parameters": other + total_replaced,
            "isogauss_model_parameters": other + total_gauss,
        }

    # ------------------------------------------------------------------ sampling
    @contextlib.contextmanager
    def sampling_scope(self, index: int = 0):
        """Pin one weight draw in every Gaussian layer for the duration (evaluation sample ``index``).

        Resample layers use a fresh draw for each scope; seeded layers always use their one draw (draw 0,
        the draw they were trained on and that ``export_dense`` writes), whatever ``index`` is. The draw
        is cached per layer inside the scope.
        """
        round_ = self._scope_round
        self._scope_round += 1
        with pin_draws(self.isogauss_layers().values(), round_):
            yield

    def forward(self, *args, **kwargs):
        """The wrapped model's forward; in eval mode averaged over ``num_samples`` weight draws.

        Only resample layers have several draws: a model whose Gaussian layers are all seeded runs once
        (averaging other fixed draws than the one it was trained on measured chance-level accuracy).
        """
        return forward_over_draws(self, self.base_model, args, kwargs)

    def generate(self, *args, **kwargs):
        """``generate`` of the wrapped model with one weight draw held for the whole call."""
        with self.sampling_scope(0):
            return self.base_model.generate(*args, **kwargs)

    # ------------------------------------------------------------------ low-memory inference
    def enable_low_memory(self, block_rows: Optional[int] = None) -> None:
        """Evaluate without ever holding a whole Gaussian weight: draws are rebuilt ``block_rows`` rows at a time.

        Sets :attr:`IsoGaussLinear.lowmem_block_rows` on every Gaussian layer (default: one noise block,
        ``NOISE_BLOCK_ROWS`` rows; any positive multiple of it) and frees cached draws and scratch buffers.
        Only forwards outside training use it; outputs equal the materialized path's up to matmul rounding.
        """
        from .functional import NOISE_BLOCK_ROWS, release_workspace

        rows = NOISE_BLOCK_ROWS if block_rows is None else block_rows
        layers = list(self.isogauss_layers().values())
        if layers:
            layers[0].lowmem_block_rows = rows  # validates before anything changes
        for layer in layers:
            layer.lowmem_block_rows = rows
            layer.clear_cache()
        release_workspace()

    def disable_low_memory(self) -> None:
        """Back to materializing each weight draw (the default)."""
        for layer in self.isogauss_layers().values():
            layer.lowmem_block_rows = None

    # ------------------------------------------------------------------ persistence
    def _metadata(self) -> dict[str, Any]:
        from . import __version__

        return {
            "base_model_class": _class_path(type(self.base_model)),
            "base_config_fingerprint": _config_fingerprint(self.base_model.config),
            "replaced_modules": self.replaced_modules,
            "isogauss_hf_version": __version__,
            "base_model_name_or_path": getattr(self.base_model, "name_or_path", None) or None,
        }

    def save_pretrained(
        self,
        save_directory: str,
        state_dict: Optional[dict[str, torch.Tensor]] = None,
        is_main_process: bool = True,
        **kwargs,
    ) -> None:
        """Write a compressed checkpoint: base config, non-replaced weights, statistics, biases, seeds.

        Files: ``config.json`` (base model), ``isogauss_config.json`` (config, format version, which modules
        are Gaussian), ``model.safetensors`` (no pickle). Extra keyword arguments of transformers'
        ``save_pretrained`` (``safe_serialization``, ...) are accepted and ignored: the format is fixed.
        """
        if not is_main_process:
            return
        from .checkpoint import atomic_directory, save_state_dict

        with atomic_directory(save_directory) as tmp:
            self.base_model.config.save_pretrained(tmp)
            generation_config = getattr(self.base_model, "generation_config", None)
            if generation_config is not None and getattr(self.base_model, "can_generate", lambda: False)():
                generation_config.save_pretrained(tmp)
            self.isogauss_config.save_pretrained(tmp, extra=self._metadata())
            sd = state_dict if state_dict is not None else self.base_model.state_dict()
            sd = {k[len("base_model."):] if k.startswith("base_model.") else k: v for k, v in sd.items()}
            save_state_dict(sd, os.path.join(tmp, WEIGHTS_NAME), metadata={"isogauss_format_version": str(FORMAT_VERSION)})

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: Union[str, os.PathLike],
        revision: Optional[str] = None,
        torch_dtype: Optional[torch.dtype] = None,
        device_map: Union[str, torch.device, None] = None,
        **overrides,
    ) -> "IsoGaussModel":
        """Rebuild a model from a compressed checkpoint (local directory or Hub repo id).

        Only the base config, the non-replaced weights and the statistics are read: the base model is
        built from its config, never from dense pretrained weights. ``overrides`` replace config fields
        for this load (e.g. ``noise="seeded"``, ``num_samples=10``).
        """
        from transformers import AutoConfig

        from .checkpoint import load_state_dict_checked, resolve_checkpoint_dir

        directory = resolve_checkpoint_dir(str(pretrained_model_name_or_path), revision=revision)
        config, meta = IsoGaussConfig.load_with_metadata(directory)
        if overrides:
            # Which modules are Gaussian, their noise seeds and input standardization are fixed by the checkpoint.
            fixed = sorted(set(overrides) & {"layers", "target_modules", "layers_pattern", "standardize", "seed"})
            if fixed:
                raise ValueError(
                    f"cannot override {fixed} when loading: the checkpoint's Gaussian modules are fixed; "
                    f"overridable fields: noise, num_samples, rule, distribution_lr, std_floor"
                )
            config = IsoGaussConfig.from_dict({**config.to_dict(), **overrides})
        base_config = AutoConfig.from_pretrained(directory)
        expected = meta.get("base_config_fingerprint") or {}
        found = _config_fingerprint(base_config)
        diff = {k: (v, found.get(k)) for k, v in expected.items() if found.get(k) != v}
        if diff:
            detail = ", ".join(f"{k}: checkpoint {a!r} vs config.json {b!r}" for k, (a, b) in diff.items())
            raise ValueError(f"config.json in {directory!r} does not match the base model this checkpoint was made for ({detail})")
        if "base_model_class" not in meta or "replaced_modules" not in meta:
            raise ValueError(f"{CONFIG_NAME} in {directory!r} lacks base_model_class/replaced_modules metadata")
        base_cls = _import_class(meta["base_model_class"])
        from transformers.initialization import no_init_weights

        with no_init_weights():
            base = base_cls(base_config)
        if hasattr(base, "tie_weights"):
            base.tie_weights()  # under no_init_weights transformers leaves tied weights untied
        model = _build_empty(base, config, meta["replaced_modules"])
        load_state_dict_checked(model.base_model, os.path.join(directory, WEIGHTS_NAME))
        if torch_dtype is not None:
            model.to(torch_dtype)
        if device_map is not None:
            if isinstance(device_map, dict):
                raise ValueError("device_map as a dict is not supported; give one device such as 'cuda' or 'cpu'")
            model.to("cuda" if device_map == "auto" and torch.cuda.is_available() else
                     ("cpu" if device_map == "auto" else device_map))
        model.eval()
        return model

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        token: Optional[str] = None,
        commit_message: Optional[str] = None,
        results: Union[None, str, dict[str, Any]] = None,
        tokenizer: Any = None,
        checkpoint_dir: Optional[str] = None,
    ):
        """Save the compressed checkpoint and upload it with a generated model card (see :mod:`isogauss_hf.hub`).

        ``tokenizer``: a tokenizer / image processor saved next to the weights. ``checkpoint_dir``: save there
        (files already in it, such as a tokenizer, are kept and uploaded too) instead of a temporary directory.
        ``results``: metrics for the card (dict or JSON path; default ``results.json`` in ``checkpoint_dir``).
        Returns ``huggingface_hub.CommitInfo``.
        """
        import tempfile

        from .hub import push_checkpoint, resolve_token

        token = resolve_token(token)  # fail before writing anything
        with tempfile.TemporaryDirectory() as tmp:
            target = checkpoint_dir or os.path.join(tmp, "checkpoint")
            self.save_pretrained(target)
            if tokenizer is not None:
                tokenizer.save_pretrained(target)
            return push_checkpoint(target, repo_id, token=token, private=private, commit_message=commit_message,
                                   results=results, report=self.parameter_report())

    def export_dense(self, save_directory: str, seed: Optional[int] = None) -> None:
        """Write an ordinary transformers checkpoint holding one weight draw per Gaussian layer.

        The draw is each layer's seeded draw (the one a ``noise='seeded'`` model uses), so the exported
        model's outputs equal this model's in seeded mode with ``num_samples=1``. ``seed`` picks another
        draw instead. It loads with plain ``AutoModel*.from_pretrained`` without isogauss_hf.
        """
        swaps = []
        try:
            for name, module in self._gaussian_modules():
                layer_seed = None if seed is None else derive_seed(seed, name)
                dense = module.to_dense_module(seed=layer_seed)
                parent_name, child = _split_name(name)
                parent = self.base_model.get_submodule(parent_name) if parent_name else self.base_model
                setattr(parent, child, dense)
                swaps.append((parent, child, module))
            self.base_model.save_pretrained(save_directory)
        finally:
            for parent, child, module in swaps:
                setattr(parent, child, module)


def _replace(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, child = _split_name(name)
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _record(target: Target, module: nn.Module, layer: nn.Module) -> dict[str, Any]:
    out_f = layer.out_features
    in_f = layer.in_features
    return {
        "name": target.name,
        "block": target.block,
        "targets": list(target.targets),
        "splits": target.splits,
        "in_features": in_f,
        "out_features": out_f,
        "bias": getattr(module, "bias", None) is not None,
        "source": layer.source,
    }


def _make_layer(module: nn.Module, target: Target, config: IsoGaussConfig) -> nn.Module:
    seed = derive_seed(config.seed, target.name)
    if target.splits > 1:
        layer = IsoGaussFusedLinear.from_linear(
            module, target.splits, noise=config.noise, seeds=[derive_seed(seed, i) for i in range(target.splits)],
            standardize=config.standardize,
        )
        for part in layer.parts:
            part.std_floor = config.std_floor
        return layer
    layer = IsoGaussLinear.from_linear(module, noise=config.noise, seed=seed, standardize=config.standardize)
    layer.std_floor = config.std_floor
    return layer


def get_isogauss_model(model: nn.Module, config: IsoGaussConfig) -> IsoGaussModel:
    """Replace the layers ``config`` selects by Gaussian layers and wrap the model.

    The initial statistics are the row/column mean and std of each pretrained weight; the dense weights
    of replaced modules are dropped (freed once nothing else references them).
    """
    if isinstance(model, IsoGaussModel):
        raise ValueError("this model already has Gaussian layers (it is an IsoGaussModel)")
    if not isinstance(config, IsoGaussConfig):
        raise TypeError(f"config must be an IsoGaussConfig, got {type(config).__name__}")
    return IsoGaussModel._wrap(model, config, convert_in_place(model, config))


def convert_in_place(model: nn.Module, config: IsoGaussConfig) -> list[dict[str, Any]]:
    """Swap the modules ``config`` selects for Gaussian layers inside ``model``; one record per module."""
    targets = resolve_targets(model, config)
    if not targets:
        raise ValueError("the configuration selects no module to convert")
    records = []
    for target in targets:
        module = model.get_submodule(target.name)
        layer = _make_layer(module, target, config)
        _replace(model, target.name, layer)
        records.append(_record(target, module, layer))
        del module
    return records


def _build_empty(base: nn.Module, config: IsoGaussConfig, records: list[dict[str, Any]]) -> IsoGaussModel:
    """Put statistics-less Gaussian modules where ``records`` say (their values come from a checkpoint)."""
    for rec in records:
        try:
            old = base.get_submodule(rec["name"])
        except AttributeError:
            raise ValueError(
                f"checkpoint lists Gaussian module {rec['name']!r}, which this base model does not have"
            ) from None
        dtype = next((p.dtype for p in old.parameters()), torch.float32)
        device = next((p.device for p in old.parameters()), torch.device("cpu"))
        kwargs = dict(noise=config.noise, standardize=config.standardize, device=device, dtype=dtype)
        splits = int(rec.get("splits", 1))
        if splits > 1:
            size = rec["out_features"] // splits
            parts = [IsoGaussLinear(rec["in_features"], size, bias=rec["bias"], source="linear", **kwargs)
                     for _ in range(splits)]
            new: nn.Module = IsoGaussFusedLinear(parts, source=rec["source"])
        else:
            new = IsoGaussLinear(rec["in_features"], rec["out_features"], bias=rec["bias"], source=rec["source"], **kwargs)
        for layer in new.modules():
            if isinstance(layer, IsoGaussLinear):
                layer.std_floor = config.std_floor
        _replace(base, rec["name"], new)
    return IsoGaussModel._wrap(base, config, [dict(r) for r in records])
