"""IsoGaussModel: wrapper behaviour, parameter report, compressed save/load, export_dense, errors."""

import gc
import json
import os
import subprocess
import sys
import weakref

import pytest
import torch
from safetensors import safe_open
from transformers import BertConfig, BertForSequenceClassification
from transformers.utils.generic import find_labels

from conftest import MODEL_FACTORIES, example_inputs, tiny_bert
from isogauss_hf import IsoGaussConfig, IsoGaussLinear, IsoGaussModel, get_isogauss_model


def seeded(kind, **kw):
    return get_isogauss_model(MODEL_FACTORIES[kind](), IsoGaussConfig(layers=[2], noise="seeded", **kw)).eval()


def test_wrapper_behaves_like_the_wrapped_model():
    model = seeded("bert")
    assert isinstance(model, IsoGaussModel) and type(model).__name__ == "IsoGaussBertForSequenceClassification"
    assert model.config.num_labels == 3 and model.num_labels == 3  # attribute delegation
    assert find_labels(type(model)) == ["labels"]  # Trainer sees the wrapped forward signature
    out = model(**example_inputs("bert"), labels=torch.tensor([0, 2]))
    assert out.loss.ndim == 0 and out.logits.shape == (2, 3)
    model.to(torch.float64)
    assert model.dtype == torch.float64
    layer = next(iter(model.isogauss_layers().values()))
    assert layer.row_mean.dtype == torch.float32 and layer.bias.dtype == torch.float64
    assert model(**example_inputs("bert")).logits.dtype == torch.float64


def test_dense_weights_of_replaced_modules_are_freed():
    base = tiny_bert()
    ref = weakref.ref(base.bert.encoder.layer[1].attention.self.query)
    model = get_isogauss_model(base, IsoGaussConfig(layers=[2]))
    gc.collect()
    assert ref() is None
    assert not any(".layer.1." in n and n.endswith(".weight") and "LayerNorm" not in n
                   for n, _ in model.named_parameters())


def test_bert_base_parameter_report():
    torch.manual_seed(0)
    base = BertForSequenceClassification(BertConfig())  # BERT-base shapes, random init
    report = get_isogauss_model(base, IsoGaussConfig(layers=[4, 8, 12])).parameter_report()
    for block in ("4", "8", "12"):
        assert report["per_block"][block]["replaced_weights"] == 7_077_888
        assert report["per_block"][block]["gaussian_parameters"] == 27_648
        assert report["per_block"][block]["ratio"] == pytest.approx(0.0039, abs=1e-4)
        assert len(report["per_block"][block]["modules"]) == 6
    assert report["replaced_weights"] == 3 * 7_077_888 and report["gaussian_parameters"] == 3 * 27_648
    assert report["dense_model_parameters"] - report["isogauss_model_parameters"] == 3 * (7_077_888 - 27_648)


def _meta_model(kind):
    """Full-size models of the paper on the meta device (shapes only, no memory)."""
    import transformers as tf

    from isogauss_hf.models.ffn import FFN8Config, FFN8ForImageClassification

    with torch.device("meta"):
        return {
            "bert-base": lambda: tf.BertForSequenceClassification(tf.BertConfig()),
            "bert-large": lambda: tf.BertForQuestionAnswering(tf.BertConfig(
                hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)),
            "vit-base": lambda: tf.ViTForImageClassification(tf.ViTConfig()),
            "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config()),
            "resnet-18": lambda: tf.ResNetForImageClassification(tf.ResNetConfig(
                layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[64, 128, 256, 512], embedding_size=64)),
            "mobilenet-v2": lambda: tf.MobileNetV2ForImageClassification(tf.MobileNetV2Config()),
            "ffn8": lambda: FFN8ForImageClassification(FFN8Config()),
        }[kind]()


def _printed(n):
    """A count as the paper's tables print it: 37.63K, 7.09M."""
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.2f}K"


# kind, block: (replaced weights, statistics) ours; (paper dense, paper isogauss) as counted; as the paper prints them
PAPER_COUNTS = [
    ("bert-base", 6, (7_077_888, 27_648), (7_087_872, 37_632), ("7.09M", "38.03K")),  # Table 2 / 12
    ("vit-base", 4, (7_077_888, 27_648), (7_087_872, 37_632), ("7.09M", "38.03K")),  # Table 1: 7,087,872 -> 38,032
    ("gpt2", 11, (7_077_888, 27_648), (7_087_872, 37_632), ("7.09M", "37.63K")),  # Table 3 / 15
    ("bert-large", 3, (12_582_912, 36_864), (12_596_224, 50_176), ("12.06M", "50.18K")),  # Table 4 / 16
    ("resnet-18", 9, (147_456, 2_560), (147_456, 2_560), ("147456", "2560")),  # Table 21 row 9
    ("mobilenet-v2", 4, (8_208, 978), (8_208, 978), ("8208", "978")),  # Table 19 row 4
    ("ffn8", 5, (16_384, 512), (16_384, 512), ("16.4k", "512")),  # Table 7
]


@pytest.mark.parametrize("kind, block, ours, paper_counted, printed", PAPER_COUNTS)
def test_parameter_report_counts_what_the_paper_counts(kind, block, ours, paper_counted, printed):
    entry = get_isogauss_model(_meta_model(kind), IsoGaussConfig(layers=[block])).parameter_report()["per_block"][
        str(block)]
    assert (entry["replaced_weights"], entry["gaussian_parameters"]) == ours
    assert (entry["paper_dense_parameters"], entry["paper_isogauss_parameters"]) == paper_counted
    dense, gauss = paper_counted
    if kind in ("bert-base", "vit-base", "gpt2", "bert-large"):  # the whole block: + biases + 2 layer norms
        hidden = 1024 if kind == "bert-large" else 768
        assert dense - ours[0] == gauss - ours[1] == 13 * hidden  # biases (4h + 4h + h), two layer norms (2 x 2h)
        # where the paper's print differs from this count: BERT-base / ViT print 38.03K (its text: 7,087,872 ->
        # 38,032), 400 above the 37,632 that the same six matrices of GPT-2 print as (37.63K); BERT-Large's
        # 12.06M has the digits of 12,596,224 = 12.60M swapped (its 0.40 % is 50,176 / 12,596,224)
        assert _printed(dense) == {"bert-large": "12.60M"}.get(kind, printed[0])
        assert _printed(gauss) == {"bert-base": "37.63K", "vit-base": "37.63K"}.get(kind, printed[1])
        assert f"{100 * gauss / dense:.2f}%" == {"bert-large": "0.40%"}.get(kind, "0.53%")
    else:  # convolution modules and the 8-layer network: the replaced matrices alone
        assert (dense, gauss) == ours


def test_eval_averages_num_samples_draws():
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], noise="resample", num_samples=3)).eval()
    x = example_inputs("bert")
    start = model._scope_round
    averaged = model(**x).logits
    model._scope_round = start  # replay the same three scopes by hand
    per_draw = []
    for k in range(3):
        with model.sampling_scope(k):
            per_draw.append(model.base_model(**x).logits)
    torch.testing.assert_close(averaged, torch.stack(per_draw).mean(0))
    assert not torch.allclose(per_draw[0], per_draw[1])


def test_seeded_eval_uses_its_one_draw_whatever_num_samples():
    model = seeded("bert", num_samples=5)
    x = example_inputs("bert")
    with model.sampling_scope(3):
        in_scope = model.base_model(**x).logits
    model.isogauss_config.num_samples = 1
    single = model(**x).logits
    model.isogauss_config.num_samples = 5
    assert torch.equal(model(**x).logits, single) and torch.equal(in_scope, single)


@pytest.mark.parametrize("kind", ["bert", "roberta", "vit", "gpt2"])
def test_seeded_outputs_identical_through_save_and_load(kind, tmp_path):
    model = seeded(kind)
    x = example_inputs(kind)
    before = model(**x).logits
    model.save_pretrained(tmp_path / "ckpt")
    files = sorted(os.listdir(tmp_path / "ckpt"))
    assert files == ["config.json", "isogauss_config.json", "model.safetensors"] or \
        files == ["config.json", "generation_config.json", "isogauss_config.json", "model.safetensors"]
    again = IsoGaussModel.from_pretrained(tmp_path / "ckpt")
    assert type(again) is type(model)
    assert torch.equal(again(**x).logits, before)
    with safe_open(str(tmp_path / "ckpt" / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    for name in model.isogauss_layers():
        assert {f"{name}.row_mean", f"{name}.col_std", f"{name}.noise_seed"} <= keys
        assert f"{name}.weight" not in keys


def test_checkpoint_is_compressed(tmp_path):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=10, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512)
    dense = BertForSequenceClassification(cfg)
    dense.save_pretrained(tmp_path / "dense")
    get_isogauss_model(dense, IsoGaussConfig()).save_pretrained(tmp_path / "gauss")
    dense_bytes = os.path.getsize(tmp_path / "dense" / "model.safetensors")
    gauss_bytes = os.path.getsize(tmp_path / "gauss" / "model.safetensors")
    replaced_bytes = 2 * (4 * 128 * 128 + 2 * 128 * 512) * 4
    assert dense_bytes - gauss_bytes > 0.95 * replaced_bytes


def test_resample_training_checkpoint_keeps_draw_counter(tmp_path):
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[1], noise="resample"))
    model.train()
    for _ in range(3):
        model(**example_inputs("bert"))
    model.save_pretrained(tmp_path / "c")
    again = IsoGaussModel.from_pretrained(tmp_path / "c")
    layer = next(iter(again.isogauss_layers().values()))
    assert int(layer.draw_counter) == 3 and layer._draw_count == 3


SUBPROCESS = r"""
import json, sys, torch
from transformers import AutoModelForSequenceClassification, AutoModelForCausalLM
path, kind, ids = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cls = AutoModelForCausalLM if kind == "gpt2" else AutoModelForSequenceClassification
model = cls.from_pretrained(path).eval()
with torch.no_grad():
    logits = model(input_ids=torch.tensor(ids), attention_mask=torch.ones(len(ids), len(ids[0]), dtype=torch.long)).logits
assert "isogauss_hf" not in sys.modules
print(json.dumps(logits.tolist()))
"""


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_export_dense_loads_in_plain_transformers(kind, tmp_path):
    model = seeded(kind)
    x = example_inputs(kind)
    expected = model(**x).logits
    model.export_dense(str(tmp_path / "dense"))
    proc = subprocess.run(
        [sys.executable, "-c", SUBPROCESS, str(tmp_path / "dense"), kind, json.dumps(x["input_ids"].tolist())],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = torch.tensor(json.loads(proc.stdout.strip().splitlines()[-1]))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # the model itself still has its Gaussian layers afterwards
    assert all(isinstance(m, IsoGaussLinear) for m in model.isogauss_layers().values())
    assert len(model.isogauss_layers()) == 6


def test_export_dense_with_another_seed_differs(tmp_path):
    model = seeded("bert")
    model.export_dense(str(tmp_path / "a"))
    model.export_dense(str(tmp_path / "b"), seed=99)
    a = BertForSequenceClassification.from_pretrained(tmp_path / "a")
    b = BertForSequenceClassification.from_pretrained(tmp_path / "b")
    qa = a.bert.encoder.layer[1].attention.self.query.weight
    qb = b.bert.encoder.layer[1].attention.self.query.weight
    assert not torch.allclose(qa, qb)
    torch.testing.assert_close(a.bert.encoder.layer[0].attention.self.query.weight,
                               b.bert.encoder.layer[0].attention.self.query.weight)


def test_checkpoint_with_mismatched_base_config_is_refused(tmp_path):
    seeded("bert").save_pretrained(tmp_path / "c")
    cfg_path = tmp_path / "c" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["hidden_size"] = 64
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="does not match the base model.*hidden_size: checkpoint 32 vs config.json 64"):
        IsoGaussModel.from_pretrained(tmp_path / "c")


def test_load_overrides_config_fields(tmp_path):
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[1], noise="resample"))
    model.save_pretrained(tmp_path / "c")
    again = IsoGaussModel.from_pretrained(tmp_path / "c", noise="seeded", num_samples=4)
    assert again.isogauss_config.num_samples == 4
    assert all(layer.noise == "seeded" for layer in again.isogauss_layers().values())


def test_already_converted_model_is_refused():
    model = seeded("bert")
    with pytest.raises(ValueError, match="already has Gaussian layers"):
        get_isogauss_model(model, IsoGaussConfig(layers=[1]))


def test_gpt2_generate_in_both_noise_modes():
    for noise in ("seeded", "resample"):
        model = get_isogauss_model(MODEL_FACTORIES["gpt2"](), IsoGaussConfig(layers=[1, 2], noise=noise)).eval()
        ids = torch.tensor([[3, 4, 5]])
        out = model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0)
        assert out.shape == (1, 8) and torch.equal(out[:, :3], ids)
        if noise == "seeded":
            assert torch.equal(out, model.generate(ids, max_new_tokens=5, do_sample=False, pad_token_id=0))


# ---------------------------------------------------------------------------------------------- parameter accounting
STATS = ("row_mean", "row_std", "col_mean", "col_std")


def _saved_parameters_and_statistics(model, path):
    """Elements of the saved tensors that are parameters or Gaussian statistics (what a load restores as such)."""
    names = {n for n, _ in model.base_model.named_parameters()}
    with safe_open(str(path), "pt") as f:
        return sum(torch.Size(f.get_slice(k).get_shape()).numel() for k in f.keys()
                   if k in names or k.rpartition(".")[2] in STATS)


@pytest.mark.parametrize("rule, learned", [("gdu", 896), ("wdu", 896), ("frozen", 0), ("backprop", 896)])
def test_trainable_parameters_count_the_learned_statistics(tmp_path, capsys, rule, learned):
    model = get_isogauss_model(tiny_bert(), IsoGaussConfig(layers=[2], rule=rule))
    others = sum(p.numel() for n, p in model.named_parameters() if n.rpartition(".")[2] not in STATS)
    trainable, total = model.get_nb_trainable_parameters()
    assert trainable == others + learned  # 896 = 4 * 2 * (32 + 32) + 2 * 2 * (64 + 32): the statistics of block 2
    assert total == others + 896  # stored, learned or not (backprop: parameters, counted once)
    model.save_pretrained(tmp_path / "c")
    assert total == _saved_parameters_and_statistics(model, tmp_path / "c" / "model.safetensors")
    model.print_trainable_parameters()
    printed = capsys.readouterr().out
    assert f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: " in printed
    assert ("including 896 Gaussian statistics" in printed) == (rule in ("gdu", "wdu"))
