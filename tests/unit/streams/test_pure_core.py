"""The recommendation core stays pure: no broker, index or clock imports (STYLE.md #3)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import streams

PURE_MODULES = ["interest", "covisit", "trending", "ranking", "learned", "catalog"]
# Brokers and vector stores, plus anything that reads a clock, the environment or randomness.
FORBIDDEN = {"faust", "aiokafka", "kafka", "confluent_kafka", "qdrant_client", "qdrant_edge",
             "time", "datetime", "os", "socket", "random", "asyncio"}


@pytest.mark.parametrize("name", PURE_MODULES)
def test_module_imports_nothing_impure(name):
    path = Path(streams.__file__).parent / f"{name}.py"
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN, f"streams/{name}.py imports {sorted(imported & FORBIDDEN)}"
    assert ast.get_docstring(tree), f"streams/{name}.py needs a module docstring"
