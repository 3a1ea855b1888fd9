"""Reading JSON request bodies with bounded work, off the event loop when they are large.

Python's `json` takes anything a client sends: nesting deep enough to exhaust the stack,
millions of tiny keys that hold the interpreter for seconds, `NaN` and `1e999` (which become
floats ComfyUI and SQLite cannot take), and escapes of lone UTF-16 surrogates (which become
strings that cannot be encoded again). So a body goes through three steps here:

1. `scan`: a pass over the raw bytes, window by window, that skips strings and counts
   nesting depth and the values inside objects and arrays. It refuses a body over the limits
   before any Python object is built; between windows other threads (the event loop) run.
2. `orjson.loads`, now bounded by those limits: several times faster than `json`, and it
   refuses what a job cannot hold (non-finite numbers, lone surrogates) by itself.
3. Only when that fails (or the body has integers past 64 bits, which orjson would turn into
   floats): `json.loads` and a walk for the values JSON allows but a job cannot hold, so the
   answer names the node and input that held one.

Bodies larger than `INLINE_BYTES` are parsed in a worker thread, so `/health` and every other
request keep being answered while a large submission is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson
from fastapi import Request

from comfyfleet.gateway._errors import ApiError

INLINE_BYTES = 64 * 1024
"""Bodies up to this size are parsed on the event loop: the thread hop would cost more."""

WINDOW = 64 * 1024
"""Bytes the scan looks at in one step; strings up to this long never need a step of their own."""

_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_RUN = re.compile(rb'(?:[^"]+|"[^"\\]*(?:\\.[^"\\]*)*")*', re.S)
"""The longest stretch made of whole strings and non-string bytes: it stops before a string that
the window cuts in two."""
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b"{}[],")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_LONG_NUMBER = re.compile(rb"[0-9]{19}")
"""Integers orjson would turn into floats (past 64 bits) go the careful way, staying ints."""


@dataclass(frozen=True)
class JsonLimits:
    """What one JSON body may hold. `max_items` counts the values inside objects and arrays
    (members and items), which bounds the time and memory the parse takes."""

    max_bytes: int = 20 * 1024 * 1024
    max_depth: int = 64
    max_items: int = 1_000_000
    max_string_bytes: int = 20 * 1024 * 1024


JSON_TYPES = ("application/json",)


def is_json_type(content_type: str | None) -> bool:
    """`application/json` or any `application/*+json`, with or without parameters."""
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    return kind in JSON_TYPES or (kind.startswith("application/") and kind.endswith("+json"))


def require_json_type(request: Request) -> None:
    """415 unless the body says it is JSON: a cross-site form or `text/plain` POST cannot say
    so without a preflight, so this keeps web pages from submitting jobs on a visitor's behalf."""
    declared = request.headers.get("content-type")
    if not is_json_type(declared):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"the body must be JSON (Content-Type: application/json), not {declared or 'none'!r}",
            {"content_type": declared, "accepted": ["application/json", "application/*+json"]},
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it is known to be over `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:  # a chunked body says no length up front
            raise _too_large(limit)
    return bytes(raw)


async def read_json_body(
    request: Request, limits: JsonLimits, *, any_type: bool = False
) -> dict[str, Any]:
    """The body as a JSON object, checked against `limits` (see the module docstring).
    `any_type`: whatever Content-Type it came with (ComfyUI's own API reads the body as JSON
    whatever the header says, and its clients rely on that)."""
    if not any_type:
        require_json_type(request)
    raw = await read_body(request, limits.max_bytes)
    if len(raw) > INLINE_BYTES:
        body = await asyncio.to_thread(_parse_large, raw, limits)
    else:
        body = parse_json(raw, limits)
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "request body must be a JSON object")
    return body


_collector_lock = threading.Lock()
_collector_holds = 0
_collector_was_on = True


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """No cycle collection while large bodies are parsed. Building a few hundred thousand
    objects sets off full collections, each walking every object the process holds (a large
    graph being run, say): the same parse took longer with every large job alive. JSON makes
    no cycles, so nothing is left for the collector; it runs again when the last parse ends."""
    global _collector_holds, _collector_was_on
    with _collector_lock:
        _collector_holds += 1
        if _collector_holds == 1:
            _collector_was_on = gc.isenabled()
            gc.disable()
    try:
        yield
    finally:
        with _collector_lock:
            _collector_holds -= 1
            if _collector_holds == 0 and _collector_was_on:
                gc.enable()


def _parse_large(raw: bytes, limits: JsonLimits) -> Any:
    with _collector_paused():
        return parse_json(raw, limits)


def parse_json(raw: bytes, limits: JsonLimits) -> Any:
    """`raw` as a JSON value, or an `ApiError` saying what was wrong and where."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(
            400, "invalid_json", f"request body is not UTF-8 (byte {exc.start})"
        ) from exc
    scan(raw, limits)
    if not _LONG_NUMBER.search(raw):
        try:  # the fast path: orjson refuses NaN, Infinity, 1e999 and lone surrogates itself
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # the careful path below says what was wrong, and where
    seen = _Seen()
    try:
        value = json.loads(text, parse_float=seen.number, parse_constant=seen.constant)
    except RecursionError as exc:  # unreachable after `scan`; kept so no body can cause a 500
        raise _too_deep(limits.max_depth) from exc
    except ValueError as exc:
        raise ApiError(400, "invalid_json", f"request body is not JSON: {exc}") from exc
    if seen.non_finite or _SURROGATE_ESCAPE.search(raw):
        check_values(value)
    return value


class _Seen:
    """`json.loads` hooks that note whether any number was not finite."""

    def __init__(self) -> None:
        self.non_finite = False

    def number(self, text: str) -> float:
        value = float(text)
        self.non_finite = self.non_finite or not math.isfinite(value)
        return value

    def constant(self, name: str) -> float:
        self.non_finite = True
        return float(name)  # NaN, Infinity, -Infinity: refused by `check_values`


# --- the scan -------------------------------------------------------------------------------


def scan(raw: bytes, limits: JsonLimits) -> None:
    """Refuse (413) a body nested deeper than `max_depth`, holding more than `max_items` values
    in its objects and arrays, or with a string over `max_string_bytes`. Quadratic in nothing:
    every byte is looked at a fixed number of times, a window at a time."""
    pos, end, depth, items = 0, len(raw), 0, 0
    while pos < end:
        stop = _whole_strings_end(raw, pos, min(end, pos + WINDOW))
        if stop == pos:  # a string longer than the window starts here
            pos = _long_string(raw, pos, limits.max_string_bytes)
            continue
        marks = _outside_strings(raw[pos:stop]).translate(None, _NOT_STRUCTURE)
        items += marks.count(b",") + marks.count(b"{") + marks.count(b"[")
        if items > limits.max_items:
            raise _limit(
                "json_too_many_items",
                f"the body holds more than {limits.max_items} values in its objects and arrays",
                limits.max_items,
                "max_json_items",
            )
        depth = _depth(marks, depth, limits.max_depth)
        pos = stop


def _whole_strings_end(raw: bytes, pos: int, window_end: int) -> int:
    """Where the stretch from `pos` made of whole strings and other bytes ends, at most at
    `window_end`: before a string the window cuts in two. Without a backslash in the window,
    quotes alternate between opening and closing, so counting them finds it at C speed."""
    if raw.find(b"\\", pos, window_end) < 0:
        if raw.count(b'"', pos, window_end) % 2 == 0:
            return window_end
        return raw.rfind(b'"', pos, window_end)
    run = _RUN.match(raw, pos, window_end)
    return pos if run is None else run.end()


def _outside_strings(chunk: bytes) -> bytes:
    """`chunk` (whole strings only) without its strings. Without a backslash every `"` opens or
    closes a string, so splitting on them is exact and much faster than the regex."""
    if b"\\" in chunk:
        return _STRING.sub(b"", chunk)
    return b"".join(chunk.split(b'"')[::2])


_STEP = {ord("{"): 1, ord("["): 1, ord("}"): -1, ord("]"): -1}


def _depth(marks: bytes, depth: int, limit: int) -> int:
    """The depth after `marks` (the structure bytes of a stretch), refusing one deeper than
    `limit` anywhere inside it; the running sum is computed in C, not byte by byte in Python."""
    brackets = marks.translate(None, b",")
    if not brackets:
        return depth
    running = list(accumulate(map(_STEP.__getitem__, brackets), initial=depth))
    if max(running) > limit:
        raise _too_deep(limit)
    return running[-1]


def _long_string(raw: bytes, pos: int, limit: int) -> int:
    """Where the string starting at `pos` ends; a string that never ends is left to the parser."""
    found = _STRING.match(raw, pos)
    if found is None:
        return len(raw)  # json.loads names the unterminated string
    if found.end() - pos - 2 > limit:
        raise _limit(
            "json_string_too_long",
            f"a string in the body (at byte {pos}) is longer than {limit} bytes",
            limit,
            "max_json_string_bytes",
        )
    return found.end()


# --- values JSON allows but a job cannot hold -----------------------------------------------


def check_values(value: Any) -> None:
    """Refuse non-finite numbers (422) and strings with lone surrogates (400), naming where."""
    for path, item in _walk(value):
        if isinstance(item, float) and not math.isfinite(item):
            raise ApiError(
                422,
                "invalid_number",
                f"{describe(path, value)} is {_number_name(item)}: numbers must be finite "
                "(1e999 and the like overflow to Infinity)",
                _path_details(path, value),
            )
        if isinstance(item, str) and not _encodable(item):
            raise ApiError(
                400,
                "invalid_string",
                f"{describe(path, value)} has a lone UTF-16 surrogate escape (\\ud800-\\udfff "
                "not in a pair): strings must be valid Unicode",
                _path_details(path, value),
            )


def _walk(value: Any) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every value and every object key, with its path (a key's path is the object's plus the
    key). Iterative, so depth never matters."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                yield (*path, key), key
                stack.append(((*path, key), child))
        elif isinstance(item, list):
            stack.extend(((*path, index), child) for index, child in enumerate(item))
        else:
            yield path, item


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _number_name(number: float) -> str:
    if math.isnan(number):
        return "NaN"
    return "Infinity" if number > 0 else "-Infinity"


def describe(path: tuple[str | int, ...], body: Any) -> str:
    """Where `path` is, in a client's words: `node 5 (KSampler): input 'cfg'` inside the
    workflow, else the field path (`'timeouts.running_s'`)."""
    node = _node_of(path, body)
    if node is not None:
        node_id, class_type, rest = node
        head = f"node {safe_text(node_id)} ({safe_text(class_type)})"
        if len(rest) >= 2 and rest[0] == "inputs":
            head += f": input '{safe_text(str(rest[1]))}'"
            rest = rest[2:]
        elif rest:
            head += f": '{_dotted(rest)}'"
            rest = ()
        return head + (f" (at {_dotted(rest)})" if rest else "")
    return f"'{_dotted(path)}'" if path else "the body"


def _node_of(
    path: tuple[str | int, ...], body: Any
) -> tuple[str, str, tuple[str | int, ...]] | None:
    if len(path) < 2 or path[0] != "workflow" or not isinstance(body, dict):
        return None
    workflow = body.get("workflow")
    node = workflow.get(path[1]) if isinstance(workflow, dict) else None
    class_type = node.get("class_type") if isinstance(node, dict) else None
    name = class_type if isinstance(class_type, str) else "?"
    return str(path[1]), name, path[2:]


def _path_details(path: tuple[str | int, ...], body: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"path": [safe_text(p) if isinstance(p, str) else p for p in path]}
    node = _node_of(path, body)
    if node is not None:
        node_id, class_type, rest = node
        details |= {"node_id": safe_text(node_id), "class_type": safe_text(class_type)}
        if len(rest) >= 2 and rest[0] == "inputs":
            details["input"] = safe_text(str(rest[1]))
    return details


def _dotted(path: tuple[str | int, ...]) -> str:
    return "".join(
        f"[{part}]" if isinstance(part, int) else ("." if i else "") + safe_text(part)
        for i, part in enumerate(path)
    )


def safe_text(text: str, limit: int = 200) -> str:
    """Client text fit to echo in an answer: lone surrogates become U+FFFD, and it is cut."""
    cleaned = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return cleaned if len(cleaned) <= limit else cleaned[:limit] + "..."


# --- errors ---------------------------------------------------------------------------------


def _too_large(limit: int) -> ApiError:
    return _limit("body_too_large", f"request body over {limit} bytes", limit, "max_body_bytes")


def _too_deep(limit: int) -> ApiError:
    message = f"the body nests objects and arrays more than {limit} deep"
    return _limit("json_too_deep", message, limit, "max_json_depth")


def _limit(code: str, message: str, limit: int, setting: str) -> ApiError:
    return ApiError(413, code, message, {"limit": limit, "setting": f"serve.{setting}"})
