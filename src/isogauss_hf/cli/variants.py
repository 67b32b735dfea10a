"""The runs of one ``isogauss-finetune`` call, as a list of variants, and what each kind does to a dense model.

A :class:`Variant` is one row of the closing table and one entry of ``results.json``'s ``runs``:
its name, its kind, its blocks, its ``IsoGaussConfig`` (every non-dense kind) and where it is saved.
:func:`plan_variants` is the single place that decides which variants a recipe runs (dense, the
Gaussian run, then the recipe's ``baselines`` on the same blocks); the plan, the dry run and the
training loop all read that list. :data:`KINDS` says, per kind, how a variant turns the freshly loaded
dense model into the model it trains (:func:`build_variant` -> :class:`Built`: the model, its parameter
report, whether it trains with :class:`~isogauss_hf.IsoGaussCallback`) and what happens before it is saved
(``lowrank``: :func:`~isogauss_hf.baselines.merge_lowrank`, so an ordinary checkpoint is written).
The baseline kinds are :data:`isogauss_hf.baselines.BASELINES` (``drop``, ``lowrank``, ``frozen``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import UsageError

__all__ = ["Variant", "VariantKind", "Built", "KINDS", "plan_variants", "run_name", "build_variant", "dense_report",
           "short_report", "parameter_report"]


@dataclass
class Variant:
    """One run: ``kind`` is a key of :data:`KINDS`; ``config`` the run's ``IsoGaussConfig`` (non-dense kinds)."""

    name: str
    kind: str
    layers: Optional[list[int]]
    save_dir: Path
    config: Any = None
    calibrate_steps: int = 0  # gaussian kind: steps fitting the statistics to the dense blocks first
    statistics_lr: Optional[float] = None  # gaussian kind, rule backprop: the optimizer lr of the statistics
    distill: Optional[float] = None  # trains on the dense teacher's logits at this temperature (recipe.distill_*)
    run_dir: Optional[Path] = None  # a sweep's run directory (checkpoints, teacher logits); None: OUTPUT_DIR

    @property
    def gaussian(self) -> bool:
        return KINDS[self.kind].gaussian

    @property
    def title(self) -> str:
        title = KINDS[self.kind].title(self)
        return title + (f", distilled from the dense run at T = {self.distill:g}" if self.distill is not None else "")

    @property
    def label(self) -> str:
        """What the run is, as the comparison table names it: ``dense``, ``drop``, ``lowrank``, ``frozen`` or the
        Gaussian configuration (``gdu/seeded+calib=200``, ``+dlr=X``, ``+std``, ``+slr=X``), ``+kd=T`` when
        distilled."""
        options = []
        base = self.kind
        if self.kind == "gaussian":
            c = self.config
            base = f"{c.rule}/{c.noise}"
            options += [f"calib={self.calibrate_steps}"] if self.calibrate_steps else []
            options += [f"dlr={c.distribution_lr:g}"] if c.distribution_lr is not None else []
            options += ["std"] if c.standardize else []
            options += [f"slr={self.statistics_lr:g}"] if self.statistics_lr is not None else []
        options += [f"kd={self.distill:g}"] if self.distill is not None else []
        return "+".join([base, *options])


def run_name(label: str, blocks: Optional[str], seed: int) -> str:
    """A sweep run's name and directory: variant, blocks, seed (``gdu-seeded+calib=200_b2,4_s0``, ``dense_s1``)."""
    parts = [label.replace("/", "-")] + ([f"b{blocks.replace(':', '')}"] if blocks else []) + [f"s{seed}"]
    return "_".join(parts)


@dataclass
class Built:
    """A variant's model, ready to train: its parameter report and whether it needs IsoGaussCallback."""

    model: Any
    report: dict[str, Any]
    callback: bool


@dataclass(frozen=True)
class VariantKind:
    """How a kind of run is built from the dense model, described, and prepared for saving."""

    gaussian: bool  # the trained model holds Gaussian layers (results.json "gaussian")
    build: Callable[[Any, Variant], Built]
    title: Callable[[Variant], str]
    unit: Optional[str] = "statistics"  # what the replaced weights become in the plan; None: removed (drop)
    before_save: Optional[Callable[[Any], Any]] = None  # model -> the model save_pretrained writes


def _blocks(variant: Variant) -> str:
    return ",".join(map(str, variant.layers or []))


def _convert(model: Any, variant: Variant, calibration: Optional[Callable[[Any], list]] = None) -> Built:
    from ..model import get_isogauss_model

    steps = variant.calibrate_steps if calibration is not None else 0
    try:
        if steps:  # fit the statistics to the replaced dense blocks first (isogauss_hf.calibrate)
            from ..calibrate import calibrate_statistics, keep_dense_units

            batches = calibration(model)
            units = keep_dense_units(model, variant.config)
            converted = get_isogauss_model(model, variant.config)
            losses = calibrate_statistics(converted, units, batches, steps=steps)
            print(f"   calibrated the statistics: {steps} steps, block output MSE {losses[0]:.4g} -> "
                  f"{losses[-1]:.4g}", flush=True)
        else:
            converted = get_isogauss_model(model, variant.config)
    except ValueError as e:  # blocks out of range, unknown targets, unmapped architecture
        raise UsageError(f"{e}") from None
    return Built(converted, parameter_report(converted, variant), True)


def _baseline(model: Any, variant: Variant) -> Built:
    from ..baselines import prepare_baseline

    try:
        prepared = prepare_baseline(variant.kind, model, variant.layers, variant.config)
    except ValueError as e:
        raise UsageError(f"baseline {variant.kind}: {e}") from None
    return Built(prepared.model, prepared.report, prepared.needs_isogauss_callback)


def _gaussian_title(variant: Variant) -> str:
    c = variant.config
    return (f"Gaussian layers {_blocks(variant)} (rule {c.rule}, noise {c.noise}, num_samples {c.num_samples}"
            + (f", distribution lr {c.distribution_lr:g}" if c.distribution_lr else "")
            + (f", statistics calibrated {variant.calibrate_steps} steps" if variant.calibrate_steps else "") + ")")


def _merge(model: Any) -> Any:
    from ..baselines import merge_lowrank

    return merge_lowrank(model)


KINDS: dict[str, VariantKind] = {
    "dense": VariantKind(gaussian=False, build=lambda model, variant: Built(model, dense_report(model), False),
                         title=lambda variant: "dense baseline (back-propagation)"),
    "gaussian": VariantKind(gaussian=True, build=_convert, title=_gaussian_title),
    "drop": VariantKind(gaussian=False, build=_baseline, unit=None,
                        title=lambda v: f"baseline drop: layers {_blocks(v)} removed (the residual stream passes "
                                        f"through)"),
    "lowrank": VariantKind(gaussian=False, build=_baseline, unit="factor entries", before_save=_merge,
                           title=lambda v: f"baseline lowrank: layers {_blocks(v)} as trained rank-r factors, "
                                           f"r(n+m) <= 2n+2m, SVD-initialised"),
    "frozen": VariantKind(gaussian=True, build=_baseline,
                          title=lambda v: f"baseline frozen: Gaussian layers {_blocks(v)} at their initial fit, "
                                          f"never updated (noise {v.config.noise}, num_samples "
                                          f"{v.config.num_samples})"),
}


def plan_variants(recipe: Any, out: Path) -> list[Variant]:
    """The variants ``recipe`` runs, in order: dense (``compare_dense`` / ``analyze``), the Gaussian run (saved to
    ``OUTPUT_DIR/model``, the final model), then each of ``recipe.baselines`` on the same blocks
    (``OUTPUT_DIR/baseline-NAME``); with ``distill_temperature`` the dense control ``dense-kd`` follows the dense
    run (the teacher) and every later variant is distilled. A recipe whose blocks are still to be picked
    (``auto:K``) plans its dense runs only: resolve it first (:mod:`isogauss_hf.cli.analysis_hooks`)."""
    if recipe.is_dense:
        return [Variant("dense", "dense", None, out / "model")]
    variants = []
    kd = recipe.distill_temperature
    if recipe.compare_dense or recipe.analyze:
        variants.append(Variant("dense", "dense", None, out / "dense-baseline"))
    if kd is not None:  # the dense control of distillation: the dense model distilled from the dense run
        variants.append(Variant("dense-kd", "dense", None, out / "dense-distilled", distill=kd))
    if recipe.layers is None:  # auto:K not resolved yet
        return variants
    config = recipe.config_for(recipe.layers)
    variants.append(Variant("isogauss", "gaussian", list(recipe.layers), out / "model", config=config,
                            calibrate_steps=recipe.calibrate_steps, statistics_lr=recipe.statistics_lr, distill=kd))
    for name in recipe.baselines:
        variants.append(Variant(name, name, list(recipe.layers), out / f"baseline-{name}", config=config, distill=kd))
    return variants


def build_variant(model: Any, variant: Variant, classifier_hidden: Optional[int] = None,
                  calibration: Optional[Callable[[Any], list]] = None) -> Built:
    """The model ``variant`` trains, made from a freshly loaded dense ``model`` (may be the same object).

    ``classifier_hidden``: every non-dense variant first gets the two-layer head of Table 6
    (:func:`isogauss_hf.heads.with_mlp_head`), so its first layer can be the Gaussian module.
    ``calibration``: a function of the dense model returning input batches of the train split; with it, a
    Gaussian variant whose
    ``calibrate_steps`` > 0 calibrates its statistics first (the plan passes none: nothing is run there).
    """
    if classifier_hidden is not None and variant.kind != "dense":
        from ..heads import with_mlp_head

        try:
            model = with_mlp_head(model, classifier_hidden)
        except ValueError as e:
            raise UsageError(f"classifier_hidden {classifier_hidden}: {e}") from None
    if variant.kind == "gaussian":
        return _convert(model, variant, calibration)
    return KINDS[variant.kind].build(model, variant)


def short_report(report: dict[str, Any]) -> dict[str, Any]:
    """The totals of ``IsoGaussModel.parameter_report()`` (no per-block breakdown)."""
    keys = ("replaced_weights", "gaussian_parameters", "ratio", "num_matrices", "dense_model_parameters",
            "isogauss_model_parameters", "paper_counts", "paper_dense_parameters", "paper_isogauss_parameters")
    return {k: report[k] for k in keys if k in report}


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
