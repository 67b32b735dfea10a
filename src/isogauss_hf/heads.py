"""The paper's classifier experiment (Section 4.2, Table 6; Tables 17-18): a two-layer head, first layer Gaussian.

The classifier of ResNet / MobileNetV2 is replaced by ``Linear(d, h) -> ReLU -> Linear(h, classes)``
(h = 32 in the main text) and the first layer becomes Gaussian: with the module numbering of
:mod:`isogauss_hf.mapping_cnn` that is the module after the last convolution (ResNet-18: ``layers=[21]``,
MobileNetV2: ``layers=[20]``), or ``target_modules=["head"]``.

* :func:`with_mlp_head` installs the head in place (fresh weights, the model's own initialization) and
  records ``h`` in the config (``isogauss_head_hidden``); the model's class becomes the matching subclass
  below, so ``save_pretrained`` / ``IsoGaussModel.from_pretrained`` / ``export_dense`` rebuild the head.
  An exported dense model loads with that subclass's ``from_pretrained`` (the Auto classes build the
  original one-layer classifier from ``model_type``).
* :func:`head_parameter_counts` — the classifier's parameters, weights and biases, as Table 6 counts them:
  dense one-layer ``d*c + c``; two-layer with a Gaussian first layer ``2(d + h) + h + h*c + c``
  = ``(3 + c) h + 2d + c`` (c = 10: ``13h + 2d + 10``: ``13h + 2,570`` for MobileNetV2's d = 1280, the
  formula the paper prints, and ``13h + 1,034`` for ResNet-18's d = 512); :func:`classifier_parameters`
  counts them on an actual model.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import MobileNetV2ForImageClassification, ResNetForImageClassification

__all__ = ["HEAD_HIDDEN_ATTR", "DEFAULT_HEAD_HIDDEN", "ResNetForImageClassificationWithMLPHead",
           "MobileNetV2ForImageClassificationWithMLPHead", "mlp_head", "with_mlp_head", "head_parameter_counts",
           "classifier_parameters"]

#: Config attribute holding the hidden size h of an installed two-layer head.
HEAD_HIDDEN_ATTR = "isogauss_head_hidden"
#: Table 6's hidden size.
DEFAULT_HEAD_HIDDEN = 32


def mlp_head(in_features: int, hidden: int, num_labels: int, flatten: bool = False) -> nn.Sequential:
    """``[Flatten ->] Linear(in, hidden) -> ReLU -> Linear(hidden, num_labels)``."""
    layers = [nn.Flatten()] if flatten else []
    return nn.Sequential(*layers, nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_labels))


def _check_hidden(hidden: Any) -> int:
    if isinstance(hidden, bool) or not isinstance(hidden, int) or hidden < 1:
        raise ValueError(f"the head's hidden size must be an integer >= 1, got {hidden!r}")
    return hidden


class _MLPHeadMixin:
    """Builds the two-layer head from ``config.isogauss_head_hidden`` after the base class's own __init__."""

    _FLATTEN = False

    def _install_head(self, config) -> None:
        hidden = _check_hidden(getattr(config, HEAD_HIDDEN_ATTR, None))
        self.classifier = mlp_head(self._head_in_features(config), hidden, config.num_labels, self._FLATTEN)
        self.classifier.apply(self._init_weights)


class ResNetForImageClassificationWithMLPHead(_MLPHeadMixin, ResNetForImageClassification):
    """ResNet with ``Flatten -> Linear(d, h) -> ReLU -> Linear(h, classes)`` as its classifier (Table 6)."""

    _FLATTEN = True

    def __init__(self, config) -> None:
        super().__init__(config)
        self._install_head(config)

    @staticmethod
    def _head_in_features(config) -> int:
        return config.hidden_sizes[-1]


class MobileNetV2ForImageClassificationWithMLPHead(_MLPHeadMixin, MobileNetV2ForImageClassification):
    """MobileNetV2 with ``Linear(d, h) -> ReLU -> Linear(h, classes)`` as its classifier (Table 6)."""

    def __init__(self, config) -> None:
        super().__init__(config)
        self._install_head(config)

    @staticmethod
    def _head_in_features(config) -> int:
        return _mobilenet_v2_features(config)


def _mobilenet_v2_features(config) -> int:
    from transformers.models.mobilenet_v2.modeling_mobilenet_v2 import apply_depth_multiplier

    if config.finegrained_output and config.depth_multiplier < 1.0:
        return 1280
    return apply_depth_multiplier(config, 1280)


_HEAD_CLASSES: dict[type, type] = {
    ResNetForImageClassification: ResNetForImageClassificationWithMLPHead,
    MobileNetV2ForImageClassification: MobileNetV2ForImageClassificationWithMLPHead,
}


def with_mlp_head(model: nn.Module, hidden: int = DEFAULT_HEAD_HIDDEN) -> nn.Module:
    """Replace the classifier of a ResNet / MobileNetV2 classification model by the two-layer head, in place.

    The backbone is kept as it is; the head starts from the model's own initialization. Returns ``model``
    (now an instance of the subclass with the head, ``config.isogauss_head_hidden = hidden``).
    """
    hidden = _check_hidden(hidden)
    head_cls = _HEAD_CLASSES.get(type(model))
    if head_cls is None:
        if type(model) in _HEAD_CLASSES.values():
            raise ValueError(f"{type(model).__name__} already has the two-layer head")
        supported = ", ".join(c.__name__ for c in _HEAD_CLASSES)
        raise ValueError(f"the two-layer head is for {supported}; got {type(model).__name__}")
    if getattr(model.config, "num_labels", 0) < 1:
        raise ValueError("the model has no classifier (num_labels is 0)")
    old = next(model.classifier.parameters())
    setattr(model.config, HEAD_HIDDEN_ATTR, hidden)
    model.__class__ = head_cls  # the subclass only adds how __init__ builds the head: same state otherwise
    model._install_head(model.config)
    model.classifier.to(device=old.device, dtype=old.dtype)
    return model


def head_parameter_counts(in_features: int, num_labels: int, hidden: int = DEFAULT_HEAD_HIDDEN) -> dict[str, Any]:
    """Classifier parameters (weights and biases) of Table 6: dense one-layer, dense two-layer, Gaussian two-layer."""
    d, c, h = in_features, num_labels, _check_hidden(hidden)
    gaussian = 2 * (d + h) + h + h * c + c
    return {
        "in_features": d, "num_labels": c, "hidden": h,
        "dense_classifier": d * c + c,
        "dense_mlp_head": d * h + h + h * c + c,
        "gaussian_mlp_head": gaussian,
        "formula": f"(3 + c)h + 2d + c = {3 + c}h + {2 * d + c:,}",
        "ratio_to_dense_classifier": gaussian / (d * c + c),
    }


def classifier_parameters(model: nn.Module) -> int:
    """Numbers stored for ``model``'s classifier: parameters of dense modules, 2n + 2m statistics + bias of
    Gaussian ones (the "number of parameters" column of Tables 6, 17 and 18)."""
    from .layers import IsoGaussLayer
    from .model import IsoGaussModel

    base = model.base_model if isinstance(model, IsoGaussModel) else model
    classifier = getattr(base, "classifier", None)
    if not isinstance(classifier, nn.Module):
        raise ValueError(f"{type(base).__name__} has no classifier module")
    total = 0
    for module in classifier.modules():
        if isinstance(module, IsoGaussLayer):  # its statistics may be buffers: count them, not its parameters
            total += module.num_gaussian_parameters + (module.bias.numel() if module.bias is not None else 0)
        else:
            total += sum(p.numel() for p in module.parameters(recurse=False))
    return total
