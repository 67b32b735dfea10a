"""How Gaussian each fully connected layer is, and which blocks can be replaced (issue 11).

Modules:
    fit          pure per-matrix metrics: standardised Eq. 2 residual vs N(0, 1), mean share, stable rank
    matrices     the model's fully connected matrices (Conv1D transposed, fused slices split) and their fits
    calibration  calibration batches; the optional probe of a new classification head
    blocks       the per-block calibration scan: Block Influence, loss when Gaussian / removed
    select       the score table, ``suggest_layers`` (``--layers auto:K``)
    drift        per-matrix distribution drift between a model before and after fine-tuning
    report       ranked table, markdown / JSON / PNG output

Typical use::

    from isogauss_hf.analysis import make_calibration_batches, suggest_layers
    batches = make_calibration_batches(train_split, collator, num_samples=128, model=model)
    pick = suggest_layers(model, batches, k=2)          # pick.blocks, pick.scores, pick.describe()
"""

from .blocks import MEASURES, BlockScan, ScanResult, find_blocks, scan_blocks
from .calibration import HeadProbe, make_calibration_batches
from .drift import drift_by_block, weight_drift
from .fit import FIT_METRICS, fit_metrics, ks_to_normal, stable_rank, standardized_residual, wasserstein_1d, \
    wasserstein_to_normal
from .matrices import MatrixFit, block_fit_summary, fit_model, iter_matrices
from .report import format_table, write_drift_report, write_report
from .select import DEFAULT_SCORE, SCORES, Score, Suggestion, check_score, parse_auto_layers, rank_blocks, \
    score_values, suggest_layers

__all__ = [
    "FIT_METRICS", "fit_metrics", "standardized_residual", "ks_to_normal", "wasserstein_to_normal", "wasserstein_1d",
    "stable_rank", "MatrixFit", "iter_matrices", "fit_model", "block_fit_summary", "make_calibration_batches",
    "HeadProbe", "MEASURES", "BlockScan", "ScanResult", "scan_blocks", "find_blocks", "Score", "SCORES",
    "DEFAULT_SCORE", "Suggestion", "check_score", "score_values", "rank_blocks", "suggest_layers",
    "parse_auto_layers", "weight_drift", "drift_by_block", "format_table", "write_report", "write_drift_report",
]
