"""``RunContext``: everything one ``isogauss-finetune`` call resolved, handed from phase to phase.

:func:`isogauss_hf.cli.finetune.main` fills the request (recipe, output directory, flags); the run
phase (:mod:`isogauss_hf.cli.run`; a sweep, :mod:`isogauss_hf.cli.sweep`, makes one per seed) adds what it
loaded once for all variants (model source, config, tokenizer, task pipeline, prepared splits), the teacher's
logits of a distilled plan and, as each variant finishes, the final model. Nothing here is global: two calls in
one process do not share state.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..recipes import Recipe
from .variants import Variant, run_name

__all__ = ["RunContext"]


@dataclass
class RunContext:
    """The state of one run of ``isogauss-finetune`` (see the module docstring for who fills what)."""

    recipe: Recipe
    out: Path
    resume: bool = False  # --resume-from-checkpoint
    push_to_hub: Optional[str] = None  # --push-to-hub REPO
    report_to: list[str] = field(default_factory=list)  # --report-to: transformers integrations
    save_models: bool = True  # --no-save-models (sweeps): records only
    variants: list[Variant] = field(default_factory=list)
    # loaded once, shared by every variant
    source: Any = None  # pipelines.ModelSource
    model_config: Any = None
    tokenizer: Any = None
    pipeline: Any = None  # task_pipelines.TaskPipeline
    task_data: Any = None  # data.TaskData (after the --train-samples / --eval-samples caps)
    labels: Optional[list[str]] = None
    train: Any = None  # prepared (tokenized / transformed) splits
    test: Any = None
    teacher_logits: Optional[list] = None  # the dense run's logits on ``train`` (recipe.distill_temperature)
    # the variant that saved to OUTPUT_DIR/model (what --push-to-hub uploads)
    final_model: Any = None
    final_dir: Optional[Path] = None

    @property
    def raw_test(self) -> Any:
        """The test split before preprocessing (question answering and summarization evaluate on it)."""
        return self.task_data.data["test"] if self.task_data is not None else None

    def checkpoints_dir(self, variant: Variant) -> Path:
        """Where the Trainer checkpoints of ``variant`` go while it trains."""
        if variant.run_dir is not None:
            return variant.run_dir / "checkpoints"
        return self.out / "checkpoints" / variant.name

    def logs_dir(self, variant: Variant) -> Path:
        """Where ``--report-to tensorboard`` writes the logs of ``variant``."""
        return (variant.run_dir / "logs") if variant.run_dir is not None else self.out / "logs" / variant.name

    def run_name(self, variant: Variant) -> str:
        """The name that says variant, blocks and seed (a sweep's run directory; the Trainer's ``run_name``)."""
        if variant.run_dir is not None:
            return variant.run_dir.name
        return run_name(variant.label, ",".join(map(str, variant.layers or [])) or None, self.recipe.seed)

    def teacher_path(self, variant: Variant) -> Path:
        """Where the teacher (the dense run) keeps its logits on the train split, for the distilled runs."""
        return (variant.run_dir or self.out) / "teacher_logits.pt"
