"""Checks for values that come from outside the program: a session document, a URL, a bundle.

Such a value is restored into a widget only when the widget could have produced it: one of a
selectbox's options, a number inside the input's range, text within its length. Each check returns the
clean value or raises InvalidValue. The message says what is wrong without repeating the value (it may
be long, or crafted), so the app can show it as it is next to the setting's name.

Text must also be valid Unicode: JSON can carry lone surrogates ("\\ud800"), which Python keeps in a
str but which cannot be encoded as UTF-8, so they would crash whatever sends them to the browser.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from core.errors import AtlasError


class InvalidValue(AtlasError):
    """A restored value outside its widget's domain; the message does not repeat the value."""


class PartlyInvalid(InvalidValue):
    """A list some of whose entries were refused: `kept` holds the entries that passed."""

    def __init__(self, message: str, kept: list[Any]):
        super().__init__(message)
        self.kept = kept


def has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def printable(text: str) -> str:
    """`text` with anything that is not valid Unicode replaced by U+FFFD, for display."""
    if not has_lone_surrogate(text):
        return text
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)


def check_text(value: Any, *, max_length: int, pattern: str | re.Pattern[str] | None = None) -> str:
    """A str of at most `max_length` characters, valid Unicode, without NUL; matching `pattern` when given."""
    if not isinstance(value, str):
        raise InvalidValue("is not text")
    if len(value) > max_length:
        raise InvalidValue(f"is longer than {max_length:,} characters")
    if has_lone_surrogate(value):
        raise InvalidValue("holds characters that are not valid Unicode (lone surrogates)")
    if "\x00" in value:
        raise InvalidValue("holds a NUL character")
    if pattern is not None and not re.fullmatch(pattern, value):
        raise InvalidValue("is not in the expected form")
    return value


def check_choice(value: Any, options: Iterable[Any]) -> Any:
    """One of `options` (compared by equality; a bool never stands for an int)."""
    for option in options:
        if type(option) is type(value) and option == value:
            return option
    raise InvalidValue("is not one of the offered choices")


def check_int(value: Any, *, minimum: int, maximum: int) -> int:
    """An integer (not a bool, not a float) in [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidValue("is not a whole number")
    if not minimum <= value <= maximum:
        raise InvalidValue(f"is outside {minimum:,}..{maximum:,}")
    return value


def check_list(value: Any, item: Callable[[Any], Any], *, max_items: int) -> list[Any]:
    """A list of at most `max_items` entries, duplicates removed (order kept). An entry that fails `item`
    is left out: when any was, PartlyInvalid carries the rest (`kept`) and the first entry's reason."""
    if not isinstance(value, (list, tuple)):
        raise InvalidValue("is not a list")
    if len(value) > max_items:
        raise InvalidValue(f"has more than {max_items} entries")
    clean: list[Any] = []
    refused: list[str] = []
    for entry in value:
        try:
            checked = item(entry)
        except InvalidValue as error:
            refused.append(str(error))
            continue
        if checked not in clean:
            clean.append(checked)
    if refused:
        raise PartlyInvalid(f"{len(refused)} of {len(value)} entries were left out (the first {refused[0]})", clean)
    return clean


def optional(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`check`, letting None through."""
    return lambda value: None if value is None else check(value)
