"""A Chinese catalogue: the packaged m3e-small encoder exports, passes parity, reads Chinese
(where the default English encoder sees mostly unknown tokens), and places related Chinese
titles closer together than unrelated ones."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tokenizers import Tokenizer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

pytestmark = pytest.mark.slow

#: (title, a related title, an unrelated one)
TRIPLES = [("红烧肉的家常做法", "糖醋排骨怎么做", "火箭成功发射升空"),
           ("爵士钢琴即兴演奏", "萨克斯风独奏音乐会", "如何在家烤面包"),
           ("火星探测器发现古代河床", "宇航员在月球上行走", "番茄意面酱的做法"),
           ("足球世界杯决赛", "篮球比赛精彩集锦", "红烧肉的家常做法")]


def _unknown_rate(tokenizer: Tokenizer, texts: list[str]) -> float:
    tokenizer.no_padding()  # a packaged tokenizer.json may pad every text to a fixed length
    tokens = [t for text in texts for t in tokenizer.encode(text, add_special_tokens=False).tokens]
    return sum(t == "[UNK]" for t in tokens) / len(tokens)


def test_the_chinese_encoder_reads_chinese(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from encoders.item_encoder import ItemEncoder
    from export.exporter import default_model_path, export_model, model_source
    from export.parity_texts import _CHINESE, parity_texts

    try:
        source, name = model_source("m3e-small")
    except Exception as exc:  # noqa: BLE001 - make setup installs it; say so rather than pass silently
        pytest.skip(f"m3e-small is not installed here: {exc}")
    report = export_model(source, tmp_path, model_name=name, texts=parity_texts(60))
    assert report["version"].startswith("m3e-small@") and report["dim"] == 512
    assert report["fusion"].get("Attention") == 4, report["fusion"]
    assert report["variants"]["fp32"]["min_cosine"] >= 0.999

    chinese = list(_CHINESE) + [t for triple in TRIPLES for t in triple]
    ours = _unknown_rate(Tokenizer.from_file(str(tmp_path / "tokenizer.json")), chinese)
    english = _unknown_rate(Tokenizer.from_file(str(default_model_path() / "tokenizer.json")), chinese)
    assert ours < 0.01 and english > 0.5, (ours, english)

    encoder = ItemEncoder.load(tmp_path, device="cpu")
    for title, related, unrelated in TRIPLES:
        v = encoder.encode([title, related, unrelated])
        assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.04, (title, float(v[0] @ v[1]), float(v[0] @ v[2]))
