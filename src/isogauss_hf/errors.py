"""Every exception type isogauss-hf raises on purpose, in one place.

* :class:`UsageError` — bad input from a user (a flag, a recipe, a dataset); the CLI prints it as one line
  on stderr and exits with code 2. :class:`HubUnavailable` and :class:`RecipeError` are kinds of it.
* :class:`MissingAssetError` — an offline asset is not installed; the message names the command that
  installs it (a ``FileNotFoundError``, so code catching that keeps working).
* :class:`CheckpointError` — a checkpoint that cannot be loaded as it is (a ``ValueError``).
* :class:`RankDivergenceError` — ranks of a data-parallel run hold different Gaussian statistics.
* :class:`TrainingDiverged` — a training run whose loss or weights stopped being finite (``isogauss-finetune``
  stops it at the first such step, status ``diverged``).
"""

from __future__ import annotations

__all__ = [
    "UsageError",
    "HubUnavailable",
    "RecipeError",
    "MissingAssetError",
    "CheckpointError",
    "RankDivergenceError",
    "TrainingDiverged",
]


class UsageError(ValueError):
    """Bad input from the user: reported as one line on stderr, exit code 2."""


class HubUnavailable(UsageError):
    """Something must be downloaded from the Hugging Face Hub, which this machine cannot reach."""


class RecipeError(UsageError):
    """A recipe that cannot be found or does not validate (the message is one line)."""


class MissingAssetError(FileNotFoundError):
    """An offline asset is not installed; the message names the command that installs it."""

    #: The console script that installs every offline asset (``isogauss_hf.cli.fetch_assets``).
    DEFAULT_COMMAND = "isogauss-fetch-assets"

    def __init__(self, asset: str, detail: str = "", command: str = "") -> None:
        self.asset = asset
        extra = f" ({detail})" if detail else ""
        fix = f"; install it with: {command or self.DEFAULT_COMMAND}"
        super().__init__(f"offline asset '{asset}' not found{extra}{fix}")


class CheckpointError(ValueError):
    """A checkpoint directory or file that does not load as it is; the message names the file or tensor."""


class RankDivergenceError(RuntimeError):
    """The ranks of a data-parallel run hold different Gaussian statistics."""


class TrainingDiverged(RuntimeError):
    """A training run whose loss (or weights) became NaN, infinite or exploded; the message names the step and the
    likely cause."""
