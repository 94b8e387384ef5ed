"""Text from a user, checked: every string must be encodable as UTF-8.

Python strings can hold lone UTF-16 surrogates ("\\ud800"), which JSON escapes, browsers and `surrogatepass`
decoders let through. Nothing downstream can store or show them (SQLite, files, tokenizers, the browser all
fail with their own exceptions), so they are refused where text enters Atlas, with the caller's AtlasError.
"""

from __future__ import annotations

from typing import Any

from core.errors import AtlasError


def check_unicode(value: Any, what: str, error: type[AtlasError] = AtlasError, where: str = "") -> None:
    """Raise `error` when any string in `value` (a string, or keys and values nested in dicts and lists)
    holds a lone surrogate; the message names `what` and where in it."""
    stack: list[tuple[str, Any]] = [(where, value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as problem:
                place = f" at {path}" if path else f" (character {problem.start + 1})"
                raise error(f"The {what} holds an invalid character (a lone UTF-16 surrogate){place}; "
                            "remove it or retype that text.") from None
        elif isinstance(item, dict):
            for key, child in item.items():
                stack.append((f"{path}/{key}" if path else "(a key)", key))
                stack.append((f"{path}/{key}" if path else str(key), child))
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{path}/{i}", child) for i, child in enumerate(item))
