"""Weight draws of a Gaussian layer (``layers/draws.py``): inference tile by tile, caches that follow the
statistics, the training draw buffer."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from isogauss_hf import IsoGaussConfig, _runtime, get_isogauss_model
from isogauss_hf.layers import IsoGaussLinear
from isogauss_hf.noise import LEGACY_BLOCK_ROWS
from isogauss_hf.settings import LEGACY_NOISE_GENERATOR


def _layer(out_f=2 * 64 + 44, in_f=24, bias=True, noise="seeded", seed=3, standardize=False, rule="gdu",
           noise_generator=None) -> IsoGaussLinear:
    gen = torch.Generator().manual_seed(seed)
    lin = nn.Linear(in_f, out_f, bias=bias)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(out_f, in_f, generator=gen) * 0.2 + 0.05)
        if bias:
            lin.bias.copy_(torch.randn(out_f, generator=gen))
    layer = IsoGaussLinear.from_linear(lin, noise=noise, seed=seed, standardize=standardize, rule=rule)
    if noise_generator is not None:
        layer.noise_generator = noise_generator
    return layer.eval()


def _whole(layer, x):
    """The same forward through the whole draw (the reference for the tiles)."""
    weight = layer.sample(*layer.current_draw_key())
    from isogauss_hf.functional import standardize_input

    bias = None if layer.bias is None else layer.bias.float()
    return torch.nn.functional.linear(standardize_input(x) if layer.standardize else x, weight, bias)


@pytest.mark.parametrize("value", [0, -4, 1.5, True, "8"])
def test_tile_rows_must_be_a_positive_integer(value):
    layer = _layer()
    with pytest.raises(ValueError, match="eval_tile_rows=.*positive integer"):
        layer.eval_tile_rows = value
    assert layer.eval_tile_rows is None


def test_legacy_generator_tiles_follow_its_blocks():
    layer = _layer(out_f=LEGACY_BLOCK_ROWS + 8, noise_generator=LEGACY_NOISE_GENERATOR)
    with pytest.raises(ValueError, match="multiple of 256 for the torch-cpu"):
        layer.eval_tile_rows = 100
    layer.eval_tile_rows = LEGACY_BLOCK_ROWS
    x = torch.randn(3, layer.in_features)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _whole(layer, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, tile, x_shape",
    [
        (dict(), 8, (3, 5, 24)),
        (dict(), 64, (7, 24)),
        (dict(), 5, (2, 24)),  # tiles that cut row quads
        (dict(), 1000, (2, 24)),  # one tile larger than the matrix
        (dict(bias=False), 16, (4, 24)),
        (dict(standardize=True), 16, (2, 3, 24)),
        (dict(noise="resample"), 24, (2, 24)),
        (dict(), None, (2, 24)),
    ],
)
def test_tiled_outputs_equal_the_whole_draw(kwargs, tile, x_shape):
    layer = _layer(**kwargs)
    layer.eval_tile_rows = tile
    x = torch.randn(*x_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = _whole(layer, x)
        got = layer(x)
    assert got.shape == expected.shape == (*x_shape[:-1], layer.out_features)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert not torch.equal(expected, torch.zeros_like(expected))


def test_inference_draws_tile_by_tile_and_keeps_no_weight(monkeypatch):
    layer = _layer(out_f=3 * 16 + 5)
    layer.eval_tile_rows = 16
    windows = []
    original = type(layer.generator).draw_rows

    def spy(self, stats, seed, row_start, row_end, *, out=None):
        windows.append((row_start, row_end, out is not None))
        return original(self, stats, seed, row_start, row_end, out=out)

    monkeypatch.setattr(type(layer.generator), "draw_rows", spy)
    _runtime.release_workspace()
    with torch.no_grad():
        layer(torch.randn(2, layer.in_features))
    assert windows == [(0, 16, True), (16, 32, True), (32, 48, True), (48, 53, True)]  # reused tile buffer
    assert layer._cache is None and layer.last_weight is None
    n, m = layer.matrix_shape
    held = [t for t in list(vars(layer).values()) + list(layer._buffers.values()) if isinstance(t, torch.Tensor)]
    assert all(t.numel() < n * m for t in held)
    assert all(b.numel() <= 16 * m for b in _runtime._WORKSPACE.buffers.values())


def test_default_tile_holds_at_most_the_configured_number_of_weights(monkeypatch):
    layer = _layer(out_f=100, in_f=24)
    monkeypatch.setitem(_runtime.EVAL_TILE_ELEMENTS, "cpu", 24 * 10)
    assert layer._tile_rows(torch.device("cpu")) == 8  # 10 rows fit, rounded down to whole row quads
    monkeypatch.setitem(_runtime.EVAL_TILE_ELEMENTS, "cpu", 1 << 22)
    assert layer._tile_rows(torch.device("cpu")) >= 100


@pytest.mark.parametrize("cached", [False, True])
def test_inference_follows_in_place_changes_of_the_statistics(cached):
    layer = _layer()
    layer.cache_eval_weight = cached
    x = torch.randn(3, layer.in_features)
    with torch.no_grad():
        before = layer(x)
        layer.row_std.mul_(3)
        after = layer(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, _whole(layer, x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        layer.col_mean.add_(0.5)
        assert not torch.allclose(layer(x), after)


def test_kept_draw_is_reused_while_the_statistics_stand_still():
    layer = _layer()
    layer.cache_eval_weight = True
    x = torch.randn(3, layer.in_features)
    with torch.no_grad():
        layer(x)
        kept = layer._cache[2]
        layer(x)
    assert layer._cache[2] is kept


def test_backprop_gradient_matches_finite_differences_under_no_grad():
    layer = _layer(rule="backprop", out_f=12, in_f=6).double().train()
    x = torch.randn(5, 6, dtype=torch.float64)

    def loss():
        return layer(x).square().sum()

    layer.zero_grad()
    loss().backward()
    analytic = float(layer.row_std.grad[2])
    eps = 1e-3
    with torch.no_grad():  # no training forward in between: the eval path must see the changed statistic
        layer.row_std[2] += eps
        up = float(loss())
        layer.row_std[2] -= 2 * eps
        down = float(loss())
        layer.row_std[2] += eps
    numeric = (up - down) / (2 * eps)
    assert analytic != 0
    assert abs(numeric - analytic) <= 2e-2 * abs(analytic) + 1e-4


def test_resample_layers_draw_afresh_per_forward():
    layer = _layer(noise="resample")
    x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        first_key = layer.current_draw_key()
        first = layer(x)
        second = layer(x)
    assert not torch.allclose(first, second)
    layer._eval_count = first_key[1]
    with torch.no_grad():
        torch.testing.assert_close(layer(x), first)


def test_pinned_draw_override_is_honoured():
    layer = _layer(noise="resample")
    layer.eval_tile_rows = 16
    x = torch.randn(3, layer.in_features)
    layer._draw_override = ("scope", 7)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), _whole(layer, x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(layer(x), layer(x))


def test_training_forward_draws_the_whole_weight():
    layer = _layer(noise="resample").train()
    layer.eval_tile_rows = 16
    y = layer(torch.randn(2, layer.in_features))
    assert layer.last_weight is not None and layer.last_weight.shape == (layer.out_features, layer.in_features)
    y.sum().backward()
    assert layer.last_weight.grad is not None


def test_input_gradient_in_eval_mode_is_right_with_tiles():
    layer = _layer()
    layer.eval_tile_rows = 16  # several tiles: autograd keeps each one (no reused buffer)
    x1 = torch.randn(3, layer.in_features, dtype=torch.float32, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    _whole(layer, x1).square().sum().backward()
    layer(x2).square().sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad, rtol=1e-4, atol=1e-5)
    assert layer.bias.grad is not None


def test_half_precision_input_follows_the_input_dtype():
    layer = _layer().to(torch.bfloat16)
    layer.eval_tile_rows = 16
    x = torch.randn(2, layer.in_features).to(torch.bfloat16)
    with torch.no_grad():
        got = layer(x)
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), _whole(layer, x.float()).float(), rtol=3e-2, atol=3e-2)


def _tiny_model(noise="seeded", num_samples=1):
    config = BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=72,
                        vocab_size=100, num_labels=3)
    torch.manual_seed(0)
    base = BertForSequenceClassification(config).eval()
    return get_isogauss_model(base, IsoGaussConfig(layers=[2], noise=noise, num_samples=num_samples, seed=5)).eval()


@pytest.mark.parametrize("noise, num_samples", [("seeded", 1), ("seeded", 3), ("resample", 2)])
def test_model_level_switches(noise, num_samples):
    whole, tiled = _tiny_model(noise, num_samples), _tiny_model(noise, num_samples)
    whole.disable_low_memory()
    assert all(layer.cache_eval_weight for layer in whole.isogauss_layers().values())
    tiled.enable_low_memory(block_rows=8)
    assert all(layer.eval_tile_rows == 8 and not layer.cache_eval_weight for layer in tiled.isogauss_layers().values())
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = whole(input_ids=ids).logits, tiled(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_model_level_switch_rejects_bad_block_rows_without_changing_anything():
    model = _tiny_model()
    with pytest.raises(ValueError, match="eval_tile_rows=-3"):
        model.enable_low_memory(block_rows=-3)
    assert all(layer.eval_tile_rows is None for layer in model.isogauss_layers().values())


def _train_step(layer, x):
    layer(x).sum().backward()
    return layer.last_weight


def test_training_draw_buffer_is_reused_only_when_nobody_holds_the_old_draw():
    layer = _layer(noise="resample").train()
    x = torch.randn(3, layer.in_features)
    ptr = _train_step(layer, x).data_ptr()
    layer.distribution_step("gdu", 0.01)
    assert _train_step(layer, x).data_ptr() == ptr  # old draw released: storage reused
    held = layer.last_weight
    snapshot = held.detach().clone()
    layer.distribution_step("gdu", 0.01)
    new = _train_step(layer, x)
    assert new.data_ptr() != held.data_ptr()  # the caller still holds the old draw: not overwritten
    assert torch.equal(held.detach(), snapshot) and not torch.equal(new.detach(), snapshot)
    layer.eval()
    assert layer._draw_buffer is None


def test_layer_with_a_reusable_draw_buffer_still_pickles():
    import io

    layer = _layer(noise="resample").train()
    x = torch.randn(2, layer.in_features)
    _train_step(layer, x)
    layer.distribution_step("wdu", 0.01)
    _train_step(layer, x)
    assert layer._draw_buffer is not None
    buf = io.BytesIO()
    torch.save(layer, buf)
    buf.seek(0)
    clone = torch.load(buf, weights_only=False)
    assert clone._draw_buffer is None and torch.equal(clone.row_mean, layer.row_mean)


@pytest.mark.parametrize("generator, backend", [(None, "auto"), (None, "torch"), (LEGACY_NOISE_GENERATOR, "auto")])
def test_inference_mode_and_no_grad_share_the_tile_buffers(generator, backend):
    from isogauss_hf.noise import set_noise_backend

    _runtime.release_workspace()  # the next buffers are made inside inference mode
    layer = _layer(out_f=LEGACY_BLOCK_ROWS + 8, noise_generator=generator)
    x = torch.randn(2, layer.in_features)
    set_noise_backend(backend)
    try:
        with torch.inference_mode():
            first = layer(x)
        with torch.no_grad():
            second = layer(x)
    finally:
        set_noise_backend("auto")
    assert torch.equal(first, second)


def test_noise_generator_of_a_layer_is_validated():
    layer = _layer()
    with pytest.raises(ValueError, match="noise_generator='mt19937' is not valid"):
        layer.noise_generator = "mt19937"
