"""Widget values as the editor holds and sends them.

The editor is a JavaScript program: a value it reads from a file is a JavaScript value, a text
box stores whatever it is given as text, and a graph is sent with `JSON.stringify`. What that
changes is reproduced here: integers past 2**53 lose precision, whole floats are sent as
integers, a value never set (`UNSET`, JavaScript's `undefined`) is left out of the graph, and a
text box turns `null` into "" and line breaks into "\\n".

Two widgets rewrite their value when sent: prompts with `dynamicPrompts` (comments removed,
`{a|b}` choices drawn at random) and the `filename_prefix` of save nodes (`%date:yyyy-MM-dd%`,
`%Node name.widget%`).
"""

from __future__ import annotations

import datetime as dt
import math
import random
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final


class _Unset:
    """JavaScript's `undefined`: a value that was never set, dropped from the sent graph."""

    _instance: _Unset | None = None

    def __new__(cls) -> _Unset:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset()
_SAFE_INT = 2**53


def js_value(value: Any) -> Any:
    """`value` (parsed from JSON) as the editor's `JSON.parse` and `JSON.stringify` leave it."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value if abs(value) <= _SAFE_INT else _float_as_js(float(value))
    if isinstance(value, float):
        return _float_as_js(value)
    if isinstance(value, list):
        return [js_value(item) for item in value]
    if isinstance(value, dict):
        return {key: js_value(item) for key, item in value.items()}
    return value


def _float_as_js(value: float) -> Any:
    if not math.isfinite(value):
        return None
    if value.is_integer() and abs(value) < 1e21:
        # JSON.stringify writes the shortest digits that read back as this double.
        return int(Decimal(repr(value)))
    return value


def js_string(value: Any) -> str:
    """JavaScript's `String(value)`."""
    if value is UNSET:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _number_text(value)
    if isinstance(value, list):
        return ",".join("" if item is None or item is UNSET else js_string(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def _number_text(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        power = int(exponent)
        if -7 < power < 21:
            return format(Decimal(text), "f")
        return f"{mantissa}e{'+' if power > 0 else '-'}{abs(power)}"
    return text


def text_box(value: Any) -> str:
    """What a text box holds after being given `value` (`null` is empty, lines end in \\n)."""
    text = "" if value is None else js_string(value)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def is_truthy(value: Any) -> bool:
    """JavaScript truthiness."""
    if value is UNSET or value is None:
        return False
    if isinstance(value, float) and math.isnan(value):
        return False
    if isinstance(value, bool | int | float | str):
        return bool(value)
    return True


_COMMENTS = re.compile(r"/\*[\s\S]*?\*/|//[^\n\r\u2028\u2029]*")


def dynamic_prompt(text: str, choose: Callable[[int], int]) -> str:
    """A prompt with its C-style comments removed and each `{a|b|c}` (nested, `\\` escaping)
    replaced by one of its options, `choose(n)` picking the index among n."""
    parser = _Choices(_COMMENTS.sub("", text), choose)
    return re.sub(r"\\([{}|])", r"\1", parser.parse_text())


class _Choices:
    def __init__(self, text: str, choose: Callable[[int], int]) -> None:
        self.text = text
        self.at = 0
        self.choose = choose

    def _escape(self) -> str:
        char = self.text[self.at] if self.at < len(self.text) else "undefined"
        self.at += 1
        return "\\" + char

    def parse_text(self) -> str:
        out = []
        while self.at < len(self.text):
            char = self.text[self.at]
            self.at += 1
            if char == "\\":
                out.append(self._escape())
            elif char == "{":
                out.append(self._block())
            else:
                out.append(char)
        return "".join(out)

    def _block(self) -> str:
        options: list[str] = []
        choice = []
        depth = 0
        while self.at < len(self.text):
            char = self.text[self.at]
            self.at += 1
            if char == "\\":
                choice.append(self._escape())
                continue
            if char == "{":
                depth += 1
            elif char == "}":
                if not depth:
                    break
                depth -= 1
            elif char == "|" and not depth:
                options.append("".join(choice))
                choice = []
                continue
            choice.append(char)
        options.append("".join(choice))
        # The chosen option is a prompt of its own, expanded (and unescaped) as one.
        return dynamic_prompt(options[self.choose(len(options))], self.choose)


def random_choice(rng: random.Random) -> Callable[[int], int]:
    return lambda count: rng.randrange(count)


_DATE_PARTS = re.compile(r"dd?|MM?|hh?|mm?|ss?|yyy?y?")
_UNSAFE = re.compile(r'[/?<>\\:*|"\x00-\x1f\x7f]')
_PATTERN = re.compile(r"%([^%]+)%")


def format_date(pattern: str, now: dt.datetime) -> str:
    parts = {"d": now.day, "M": now.month, "h": now.hour, "m": now.minute, "s": now.second}

    def one(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "yy":
            return str(now.year)[2:]
        if text == "yyyy":
            return str(now.year)
        if text[0] in parts:
            return str(parts[text[0]]).rjust(len(text), "0")
        return text

    return _DATE_PARTS.sub(one, pattern)


def text_replacements(
    value: str, lookup: Callable[[str, str], tuple[Any] | None], now: dt.datetime
) -> str:
    """`value` with `%date:…%` and `%Node.widget%` filled in; `lookup(node, widget)` is the
    widget's value in a 1-tuple (None: no such node or widget, left as written)."""

    def one(match: re.Match[str]) -> str:
        split = match.group(1).split(".")
        if len(split) != 2:
            if split[0].startswith("date:"):
                return format_date(split[0][5:], now)
            return match.group(0)
        found = lookup(split[0], split[1])
        if found is None:
            return match.group(0)
        shown = "" if found[0] is UNSET or found[0] is None else js_string(found[0])
        return _UNSAFE.sub("_", shown)

    return _PATTERN.sub(one, value)
