"""Calibrating Gaussian statistics against the replaced dense units (``isogauss_hf.calibrate``)."""

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from isogauss_hf import IsoGaussConfig, get_isogauss_model
from isogauss_hf.calibrate import calibrate_statistics, get_calibrated_isogauss_model, keep_dense_units


def _bert(seed=0):
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(num_hidden_layers=3, hidden_size=32, num_attention_heads=2,
                                                    intermediate_size=64, vocab_size=100))


def _batches(n=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(0, 100, (4, 8), generator=g), "attention_mask": torch.ones(4, 8, dtype=torch.long)}
            for _ in range(n)]


def _gap(model, dense, batches):
    model.eval()
    with torch.no_grad():
        return sum(float((model(**b).logits - dense(**b).logits).abs().mean()) for b in batches)


@pytest.mark.parametrize("rule,noise", [("gdu", "seeded"), ("backprop", "seeded"), ("wdu", "resample")])
def test_calibration_lowers_the_unit_error_and_restores_each_layer_rule(rule, noise):
    model = _bert()
    config = IsoGaussConfig(layers=[2], rule=rule, noise=noise, seed=3)
    units = keep_dense_units(model, config)
    assert list(units) == ["bert.encoder.layer.1"]
    gauss = get_isogauss_model(model, config)
    stat = ("row_mean", "row_std", "col_mean", "col_std")
    others = {n: p.detach().clone() for n, p in gauss.named_parameters() if not n.endswith(stat)}
    losses = calibrate_statistics(gauss, units, _batches(), steps=40, lr=1e-2, progress=False)
    assert len(losses) == 40 and min(losses[-5:]) < losses[0]
    assert all(layer.rule == rule for layer in gauss.isogauss_layers().values())
    assert all(torch.equal(p.detach(), others[n]) for n, p in gauss.named_parameters() if n in others)  # statistics only


def test_calibrated_model_is_closer_to_the_dense_model_than_the_plain_conversion():
    dense = _bert().eval()
    batches = _batches()
    plain = get_isogauss_model(_bert(), IsoGaussConfig(layers=[2], rule="gdu", noise="seeded", seed=3))
    calibrated = get_calibrated_isogauss_model(_bert(), IsoGaussConfig(layers=[2], rule="gdu", noise="seeded", seed=3),
                                               batches, steps=60, lr=1e-2, progress=False)
    assert _gap(calibrated, dense, batches) < _gap(plain, dense, batches)
    assert len(calibrated.calibration_losses) == 60


def test_bad_calibration_arguments_are_one_clear_error():
    model = _bert()
    config = IsoGaussConfig(layers=[1])
    units = keep_dense_units(model, config)
    gauss = get_isogauss_model(model, config)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        calibrate_statistics(gauss, units, _batches(), steps=-1)
    with pytest.raises(ValueError, match="needs at least one batch"):
        calibrate_statistics(gauss, units, [], steps=3)


def test_architectures_without_blocks_calibrate_each_converted_module():
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    model = ResNetForImageClassification(ResNetConfig(layer_type="basic", depths=[1, 1], hidden_sizes=[4, 8],
                                                      embedding_size=4, num_labels=3))
    config = IsoGaussConfig(layers=[3], rule="gdu", noise="seeded")
    units = keep_dense_units(model, config)
    assert len(units) == 1 and isinstance(next(iter(units.values())), torch.nn.Conv2d)  # the module itself
    gauss = get_isogauss_model(model, config)
    batches = [{"pixel_values": torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(i))} for i in range(2)]
    losses = calibrate_statistics(gauss, units, batches, steps=20, lr=1e-2, progress=False)
    assert min(losses[-3:]) < losses[0]
