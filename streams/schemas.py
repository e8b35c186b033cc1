"""JSON Schemas of every topic's records, generated from the typed records in
:mod:`streams.records` (msgspec writes them from the same types the decoders use, so the
schema and the worker cannot disagree). ``docs/schemas/`` holds them for users; a test
checks that the files are what this module generates.

Regenerate after changing a record: ``python -m streams.schemas docs/schemas``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import msgspec

from streams.records import SCHEMA_VERSION, Click, DeadLetter, ItemEvent, Recommendation, UserControl

#: The JSON topics and their record types (``item-vectors`` is msgspec binary, internal).
TOPIC_RECORDS: dict[str, type[msgspec.Struct]] = {
    "items": ItemEvent,
    "clicks": Click,
    "user-control": UserControl,
    "recommendations": Recommendation,
    "dead-letters": DeadLetter,
}


def schema(topic: str) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of one topic's records."""
    generated = msgspec.json.schema(TOPIC_RECORDS[topic])
    name = generated["$ref"].rsplit("/", 1)[-1]
    defs = generated["$defs"]
    root = defs.pop(name)
    for part in (root, *defs.values()):
        if "description" in part:  # docstrings as one line of plain text
            part["description"] = " ".join(part["description"].split()).replace("``", "`")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"urn:recstream:schema:v{SCHEMA_VERSION}:{topic}",
        **root,
        "title": f"{topic} record",
        **({"$defs": defs} if defs else {}),
    }


def render(topic: str) -> str:
    return json.dumps(schema(topic), indent=2, ensure_ascii=False) + "\n"


def write(folder: Path) -> list[Path]:
    """Write ``<topic>.schema.json`` for every JSON topic into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for topic in TOPIC_RECORDS:
        path = folder / f"{topic}.schema.json"
        path.write_text(render(topic), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas")):
        print(written)
