"""What every fuzz module shares: the live server, the campaign's settings, the answer checks.

Each module starts its own `comfyfleet serve` with two real CPU instances (about ten seconds),
configured so that nothing a fuzzer sends can hold the campaign up: waits are capped at a few
seconds and a job runs at most `RUNNING_TIMEOUT_S`.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, settings

from tests.comfyui_env import workspace_sharing
from tests.integration.serve import Server, serve_config

RUNNING_TIMEOUT_S = 30.0
MAX_WAIT_S = 2.0
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""What a stored job id may be (README); checked with `fullmatch`."""
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def campaign_seed() -> int:
    return int(os.environ.get("COMFYFLEET_FUZZ_SEED", "20240516"))


def fuzz_settings(ci_examples: int) -> settings:
    """Hypothesis settings for one campaign: `ci_examples` unless `COMFYFLEET_FUZZ_EXAMPLES`
    says more. No example database (CI runs are the same every time: the seed is fixed, see
    `campaign_seed`), no deadlines (two shared cores make timings noise)."""
    examples = int(os.environ.get("COMFYFLEET_FUZZ_EXAMPLES", ci_examples))
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.function_scoped_fixture,
        ],
    )


@contextlib.contextmanager
def live_server(installed: Path, folder: Path, **extra: Any) -> Iterator[Server]:
    ws = workspace_sharing(installed, folder)
    serve_config(
        ws,
        serve={"max_wait_s": MAX_WAIT_S, "running_timeout_s": RUNNING_TIMEOUT_S},
        **extra,
    )
    server = Server(ws).start()
    try:
        yield server
    finally:
        server.close()


def describe(response: httpx.Response) -> str:
    request = response.request
    body = request.content[:300] if request.content else b""
    return (
        f"{request.method} {request.url} {dict(request.headers)!r} body={body!r}... -> "
        f"{response.status_code} {response.text[:500]!r}"
    )


def check_answer(response: httpx.Response) -> Any:
    """Never a 5xx; a 4xx has the one error shape. Returns the parsed JSON, if any."""
    assert response.status_code < 500, describe(response)
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(f"error answer is not JSON: {describe(response)}") from exc
    assert isinstance(body, dict) and set(body) == {"error"}, describe(response)
    error = body["error"]
    assert isinstance(error, dict), describe(response)
    assert set(error) == {"code", "message", "details"}, describe(response)
    assert isinstance(error["code"], str) and error["code"], describe(response)
    assert isinstance(error["message"], str) and error["message"], describe(response)
    return body


def non_finite(value: Any) -> bool:
    """Whether a parsed JSON value holds NaN, an infinity, or a number too large for a double."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return True
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parsed(text: str) -> Any:
    """The body as Python reads it (NaN and 1e999 included), or None when it is not JSON."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None
