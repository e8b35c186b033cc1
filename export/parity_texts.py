"""A deterministic, varied text corpus for parity checks and benchmarks.

Parity must hold on the texts the encoder will really see, not only on the tidy sentence
used to trace the graph: short product titles, long descriptions that hit truncation,
Chinese (mostly ``[UNK]`` for an English vocabulary, which stresses the pooling), empty-ish
strings (only ``[CLS] [SEP]`` survive), punctuation runs, numbers and mixed scripts.

Everything is generated from word lists and a seeded ``random.Random``: no downloads, and
the same corpus on every machine, so parity figures are comparable across runs.
"""

from __future__ import annotations

import random

# Seed of the generated part of the corpus; change it and every parity figure moves.
CORPUS_SEED = 20240611

_ADJECTIVES = (
    "red", "quiet", "fast", "ancient", "wireless", "organic", "vintage", "compact", "bright",
    "heavy", "lightweight", "smart", "classic", "modern", "tiny", "giant", "waterproof",
    "handmade", "digital", "romantic", "dark", "funny", "epic", "cheap", "premium",
)
_NOUNS = (
    "headphones", "novel", "coffee maker", "running shoes", "thriller", "jacket", "laptop",
    "garden hose", "documentary", "board game", "guitar", "cookbook", "backpack", "lamp",
    "comedy", "watch", "tent", "camera", "sofa", "bicycle", "album", "mystery", "sci-fi movie",
    "teapot", "keyboard", "drama series", "puzzle", "blender", "poster", "phone case",
)
_TOPICS = (
    "space travel", "a detective in Paris", "family cooking", "machine learning", "jazz",
    "the French revolution", "mountain hiking", "home repair", "friendship", "climate change",
    "a haunted house", "football", "gardening in small spaces", "ancient Rome", "startups",
)
_VERBS = (
    "explores", "celebrates", "explains", "follows", "reimagines", "questions", "tracks",
    "describes", "imagines", "documents",
)
_FILLER = (
    "The story unfolds slowly, with careful attention to detail and a strong sense of place.",
    "Reviewers praised its clarity, its pacing and the warmth of its characters.",
    "It ships with a two-year warranty, a USB-C cable and a quick start guide.",
    "Some readers found the middle section long, but the ending rewards patience.",
    "Built from recycled aluminium, it weighs less than a kilogram and folds flat.",
    "The second half changes tone completely and becomes a tense, claustrophobic thriller.",
    "Best enjoyed with friends on a rainy afternoon, ideally with tea.",
    "Battery life is rated at thirty hours with noise cancelling switched on.",
)
_CHINESE = (
    "无线降噪耳机，续航三十小时",
    "一部关于太空旅行的科幻电影",
    "家庭烹饪食谱：一百道简单的家常菜",
    "复古风格的皮质背包，适合通勤",
    "这本小说讲述了一个侦探在巴黎的故事",
    "机器学习入门教程",
    "轻便防水帐篷，适合两人露营",
    "爵士乐经典专辑重新发行",
    "我们今天去公园散步，天气很好。",
    "智能手表支持心率监测和睡眠追踪",
    "古罗马历史纪录片",
    "儿童益智拼图游戏，一千片",
)
_EMPTYISH = ("", " ", "  ", "\n", "\t", ".", "a", "?", "[UNK]", "[PAD]", "-", "'")
_PUNCTUATION = (
    "!!!", "???", "...", "—", "--- *** ---", "(((", "@#$%^&*", "“quoted” «text»", ";;;;",
    "!?!?!?!?", "~~~~~~~~", "::", "<<>>", "…", "/\\/\\/\\",
)
_NUMBERS = (
    "0", "42", "3.14159", "1,000,000", "2024-01-01", "-273.15", "1e-9", "007",
    "123456789012345678901234567890", "10:45 PM", "+44 20 7946 0958", "99.9%", "$19.99",
    "v2.0.1", "ISBN 978-3-16-148410-0",
)
_MIXED = (
    "iPhone 15 Pro 手机壳 clear case",
    "Café déjà vu — naïve résumé",
    "Straße, Größe 42, schöne Schuhe",
    "Москва: путеводитель для туристов",
    "東京 travel guide 2024",
    "😀 happy birthday 🎂🎉",
    "C++ / Rust / Python: a systems programming primer",
    "HTTP 404 Not Found <html></html>",
    "SELECT * FROM items WHERE id = 7;",
    "ALL CAPS TITLE FOR A VERY LOUD PRODUCT",
    "mIxEd CaSe TiTlE",
    "word " * 3,
)


def _title(rng: random.Random) -> str:
    return f"{rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}"


def _sentence(rng: random.Random) -> str:
    return (
        f"A {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)} that {rng.choice(_VERBS)} "
        f"{rng.choice(_TOPICS)}."
    )


def _paragraph(rng: random.Random, n_sentences: int) -> str:
    parts = []
    for _ in range(n_sentences):
        parts.append(rng.choice(_FILLER) if rng.random() < 0.5 else _sentence(rng))
    return " ".join(parts)


def parity_texts(n_generated: int = 240, *, seed: int = CORPUS_SEED) -> list[str]:
    """The parity corpus: fixed edge cases followed by ``n_generated`` seeded texts.

    Args:
        n_generated: how many generated texts (titles, sentences, paragraphs, Chinese,
            mixed) follow the fixed edge cases.
        seed: seed of the generated part.

    Returns:
        A list of strings, identical for identical arguments.
    """
    rng = random.Random(seed)
    texts: list[str] = [
        *_EMPTYISH, *_PUNCTUATION, *_NUMBERS, *_MIXED, *_CHINESE,
        # Far longer than any max_length: exercises truncation.
        _paragraph(random.Random(seed + 1), 60),
        "长" * 600,
    ]
    for i in range(n_generated):
        kind = i % 6
        if kind == 0:
            texts.append(_title(rng))
        elif kind == 1:
            texts.append(_sentence(rng))
        elif kind == 2:
            texts.append(_paragraph(rng, rng.randint(2, 6)))
        elif kind == 3:
            # ~100-200 tokens: past tokenizer.json's stock 128 truncation, below 256.
            texts.append(_paragraph(rng, rng.randint(6, 12)))
        elif kind == 4:
            texts.append("".join(rng.sample(_CHINESE, 2)) if rng.random() < 0.5
                         else f"{_title(rng)} {rng.choice(_CHINESE)}")
        else:
            texts.append(f"{rng.choice(_NUMBERS)} {_title(rng)} {rng.choice(_PUNCTUATION)}")
    return texts


def bench_texts(n: int, *, seed: int = CORPUS_SEED) -> list[str]:
    """``n`` item-like texts (title + a short description, ~15-60 tokens) for benchmarks.

    Args:
        n: number of texts.
        seed: random seed.

    Returns:
        A list of ``n`` strings, identical for identical arguments.
    """
    rng = random.Random(seed + 2)
    return [f"{_title(rng).capitalize()}. {_paragraph(rng, rng.randint(1, 2))}" for _ in range(n)]
