"""The paper's 8-layer fully connected network (Section 4.3, Tables 7/9/23) as a transformers model.

``FFN8ForImageClassification``: ``num_layers`` ``nn.Linear`` layers named ``layers.{i}`` (784 -> 128 -> ... ->
128 -> num_labels), ReLU between them, log-softmax output and the negative log-likelihood loss. Each
"block" of :class:`~isogauss_hf.IsoGaussConfig` is one Linear layer, so ``IsoGaussConfig(layers=[4, 6])``
turns layers 4 and 6 (1-based, as in Table 7) into Gaussian layers.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForImageClassification, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import ImageClassifierOutput

from ..mapping import ArchitectureSpec, register_architecture

__all__ = ["FFN8Config", "FFN8ForImageClassification", "FFN8_MODEL_TYPE"]

FFN8_MODEL_TYPE = "isogauss-ffn8"


class FFN8Config(PretrainedConfig):
    """Configuration of the fully connected network.

    Args:
        input_size: number of input features (784 = 28 x 28 pixels, flattened).
        hidden_size: units of every hidden layer (128 in the paper).
        num_layers: number of Linear layers, output layer included (8 in the paper).
        initializer_range: std of a normal initialisation of the weights; ``None`` (default) uses He
            (Kaiming-normal, fan-in, ReLU gain) initialisation, which keeps the 8-layer ReLU stack trainable
            by plain SGD at lr 1e-3 (Table 9). Biases start at 0.
    """

    model_type = FFN8_MODEL_TYPE

    def __init__(
        self,
        input_size: int = 784,
        hidden_size: int = 128,
        num_layers: int = 8,
        initializer_range: Optional[float] = None,
        **kwargs,
    ) -> None:
        for name, value, low in (("input_size", input_size, 1), ("hidden_size", hidden_size, 1),
                                 ("num_layers", num_layers, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"FFN8Config: {name} must be an integer >= {low}, got {value!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.initializer_range = initializer_range
        kwargs.setdefault("num_labels", 10)
        super().__init__(**kwargs)


class FFN8ForImageClassification(PreTrainedModel):
    """``num_layers`` fully connected layers with ReLU, log-softmax output and NLL loss.

    ``forward(pixel_values, labels=None)``: ``pixel_values`` of any shape ``(batch, ...)`` is flattened
    to ``(batch, input_size)``; ``logits`` are log-probabilities (the output of the log-softmax), so
    averaging them over weight draws (``num_samples``) averages log-probabilities.
    """

    config_class = FFN8Config
    base_model_prefix = "ffn"
    main_input_name = "pixel_values"
    _no_split_modules: list[str] = []

    def __init__(self, config: FFN8Config) -> None:
        super().__init__(config)
        sizes = [config.input_size] + [config.hidden_size] * (config.num_layers - 1) + [config.num_labels]
        self.layers = nn.ModuleList(nn.Linear(sizes[i], sizes[i + 1]) for i in range(config.num_layers))
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if not isinstance(module, nn.Linear):
            return
        std = getattr(self.config, "initializer_range", None)
        if std is None:
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        else:
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: Optional[torch.Tensor] = None,
        return_dict: Optional[bool] = None,
        **kwargs,
    ) -> ImageClassifierOutput:
        x = pixel_values.reshape(pixel_values.shape[0], -1)
        if x.shape[1] != self.config.input_size:
            raise ValueError(
                f"FFN8: pixel_values has {x.shape[1]} features per example, the model expects "
                f"input_size={self.config.input_size}"
            )
        x = x.to(self.layers[0].weight.dtype if hasattr(self.layers[0], "weight") else x.dtype)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        log_probs = F.log_softmax(x, dim=-1)
        loss = F.nll_loss(log_probs, labels.long()) if labels is not None else None
        if return_dict is False:
            return (loss, log_probs) if loss is not None else (log_probs,)
        return ImageClassifierOutput(loss=loss, logits=log_probs)


# One block = one Linear layer: the block list is ``layers`` and the target is the block itself ("").
FFN8_SPEC = ArchitectureSpec(
    ("layers",),
    {"linear": ("",)},
    notes="8-layer fully connected network: each block is one nn.Linear (layers.{i}); target name 'linear'.",
    paper_counts="matrices",  # Table 7: 16,384 weights -> 512 statistics per layer (biases not counted)
)

AutoConfig.register(FFN8_MODEL_TYPE, FFN8Config, exist_ok=True)
AutoModelForImageClassification.register(FFN8Config, FFN8ForImageClassification, exist_ok=True)
register_architecture(FFN8_MODEL_TYPE, FFN8_SPEC)
