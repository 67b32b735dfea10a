"""The ``backprop`` rule: gradients of the statistics through Eq. 2, statistics as parameters, positive stds."""

import pytest
import torch
from torch import nn

from isogauss_hf import IsoGaussConfig, IsoGaussLinear, get_isogauss_model
from isogauss_hf.functional import RowColStats, eq2_distribution, eq2_statistics_grad, eq2_std, sample_weight
from isogauss_hf.layers.reparam import reparam_draw


def _stats(n, m, seed=0, dtype=torch.float64, zero_std=False):
    g = torch.Generator().manual_seed(seed)
    rm, cm = torch.randn(n, generator=g, dtype=dtype) * 0.3, torch.randn(m, generator=g, dtype=dtype) * 0.3
    rs, cs = torch.rand(n, generator=g, dtype=dtype) + 0.1, torch.rand(m, generator=g, dtype=dtype) + 0.1
    if zero_std:
        rs[0], cs[1], cm[1] = 0.0, 0.0, rm[0]  # sigma_01 = 0: the gradient there must stay finite
    return RowColStats(rm, rs, cm, cs)


def _draw(stats, z):
    mean, var = eq2_distribution(*stats)
    return mean + var.sqrt() * z


@pytest.mark.parametrize("n,m", [(5, 3), (3, 7), (1, 4)])
def test_statistics_gradient_matches_central_finite_differences(n, m):
    stats = _stats(n, m)
    g = torch.Generator().manual_seed(1)
    z, c = torch.randn(n, m, generator=g, dtype=torch.float64), torch.randn(n, m, generator=g, dtype=torch.float64)
    grads = eq2_statistics_grad(stats, z, eq2_std(*stats), c)  # L = sum(C * W)  =>  dL/dW = C
    eps = 1e-6
    for which, grad in enumerate(grads):
        for i in range(stats[which].shape[0]):
            plus = [t.clone() for t in stats]
            minus = [t.clone() for t in stats]
            plus[which][i] += eps
            minus[which][i] -= eps
            fd = float(((_draw(plus, z) - _draw(minus, z)) * c).sum() / (2 * eps))
            assert abs(float(grad[i]) - fd) < 1e-6 * max(1.0, abs(fd)), (which, i, float(grad[i]), fd)


def test_statistics_gradient_matches_autograd_through_every_temporary():
    stats = [t.clone().requires_grad_(True) for t in _stats(6, 4, seed=2)]
    z = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    c = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    (_draw(stats, z) * c).sum().backward()
    ours = eq2_statistics_grad(RowColStats(*(t.detach() for t in stats)), z, eq2_std(*(t.detach() for t in stats)), c)
    for t, g in zip(stats, ours):
        torch.testing.assert_close(g, t.grad, rtol=1e-10, atol=1e-12)


def test_zero_sigma_entries_give_finite_gradients():
    stats = _stats(3, 4, zero_std=True)
    std = eq2_std(*stats)
    assert float(std[0, 1]) == 0.0
    z = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    grads = eq2_statistics_grad(stats, z, std, torch.ones(3, 4, dtype=torch.float64))
    assert all(bool(torch.isfinite(g).all()) for g in grads)


@pytest.mark.parametrize("exact_sqrt", [True, False])
def test_reparameterised_draw_equals_the_sampled_weight_and_backpropagates(exact_sqrt):
    stats = [t.float().requires_grad_(True) for t in _stats(5, 4, seed=6)]
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(7))
    w = reparam_draw(RowColStats(*stats), z, exact_sqrt=exact_sqrt)
    expected = sample_weight(*(t.detach() for t in stats), z.clone(), exact_sqrt=exact_sqrt)
    assert torch.equal(w.detach(), expected)
    w.sum().backward()
    assert all(t.grad is not None and bool(torch.isfinite(t.grad).all()) for t in stats)


def _linear(seed=0, out_f=6, in_f=4):
    torch.manual_seed(seed)
    return nn.Linear(in_f, out_f)


@pytest.mark.parametrize("noise", ["seeded", "resample"])
def test_backprop_layer_trains_its_statistics_with_the_optimizer(noise):
    layer = IsoGaussLinear.from_linear(_linear(), rule="backprop", noise=noise, seed=3).train()
    params = dict(layer.named_parameters())
    assert set(params) == {"row_mean", "row_std", "col_mean", "col_std", "bias"}
    assert set(layer.state_dict()) >= set(IsoGaussLinear.STAT_NAMES)
    before = [t.detach().clone() for t in layer.statistics]
    opt = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, target = torch.randn(16, 4, generator=torch.Generator().manual_seed(0)), torch.randn(16, 6)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = ((layer(x) - target) ** 2).mean()
        loss.backward()
        assert layer.row_mean.grad is not None and not layer.last_weight.is_leaf  # no dL/dW of its own
        opt.step()
        losses.append(float(loss.detach()))
        assert layer.distribution_step(lr=0.1) is False  # the optimizer did the learning
    assert all(not torch.equal(a, b) for a, b in zip(layer.statistics, before))
    if noise == "seeded":
        assert losses[-1] < losses[0]


def test_stds_stay_positive_after_a_step_that_crosses_zero():
    layer = IsoGaussLinear.from_linear(_linear(), rule="backprop", noise="seeded", std_floor=1e-4)
    with torch.no_grad():
        layer.row_std.sub_(10.0)  # what a large optimizer step could do
    assert float(layer.state_dict()["row_std"].min()) >= 1e-4  # saved canonical: |std|, at least the floor
    layer.row_std.data.sub_(10.0)
    layer.eval()(torch.randn(2, 4))
    assert float(layer.row_std.detach().min()) >= 1e-4


def test_switching_rule_keeps_values_and_state_dict_names():
    layer = IsoGaussLinear.from_linear(_linear(), rule="gdu", noise="seeded")
    sd = {k: v.clone() for k, v in layer.state_dict().items()}
    layer.set_rule("backprop")
    assert isinstance(layer.row_mean, nn.Parameter)
    assert sd.keys() == layer.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in layer.state_dict().items())
    layer.set_rule("gdu")
    assert "row_mean" in dict(layer.named_buffers()) and "row_mean" not in dict(layer.named_parameters())


def test_frozen_rule_never_changes_the_statistics_and_skips_dL_dW():
    layer = IsoGaussLinear.from_linear(_linear(), rule="frozen", noise="seeded").train()
    before = [t.clone() for t in layer.statistics]
    layer(torch.randn(3, 4)).sum().backward()
    assert not layer.last_weight.requires_grad and layer.bias.grad is not None
    assert layer.distribution_step(lr=1.0) is False and not layer.learns_statistics
    assert all(torch.equal(a, b) for a, b in zip(layer.statistics, before))


def test_backprop_model_saves_and_loads_with_identical_outputs(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    from isogauss_hf import IsoGaussModel

    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                     vocab_size=100)
    model = get_isogauss_model(BertForSequenceClassification(cfg), IsoGaussConfig(layers=[2], rule="backprop",
                                                                                  noise="seeded"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(1))
    model.train()
    for _ in range(2):
        opt.zero_grad()
        model(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
        opt.step()
    model.save_pretrained(str(tmp_path / "m"))
    again = IsoGaussModel.from_pretrained(str(tmp_path / "m"))
    assert all(layer.rule == "backprop" for layer in again.isogauss_layers().values())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, model(input_ids=ids).logits)
    report = model.parameter_report()
    assert report["isogauss_model_parameters"] == report["dense_model_parameters"] - report["replaced_weights"] \
        + report["gaussian_parameters"]  # statistics counted once although they are parameters


def test_peft_adapter_with_backprop_trains_the_statistics_as_parameters():
    from peft import get_peft_model
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                     vocab_size=100)
    pm = get_peft_model(BertForSequenceClassification(cfg),
                        IsoGaussConfig(layers=[1], rule="backprop", noise="seeded", task_type="SEQ_CLS"))
    trainable = {n for n, p in pm.named_parameters() if p.requires_grad}
    stats = {n for n in trainable if n.rsplit(".", 1)[-1] in IsoGaussLinear.STAT_NAMES}
    assert len(stats) == 6 * 4  # six matrices of block 1, four statistics each
    layer = next(m for m in pm.modules() if isinstance(m, IsoGaussLinear))
    before = layer.row_mean.detach().clone()
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 100, (4, 8), generator=torch.Generator().manual_seed(1))
    pm.train()
    pm(input_ids=ids, labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    opt.step()
    assert not torch.equal(layer.row_mean.detach(), before)
