"""Equal-budget baselines for a Gaussian block (issue 10): what a Gaussian layer must beat.

* :mod:`.drop` — ``drop_blocks(model, blocks)``: the blocks removed, the residual stream passes through;
  a per-architecture table (:data:`DROP_SPECS`) says where blocks live and which config field counts them.
* :mod:`.lowrank` — ``apply_lowrank(model, config)``: each selected matrix as trained rank-r factors with
  r (n + m) <= 2n + 2m, SVD-initialised (Linear, GPT-2 Conv1D and fused c_attn, Conv2d); ``merge_lowrank``.
* :mod:`.runs` — :data:`BASELINES` (``drop``, ``lowrank``, ``frozen``) and ``prepare_baseline(name, model,
  layers, config) -> PreparedRun(model, report, needs_isogauss_callback)``.
"""

from .drop import DROP_SPECS, BlockSlot, DropSpec, block_slots, check_blocks, drop_blocks, register_drop_spec
from .lowrank import (
    LowRankConv2d,
    LowRankFusedLinear,
    LowRankLinear,
    apply_lowrank,
    budget_rank,
    lowrank_modules,
    merge_lowrank,
    svd_factors,
)
from .runs import BASELINES, BaselineSpec, PreparedRun, get_baseline, parse_baselines, prepare_baseline

__all__ = [
    "BASELINES", "BaselineSpec", "PreparedRun", "get_baseline", "parse_baselines", "prepare_baseline",
    "DROP_SPECS", "DropSpec", "BlockSlot", "block_slots", "check_blocks", "drop_blocks", "register_drop_spec",
    "LowRankLinear", "LowRankFusedLinear", "LowRankConv2d", "apply_lowrank", "budget_rank", "lowrank_modules",
    "merge_lowrank", "svd_factors",
]
