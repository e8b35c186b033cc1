"""The record contracts in docs/schemas are what the code generates, and the README's
examples are valid records by both the schemas and the workers' own decoders."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from streams import schemas
from streams.records import (
    Click,
    DeadLetter,
    DecodeReason,
    Recommendation,
    RecommendedItem,
    SourceRef,
    Trigger,
    decode_click,
    decode_control,
    decode_dead_letter,
    decode_item,
    decode_recommendation,
    encode_json,
)

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text(encoding="utf-8")
#: The Chinese README (its "输入与输出" section mirrors "Feed it and read it").
README_ZH = (ROOT / "README.zh-CN.md").read_text(encoding="utf-8")
READMES = {"README.md": (README, "## Feed it and read it"), "README.zh-CN.md": (README_ZH, "## 输入与输出")}
FOLDER = ROOT / "docs" / "schemas"
DECODERS = {
    "items": lambda raw: decode_item(raw, now_s=1_800_000_000.0),
    "clicks": lambda raw: decode_click(raw, now_s=1_800_000_000.0),
    "user-control": decode_control,
    "recommendations": decode_recommendation,
    "dead-letters": decode_dead_letter,
}


def _schema(topic: str) -> dict:
    return json.loads((FOLDER / f"{topic}.schema.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("topic", sorted(schemas.TOPIC_RECORDS))
def test_the_committed_schema_is_the_generated_one(topic: str):
    committed = (FOLDER / f"{topic}.schema.json").read_text(encoding="utf-8")
    assert committed == schemas.render(topic), (
        f"docs/schemas/{topic}.schema.json is stale: run `python -m streams.schemas docs/schemas`")
    jsonschema.Draft202012Validator.check_schema(_schema(topic))


def _readme_examples(readme: str = "README.md") -> dict[str, str]:
    """``**topic**`` ... the first ```json block after it, in the README's "Feed it" section."""
    text, heading = READMES[readme]
    section = text.split(heading, 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"\*\*([a-z-]+)\*\*.*?```json\n(.*?)\n```", section, flags=re.S)
    return {topic: body for topic, body in found}


@pytest.mark.parametrize("readme", sorted(READMES))
def test_the_readme_shows_one_example_of_every_record(readme: str):
    assert set(_readme_examples(readme)) == set(schemas.TOPIC_RECORDS)


@pytest.mark.parametrize("readme", sorted(READMES))
@pytest.mark.parametrize("topic", sorted(schemas.TOPIC_RECORDS))
def test_the_readme_example_is_valid_by_schema_and_decoder(topic: str, readme: str):
    example = _readme_examples(readme)[topic]
    jsonschema.validate(json.loads(example), _schema(topic))
    DECODERS[topic](example.encode())


def test_the_readme_lists_every_dead_letter_reason():
    table = README.split("| reason | the record", 1)[1].split("\n\n", 1)[0]
    for reason in DecodeReason:
        assert f"`{reason.value}`" in table, f"dead-letter reason {reason.value} is not in the README"


@pytest.mark.parametrize(("topic", "record"), [
    ("clicks", Click(user_id="u", item_id="i", ts_s=1.5)),
    ("recommendations", Recommendation(
        user_id="u", items=[RecommendedItem(item_id="i", score=0.5, because=[], source="trending")],
        trigger=Trigger(topic="clicks", partition=0, offset=1, ts_s=1.0), model="m", models={"encoder": "m"},
        generated_at_s=2.0)),
    ("dead-letters", DeadLetter(source=SourceRef(topic="clicks", partition=0, offset=1), error="e", raw="r",
                                reason="not_json")),
])
def test_what_the_workers_write_is_valid_by_the_schema(topic, record):
    jsonschema.validate(json.loads(encode_json(record)), _schema(topic))


def test_a_record_the_decoder_refuses_is_refused_by_the_schema_too():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"user_id": "u", "item_id": "i", "ts": "yesterday"}, _schema("clicks"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"user_id": "u", "item_id": "i"}, _schema("clicks"))
