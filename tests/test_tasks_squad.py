"""SQuAD v1.1: span preprocessing, n-best post-processing and the EM/F1 metric on a local fixture."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from isogauss_hf.tasks import (  # noqa: E402
    exact_match_score,
    f1_score,
    normalize_answer,
    postprocess_qa_predictions,
    prepare_squad_train_features,
    prepare_squad_validation_features,
    squad_metrics,
)

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def squad() -> "datasets.Dataset":
    data = json.loads((FIXTURES / "squad_v1.json").read_text(encoding="utf-8"))["data"]
    return datasets.Dataset.from_list(data)


@pytest.fixture(scope="module")
def tok(squad):
    """BERT-style WordLevel fast tokenizer (punctuation split, lower case) built in memory."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    pre = pre_tokenizers.BertPreTokenizer()
    words = set()
    for text in list(squad["context"]) + list(squad["question"]):
        words.update(w for w, _ in pre.pre_tokenize_str(text.lower()))
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]"] + sorted(words))}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )


def test_train_features_point_at_answer(squad, tok):
    feats = squad.map(partial(prepare_squad_train_features, tokenizer=tok), batched=True, remove_columns=squad.column_names)
    assert len(feats) == 3  # no overflow at max_length=384
    assert all(len(ids) == 384 for ids in feats["input_ids"])
    spans = [tok.convert_ids_to_tokens(f["input_ids"][f["start_positions"] : f["end_positions"] + 1]) for f in feats]
    assert spans[0] == ["france"]
    assert spans[1] == ["10th", "and", "11th", "centuries"]  # first gold answer
    assert spans[2] == ["a", "glacier"]


def test_overflowing_windows_and_cls_for_missing_answer(squad, tok):
    one = squad.select([2])
    feats = prepare_squad_train_features(one[:], tok, max_length=32, stride=8)
    n = len(feats["input_ids"])
    assert n >= 3  # long context split into several windows
    with_answer = [i for i in range(n) if feats["start_positions"][i] != 0]
    assert with_answer, "some window must contain the answer"
    for i in range(n):
        s, e = feats["start_positions"][i], feats["end_positions"][i]
        if i in with_answer:
            assert tok.convert_ids_to_tokens(feats["input_ids"][i][s : e + 1]) == ["a", "glacier"]
        else:
            assert (s, e) == (0, 0)  # CLS


def test_validation_features_and_postprocessing_roundtrip(squad, tok):
    feats = squad.map(
        partial(prepare_squad_validation_features, tokenizer=tok, max_length=32, stride=8),
        batched=True,
        remove_columns=squad.column_names,
    )
    train = squad.map(
        partial(prepare_squad_train_features, tokenizer=tok, max_length=32, stride=8),
        batched=True,
        remove_columns=squad.column_names,
    )
    assert len(feats) == len(train) > 3
    assert feats["example_id"][0] == "q1"
    # question tokens (and CLS/SEP) have no offsets; context tokens do
    first = feats[0]["offset_mapping"]
    assert first[0] is None and first[1] is None and any(o is not None for o in first)
    # oracle logits: peak at the gold start/end of windows that contain the answer
    seq = len(feats[0]["input_ids"])
    start = np.full((len(feats), seq), -5.0)
    end = np.full((len(feats), seq), -5.0)
    for i, f in enumerate(train):
        if f["start_positions"]:
            start[i, f["start_positions"]] = 10.0
            end[i, f["end_positions"]] = 10.0
    preds = postprocess_qa_predictions(squad, feats, start, end)
    assert preds == {"q1": "France", "q2": "10th and 11th centuries", "q3": "a glacier"}
    assert squad_metrics(preds, squad) == {"exact_match": 100.0, "f1": 100.0}


def test_postprocessing_respects_order_and_max_length(squad, tok):
    ex = squad.select([0])
    feats = datasets.Dataset.from_dict(prepare_squad_validation_features(ex[:], tok))
    offsets = feats[0]["offset_mapping"]
    ctx_idx = [i for i, o in enumerate(offsets) if o is not None]
    a, b = ctx_idx[3], ctx_idx[5]
    start = np.zeros((1, len(offsets)))
    end = np.zeros((1, len(offsets)))
    start[0, b] = 9.0  # the best start lies *after* the best end: (b, a) is invalid (score 18)
    end[0, a] = 9.0
    start[0, a] = 5.0
    end[0, b] = 6.0
    # valid candidates: (b, b) = 15 > (a, a) = 14 > (a, b) = 11
    pred = postprocess_qa_predictions(ex, feats, start, end)["q1"]
    context = ex[0]["context"]
    assert pred == context[offsets[b][0] : offsets[b][1]]
    end[0, b] = 4.0  # now (a, a) = 14 wins over (b, b) = 13
    assert postprocess_qa_predictions(ex, feats, start, end)["q1"] == context[offsets[a][0] : offsets[a][1]]
    # a span longer than max_answer_length is never chosen
    start2 = np.zeros((1, len(offsets)))
    end2 = np.zeros((1, len(offsets)))
    start2[0, ctx_idx[0]] = 9.0
    end2[0, ctx_idx[-1]] = 9.0
    pred2 = postprocess_qa_predictions(ex, feats, start2, end2, max_answer_length=3)["q1"]
    assert len(tok(pred2, add_special_tokens=False)["input_ids"]) <= 3


def test_normalization_and_scores_hand_computed():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("An apple a day") == "apple day"
    assert exact_match_score("the Eiffel Tower.", "Eiffel tower") == 1.0
    assert exact_match_score("Eiffel", "Eiffel tower") == 0.0
    # pred -> [cat, sat, on, mat]; gold -> [cat, on, mat]: P = 3/4, R = 1, F1 = 6/7
    assert f1_score("the cat sat on the mat", "cat on mat") == pytest.approx(6 / 7)
    assert f1_score("dog", "cat") == 0.0
    assert f1_score("a", "the") == 0.0  # both normalize to empty


def test_squad_metrics_max_over_golds():
    refs = [
        {"id": "q1", "answers": {"text": ["France"], "answer_start": [104]}},
        {"id": "q2", "answers": {"text": ["10th and 11th centuries", "in the 10th and 11th centuries"], "answer_start": [39, 32]}},
    ]
    # q2: vs gold 1 P=1, R=2/4 -> F1=2/3; vs gold 2 (5 tokens) F1=4/7 -> max 2/3
    out = squad_metrics({"q1": "France", "q2": "11th centuries"}, refs)
    assert out["exact_match"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx((100 + 200 / 3) / 2)
    with pytest.raises(ValueError, match="no prediction for question id 'q2'"):
        squad_metrics({"q1": "France"}, refs)


def test_missing_column_error(squad, tok):
    bad = squad.remove_columns("question")
    with pytest.raises(ValueError) as err:
        bad.map(partial(prepare_squad_train_features, tokenizer=tok), batched=True)
    msg = str(err.value)
    assert "squad" in msg and "['question']" in msg and "'context'" in msg
