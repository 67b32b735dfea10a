"""transformers interop and loading safety: save -> from_pretrained, export_dense -> AutoModel*, generate.

Seeded mode makes every comparison exact: the same draw (layer seed, draw 0) before and after a round trip.
"""

import json
import os
import pickle

import pytest
import torch
from conftest import MODEL_FACTORIES, example_inputs, tiny_gpt2
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
)

from isogauss_hf import IsoGaussConfig, IsoGaussLinear, IsoGaussModel, get_isogauss_model
from isogauss_hf.config import CONFIG_NAME, FORMAT_VERSION

AUTO = {
    "bert": AutoModelForSequenceClassification,
    "roberta": AutoModelForSequenceClassification,
    "vit": AutoModelForImageClassification,
    "gpt2": AutoModelForCausalLM,
}


def _outputs(model, kind):
    model.eval()
    with torch.no_grad():
        return model(**example_inputs(kind)).logits


def _gauss(kind, **kw):
    return get_isogauss_model(MODEL_FACTORIES[kind](), IsoGaussConfig(**{"layers": [2], "noise": "seeded",
                                                                          "rule": "gdu", **kw}))


@pytest.mark.parametrize("kind", sorted(MODEL_FACTORIES))
def test_save_from_pretrained_round_trip_is_exact(tmp_path, kind):
    model = _gauss(kind)
    expected = _outputs(model, kind)
    model.save_pretrained(str(tmp_path))
    loaded = IsoGaussModel.from_pretrained(str(tmp_path))
    assert type(loaded).__name__ == type(model).__name__
    assert torch.equal(_outputs(loaded, kind), expected)
    for (name, a), (_, b) in zip(model.isogauss_layers().items(), loaded.isogauss_layers().items()):
        assert torch.equal(a.row_std, b.row_std) and a.seed == b.seed, name


@pytest.mark.parametrize("kind", sorted(MODEL_FACTORIES))
def test_export_dense_loads_in_plain_auto_model(tmp_path, kind):
    model = _gauss(kind)
    expected = _outputs(model, kind)
    model.export_dense(str(tmp_path))
    assert not os.path.exists(tmp_path / CONFIG_NAME)
    dense = AUTO[kind].from_pretrained(str(tmp_path))
    assert not any(isinstance(m, IsoGaussLinear) for m in dense.modules())
    assert torch.allclose(_outputs(dense, kind), expected, atol=1e-5)
    # the Gaussian model itself is unchanged by the export
    assert len(model.isogauss_layers()) > 0 and torch.equal(_outputs(model, kind), expected)


@pytest.mark.parametrize("noise", ["seeded", "resample"])
def test_gpt2_generate_holds_one_draw_per_call(noise):
    model = get_isogauss_model(tiny_gpt2(), IsoGaussConfig(layers=[1, 2], noise=noise, rule="gdu"))
    model.eval()
    layer = next(iter(model.isogauss_layers().values()))
    keys = []
    hook = layer.register_forward_pre_hook(lambda mod, args: keys.append(mod.current_draw_key()))
    ids = example_inputs("gpt2", batch=2, seq=4)["input_ids"]
    kwargs = dict(max_new_tokens=5, do_sample=False, pad_token_id=0)
    first = model.generate(input_ids=ids, **kwargs)
    n = len(keys)
    second = model.generate(input_ids=ids, **kwargs)
    hook.remove()
    assert first.shape == (2, 9) and torch.equal(first[:, :4], ids) and n == 5
    assert len(set(keys[:n])) == 1 and len(set(keys[n:])) == 1
    if noise == "seeded":
        assert keys[0] == keys[n] and torch.equal(first, second)
    else:
        assert keys[0] != keys[n]


def test_generate_of_seeded_model_equals_its_dense_export(tmp_path):
    model = get_isogauss_model(tiny_gpt2(), IsoGaussConfig(layers=[1, 2], noise="seeded", rule="gdu"))
    model.eval()
    ids = example_inputs("gpt2", batch=1, seq=4)["input_ids"]
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    model.export_dense(str(tmp_path))
    dense = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert torch.equal(model.generate(input_ids=ids, **kwargs), dense.generate(input_ids=ids, **kwargs))


# ---------------------------------------------------------------------------------------------- safety
def _saved(tmp_path, kind="bert"):
    model = _gauss(kind)
    model.save_pretrained(str(tmp_path))
    return model, str(tmp_path / "model.safetensors")


Q = "bert.encoder.layer.1.attention.self.query."


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda t: t.pop(Q + "col_std"), rf"missing tensors \['{Q}col_std'\]"),
        (lambda t: t.pop("classifier.weight"), r"missing tensors \['classifier.weight'\]"),
        (lambda t: t.__setitem__("bert.surprise", torch.zeros(2)), r"unexpected tensors \['bert.surprise'\]"),
        (lambda t: t.__setitem__(Q + "row_mean", torch.zeros(5)), rf"wrong shapes \[{Q}row_mean: file \(5,\) vs model \(32,\)\]"),
    ],
)
def test_bad_tensors_are_named(tmp_path, edit, match):
    _, path = _saved(tmp_path)
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=match):
        IsoGaussModel.from_pretrained(str(tmp_path))


def test_newer_format_version_is_refused_with_both_versions(tmp_path):
    _saved(tmp_path)
    path = tmp_path / CONFIG_NAME
    data = json.loads(path.read_text())
    data["format_version"] = FORMAT_VERSION + 5
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"format_version {FORMAT_VERSION + 5}, but this isogauss-hf supports up to "
                                         rf"{FORMAT_VERSION}"):
        IsoGaussModel.from_pretrained(str(tmp_path))


class _Trap:
    """Unpickling this creates a marker file: proof that a loader unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_never_unpickles(tmp_path):
    model, _ = _saved(tmp_path)
    marker = tmp_path.parent / f"{tmp_path.name}-unpickled"
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt"):
        (tmp_path / name).write_bytes(pickle.dumps(_Trap(str(marker))))
    loaded = IsoGaussModel.from_pretrained(str(tmp_path))
    assert not marker.exists()
    assert torch.equal(_outputs(loaded, "bert"), _outputs(model, "bert"))


def test_weights_that_are_not_safetensors_are_refused(tmp_path):
    _, path = _saved(tmp_path)
    with open(path, "wb") as f:
        f.write(pickle.dumps({"not": "safetensors"}))
    with pytest.raises(ValueError, match="cannot read .* as safetensors"):
        IsoGaussModel.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("cls_path", ["os:system", "builtins:eval", "subprocess:Popen"])
def test_base_model_class_outside_transformers_is_refused(tmp_path, cls_path):
    _saved(tmp_path)
    path = tmp_path / CONFIG_NAME
    data = json.loads(path.read_text())
    data["base_model_class"] = cls_path
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"refusing to import base model class '{cls_path}'"):
        IsoGaussModel.from_pretrained(str(tmp_path))


def test_from_pretrained_dtype_and_overrides(tmp_path):
    model, _ = _saved(tmp_path)
    loaded = IsoGaussModel.from_pretrained(str(tmp_path), torch_dtype=torch.float64, num_samples=2)
    assert loaded.isogauss_config.num_samples == 2
    assert loaded.base_model.classifier.weight.dtype == torch.float64
    layer = next(iter(loaded.isogauss_layers().values()))
    assert layer.row_mean.dtype == torch.float32  # statistics stay fp32


def test_remote_code_in_a_checkpoint_is_never_run(tmp_path):
    model, _ = _saved(tmp_path)
    marker = tmp_path.parent / f"{tmp_path.name}-code-ran"
    (tmp_path / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').close()\nfrom transformers import BertConfig\nclass EvilConfig(BertConfig):\n    pass\n"
    )
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    loaded = IsoGaussModel.from_pretrained(str(tmp_path))
    assert not marker.exists()
    assert type(loaded.base_model.config).__name__ == "BertConfig"
    assert torch.equal(_outputs(loaded, "bert"), _outputs(model, "bert"))
