"""Request text inside card Markdown: always as literal text, never as structure.

Medication names, displays, order ids, units and the like come from the EHR's request.
Pasted raw into a card's ``detail`` (GitHub-flavoured Markdown), a caller could add a fake
"Pharmacist note: safe to override" heading, links, emphasis or ``<img onerror=...>``
(hardening #5). Every request-derived string is passed through ``md_text`` at the point
it is interpolated:

* line breaks (CR, LF, VT, FF, NEL, U+2028/2029) and other control characters become
  spaces, so a value can never start a block (heading, list item, quote, table, fence);
* every ASCII punctuation character that Markdown or its GFM extensions give a meaning
  is backslash-escaped (CommonMark: any ASCII punctuation may be escaped and then reads
  literally), which also breaks autolinks (``https\\:\\/\\/``, ``www\\.``, ``a\\@b``), math
  (``\\$``) and entities (``\\&``).

``plain_text`` is the same without escaping, for plain-text fields (``summary``).
"""

from __future__ import annotations

import re

__all__ = ["md_text", "plain_text"]

# Punctuation that is never syntax, kept as is so the raw text stays readable.
_KEEP = frozenset(",;'\"?%^")
_ESCAPE = {ord(c): "\\" + c for c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~" if c not in _KEEP}
_BREAKS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]+")


def plain_text(value: object) -> str:
    """One line of text: control characters, line breaks and surrogates become a space."""
    return _BREAKS.sub(" ", str(value))


def md_text(value: object) -> str:
    """``value`` as Markdown that renders exactly as its text, on one line."""
    return plain_text(value).translate(_ESCAPE)
