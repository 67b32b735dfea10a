"""Tiny locally built models shared by the tests (no downloads)."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    ViTConfig,
    ViTForImageClassification,
)

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def tiny_bert(num_labels=3, layers=2, seed=0):
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, num_labels=num_labels, max_position_embeddings=64,
                     **{**TINY, "num_hidden_layers": layers})
    return BertForSequenceClassification(cfg).eval()


def tiny_roberta(seed=0):
    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=100, num_labels=2, max_position_embeddings=70, pad_token_id=1, **TINY)
    return RobertaForSequenceClassification(cfg).eval()


def tiny_vit(seed=0):
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=8, patch_size=4, num_channels=1, num_labels=4, **TINY)
    return ViTForImageClassification(cfg).eval()


def tiny_gpt2(seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=64, n_positions=32, n_embd=32, n_layer=2, n_head=2, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


MODEL_FACTORIES = {"bert": tiny_bert, "roberta": tiny_roberta, "vit": tiny_vit, "gpt2": tiny_gpt2}


def example_inputs(kind, batch=2, seq=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "vit":
        return {"pixel_values": torch.randn(batch, 1, 8, 8, generator=g)}
    vocab = 64 if kind == "gpt2" else 100
    ids = torch.randint(2, vocab, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.fixture
def bert():
    return tiny_bert()
