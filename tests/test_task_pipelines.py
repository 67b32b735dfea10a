"""The task pipelines of ``isogauss-finetune`` (``cli/task_pipelines.py``): generation through ``model.generate`` on
left-padded batches with the recipe's decoding, and images through the checkpoint's processor, cached as uint8."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from isogauss_hf.cli.task_pipelines import ImageClassification, Summarization
from isogauss_hf.recipes import apply_overrides, load_recipe

from hub_standins import MODEL_STANDINS, _jsonl


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    MODEL_STANDINS["openai-community/gpt2"](path)
    return path


def _summarizer(gpt2_dir, **overrides):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = apply_overrides(load_recipe("gpt2-samsum"), {"max_length": 96, "max_new_tokens": 6, **overrides})
    tokenizer = AutoTokenizer.from_pretrained(str(gpt2_dir))
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(str(gpt2_dir)).eval()
    return Summarization(recipe, tokenizer, model.config), model


def test_batched_generation_is_left_padded_and_equals_one_by_one(gpt2_dir):
    from isogauss_hf import IsoGaussConfig, get_isogauss_model

    pipeline, model = _summarizer(gpt2_dir)
    model = get_isogauss_model(model, IsoGaussConfig(layers=[11], noise="seeded"))  # Gaussian decoder 11, one draw
    dialogues = [row["dialogue"] for row in _jsonl("samsum.jsonl")]  # three dialogues of different lengths
    assert len({len(pipeline._prompt_ids(d)) for d in dialogues}) == 3
    pipeline.recipe.eval_batch_size = 3
    batched = pipeline.generate(model, dialogues)
    pipeline.recipe.eval_batch_size = 1
    assert batched == pipeline.generate(model, dialogues)  # right padding would change the shorter prompts' output
    assert pipeline.tokenizer.padding_side == "right"  # restored after generating


def test_the_recipes_decoding_reaches_generate(gpt2_dir):
    pipeline, model = _summarizer(gpt2_dir, generation={"num_beams": 3, "length_penalty": 0.5})
    seen = []
    generate = model.generate
    model.generate = lambda **kwargs: seen.append(kwargs["generation_config"]) or generate(**kwargs)
    out = pipeline.generate(model, [_jsonl("samsum.jsonl")[0]["dialogue"]])
    assert len(out) == 1 and isinstance(out[0], str)
    config = seen[0]
    assert (config.num_beams, config.length_penalty, config.max_new_tokens) == (3, 0.5, 6) and not config.do_sample
    assert config.pad_token_id == config.eos_token_id == pipeline.tokenizer.eos_token_id


def _image_data(rows=6):
    import datasets
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (40 + 4 * i, 30, 3), dtype=np.uint8)) for i in range(rows)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(num_classes=3)})
    ds = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in range(rows)]}, features=features)
    return datasets.DatasetDict({"train": ds, "test": ds.select(range(2))}), images


def test_images_are_preprocessed_once_and_collated_as_the_processor_gives_them():
    from transformers import MobileNetV2ImageProcessor

    processor = MobileNetV2ImageProcessor(size={"shortest_edge": 36}, do_center_crop=True,
                                          crop_size={"height": 32, "width": 32})
    recipe = SimpleNamespace(image_size=32)
    pipeline = ImageClassification(recipe, None, SimpleNamespace(model_type="mobilenet_v2", num_channels=3))
    pipeline.image_processor = (processor, "test")
    data, images = _image_data()
    train, test = pipeline.prepare(data)
    assert train.features["pixel_values"].dtype == "uint8" and len(test) == 2
    row = train[0]
    assert row["pixel_values"].dtype == np.uint8 and row["pixel_values"].shape == (3, 32, 32)  # stored, not widened
    batch = pipeline.collator()([train[i] for i in range(4)])
    expected = processor(images=images[:4], return_tensors="pt")["pixel_values"]
    assert batch["pixel_values"].dtype == torch.float32
    torch.testing.assert_close(batch["pixel_values"], expected, atol=1e-5, rtol=0)
    assert batch["labels"].tolist() == [0, 1, 2, 0]


def test_flat_inputs_of_the_8_layer_network_need_no_processor():
    config = SimpleNamespace(model_type="isogauss-ffn8", input_size=784)
    pipeline = ImageClassification(SimpleNamespace(image_size=None), None, config)
    data, _ = _image_data(4)
    train, _ = pipeline.prepare(data)
    batch = pipeline.collator()([train[i] for i in range(2)])
    assert batch["pixel_values"].shape == (2, 784) and 0.0 <= float(batch["pixel_values"].min())
    assert float(batch["pixel_values"].max()) <= 1.0
