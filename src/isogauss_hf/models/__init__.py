"""Models defined by isogauss-hf (importing this package registers them with the Auto classes)."""

from .ffn import FFN8_MODEL_TYPE, FFN8Config, FFN8ForImageClassification

__all__ = ["FFN8_MODEL_TYPE", "FFN8Config", "FFN8ForImageClassification"]
