"""A tiny random BERT + WordPiece tokenizer, built locally (no downloads) for export tests."""

from __future__ import annotations

import json
from pathlib import Path

_WORDS = (
    "the a an of and to in is it for on with as at by from this that red blue green fast slow "
    "quiet loud new old big small book movie song game phone shoe coffee tea space travel "
    "detective paris cook home garden music jazz rock story love war peace city night day "
    "##s ##ed ##ing ##er ##ly"
).split()


def build_tiny_model(model_dir: Path, *, pooling: str = "mean", max_seq_length: int = 64) -> Path:
    """Write a 2-layer, 32-wide random BERT with tokenizer.json into ``model_dir``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel

    model_dir.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?-'\"()") + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(specials + _WORDS + chars))}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer.save(str(model_dir / "tokenizer.json"))

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=0,
    )
    BertModel(config).eval().save_pretrained(str(model_dir))
    (model_dir / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length}))
    (model_dir / "1_Pooling").mkdir(exist_ok=True)
    (model_dir / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": False,
    }))
    return model_dir


# A short corpus keeps the unit tier fast; it still has empty, CJK, long and odd texts.
TINY_TEXTS = [
    "", " ", "?", "the red book", "A quiet movie about space travel.", "东京 travel", "长" * 200,
    "jazz " * 80, "12345 !!!", "Detective in Paris, 1999", "coffee-tea", "new phone case",
] * 3
