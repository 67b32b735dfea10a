"""Data-parallel training: rank-consistent draws, averaged dL/dW, identical statistics on every rank.

The two-process test launches ``torchrun --nproc_per_node 2 tests/dist_worker.py`` (gloo, CPU) and
compares each rank's final statistics with each other and with one process trained on the combined
batch, for GDU and WDU.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

import isogauss_hf.distributed as D
from isogauss_hf import IsoGaussLinear, iter_isogauss_layers

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import dist_worker as W  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _layer(noise="resample", seed=7):
    torch.manual_seed(0)
    return IsoGaussLinear.from_linear(nn.Linear(6, 5), noise=noise, seed=seed)


# ------------------------------------------------------------------ single-process behaviour of the helpers
def test_helpers_are_noops_in_one_process():
    t = torch.arange(4.0)
    D.all_reduce_mean_([t])
    assert torch.equal(t, torch.arange(4.0))
    assert D.all_reduce_flags([True, False]) == [1, 0]
    assert not D.is_distributed() and D.world_size() == 1 and D.rank() == 0
    model = nn.Sequential(_layer())
    assert D.check_rank_consistency(model) == 0.0


def test_step_draw_depends_on_seed_and_global_step_only():
    a, b = _layer(seed=7), _layer(seed=7)
    a.train(), b.train()
    x = torch.randn(3, 6)
    for _ in range(3):  # a has drawn three times, b never
        a(x)
    D.set_step_draws([a, b], 5)
    wa, wb = a(x), b(x)
    assert torch.equal(a.last_weight, b.last_weight) and torch.equal(wa, wb)
    D.set_step_draws([a, b], 6)
    a(x)
    assert not torch.equal(a.last_weight, b.last_weight)  # another step, another draw
    c = _layer(seed=8)
    c.train()
    D.set_step_draws([c], 5)
    c(x)
    assert not torch.equal(c.last_weight, b.last_weight)  # another layer seed, another draw


def test_step_draws_leave_seeded_layers_alone():
    layer = _layer(noise="seeded")
    layer.draw_counter.fill_(0)
    D.set_step_draws([layer], 9)
    assert int(layer.draw_counter) == 0


def test_name_layers_strips_wrapper_prefixes():
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = nn.Module()
            self.module.base_model = nn.Module()
            self.module.base_model.enc = _layer()

    names = [name for name, _ in iter_isogauss_layers(Wrapper())]
    assert names == ["enc"]


# ------------------------------------------------------------------ two processes, gloo, CPU
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_two_processes_match_each_other_and_one_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), os.path.join(HERE, "dist_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from safetensors.torch import load_file

    for rule in W.RULES:
        r0 = load_file(str(tmp_path / f"{rule}_rank0.safetensors"))
        r1 = load_file(str(tmp_path / f"{rule}_rank1.safetensors"))
        assert r0.keys() == r1.keys() and len(r0) == 4 * 12  # 2 blocks x 6 matrices x 4 statistics
        for k in r0:
            assert torch.equal(r0[k], r1[k]), f"{rule}: {k} differs between ranks"
        ref = W.train(rule, str(tmp_path / "ref"), 2 * W.PER_RANK_BATCH, distributed=False)
        init = W.build_model(rule)
        start = {f"{n}.{s}": getattr(layer, s) for n, layer in init.isogauss_layers().items() for s in layer.STAT_NAMES}
        moved = max(float((ref[k] - start[k]).abs().max()) for k in ref)
        gap = max(float((ref[k] - r0[k]).abs().max()) for k in ref)
        assert moved > 1e-4, f"{rule}: statistics barely moved ({moved}); the comparison would prove nothing"
        assert gap < 1e-5 and gap < moved / 100, f"{rule}: 2 processes vs 1 process over the combined batch: {gap}"
    # without the all-reduce of dL/dW the ranks drift apart: the equality above is not automatic
    n0 = load_file(str(tmp_path / "noreduce_rank0.safetensors"))
    n1 = load_file(str(tmp_path / "noreduce_rank1.safetensors"))
    assert any(not torch.equal(n0[k], n1[k]) for k in n0)
    for r in (0, 1):
        report = json.loads((tmp_path / f"consistency_rank{r}.json").read_text())
        assert report["equal_ok"]
        assert report["divergence_error"] and report["first_layer"] in report["divergence_error"]


@pytest.mark.parametrize("name,kind,procs", [("cpu_multiprocess", "MULTI_CPU", 2), ("single_gpu", "NO", 1),
                                             ("multi_gpu_ddp", "MULTI_GPU", 2)])
def test_shipped_accelerate_configs_parse(name, kind, procs):
    from accelerate.commands.config.config_args import load_config_from_file

    path = os.path.join(HERE, "..", "configs", f"accelerate_{name}.yaml")
    config = load_config_from_file(path)
    assert config.distributed_type.value == kind and config.num_processes == procs
    assert not config.fsdp_config and not config.deepspeed_config  # neither is supported
