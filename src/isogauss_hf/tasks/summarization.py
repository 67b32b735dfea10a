"""SAMSum dialogue summarization as GPT-2 causal language modelling, plus ROUGE/BLEU.

Each example becomes ``"Summarize:\\n{dialogue}\\nSummary:" + " {summary}" + eos``;
``labels`` equal ``input_ids`` with the prompt part set to -100, so the loss is
taken on the summary and the end-of-sequence token only. Sequences are capped at
``max_length`` (1024, GPT-2's context) by cutting the *dialogue*, so the
``Summary:`` cue and the target are never lost. Metrics use ``rouge_score``
(ROUGE-1 / ROUGE-L F1) and ``sacrebleu`` (corpus BLEU) directly, on the paper's 0-1 scale;
``evaluate.load`` would download its metric scripts (wrappers of the same two libraries) from the Hub.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._common import require_columns

__all__ = [
    "IGNORE_INDEX",
    "PROMPT_TEMPLATE",
    "build_summarization_prompt",
    "causal_lm_collator",
    "extract_generated_summary",
    "preprocess_samsum_clm",
    "summarization_metrics",
]

IGNORE_INDEX = -100
PROMPT_PREFIX = "Summarize:\n"
PROMPT_SUFFIX = "\nSummary:"
PROMPT_TEMPLATE = PROMPT_PREFIX + "{dialogue}" + PROMPT_SUFFIX


def build_summarization_prompt(dialogue: str) -> str:
    """The generation prompt for one dialogue (what the model sees before the summary)."""
    return PROMPT_TEMPLATE.format(dialogue=dialogue.strip())


def _encode_example(dialogue: str, summary: str, tokenizer: Any, max_length: int) -> dict[str, list[int]]:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("samsum: the tokenizer has no eos_token")
    prompt_ids = tokenizer(build_summarization_prompt(dialogue), add_special_tokens=False)["input_ids"]
    target_ids = tokenizer(" " + summary.strip(), add_special_tokens=False)["input_ids"] + [eos]
    if len(prompt_ids) + len(target_ids) > max_length:
        # cut the dialogue, keep prefix, cue and target (target itself capped at half the budget)
        target_ids = target_ids[: max(1, max_length // 2)]
        head = tokenizer(PROMPT_PREFIX, add_special_tokens=False)["input_ids"]
        tail = tokenizer(PROMPT_SUFFIX, add_special_tokens=False)["input_ids"]
        body = tokenizer(dialogue.strip(), add_special_tokens=False)["input_ids"]
        room = max_length - len(target_ids) - len(head) - len(tail)
        prompt_ids = head + body[: max(0, room)] + tail
    input_ids = prompt_ids + target_ids
    labels = [IGNORE_INDEX] * len(prompt_ids) + target_ids
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def preprocess_samsum_clm(examples: Mapping[str, Any], tokenizer: Any, max_length: int = 1024) -> dict[str, list]:
    """Batched ``map`` function: SAMSum (``dialogue``, ``summary``) -> ``input_ids``/``attention_mask``/``labels``.

    Use with ``ds.map(partial(preprocess_samsum_clm, tokenizer=tok), batched=True,
    remove_columns=ds.column_names)`` and :func:`causal_lm_collator` for padding.
    """
    require_columns(examples, ["dialogue", "summary"], "samsum")
    out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
    for dialogue, summary in zip(examples["dialogue"], examples["summary"]):
        enc = _encode_example(dialogue or "", summary or "", tokenizer, max_length)
        for key in out:
            out[key].append(enc[key])
    return out


def causal_lm_collator(tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
    """Collator that right-pads ``input_ids``/``attention_mask`` and pads ``labels`` with -100."""
    from transformers import DataCollatorForSeq2Seq

    if tokenizer.pad_token_id is None:
        raise ValueError("samsum: the tokenizer needs a pad token (for GPT-2 use the eos token)")
    return DataCollatorForSeq2Seq(
        tokenizer, model=None, padding=True, label_pad_token_id=IGNORE_INDEX, pad_to_multiple_of=pad_to_multiple_of
    )


def extract_generated_summary(generated: str, eos_token: str | None = "<|endoftext|>") -> str:
    """The summary part of a decoded generation: after the last ``Summary:`` cue, up to eos, stripped."""
    text = generated
    cue = PROMPT_SUFFIX.strip()
    if cue in text:
        text = text.rsplit(cue, 1)[1]
    if eos_token and eos_token in text:
        text = text.split(eos_token, 1)[0]
    return text.strip()


def summarization_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1 and ROUGE-L F1 (``rouge_score``, mean over pairs, stemming on) and corpus BLEU (``sacrebleu``).

    Returns ``{"rouge1": ..., "rougeL": ..., "bleu": ...}``, all in [0, 1]: the scale of the paper's Table 3
    (sacreBLEU's 0-100 score divided by 100).
    """
    if len(predictions) != len(references):
        raise ValueError(f"summarization: {len(predictions)} predictions vs {len(references)} references")
    if not predictions:
        raise ValueError("summarization: no predictions")
    import sacrebleu
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=True)
    r1 = rl = 0.0
    for pred, ref in zip(predictions, references):
        scores = scorer.score(ref, pred)
        r1 += scores["rouge1"].fmeasure
        rl += scores["rougeL"].fmeasure
    n = len(predictions)
    bleu = sacrebleu.corpus_bleu(list(predictions), [list(references)]).score
    return {"rouge1": r1 / n, "rougeL": rl / n, "bleu": float(bleu) / 100.0}
