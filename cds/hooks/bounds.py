"""Limits every JSON document from outside must respect before any clinical code sees it.

Request bodies (hook calls, feedback) and FHIR server answers are checked once, at the
boundary, for the classes of input that fuzzing by value never produced and that crashed
deeper code with a 500 (hardening #9):

* **depth**: more than ``MAX_DEPTH`` nested arrays/objects (FHIR is shallow; a Patient
  extension 200 deep broke pydantic, a draft 500 deep broke ``copy.deepcopy``, 100,000
  deep broke ``json.loads`` itself);
* **numbers**: infinite, or outside ``[NUMBER_MIN, NUMBER_MAX]`` in magnitude (a dose of
  1e308 overflowed to ``inf`` in a daily total, a frequency of 1e-320 divided by zero).
  No clinical quantity spans 30 orders of magnitude; these are entry errors or attacks;
* **text**: a lone UTF-16 surrogate (not Unicode: it cannot be encoded, logged or
  stored) or a C0 control character other than tab, CR and LF (FHIR strings forbid them;
  a NUL is refused by PostgreSQL, control characters by httpx in a URL).

The text checks read the raw bytes (both can only arrive as ``\\u`` escapes in valid
JSON, so a byte search finds them at C speed: a body without ``\\u`` is done in a
``memchr``, and only one with a candidate escape is searched with the exact pattern, whose
look-behind made it 1 ms on a typical 23 kB order-sign); the structural checks walk the
decoded value once without recursion (~0.15 ms for that order-sign).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "MAX_DEPTH",
    "NUMBER_MAX",
    "NUMBER_MIN",
    "JsonLimitError",
    "check_document",
    "check_json",
    "check_raw",
    "check_text",
]

MAX_DEPTH = 64
NUMBER_MAX = 1e15
NUMBER_MIN = 1e-15  # smallest non-zero magnitude

# An escape preceded by an even number of backslashes (so not itself escaped text).
_ESCAPE = rb"(?<!\\)(?:\\\\)*\\u"
_CONTROL = re.compile(_ESCAPE + rb"00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F])")
_SURROGATE = re.compile(_ESCAPE + rb"[dD][89a-fA-F][0-9a-fA-F]{2}")
# Necessary conditions of the two above, with a literal prefix (a fast scan, no look-behind)
_MAYBE_CONTROL = re.compile(rb"\\u00[01]")
_MAYBE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")


class JsonLimitError(ValueError):
    """A document breaks one of the limits; ``kind`` is depth, number, control or surrogate."""

    def __init__(self, kind: str, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.kind, self.message, self.path = kind, message, path


def check_raw(raw: bytes) -> None:
    """Refuse control characters, found in the raw JSON text (before decoding)."""
    if b"\\u" not in raw or not _MAYBE_CONTROL.search(raw):
        return
    if _CONTROL.search(raw):
        raise JsonLimitError(
            "control",
            "a string holds a control character (only tab, CR and LF are allowed)",
        )


def check_text(raw: bytes, value: Any) -> None:
    """Refuse lone surrogates. Escaped surrogates are legal in pairs (an emoji), so only
    when the raw text has one is the decoded value encoded to tell."""
    if b"\\u" not in raw or not _MAYBE_SURROGATE.search(raw) or not _SURROGATE.search(raw):
        return
    import json

    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise JsonLimitError(
            "surrogate", "a string holds a lone UTF-16 surrogate (not valid Unicode)"
        ) from None


def check_document(raw: bytes, value: Any) -> None:
    """All the limits, for a document decoded from ``raw``."""
    check_json(value)
    check_text(raw, value)


def _number_ok(x: Any) -> bool:
    t = type(x)
    if t is float:
        a = abs(x)
        return a <= NUMBER_MAX and (a >= NUMBER_MIN or a == 0.0)
    if t is int:
        return -NUMBER_MAX <= x <= NUMBER_MAX
    return True


def check_json(value: Any) -> None:
    """Raise ``JsonLimitError`` (naming the path) if ``value`` is too deep or has a number
    out of range. One pass, level by level (no recursion, no tuple per node); the path is
    worked out only when something fails."""
    if type(value) not in (dict, list):
        if not _number_ok(value):
            raise JsonLimitError("number", "the document is a number out of range")
        return
    level: list[Any] = [value]
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            raise JsonLimitError(
                "depth", f"JSON nested deeper than {MAX_DEPTH} levels", _locate(value)
            )
        below: list[Any] = []
        push = below.append
        for node in level:
            for item in node.values() if type(node) is dict else node:
                t = type(item)
                if t is str:
                    continue
                if t is dict or t is list:
                    push(item)
                elif t is float:
                    a = abs(item)
                    if a > NUMBER_MAX or (a < NUMBER_MIN and a != 0.0) or a != a:
                        raise _out_of_range(value)
                elif t is int and not -NUMBER_MAX <= item <= NUMBER_MAX:
                    raise _out_of_range(value)
        level = below
        depth += 1


def _out_of_range(value: Any) -> JsonLimitError:
    return JsonLimitError(
        "number",
        f"a number is out of range (magnitude above {NUMBER_MAX:g}, "
        f"or non-zero below {NUMBER_MIN:g})",
        _locate(value),
    )


def _locate(value: Any) -> str | None:
    """The path of the first offending node, as ``context.draftOrders.entry[0]...``."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        node, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            return path or None
        items = (
            (((f"{path}.{k}" if path else str(k)), v) for k, v in node.items())
            if type(node) is dict
            else ((f"{path}[{i}]", v) for i, v in enumerate(node))
        )
        for where, item in items:
            t = type(item)
            if t is dict or t is list:
                stack.append((item, depth + 1, where))
            elif (t is float or t is int) and not _number_ok(item):
                return where[:300]
    return None
