"""IsoGaussConv2d: the im2col matrix of a Conv2d as a Gaussian layer (paper Section 4.2).

Everything is checked against the explicit im2col product (F.unfold + matmul) and against IsoGaussLinear on
the reshaped matrix: statistics, draws, forward, dL/dW, GDU/WDU and the backprop rule; plus groups and
depthwise, low memory, standardization, records (save/load), dense export and the bad-input errors.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from isogauss_hf import IsoGaussConfig, get_isogauss_model
from isogauss_hf.functional import row_col_stats, standardize_input
from isogauss_hf.layers import (IsoGaussConv2d, IsoGaussLinear, layer_kind_for_module, layer_kind_for_source)

B = 64  # channels per tile-sized block in the shapes below

# (in, out, kernel, stride, padding, dilation, groups, bias, padding_mode)
GEOMETRIES = {
    "3x3": (4, 6, 3, 1, 1, 1, 1, True, "zeros"),
    "1x1-stride2-nobias": (5, 7, 1, 2, 0, 1, 1, False, "zeros"),
    "rect-dilated-same-reflect": (4, 6, (3, 2), 1, "same", 2, 1, True, "reflect"),
    "grouped": (4, 8, 3, 2, 1, 1, 2, True, "circular"),
    "depthwise": (6, 6, 3, 2, 1, 1, 6, False, "zeros"),
    "depthwise-multiplier": (4, 8, 3, 1, 1, 1, 4, True, "zeros"),
}


def _conv(name: str, seed: int = 0) -> nn.Conv2d:
    i, o, k, s, p, d, g, b, mode = GEOMETRIES[name]
    torch.manual_seed(seed)
    conv = nn.Conv2d(i, o, k, s, p, d, g, b, mode)
    with torch.no_grad():
        conv.weight.mul_(3).add_(0.05)
    return conv


def _input(conv: nn.Conv2d, seed: int = 1, batch: int = 2, size: int = 7) -> torch.Tensor:
    return torch.randn(batch, conv.in_channels, size, size, generator=torch.Generator().manual_seed(seed))


def im2col_product(x, weight, bias, layer: IsoGaussConv2d, standardize: bool = False) -> torch.Tensor:
    """The reference: unfold every patch, (optionally standardize it), multiply by the (n, m) matrix per group."""
    mode = "constant" if layer.padding_mode == "zeros" else layer.padding_mode
    x = F.pad(x, layer._reversed_padding_repeated_twice, mode=mode)
    g, n = layer.groups, layer.out_channels
    ipg, opg = layer.in_channels // g, n // g
    kh, kw = layer.kernel_size
    h_out = (x.shape[2] - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
    w_out = (x.shape[3] - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
    outs = []
    for group in range(g):
        cols = F.unfold(x[:, group * ipg:(group + 1) * ipg], (kh, kw), layer.dilation, 0, layer.stride)  # (B, m, L)
        patches = cols.transpose(1, 2)  # (B, L, m): one im2col column per output position
        if standardize:
            patches = standardize_input(patches)
        outs.append(patches @ weight[group * opg:(group + 1) * opg].t())
    y = torch.cat(outs, dim=2).transpose(1, 2).reshape(x.shape[0], n, h_out, w_out)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_statistics_are_those_of_the_im2col_matrix(name):
    conv = _conv(name)
    layer = IsoGaussConv2d.from_conv(conv)
    n, m = conv.out_channels, conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]
    assert layer.matrix_shape == (n, m) and layer.num_replaced_weights == conv.weight.numel()
    assert layer.num_gaussian_parameters == 2 * (n + m)
    matrix = conv.weight.detach().reshape(n, m)
    linear = IsoGaussLinear.from_linear(_linear_with(matrix, conv.bias))
    for got, want, ref in zip(layer.statistics, row_col_stats(matrix), linear.statistics):
        torch.testing.assert_close(got, want)
        torch.testing.assert_close(got, ref)
    if conv.bias is not None:
        torch.testing.assert_close(layer.bias, conv.bias)
    mean, var = layer.weight_distribution()
    assert mean.shape == var.shape == (n, m)


def _linear_with(matrix: torch.Tensor, bias) -> nn.Linear:
    lin = nn.Linear(matrix.shape[1], matrix.shape[0], bias=bias is not None)
    with torch.no_grad():
        lin.weight.copy_(matrix)
        if bias is not None:
            lin.bias.copy_(bias)
    return lin


@pytest.mark.parametrize("name", list(GEOMETRIES))
@pytest.mark.parametrize("noise", ["seeded", "resample"])
def test_forward_equals_unfold_and_matmul_with_the_same_draw(name, noise):
    conv = _conv(name)
    layer = IsoGaussConv2d.from_conv(conv, noise=noise, seed=5).train()
    x = _input(conv)
    y = layer(x)
    torch.testing.assert_close(y, im2col_product(x, layer.last_weight.detach(), layer.bias, layer),
                               rtol=1e-5, atol=1e-5)
    layer.eval()
    with torch.no_grad():
        key = layer.current_draw_key()
        y_eval = layer(x)
        expected = im2col_product(x, layer.sample(*key), layer.bias, layer)
    torch.testing.assert_close(y_eval, expected, rtol=1e-5, atol=1e-5)
    dense = conv.__class__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        dense.weight.copy_(layer.dense_weight().reshape(dense.weight.shape))
        if conv.bias is not None:
            dense.bias.copy_(layer.bias)
        if noise == "seeded":  # the eval draw of a seeded layer is its fixed draw, the one export writes
            torch.testing.assert_close(y_eval, dense(x), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(layer.to_dense_module()(x), dense(x))


@pytest.mark.parametrize("name", list(GEOMETRIES))
@pytest.mark.parametrize("rule, noise", [("gdu", "resample"), ("gdu", "seeded"), ("wdu", "resample"),
                                         ("wdu", "seeded"), ("backprop", "resample"), ("backprop", "seeded")])
def test_rules_equal_the_linear_layer_on_the_reshaped_matrix(name, rule, noise):
    """Same draw, same dL/dW (the im2col one), same GDU/WDU step or statistic gradients as IsoGaussLinear."""
    conv = _conv(name)
    n = conv.out_channels
    layer = IsoGaussConv2d.from_conv(conv, rule=rule, noise=noise, seed=7).train()
    linear = IsoGaussLinear.from_linear(_linear_with(conv.weight.detach().reshape(n, -1), conv.bias), rule=rule,
                                        noise=noise, seed=7).train()
    x = _input(conv)
    target = torch.randn(layer(x).shape, generator=torch.Generator().manual_seed(3))
    layer.reset_draw()
    layer.set_draw_index(0)
    linear.set_draw_index(0)
    y = layer(x)
    w_ref = linear._training_weight()  # the linear layer's draw of the same (seed, stream, index)
    torch.testing.assert_close(layer.last_weight.detach(), w_ref.detach(), rtol=0, atol=0)
    y_ref = im2col_product(x, w_ref, linear.bias, layer)
    ((y - target) ** 2).mean().backward()
    ((y_ref - target) ** 2).mean().backward()
    if rule == "backprop":
        for a, b in zip(layer.statistics, linear.statistics):
            assert a.grad is not None and a.grad.abs().sum() > 0
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6)
        return
    torch.testing.assert_close(layer.last_weight.grad, linear.last_weight.grad, rtol=1e-4, atol=1e-6)
    assert layer.distribution_step(lr=0.05) and linear.distribution_step(lr=0.05)
    for a, b, before in zip(layer.statistics, linear.statistics, row_col_stats(conv.weight.detach().reshape(n, -1))):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
        assert not torch.equal(a, before)


@pytest.mark.parametrize("in_c, out_c, groups", [(3, 2 * B + 40, 1), (4, 2 * B + 64, 4), (2, 2 * B + 88, 2),
                                                 (2 * B + 8, 2 * B + 8, 2 * B + 8), (B + 8, 2 * B + 16, B + 8)])
@pytest.mark.parametrize("standardize", [False, True])
def test_tiles_of_output_channels_equal_the_whole_draw(in_c, out_c, groups, standardize):
    conv = nn.Conv2d(in_c, out_c, 3, padding=1, groups=groups)
    whole = IsoGaussConv2d.from_conv(conv, noise="seeded", seed=2, standardize=standardize).eval()
    whole.cache_eval_weight = True  # one whole draw
    low = IsoGaussConv2d.from_conv(conv, noise="seeded", seed=2, standardize=standardize).eval()
    low.eval_tile_rows = 24  # tiles that cut through groups
    x = torch.randn(2, in_c, 4, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = whole(x), low(x)
    assert got.shape == (2, out_c, 4, 4)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_standardize_is_per_im2col_patch(name):
    conv = _conv(name)
    layer = IsoGaussConv2d.from_conv(conv, noise="seeded", standardize=True).eval()
    x = _input(conv) * 2 + 0.7
    with torch.no_grad():
        got = layer(x)
    expected = im2col_product(x, layer.dense_weight(), layer.bias, layer, standardize=True)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="standardize=True has no dense equivalent"):
        layer.to_dense_module()


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_record_rebuilds_an_empty_layer_that_loads_the_state(name):
    conv = _conv(name)
    config = IsoGaussConfig(noise="seeded")
    kind = layer_kind_for_module(conv, "net.conv")
    layer = kind.build(conv, config, 11, 1).eval()
    record = json.loads(json.dumps(kind.describe(conv, layer)))  # what isogauss_config.json holds
    empty = layer_kind_for_source(record["source"]).empty(record, config, torch.device("cpu"), torch.float32)
    empty.load_state_dict(layer.state_dict())
    x = _input(conv)
    with torch.no_grad():
        torch.testing.assert_close(empty.eval()(x), layer(x), rtol=0, atol=0)
    assert empty.geometry() == layer.geometry() and empty.seed == 11


@pytest.mark.parametrize("standardize", [False, True])
def test_unbatched_input_as_nn_conv2d_accepts_it(standardize):
    conv = _conv("grouped")
    layer = IsoGaussConv2d.from_conv(conv, noise="seeded", standardize=standardize).eval()
    x = _input(conv, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(layer(x[0]), layer(x)[0])
        layer.eval_tile_rows = 4
        torch.testing.assert_close(layer(x[0]), layer(x)[0])


def test_resample_draws_differ_and_seeded_is_reproducible_without_touching_the_global_rng():
    conv = _conv("3x3")
    x = _input(conv)
    state = torch.random.get_rng_state()
    resample = IsoGaussConv2d.from_conv(conv, noise="resample", seed=1).eval()
    with torch.no_grad():
        a, b = resample(x), resample(x)
        seeded = [IsoGaussConv2d.from_conv(conv, noise="seeded", seed=1).eval()(x) for _ in range(2)]
    assert not torch.allclose(a, b)
    assert torch.equal(seeded[0], seeded[1])
    assert torch.equal(state, torch.random.get_rng_state())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_statistics_stay_fp32_and_export_follows_the_module_dtype(dtype):
    conv = _conv("depthwise")  # no bias: the exported dtype comes from the module, not the bias
    layer = IsoGaussConv2d.from_conv(conv, noise="seeded").to(dtype)
    assert all(t.dtype == torch.float32 for t in layer.statistics)
    assert layer.to_dense_module().weight.dtype == dtype


class _OwnForwardConv(nn.Conv2d):
    def forward(self, x):  # e.g. a "same"-padding variant: converting it would change its output
        return super().forward(F.pad(x, (1, 1, 1, 1)))


@pytest.mark.parametrize("module, match", [
    (nn.Conv1d(2, 3, 3), r"is a Conv1d: Gaussian convolutions handle torch.nn.Conv2d only"),
    (nn.Conv3d(2, 3, 3), r"is a Conv3d: .*Conv1d, Conv3d and transposed convolutions are not supported"),
    (nn.ConvTranspose2d(2, 3, 3), r"is a ConvTranspose2d: Gaussian convolutions handle torch.nn.Conv2d only"),
    (nn.LazyConv2d(3, 3), r"is a LazyConv2d that has not been initialized yet"),
    (_OwnForwardConv(2, 3, 3), r"is a _OwnForwardConv, a Conv2d subclass with its own forward"),
    (nn.Linear(2, 3), r"is a Linear: Gaussian convolutions handle torch.nn.Conv2d only"),
])
def test_unsupported_modules_are_one_clear_error(module, match):
    with pytest.raises(TypeError, match=match):
        IsoGaussConv2d.from_conv(module)


class _Net(nn.Module):
    def __init__(self, extra: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.extra = extra

    def forward(self, x):
        return self.conv(x)


@pytest.mark.parametrize("extra", [nn.Conv3d(2, 3, 3), nn.ConvTranspose2d(2, 3, 3), nn.Conv1d(2, 3, 3)])
def test_selecting_an_unsupported_convolution_names_the_module(extra):
    kind = type(extra).__name__
    with pytest.raises(TypeError, match=rf"^extra is a {kind}"):
        get_isogauss_model(_Net(extra), IsoGaussConfig(target_modules=[r"conv|extra"]))
    with pytest.raises(TypeError, match=rf"net.extra is a {kind}, which no Gaussian layer kind handles"):
        layer_kind_for_module(extra, "net.extra")


def test_generic_patterns_convert_a_plain_conv2d_and_export():
    net = _Net(nn.Identity())
    x = torch.randn(2, 2, 5, 5)
    model = get_isogauss_model(net, IsoGaussConfig(target_modules=["conv"], noise="seeded")).eval()
    assert isinstance(model.base_model.conv, IsoGaussConv2d)
    with torch.no_grad():
        y = model(x)
        from isogauss_hf.convert import dense_swapped

        with dense_swapped(model.base_model):
            assert type(model.base_model.conv) is nn.Conv2d
            torch.testing.assert_close(model.base_model(x), y)


@pytest.mark.parametrize("kwargs, match", [
    (dict(in_channels=4, out_channels=6, kernel_size=3, groups=4), r"out_channels must be divisible by groups"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, padding_mode="mirror"), r"padding_mode"),
    (dict(in_channels=4, out_channels=4, kernel_size=3, stride=2, padding="same"), r"padding='same'"),
])
def test_bad_geometry_is_refused_as_nn_conv2d_refuses_it(kwargs, match):
    with pytest.raises(ValueError, match=match):
        IsoGaussConv2d(**kwargs)


def test_a_conv_cannot_be_split_like_a_fused_projection():
    with pytest.raises(ValueError, match="a Conv2d cannot be split into 3 Gaussian matrices"):
        layer_kind_for_module(_conv("3x3")).build(_conv("3x3"), IsoGaussConfig(), 0, 3)
