"""The runs of one ``isogauss-finetune`` call, as a list of variants, and what each kind does to a dense model.

A :class:`Variant` is one row of the closing table and one entry of ``results.json``'s ``runs``:
its name, its kind, its blocks, its ``IsoGaussConfig`` (Gaussian kinds) and where it is saved.
:func:`plan_variants` is the single place that decides which variants a recipe runs; the plan, the
dry run and the training loop all read that list. :data:`KINDS` says, per kind, how a variant turns
the freshly loaded dense model into the model it trains (:func:`build_variant`) and whether it needs
:class:`~isogauss_hf.IsoGaussCallback`. New kinds (baselines, frozen statistics) are new entries here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import UsageError

__all__ = ["Variant", "VariantKind", "KINDS", "plan_variants", "build_variant", "dense_report", "short_report",
           "parameter_report"]


@dataclass
class Variant:
    """One run: ``kind`` is a key of :data:`KINDS`; ``config`` the run's ``IsoGaussConfig`` (Gaussian kinds)."""

    name: str
    kind: str
    layers: Optional[list[int]]
    save_dir: Path
    config: Any = None

    @property
    def gaussian(self) -> bool:
        return KINDS[self.kind].gaussian

    @property
    def title(self) -> str:
        return KINDS[self.kind].title(self)


@dataclass(frozen=True)
class VariantKind:
    """How a kind of run is built from the dense model and trained."""

    gaussian: bool  # the trained model holds Gaussian layers (results.json "gaussian")
    callback: bool  # train with IsoGaussCallback (GDU / WDU steps)
    build: Callable[[Any, Variant], Any]
    title: Callable[[Variant], str]


def _convert(model: Any, variant: Variant) -> Any:
    from ..model import get_isogauss_model

    try:
        return get_isogauss_model(model, variant.config)
    except ValueError as e:  # blocks out of range, unknown targets, unmapped architecture
        raise UsageError(f"{e}") from None


def _gaussian_title(variant: Variant) -> str:
    c = variant.config
    return (f"Gaussian layers {','.join(map(str, variant.layers or []))} (rule {c.rule}, noise {c.noise}, "
            f"num_samples {c.num_samples}" + (f", distribution lr {c.distribution_lr:g}" if c.distribution_lr else "")
            + ")")


KINDS: dict[str, VariantKind] = {
    "dense": VariantKind(gaussian=False, callback=False, build=lambda model, variant: model,
                         title=lambda variant: "dense baseline (back-propagation)"),
    "gaussian": VariantKind(gaussian=True, callback=True, build=_convert, title=_gaussian_title),
}


def plan_variants(recipe: Any, out: Path) -> list[Variant]:
    """The variants ``recipe`` runs, in order; the last one saving to ``OUTPUT_DIR/model`` is the final model."""
    if recipe.layers is None:
        return [Variant("dense", "dense", None, out / "model")]
    variants = []
    if recipe.compare_dense:
        variants.append(Variant("dense", "dense", None, out / "dense-baseline"))
    variants.append(Variant("isogauss", "gaussian", list(recipe.layers), out / "model",
                            config=recipe.config_for(recipe.layers)))
    return variants


def build_variant(model: Any, variant: Variant) -> Any:
    """The model ``variant`` trains, made from a freshly loaded dense ``model`` (may be the same object)."""
    return KINDS[variant.kind].build(model, variant)


def short_report(report: dict[str, Any]) -> dict[str, Any]:
    """The totals of ``IsoGaussModel.parameter_report()`` (no per-block breakdown)."""
    return {k: report[k] for k in ("replaced_weights", "gaussian_parameters", "ratio", "num_matrices",
                                   "dense_model_parameters", "isogauss_model_parameters")}


def dense_report(model: Any) -> dict[str, Any]:
    """A parameter report of the same shape for a model without Gaussian layers."""
    n = sum(p.numel() for p in model.parameters())
    return {"replaced_weights": 0, "gaussian_parameters": 0, "ratio": 0.0, "num_matrices": 0,
            "dense_model_parameters": n, "isogauss_model_parameters": n}


def parameter_report(model: Any, variant: Variant) -> dict[str, Any]:
    """The report a run records: totals plus ``per_block`` for Gaussian models, :func:`dense_report` otherwise."""
    if hasattr(model, "parameter_report"):
        full = model.parameter_report()
        return {**short_report(full), "per_block": full["per_block"]}
    return dense_report(model)
