"""The JSON schemas documented in docs/inspector.md, and a small validator for the subset of
JSON Schema they use (type, enum, properties, required, additionalProperties, items, minimum,
$ref to another documented schema by name)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

DOC = Path(__file__).resolve().parents[2] / "docs" / "inspector.md"
_BLOCK = re.compile(r"<!-- schema: (?P<name>[a-z_]+) -->\s*```json\n(?P<body>.*?)```", re.S)

_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "null": type(None),
}


def schemas() -> dict[str, Any]:
    """Every schema block of the doc, by name."""
    found = {m["name"]: json.loads(m["body"]) for m in _BLOCK.finditer(DOC.read_text())}
    assert found, f"no schema blocks in {DOC}"
    return found


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    return isinstance(value, _TYPES[kind])


def validate(
    value: Any, schema: dict[str, Any], path: str = "$", named: dict[str, Any] | None = None
) -> None:
    """Raise AssertionError naming the path of the first mismatch."""
    named = named if named is not None else schemas()
    if "$ref" in schema:
        validate(value, named[schema["$ref"]], path, named)
        return
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        assert any(_is(value, k) for k in kinds), f"{path}: {value!r} is not {kinds}"
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    if "minimum" in schema and _is(value, "number"):
        assert value >= schema["minimum"], f"{path}: {value!r} < {schema['minimum']}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            assert key in value, f"{path}: missing {key!r}"
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                validate(item, props[key], f"{path}.{key}", named)
            elif extra is False:
                raise AssertionError(f"{path}: unexpected key {key!r}")
            elif isinstance(extra, dict):
                validate(item, extra, f"{path}.{key}", named)
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{path}[{i}]", named)


def check(name: str, value: Any) -> None:
    """Validate ``value`` against the documented schema ``name``."""
    named = schemas()
    validate(value, named[name], "$", named)
