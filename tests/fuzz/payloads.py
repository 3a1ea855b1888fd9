"""Hypothesis strategies for hostile job requests: graphs, job options, headers, raw bodies.

Values lean towards what broke parsers and stores before: non-finite numbers (written as the raw
JSON text `NaN`, `Infinity`, `1e999`, which `json.dumps` cannot produce for all of them), lone
surrogates, integers past 64 bits, deep nesting, long names, paths that climb out (`../`,
absolute, backslashes, NUL), and URLs that do not parse. Small integers stay small: a fuzzed
graph that passes every check runs on a real CPU instance, and `EmptyImage` with a width of a
thousand and a batch of a thousand would take the machine's memory.

Nothing here names a host that needs the network: URLs are IP literals in private ranges (refused
before any connection) or do not parse at all.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st


@dataclass(frozen=True)
class Raw:
    """JSON text written into a body as is."""

    text: str


def encode(value: Any) -> str:
    """JSON text of `value`, with `Raw` parts verbatim and strings ASCII-escaped (so a lone
    surrogate goes out as the escape `\\udc80`, as a hostile client would write it)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        items = (f"{json.dumps(str(k))}:{encode(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(encode(v) for v in value) + "]"
    return json.dumps(value)


def nested(depth: int, kind: str = "[") -> Raw:
    if kind == "[":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


SURROGATES = ("\udc80x", "\ud800", "a\udfffb", "\ud83d")
PATHS = (
    "../../../../etc/passwd",
    "/etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "C:\\Windows\\win.ini",
    "\\\\server\\share\\x.png",
    "a/../../b",
    "../other-job/x",
    "x\x00.png",
    ".",
    "..",
    "~/x",
    "%2e%2e/%2e%2e/x",
    "out/",
)
URLS = (
    "http://[::1/m.safetensors",
    "http://127.0.0.1:99999/m.safetensors",
    "http://10.0.0.1/m.safetensors",
    "http://169.254.169.254/latest/meta-data",
    "http://[::1]:0/x.ckpt",
    "file:///etc/passwd",
    "s3://bucket/key.safetensors",
    "gopher://10.0.0.1/x",
    "data:image/png;base64,iVBORw0KGgo=",
    "data:,",
    "asset:nope",
    "asset:../../x",
)
ODD_TEXT = (
    "",
    " ",
    "x\n",
    "\x00",
    "\u202ex",
    "%s%n%x",
    "%date:yyyy-MM-dd%",
    "{{7*7}}",
    "'; DROP TABLE jobs; --",
    "x" * 5000 + ".safetensors",
    "\u00e9" * 3000,
)
RAW_NUMBERS = (
    Raw("NaN"),
    Raw("Infinity"),
    Raw("-Infinity"),
    Raw("1e999"),
    Raw("-1e999"),
    Raw("1e-999"),
    Raw("-0"),
    Raw("1" * 400),
)
HUGE_INTS = (2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**30)
DEPTHS = (50, 900, 989, 990, 1000, 5000, 20000)

small_ints = st.integers(-4, 16)
ints = st.one_of(small_ints, st.sampled_from(HUGE_INTS))
floats = st.one_of(st.floats(-16, 16, allow_nan=False), st.sampled_from(RAW_NUMBERS))
strings = st.one_of(
    st.sampled_from(SURROGATES + PATHS + URLS + ODD_TEXT),
    st.text(max_size=12),
    st.text(st.characters(codec=None, categories=["Cs", "Cc", "Lo"]), max_size=6),
)
deep = st.builds(nested, st.sampled_from(DEPTHS), st.sampled_from("[{"))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, strings)
values = st.recursive(
    st.one_of(scalars, deep),
    lambda kids: st.one_of(
        st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=6), kids, max_size=3)
    ),
    max_leaves=6,
)
node_ids = st.one_of(
    st.sampled_from(["1", "2", "3", "10"]),
    st.sampled_from((*SURROGATES, "", " ", "x\n", "9" * 300, "../1", "a/b")),
    st.text(max_size=6),
)


def graphs(classes: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    """API-format graphs over the instances' node classes (`class -> input names`) and junk."""
    names = sorted(classes)

    @st.composite
    def graph(draw: st.DrawFn) -> dict[str, Any]:
        ids = draw(st.lists(node_ids, min_size=1, max_size=5, unique=True))
        return {node_id: draw(node(ids)) for node_id in ids}

    @st.composite
    def node(draw: st.DrawFn, ids: list[str]) -> Any:
        class_type = draw(
            st.one_of(
                st.sampled_from(names), st.sampled_from(names), strings, st.integers(), st.none()
            )
        )
        inputs_names = list(classes.get(class_type, [])) if isinstance(class_type, str) else []
        wanted = draw(st.lists(st.sampled_from(inputs_names), unique=True)) if inputs_names else []
        wanted += draw(st.lists(st.sampled_from(["filename_prefix", "image", "x", ""]), max_size=2))
        link = st.tuples(st.one_of(st.sampled_from(ids), node_ids), st.one_of(small_ints, ints))
        inputs = {
            name: draw(st.one_of(values, link.map(list), st.sampled_from(PATHS + URLS)))
            for name in wanted
        }
        shape = draw(st.integers(0, 9))
        if shape == 0:
            return draw(values)  # not a node at all
        if shape == 1:
            return {"class_type": class_type}  # no inputs
        if shape == 2:
            return {"class_type": class_type, "inputs": draw(values), "_meta": draw(values)}
        return {"class_type": class_type, "inputs": inputs}

    return st.one_of(graph(), graph(), graph(), values)


webhooks = st.one_of(
    values,
    st.fixed_dictionaries(
        {"url": st.one_of(st.sampled_from((*URLS, "http://127.0.0.1:1/hook")), strings)},
        optional={
            "events": st.one_of(
                st.lists(
                    st.one_of(
                        st.sampled_from(["job.succeeded", "job.failed", "job.progress", "*"]),
                        strings,
                    ),
                    max_size=3,
                ),
                values,
            ),
            "secret": strings,
        },
    ),
)
options: dict[str, st.SearchStrategy[Any]] = {
    "id": st.one_of(
        st.from_regex(r"fz-[a-z0-9]{1,10}", fullmatch=True),
        st.sampled_from(("x\n", "a" * 128, "a" * 129, "-x", "a/b", "a\\b", "..", "x\x00")),
        strings,
        ints,
    ),
    "priority": st.one_of(ints, floats, strings, st.booleans()),
    "max_attempts": st.one_of(st.integers(-1, 12), ints, floats, strings),
    "webhook": webhooks,
    "storage": st.one_of(st.sampled_from(["default", "nope"]), strings, values),
    "convert": st.one_of(
        st.fixed_dictionaries(
            {"format": st.one_of(st.sampled_from(["webp", "jpeg", "gif"]), strings)},
            optional={"quality": st.one_of(st.integers(-1, 101), ints, floats)},
        ),
        values,
    ),
    "timeouts": st.one_of(
        st.fixed_dictionaries(
            {}, optional={"queued_s": st.one_of(floats, ints), "running_s": floats}
        ),
        values,
    ),
    "surprise": values,
}


def job_bodies(classes: dict[str, list[str]]) -> st.SearchStrategy[Any]:
    """Job request bodies: a graph and any of the options, sometimes not an object at all."""
    body = st.fixed_dictionaries({"workflow": graphs(classes)}, optional=options)
    return st.one_of(body, body, body, body, values)


header_text = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0xFF, exclude_characters="\x7f"), min_size=1
)
"""Header values HTTP allows (visible ASCII and obs-text; DEL is not one): a request with any
other byte is malformed HTTP, answered by the HTTP server before it reaches the API."""
idempotency_keys = st.one_of(
    header_text.map(lambda s: s.encode("latin-1")),
    st.sampled_from([b"k" * 255, b"k" * 256, b"a b", b"\xff\xfe", b"fz-key"]),
)
prefers = st.sampled_from(
    [
        "wait=1",
        "wait=0",
        "wait=0.5",
        "wait=" + "9" * 400,
        "wait=1e999",
        "wait=-1",
        "wait=nan",
        "respond-async",
        "WAIT=1",
        "wait=1, handling=strict",
    ]
)
content_types = st.sampled_from(
    [
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=" + "b" * 300,
        "application/json; charset=utf-16",
        "image/png",
        "garbage",
    ]
)
raw_bodies = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [
            b"",
            b"{",
            b"[]",
            b"null",
            b"NaN",
            b"1e999",
            b'{"workflow": 1e999}',
            b'{"workflow": {"1": {"class_type": "EmptyImage", "inputs": {"width": NaN}}}}',
            b'{"workflow": {}, "workflow": {}}',
            b"\xff\xfe{}",
            b'{"workflow": "\\udc80"}',
        ]
    ),
    st.builds(lambda d: ('{"workflow":' + nested(d).text + "}").encode(), st.sampled_from(DEPTHS)),
)
