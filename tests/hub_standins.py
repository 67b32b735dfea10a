"""Local stand-ins for what the paper recipes fetch from the Hugging Face Hub (used by ``test_paper_recipes.py``).

* :data:`DATASET_STANDINS` — ``(dataset id, config)`` as the recipes pass them to ``datasets.load_dataset`` ->
  a few rows per split in that dataset's real schema (split names, column names, feature types, label names);
  :func:`fake_load_dataset` answers ``load_dataset`` from it and refuses anything else, naming what is missing.
* :data:`MODEL_STANDINS` — hub model id -> the checkpoint written into a Hub cache (``models--owner--name/
  snapshots/...``): the real architecture and block count at tiny width, with a tokenizer or the image
  processor the real checkpoint has. ``from_pretrained(hub_id)`` then reads it the way it reads any cached
  download (huggingface_hub in offline mode: the cache answers, nothing touches the network).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
SNAPSHOT = "0" * 40  # the commit hash of every stand-in snapshot


# ------------------------------------------------------------------------------------------------ datasets
def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


def _class_label(names: list[str]) -> Any:
    import datasets

    return datasets.ClassLabel(names=names)


def _text_splits(rows: list[dict], splits: dict[str, slice], names: list[str]) -> Any:
    import datasets

    features = datasets.Features({"text": datasets.Value("string"), "label": _class_label(names)})
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows[part], features=features)
                                 for split, part in splits.items()})


def _png(array: np.ndarray) -> dict:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def _image_splits(column: str, names: list[str], shape: tuple, splits: dict[str, int], seed: int = 0) -> Any:
    """Random images of ``shape`` (HxW grayscale or HxWx3) in ``column``, labels cycling over 4 classes."""
    import datasets

    rng = np.random.default_rng(seed)
    features = datasets.Features({column: datasets.Image(), "label": _class_label(names)})
    out = {}
    for split, rows in splits.items():
        images = [_png(rng.integers(0, 256, size=shape, dtype=np.uint8)) for _ in range(rows)]
        out[split] = datasets.Dataset.from_list([{column: img, "label": i % 4} for i, img in enumerate(images)],
                                                features=features)
    return datasets.DatasetDict(out)


def _ag_news() -> Any:
    return _text_splits(_jsonl("ag_news.jsonl"), {"train": slice(0, 6), "test": slice(4, 8)},
                        ["World", "Sports", "Business", "Sci/Tech"])


def _yelp() -> Any:
    return _text_splits(_jsonl("yelp_review_full.jsonl"), {"train": slice(0, 6), "test": slice(5, 10)},
                        ["1 star", "2 star", "3 stars", "4 stars", "5 stars"])


def _emotion() -> Any:  # the recipe pools the three splits and re-splits 90/10 stratified: 6 classes x 10 rows
    return _text_splits(_jsonl("emotion.jsonl"), {"train": slice(0, 48), "validation": slice(48, 54),
                                                  "test": slice(54, 60)},
                        ["sadness", "joy", "love", "anger", "fear", "surprise"])


def _squad() -> Any:
    import datasets

    rows = json.loads((FIXTURES / "squad_v1.json").read_text())["data"]
    features = datasets.Features({
        "id": datasets.Value("string"), "title": datasets.Value("string"), "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {"text": datasets.List(datasets.Value("string")),
                    "answer_start": datasets.List(datasets.Value("int32"))},
    })
    return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows, features=features),
                                 "validation": datasets.Dataset.from_list(rows[:2], features=features)})


def _samsum() -> Any:
    import datasets

    rows = _jsonl("samsum.jsonl")
    features = datasets.Features({k: datasets.Value("string") for k in ("id", "dialogue", "summary")})
    return datasets.DatasetDict({split: datasets.Dataset.from_list(rows, features=features)
                                 for split in ("train", "validation", "test")})


_DIGITS = [str(d) for d in range(10)]
_CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

#: (dataset id, config) as passed to ``datasets.load_dataset`` -> the stand-in DatasetDict (real schema)
DATASET_STANDINS: dict[tuple[str, Optional[str]], Callable[[], Any]] = {
    ("fancyzhx/ag_news", None): _ag_news,
    ("Yelp/yelp_review_full", None): _yelp,
    ("dair-ai/emotion", "split"): _emotion,
    ("rajpurkar/squad", None): _squad,
    ("knkarthick/samsum", None): _samsum,
    # timm/mini-imagenet: 100 ImageNet classes named by WordNet id, train / validation / test, RGB of varying size
    ("timm/mini-imagenet", None): lambda: _image_splits(
        "image", [f"n{1000000 + i:08d}" for i in range(100)], (60, 80, 3), {"train": 6, "validation": 4, "test": 4}),
    ("ethz/food101", None): lambda: _image_splits(
        "image", [f"food_{i}" for i in range(101)], (64, 48, 3), {"train": 6, "validation": 4}),
    ("ylecun/mnist", None): lambda: _image_splits("image", _DIGITS, (28, 28), {"train": 6, "test": 4}),
    ("uoft-cs/cifar10", None): lambda: _image_splits("img", _CIFAR, (32, 32, 3), {"train": 6, "test": 4}),
    ("ufldl-stanford/svhn", "cropped_digits"): lambda: _image_splits(
        "image", _DIGITS, (32, 32, 3), {"train": 6, "test": 4, "extra": 2}),
}


def fake_load_dataset(calls: list) -> Callable[..., Any]:
    """A ``datasets.load_dataset`` answering from :data:`DATASET_STANDINS`; ``calls`` records each request."""

    def load_dataset(path: str, name: Optional[str] = None, split: Optional[str] = None, **kwargs: Any) -> Any:
        calls.append((path, name, split))
        factory = DATASET_STANDINS.get((path, name))
        if factory is None:
            raise AssertionError(f"no stand-in for datasets.load_dataset({path!r}, {name!r}): add one in the "
                                 f"dataset's real schema to tests/hub_standins.py DATASET_STANDINS")
        data = factory()
        return data[split] if split is not None else data

    return load_dataset


# ------------------------------------------------------------------------------------------------ models
TEXT_WORDS = sorted({w.strip(".,!?:;()'\"").lower() for path in ("ag_news.jsonl", "yelp_review_full.jsonl",
                                                                  "emotion.jsonl", "samsum.jsonl")
                     for row in _jsonl(path) for w in " ".join(map(str, row.values())).split()} - {""})


def _bert_tokenizer(path: Path) -> int:
    """A word-level WordPiece tokenizer (uncased, like bert-base-uncased) over the fixtures' words."""
    from transformers import BertTokenizerFast

    squad = json.loads((FIXTURES / "squad_v1.json").read_text())["data"]
    words = set(TEXT_WORDS) | {w.strip(".,?").lower() for r in squad for w in (r["context"] + " " + r["question"]).split()}
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(words - {""}) + list("abcdefghijklmnopqrstuvwxyz0123456789.,?!")
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(path / "vocab.txt"), do_lower_case=True).save_pretrained(str(path))
    return len(vocab)


def _bert(layers: int) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from transformers import BertConfig, BertForMaskedLM

        vocab = _bert_tokenizer(path)
        config = BertConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=512)
        BertForMaskedLM(config).save_pretrained(str(path))

    return write


def _gpt2(path: Path) -> None:
    """GPT-2's 12 blocks at width 16, with a byte-level BPE trained on the fixtures (eos <|endoftext|>, no pad)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = [f"Summarize:\n{r['dialogue']}\nSummary: {r['summary']}" for r in _jsonl("samsum.jsonl")] + TEXT_WORDS
    bpe.train_from_iterator(texts, trainer)
    tokenizer = GPT2TokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    tokenizer.save_pretrained(str(path))
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=16, n_layer=12, n_head=2,
                        bos_token_id=eos, eos_token_id=eos)
    GPT2LMHeadModel(config).save_pretrained(str(path))


def _processor(hub_id: str, path: Path) -> None:
    """The checkpoint's image processor (class and settings of its preprocessor_config.json)."""
    import transformers

    from isogauss_hf.cli.pipelines import KNOWN_IMAGE_PROCESSORS

    name, settings = KNOWN_IMAGE_PROCESSORS[hub_id]
    getattr(transformers, name)(**settings).save_pretrained(str(path))


def _vit(path: Path) -> None:
    from transformers import ViTConfig, ViTModel

    config = ViTConfig(hidden_size=16, num_hidden_layers=12, num_attention_heads=2, intermediate_size=32,
                       image_size=224, patch_size=16)
    ViTModel(config, add_pooling_layer=False).save_pretrained(str(path))
    _processor("google/vit-base-patch16-224-in21k", path)


def _resnet18(path: Path) -> None:
    """ResNet-18's layout (4 stages x 2 basic blocks, 20 convolution modules, 1,000 classes) at widths 8-64."""
    from transformers import ResNetConfig, ResNetForImageClassification

    config = ResNetConfig(layer_type="basic", depths=[2, 2, 2, 2], hidden_sizes=[8, 16, 32, 64], embedding_size=8,
                          num_labels=1000)
    ResNetForImageClassification(config).save_pretrained(str(path))
    _processor("microsoft/resnet-18", path)


def _mobilenet_v2(path: Path) -> None:
    """MobileNetV2 1.0's 17 inverted-residual blocks and 1,001 classes at depth multiplier 0.25."""
    from transformers import MobileNetV2Config, MobileNetV2ForImageClassification

    config = MobileNetV2Config(depth_multiplier=0.25, min_depth=4, num_labels=1001)
    MobileNetV2ForImageClassification(config).save_pretrained(str(path))
    _processor("google/mobilenet_v2_1.0_224", path)


#: hub model id -> writes the stand-in checkpoint (and its tokenizer / image processor) into a directory
MODEL_STANDINS: dict[str, Callable[[Path], None]] = {
    "google-bert/bert-base-uncased": _bert(12),
    "google-bert/bert-large-uncased": _bert(24),
    "openai-community/gpt2": _gpt2,
    "google/vit-base-patch16-224-in21k": _vit,
    "microsoft/resnet-18": _resnet18,
    "google/mobilenet_v2_1.0_224": _mobilenet_v2,
}


def write_hub_cache(cache: Path, hub_ids: list[str]) -> None:
    """Each model of ``hub_ids`` as a cached download under ``cache`` (the layout huggingface_hub reads)."""
    import torch

    for hub_id in hub_ids:
        repo = cache / f"models--{hub_id.replace('/', '--')}"
        snapshot = repo / "snapshots" / SNAPSHOT
        if snapshot.is_dir():
            continue
        snapshot.mkdir(parents=True)
        torch.manual_seed(0)
        MODEL_STANDINS[hub_id](snapshot)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(SNAPSHOT)
