"""Bounded JSON bodies (`gateway._body`): what is refused, with which status, code and words."""

from __future__ import annotations

import json
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from comfyfleet.gateway import _body as body_module
from comfyfleet.gateway._body import JsonLimits, is_json_type, parse_json, scan
from comfyfleet.gateway._errors import ApiError

LIMITS = JsonLimits(max_bytes=1 << 24, max_depth=16, max_items=1000, max_string_bytes=1 << 17)


def refusal(raw: bytes, limits: JsonLimits = LIMITS) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_json(raw, limits)
    return caught.value


def graph_with(value: str) -> bytes:
    inputs = '{"cfg": ' + value + ', "seed": 1}'
    return ('{"workflow": {"5": {"class_type": "KSampler", "inputs": ' + inputs + "}}}").encode()


@pytest.mark.parametrize(
    ("literal", "shown"),
    [
        ("NaN", "NaN"),
        ("Infinity", "Infinity"),
        ("-Infinity", "-Infinity"),
        ("1e999", "Infinity"),
    ],
)
def test_a_non_finite_graph_input_is_a_422_naming_node_and_input(literal: str, shown: str) -> None:
    error = refusal(graph_with(literal))
    assert (error.status, error.code) == (422, "invalid_number")
    assert error.message.startswith(f"node 5 (KSampler): input 'cfg' is {shown}")
    assert error.details == {
        "path": ["workflow", "5", "inputs", "cfg"],
        "node_id": "5",
        "class_type": "KSampler",
        "input": "cfg",
    }


def test_a_non_finite_option_is_named_by_its_field() -> None:
    error = refusal(b'{"workflow": {}, "timeouts": {"running_s": NaN}}')
    assert (error.status, error.code) == (422, "invalid_number")
    assert error.message == (
        "'timeouts.running_s' is NaN: numbers must be finite (1e999 and the like overflow to "
        "Infinity)"
    )


def test_a_lone_surrogate_anywhere_is_a_400_naming_where() -> None:
    error = refusal(b'{"workflow": {"1": {"class_type": "X", "inputs": {"t": "\\udc80x"}}}}')
    assert (error.status, error.code) == (400, "invalid_string")
    assert error.message.startswith("node 1 (X): input 't' has a lone UTF-16 surrogate")
    key = refusal(b'{"webhook": {"url": "https://e.com", "events": ["\\ud800"]}}')
    assert key.code == "invalid_string" and key.message.startswith("'webhook.events[0]'")


def test_a_surrogate_pair_is_text_like_any_other() -> None:
    assert parse_json(b'{"t": "\\ud83d\\ude00"}', LIMITS) == {"t": "\U0001f600"}


def test_nesting_deeper_than_the_limit_is_a_413_before_parsing() -> None:
    error = refusal(b"[" * 990 + b"]" * 990)
    assert (error.status, error.code) == (413, "json_too_deep")
    assert error.details == {"limit": 16, "setting": "serve.max_json_depth"}
    assert parse_json(b"[" * 16 + b"]" * 16, LIMITS) is not None


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"prompt": "[" * 5000 + "," * 5000})
    assert parse_json(text.encode(), LIMITS) == {"prompt": "[" * 5000 + "," * 5000}


def test_too_many_values_is_a_413() -> None:
    raw = json.dumps({f"k{i}": 1 for i in range(2000)}).encode()
    error = refusal(raw)
    assert (error.status, error.code) == (413, "json_too_many_items")
    assert error.details == {"limit": 1000, "setting": "serve.max_json_items"}


def test_a_string_longer_than_the_limit_is_a_413() -> None:
    error = refusal(json.dumps({"b": "A" * 200_000}).encode())
    assert (error.status, error.code) == (413, "json_string_too_long")
    assert parse_json(json.dumps({"b": "A" * 100_000}).encode(), LIMITS) == {"b": "A" * 100_000}


def test_strings_cut_by_the_scan_window_are_skipped_whole() -> None:
    text = json.dumps([{"s": 'x"{[' * 9000, "n": i} for i in range(20)])
    assert len(parse_json(text.encode(), LIMITS)) == 20


def test_broken_json_and_bad_utf8_are_400s() -> None:
    assert (refusal(b'{"a": ').status, refusal(b'{"a": ').code) == (400, "invalid_json")
    bad = refusal(b'{"a": "\xff"}')
    assert (bad.code, bad.message) == ("invalid_json", "request body is not UTF-8 (byte 7)")
    huge = refusal(b'{"a": ' + b"9" * 5000 + b"}")  # over Python's int digit limit
    assert huge.code == "invalid_json"


def test_the_scan_lets_other_threads_run() -> None:
    """A 20 MB body of small keys is refused without holding the interpreter for long: a
    thread that ticks meanwhile is never kept waiting more than a few switch intervals."""
    raw = b'{"w": {' + b",".join(b'"k%d": 1' % i for i in range(1_500_000)) + b"}}"
    gaps: list[float] = []
    done = threading.Event()

    def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        with pytest.raises(ApiError) as caught:
            scan(raw, JsonLimits(max_items=1_000_000))
    finally:
        done.set()
        ticker.join()
    assert caught.value.code == "json_too_many_items"
    assert max(gaps) < 0.05


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/merge-patch+json", True),
        ("text/plain", False),
        ("application/x-www-form-urlencoded", False),
        (None, False),
    ],
)
def test_json_content_types(content_type: str | None, accepted: bool) -> None:
    assert is_json_type(content_type) is accepted


def _depth_of(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth_of(v) for v in value), default=0)
    return 0


def _items_of(value: object) -> int:
    """What the scan counts: the values inside objects and arrays, and each container once
    (it counts commas and opening brackets: an empty container counts one)."""
    if isinstance(value, dict):
        return max(len(value), 1) + sum(_items_of(v) for v in value.values())
    if isinstance(value, list):
        return max(len(value), 1) + sum(_items_of(v) for v in value)
    return 0


_texts = st.text(alphabet=st.sampled_from('ab"\\{}[],: \u00e9'), max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=_json, window=st.integers(min_value=4, max_value=64))
def test_the_scan_measures_depth_and_items_like_the_parsed_value(
    value: object, window: int
) -> None:
    """The fast scan (quote counting where no backslash is near, the regex where one is) agrees
    with the parsed value on depth and item count, whatever its windows cut."""
    raw = json.dumps(value).encode()
    depth, items = _depth_of(value), _items_of(value)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(body_module, "WINDOW", window)
        scan(raw, JsonLimits(max_depth=depth, max_items=items))
        if items:
            with pytest.raises(ApiError) as too_many:
                scan(raw, JsonLimits(max_items=items - 1))
            assert too_many.value.code == "json_too_many_items"
        if depth:
            with pytest.raises(ApiError) as too_deep:
                scan(raw, JsonLimits(max_depth=depth - 1))
            assert too_deep.value.code == "json_too_deep"
    assert parse_json(raw, JsonLimits()) == value
