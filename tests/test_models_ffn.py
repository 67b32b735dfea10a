"""The paper's 8-layer fully connected network as a transformers model, and its Gaussian-layer mapping."""

import pytest
import torch
from torch.nn import functional as F
from transformers import AutoConfig, AutoModelForImageClassification

from isogauss_hf import IsoGaussConfig, IsoGaussModel, get_isogauss_model
from isogauss_hf.models import FFN8_MODEL_TYPE, FFN8Config, FFN8ForImageClassification


def _model(**kwargs):
    torch.manual_seed(0)
    return FFN8ForImageClassification(FFN8Config(**kwargs))


def test_structure_is_eight_linear_layers_of_128_units():
    model = _model()
    shapes = [tuple(layer.weight.shape) for layer in model.layers]
    assert shapes == [(128, 784)] + [(128, 128)] * 6 + [(10, 128)]
    assert [name for name, _ in model.named_children()] == ["layers"]


def test_forward_is_log_softmax_and_nll_loss():
    model = _model()
    x = torch.rand(5, 28, 28)  # any trailing shape is flattened
    labels = torch.tensor([0, 1, 2, 3, 9])
    out = model(pixel_values=x, labels=labels)
    assert out.logits.shape == (5, 10)
    torch.testing.assert_close(out.logits.exp().sum(-1), torch.ones(5))
    torch.testing.assert_close(out.loss, F.nll_loss(out.logits, labels))
    assert model(pixel_values=x).loss is None


def test_default_init_is_he_normal_with_zero_bias():
    model = _model()
    w = model.layers[3].weight
    assert abs(w.std().item() - (2 / 128) ** 0.5) < 0.01
    assert torch.count_nonzero(model.layers[3].bias) == 0


def test_auto_classes_know_the_model_type():
    config = AutoConfig.for_model(FFN8_MODEL_TYPE, hidden_size=32, num_layers=3, num_labels=4)
    model = AutoModelForImageClassification.from_config(config)
    assert isinstance(model, FFN8ForImageClassification)
    assert [tuple(layer.weight.shape) for layer in model.layers] == [(32, 784), (32, 32), (4, 32)]


@pytest.mark.parametrize(
    "layers, names",
    [([4, 6], ["layers.3", "layers.5"]), ([1], ["layers.0"]), ([8], ["layers.7"]), ([4, 5, 6, 7], [f"layers.{i}" for i in (3, 4, 5, 6)])],
)
def test_layers_select_the_linear_layers_themselves(layers, names):
    model = get_isogauss_model(_model(), IsoGaussConfig(layers=layers))
    assert [r["name"] for r in model.replaced_modules] == names
    assert [r["block"] for r in model.replaced_modules] == layers


def test_parameter_report_matches_table_7():
    """Table 7: a 128x128 hidden layer (16,384 weights) becomes 512 statistics (3.13%)."""
    report = get_isogauss_model(_model(), IsoGaussConfig(layers=[4, 5, 6, 7])).parameter_report()
    assert report["per_block"]["4"]["replaced_weights"] == 16384
    assert report["per_block"]["4"]["gaussian_parameters"] == 512
    assert report["gaussian_parameters"] == 4 * 512
    assert round(100 * report["ratio"], 2) == 3.12


def test_blocks_out_of_range_are_an_error():
    with pytest.raises(ValueError, match=r"layers \[9\] out of range .* 8 blocks"):
        get_isogauss_model(_model(), IsoGaussConfig(layers=[9]))


def test_canonical_transformer_targets_do_not_exist_in_ffn8():
    with pytest.raises(ValueError, match="do not exist in isogauss-ffn8"):
        get_isogauss_model(_model(), IsoGaussConfig(layers=[4], target_modules=["query"]))


def test_gaussian_ffn_trains_and_round_trips(tmp_path):
    model = get_isogauss_model(_model(), IsoGaussConfig(layers=[4, 6], noise="seeded", rule="gdu", num_samples=3))
    x, y = torch.rand(8, 784), torch.randint(0, 10, (8,))
    model.train()
    out = model(pixel_values=x, labels=y)
    out.loss.backward()
    assert model.isogauss_layers()["layers.3"].last_weight.grad is not None
    model.eval()
    with torch.no_grad():
        before = model(pixel_values=x).logits
    model.save_pretrained(str(tmp_path / "ckpt"))
    loaded = IsoGaussModel.from_pretrained(str(tmp_path / "ckpt"))
    with torch.no_grad():
        after = loaded(pixel_values=x).logits
    torch.testing.assert_close(before, after)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"hidden_size": 0}, "hidden_size"), ({"num_layers": 1.5}, "num_layers"), ({"input_size": True}, "input_size")],
)
def test_bad_config_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FFN8Config(**kwargs)


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ValueError, match="expects input_size=784"):
        _model()(pixel_values=torch.rand(2, 100))
