"""Compressed checkpoints: a checkpoint of release 0.1.0 still loads, and load-time validation (issue 13.4).

``fixtures/checkpoint_v0_1_0_bert`` was written by release 0.1.0 (see ``fixtures/make_release_checkpoint.py``);
its seeded logits are stored next to it. Validation: non-finite statistics and negative stds, unknown keys in
``isogauss_config.json``, ``layers`` / ``target_modules`` that disagree with the stored modules, and a missing
``config.json`` are refused with one line naming the file or tensor.
"""

import json
from pathlib import Path

import pytest
import torch
from conftest import example_inputs, tiny_bert
from safetensors.torch import load_file, save_file
from transformers import AutoModelForSequenceClassification

from isogauss_hf import IsoGaussConfig, IsoGaussModel, get_isogauss_model
from isogauss_hf.checkpoint import ISOGAUSS_MODEL_TYPE
from isogauss_hf.config import CONFIG_NAME, FORMAT_VERSION
from isogauss_hf.settings import DEFAULT_NOISE_GENERATOR, LEGACY_NOISE_GENERATOR
from isogauss_hf.errors import CheckpointError

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASE = FIXTURES / "checkpoint_v0_1_0_bert"
Q = "bert.encoder.layer.1.attention.self.query."


FIXTURE_CPU = "AVX512"  # torch.backends.cpu.get_cpu_capability() of the machine that computed the stored logits
ULPS = 4 * 2.0**-28  # four float32 ulps at the logits' size (|logit| < 0.0625)


def _release_logits(model):
    expected = load_file(str(FIXTURES / "checkpoint_v0_1_0_bert_expected.safetensors"))
    with torch.no_grad():
        got = model(input_ids=expected["input_ids"], attention_mask=expected["attention_mask"]).logits
    return got, expected["logits"]


def _assert_release_outputs(got, expected):
    """Bit for bit on the CPU kind that wrote the fixture; elsewhere to four float32 ulps.

    Formats 1-2 draw with ``torch.randn``, whose ATen kernels (and the matmuls after them) round differently per
    CPU capability (README: not promised across CPU builds): on an AVX2 or ``default`` CPU the logits move by one
    or two ulps. Another seed's draw moves them by about 1.5e-4, four orders of magnitude more.
    """
    assert float(expected.abs().max()) < 0.0625
    if torch.backends.cpu.get_cpu_capability() == FIXTURE_CPU:
        assert torch.equal(got, expected)
    else:
        torch.testing.assert_close(got, expected, rtol=0.0, atol=ULPS)


# ---------------------------------------------------------------------------------------------- old checkpoints
def test_release_0_1_0_checkpoint_loads_with_identical_outputs():
    assert json.loads((RELEASE / "config.json").read_text())["model_type"] == "bert"  # the format-1 layout
    model = IsoGaussModel.from_pretrained(str(RELEASE))
    assert type(model).__name__ == "IsoGaussBertForSequenceClassification" and len(model.isogauss_layers()) == 6
    _assert_release_outputs(*_release_logits(model))


def test_release_outputs_check_tells_a_changed_statistic():
    model = IsoGaussModel.from_pretrained(str(RELEASE))
    for layer in model.isogauss_layers().values():
        layer.row_std.mul_(1.001)  # 0.1 % on one statistic: far less than another draw
    with pytest.raises(AssertionError):
        _assert_release_outputs(*_release_logits(model))


def test_release_checkpoint_resaved_loads_natively_with_identical_outputs(tmp_path):
    IsoGaussModel.from_pretrained(str(RELEASE)).save_pretrained(str(tmp_path / "new"))
    assert json.loads((tmp_path / "new" / "config.json").read_text())["model_type"] == ISOGAUSS_MODEL_TYPE
    native = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "new"))
    assert isinstance(native, IsoGaussModel)
    _assert_release_outputs(*_release_logits(native))


def test_release_checkpoint_keeps_its_generator_when_resaved(tmp_path):
    model = IsoGaussModel.from_pretrained(str(RELEASE))
    assert model.isogauss_config.noise_generator == LEGACY_NOISE_GENERATOR
    assert all(layer.noise_generator == LEGACY_NOISE_GENERATOR for layer in model.isogauss_layers().values())
    model.save_pretrained(str(tmp_path / "new"))
    saved = json.loads((tmp_path / "new" / CONFIG_NAME).read_text())
    assert saved["format_version"] == FORMAT_VERSION == 3 and saved["noise_generator"] == LEGACY_NOISE_GENERATOR


def test_new_checkpoints_name_the_portable_generator(tmp_path):
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], noise="seeded")).eval()
    model.save_pretrained(str(tmp_path / "c"))
    saved = json.loads((tmp_path / "c" / CONFIG_NAME).read_text())
    assert saved["noise_generator"] == DEFAULT_NOISE_GENERATOR == "philox4x32-10/box-muller-v1"
    from safetensors import safe_open

    with safe_open(str(tmp_path / "c" / "model.safetensors"), framework="pt") as f:
        assert f.metadata()["isogauss_format_version"] == "3"
    with pytest.raises(ValueError, match=r"cannot override \['noise_generator'\] when loading"):
        IsoGaussModel.from_pretrained(str(tmp_path / "c"), noise_generator=LEGACY_NOISE_GENERATOR)


def test_format_2_checkpoint_loads_with_the_legacy_generator_and_identical_outputs(tmp_path):
    config = IsoGaussConfig(layers=[2], noise="seeded", noise_generator=LEGACY_NOISE_GENERATOR)
    model = get_isogauss_model(tiny_bert(), config).eval()
    model.save_pretrained(str(tmp_path / "c"))
    with torch.no_grad():
        expected = model(**example_inputs("bert")).logits

    def as_format_2(data):  # what release 0.2 wrote: no generator field
        del data["noise_generator"]
        data["format_version"] = 2

    _edit_json(tmp_path / "c" / CONFIG_NAME, as_format_2)
    loaded = AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "c"))
    assert loaded.isogauss_config.noise_generator == LEGACY_NOISE_GENERATOR
    with torch.no_grad():
        assert torch.equal(loaded(**example_inputs("bert")).logits, expected)
    portable = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], noise="seeded")).eval()
    with torch.no_grad():  # the same statistics and seeds under the other generator are another model
        assert not torch.allclose(portable(**example_inputs("bert")).logits, expected)


def test_resaving_a_loaded_model_keeps_the_recorded_base_model(tmp_path):
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], noise="seeded"))
    model.base_model.name_or_path = "google-bert/bert-base-uncased"  # as from_pretrained("google-bert/...") sets it
    model.save_pretrained(str(tmp_path / "a"))
    IsoGaussModel.from_pretrained(str(tmp_path / "a")).save_pretrained(str(tmp_path / "b"))
    saved = json.loads((tmp_path / "b" / CONFIG_NAME).read_text())
    assert saved["base_model_name_or_path"] == "google-bert/bert-base-uncased"


# ---------------------------------------------------------------------------------------------- validation
@pytest.fixture
def ckpt(tmp_path):
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], noise="seeded", rule="gdu")).eval()
    model.save_pretrained(str(tmp_path / "c"))
    return tmp_path / "c"


def _edit_tensors(ckpt, edit):
    path = str(ckpt / "model.safetensors")
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def _edit_json(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("stat, value, match", [
    ("row_std", float("nan"), r"'bert\.encoder\.layer\.1\.attention\.self\.query\.row_std' holds 1 non-finite value"),
    ("col_mean", float("inf"), r"query\.col_mean' holds 1 non-finite value\(s\) \(first at index 3: inf\)"),
    ("col_std", -0.5, r"query\.col_std' holds 1 negative std value\(s\) \(min -0\.5\)"),
])
def test_bad_statistics_are_refused_naming_the_tensor(ckpt, stat, value, match):
    def edit(t):
        t[Q + stat][3] = value

    _edit_tensors(ckpt, edit)
    with pytest.raises(CheckpointError, match=match) as info:
        IsoGaussModel.from_pretrained(str(ckpt))
    assert "model.safetensors" in str(info.value) and "\n" not in str(info.value)


def test_negative_means_are_valid_statistics(ckpt):
    def edit(t):
        t[Q + "row_mean"][0] = -3.0

    _edit_tensors(ckpt, edit)
    logits = IsoGaussModel.from_pretrained(str(ckpt))(**example_inputs("bert")).logits
    assert torch.isfinite(logits).all()


def test_unknown_key_in_isogauss_config_is_refused(ckpt):
    _edit_json(ckpt / CONFIG_NAME, lambda d: d.__setitem__("layer_norm_everything", True))
    with pytest.raises(CheckpointError, match=r"isogauss_config\.json in .* has unknown key\(s\) "
                                              r"\['layer_norm_everything'\]"):
        IsoGaussModel.from_pretrained(str(ckpt))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.__setitem__("layers", [7]),
     r"layers \[7\] disagree with replaced_modules, which hold block\(s\) \[2\]"),
    (lambda d: d.__setitem__("layers", [1]), r"layers \[1\] disagree"),
    (lambda d: d.__setitem__("layers", None), r"layers null \(every block\) disagree .* block\(s\) \[2\]"),
    (lambda d: d.__setitem__("target_modules", ["query"]),
     r"target_modules \['query'\] disagree with replaced_modules"),
])
def test_selection_that_disagrees_with_the_stored_modules_is_refused(ckpt, edit, match):
    _edit_json(ckpt / CONFIG_NAME, edit)
    with pytest.raises(CheckpointError, match=match):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_missing_base_config_is_named(ckpt):
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"has no config\.json \(the base model's transformers config"):
        IsoGaussModel.from_pretrained(str(ckpt))


def test_adapter_with_a_nan_statistic_is_refused(tmp_path):
    from peft import PeftModel, get_peft_model

    pm = get_peft_model(tiny_bert(), IsoGaussConfig(layers=[2], noise="seeded", rule="gdu", task_type="SEQ_CLS"))
    pm.save_pretrained(str(tmp_path))
    path = str(tmp_path / "adapter_model.safetensors")
    tensors = load_file(path)
    tensors["base_model.model." + Q + "row_std"][0] = float("nan")
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(CheckpointError,
                       match=r"isogauss adapter: statistics tensor .*query\.row_std' holds 1 non-finite"):
        PeftModel.from_pretrained(tiny_bert(), str(tmp_path))


# ---------------------------------------------------------------------------------------------- still loading
def test_generic_path_checkpoint_round_trips(tmp_path):
    pattern = r"bert\.encoder\.layer\.\d+\.attention\.self\.(query|value)"
    config = IsoGaussConfig(layers=[2], target_modules=[pattern], noise="seeded")
    model = get_isogauss_model(tiny_bert(), config).eval()
    assert len(model.isogauss_layers()) == 2
    model.save_pretrained(str(tmp_path / "c"))
    loaded = IsoGaussModel.from_pretrained(str(tmp_path / "c"))
    assert torch.equal(loaded(**example_inputs("bert")).logits, model(**example_inputs("bert")).logits)


def test_every_block_checkpoint_of_the_ffn8_network_round_trips(tmp_path):
    from isogauss_hf.models import FFN8Config, FFN8ForImageClassification

    torch.manual_seed(0)
    model = get_isogauss_model(FFN8ForImageClassification(FFN8Config(input_size=16, hidden_size=8, num_layers=3)),
                               IsoGaussConfig(noise="seeded")).eval()
    model.save_pretrained(str(tmp_path / "c"))
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))
    loaded = IsoGaussModel.from_pretrained(str(tmp_path / "c"))
    assert len(loaded.isogauss_layers()) == 3 and torch.equal(loaded(pixel_values=x).logits,
                                                              model(pixel_values=x).logits)


def test_release_fixture_is_small():
    expected = FIXTURES / "checkpoint_v0_1_0_bert_expected.safetensors"
    size = sum(p.stat().st_size for p in RELEASE.iterdir()) + expected.stat().st_size
    assert size < 300_000


@pytest.mark.parametrize("config", [dict(), dict(layers=[2, 3]), dict(target_modules=["stage2"])],
                         ids=["every-module", "layers", "selector"])
def test_convolutional_checkpoint_round_trips_natively(tmp_path, config):
    from transformers import AutoModelForImageClassification, ResNetConfig, ResNetForImageClassification

    torch.manual_seed(0)
    cfg = ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                       num_labels=3)
    model = get_isogauss_model(ResNetForImageClassification(cfg).eval(), IsoGaussConfig(noise="seeded", **config))
    model.eval().save_pretrained(str(tmp_path / "c"))
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    loaded = AutoModelForImageClassification.from_pretrained(str(tmp_path / "c"))
    assert torch.equal(loaded(pixel_values=x).logits, model(pixel_values=x).logits)
