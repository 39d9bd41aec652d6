"""Bounded parsing of the JSON and YAML adapt reads from files, the Hub and users.

Every parse has a size bound and a nesting-depth bound checked before the parser runs (Python's
json and PyYAML recurse: a 10k-deep file would otherwise end in RecursionError), refuses
non-finite and absurdly large numbers, and YAML aliases (a billion-laughs document expands to
gigabytes). Error text is capped so no message embeds an expanded or huge document.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

MAX_DEPTH = 64  # adapter configs, manifests and recipes nest 4-6 deep
MAX_BYTES = 16 * 1024 * 1024
MAX_ERROR_CHARS = 200
MAX_INT = 2**64  # safetensors offsets are u64; nothing adapt reads needs more
_MAX_INT_DIGITS = len(str(MAX_INT))

# a JSON string literal (escapes included); what is left once these are removed is structure
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_BRACKETS = re.compile(r"[\[\]{}]")


class ParseLimitError(ValueError):
    """A document that is malformed or exceeds a bound; `str()` is one short line."""


def cap(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """`text` on one line, at most `limit` characters (the middle elided)."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    half = (limit - 5) // 2
    return f"{line[:half]} ... {line[-half:]}"


def json_depth(text: str) -> int:
    """Deepest nesting of arrays/objects in `text` (strings skipped), without recursion."""
    depth = deepest = 0
    for bracket in _BRACKETS.findall(_JSON_STRING.sub("", text)):
        if bracket in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _refuse_constant(name: str) -> Any:
    raise ParseLimitError(f"non-finite number {name} (NaN and Infinity are not JSON)")


def _bounded_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ParseLimitError(f"number {cap(text, 40)} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS or abs(value := int(text)) > MAX_INT:
        raise ParseLimitError(f"integer {cap(text, 40)} is out of range")
    return value


def read_limited(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of a file, refusing one larger than `max_bytes` without reading it all (a
    hostile 10 GB config must not be loaded into memory to find out it is too large)."""
    with open(path, "rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ParseLimitError(f"more than the {max_bytes} bytes allowed")
    return data


def load_json(
    data: str | bytes, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse JSON with a size bound, a depth bound and only finite, bounded numbers.

    Raises ParseLimitError (a ValueError) with a short message for anything refused.
    """
    if len(data) > max_bytes:
        raise ParseLimitError(f"{len(data)} bytes is more than the {max_bytes} allowed")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseLimitError("not UTF-8 text") from None
    else:
        text = data
    depth = json_depth(text)
    if depth > max_depth:
        raise ParseLimitError(f"nested {depth} deep (at most {max_depth} allowed)")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_bounded_float,
                          parse_int=_bounded_int)
    except json.JSONDecodeError as error:
        raise ParseLimitError(f"not valid JSON: {cap(error.msg, 80)} at line {error.lineno} "
                              f"column {error.colno}") from None
    except RecursionError:  # unreachable below the depth bound; kept as a last line
        raise ParseLimitError("nested too deep") from None


def load_yaml(
    text: str | bytes, *, max_bytes: int = 1024 * 1024, max_depth: int = MAX_DEPTH
) -> Any:
    """Parse YAML with PyYAML's safe loader, refusing aliases, deep nesting and non-finite numbers.

    Raises ParseLimitError with a short message for anything refused or malformed.
    """
    import yaml

    if len(text) > max_bytes:
        raise ParseLimitError(f"{len(text)} bytes is more than the {max_bytes} allowed")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseLimitError("not UTF-8 text") from None
    loader = _bounded_loader(yaml)(text)
    loader.max_depth = max_depth
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as error:
        where = f" at line {error.problem_mark.line + 1}" if error.problem_mark else ""
        raise ParseLimitError(f"not valid YAML: {cap(str(error.problem), 80)}{where}") from None
    except yaml.YAMLError as error:
        raise ParseLimitError(f"not valid YAML: {cap(str(error), 80)}") from None
    except RecursionError:
        raise ParseLimitError("nested too deep") from None
    finally:
        loader.dispose()


_LOADER: type | None = None


def _bounded_loader(yaml: Any) -> type:
    """A SafeLoader subclass (built once, lazily: `import registry` must not import yaml)."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER

    class BoundedSafeLoader(yaml.SafeLoader):  # type: ignore[misc,name-defined]
        max_depth = MAX_DEPTH
        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise ParseLimitError(
                    f"YAML aliases (*{cap(event.anchor, 40)}) are not allowed at line "
                    f"{event.start_mark.line + 1}")
            event = self.peek_event()
            if getattr(event, "anchor", None) is not None:
                raise ParseLimitError(
                    f"YAML anchors (&{cap(event.anchor, 40)}) are not allowed at line "
                    f"{event.start_mark.line + 1}")
            self._depth += 1
            try:
                if self._depth > self.max_depth:
                    raise ParseLimitError(f"nested more than {self.max_depth} deep")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_yaml_float(self, node: Any) -> float:
            value = super().construct_yaml_float(node)
            if not math.isfinite(value):
                raise ParseLimitError(f"non-finite number {cap(node.value, 40)} at line "
                                      f"{node.start_mark.line + 1}")
            return float(value)

        def construct_yaml_int(self, node: Any) -> int:
            digits = node.value.replace("_", "").lstrip("+-")
            if len(digits) > _MAX_INT_DIGITS + 2:  # + a 0x/0o/0b prefix
                raise ParseLimitError(f"integer at line {node.start_mark.line + 1} is out "
                                      "of range")
            value = int(super().construct_yaml_int(node))
            if abs(value) > MAX_INT:
                raise ParseLimitError(f"integer {cap(node.value, 40)} at line "
                                      f"{node.start_mark.line + 1} is out of range")
            return value

    BoundedSafeLoader.add_constructor("tag:yaml.org,2002:float",
                                      BoundedSafeLoader.construct_yaml_float)
    BoundedSafeLoader.add_constructor("tag:yaml.org,2002:int",
                                      BoundedSafeLoader.construct_yaml_int)
    _LOADER = BoundedSafeLoader
    return BoundedSafeLoader
