"""Fuzzing `WS /v1/ws` of a live `comfyfleet serve` with hostile messages.

Properties: every message a client sends gets an answer (`error`, or `subscribed`,
`unsubscribed`, `pong`) or the server closes the socket with a close frame that says why (1003
unsupported data, 1007 invalid payload, 1008 policy, 1009 too big), never a dropped connection or
an internal error (1011); a socket of another client, subscribed to a job, keeps answering; and
`/health` answers throughout.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, seed
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.fuzz import payloads as p
from tests.fuzz.live import campaign_seed, fuzz_settings, live_server
from tests.integration.serve import Server, model_free_graph

pytestmark = pytest.mark.comfyui

SEED = campaign_seed()
REPLIES = frozenset({"error", "subscribed", "unsubscribed", "pong"})
PROPER_CLOSES = frozenset({1003, 1007, 1008, 1009})
REPLY_TIMEOUT_S = 10.0


class Socketed:
    """The live server, a finished job, and a socket of another client that follows it."""

    def __init__(self, server: Server, job_id: str, url: str, bystander: ClientConnection) -> None:
        self.server = server
        self.job_id = job_id
        self.url = url
        self.bystander = bystander
        self.bystander.send(json.dumps({"op": "subscribe", "job_id": job_id}))
        assert _reply(self.bystander)["event"] == "subscribed"

    def others_still_served(self) -> None:
        self.bystander.send('{"op": "ping"}')
        reply = _reply(self.bystander)
        assert reply["event"] == "pong", f"the other client's socket got {reply}"
        health = httpx.get(self.server.url + "/health", timeout=30, trust_env=False)
        assert health.status_code == 200, health.text


def _reply(ws: ClientConnection) -> dict[str, Any]:
    """The answer to the last command, past job events and keep-alive pings."""
    deadline = time.monotonic() + REPLY_TIMEOUT_S
    while True:
        left = deadline - time.monotonic()
        try:
            message = ws.recv(timeout=max(left, 0.01))
        except TimeoutError as exc:
            raise AssertionError(f"no answer in {REPLY_TIMEOUT_S:.0f}s") from exc
        assert isinstance(message, str), f"the server sent a binary frame: {message[:100]!r}"
        event = json.loads(message)
        assert isinstance(event, dict) and "event" in event, message[:300]
        if event["seq"] is None and event["event"] in REPLIES:
            return event


@pytest.fixture(scope="module")
def socketed(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Socketed]:
    print(f"fuzz campaign seed: {SEED} (COMFYFLEET_FUZZ_SEED)")
    with live_server(comfyui_install, tmp_path_factory.mktemp("fuzz-ws")) as server:
        job_id = server.submit(model_free_graph(3)).json()["id"]
        server.wait_all([job_id], 60)
        url = server.url.replace("http://", "ws://") + "/v1/ws"
        with connect(url, open_timeout=30, max_size=None) as bystander:
            yield Socketed(server, job_id, url, bystander)


def _closed_properly(exc: ConnectionClosed, sent: Any) -> None:
    shown = repr(sent)[:300]
    assert exc.rcvd is not None, f"connection dropped without a close frame after {shown}"
    assert exc.rcvd.code in PROPER_CLOSES, f"closed with {exc.rcvd} after {shown}"


def exchange(run: Socketed, frames: list[str | bytes]) -> None:
    """Send each frame on a fresh socket and hold every answer to the properties."""
    with connect(run.url, open_timeout=30, max_size=None, close_timeout=5) as ws:
        for frame in frames:
            try:
                ws.send(frame)
                reply = _reply(ws)
            except ConnectionClosed as exc:
                _closed_properly(exc, frame)
                return
            assert reply["event"] in REPLIES, reply
            if reply["event"] == "subscribed":
                ws.send('{"op": "ping"}')  # a follow that went wrong must not take the socket
                assert _reply(ws)["event"] == "pong"


def _commands(job_id: str) -> st.SearchStrategy[Any]:
    job_ids = st.one_of(st.just(job_id), st.just(job_id), p.node_ids, p.scalars, p.deep)
    return st.fixed_dictionaries(
        {"op": st.one_of(st.sampled_from(["subscribe", "unsubscribe", "ping"]), p.values)},
        optional={
            "job_id": job_ids,
            "after": st.one_of(p.ints, st.integers(), p.floats, p.strings, st.just(10**30)),
            "previews": st.one_of(st.booleans(), p.scalars),
        },
    )


def _frames(job_id: str) -> st.SearchStrategy[str | bytes]:
    text: st.SearchStrategy[str | bytes] = st.one_of(
        _commands(job_id).map(p.encode),
        _commands(job_id).map(p.encode),
        p.values.map(p.encode),
        st.sampled_from(
            ["", "{", "null", "NaN", "[]", '{"op": 1e999}', "x" * (1 << 20), '{"op":"\\udc80"}']
        ),
        st.builds(
            lambda d, k: p.nested(d, k).text, st.sampled_from(p.DEPTHS), st.sampled_from("[{")
        ),
        st.builds(
            lambda d: '{"op":"subscribe","job_id":' + p.nested(d).text + "}",
            st.sampled_from(p.DEPTHS),
        ),
    )
    return st.one_of(text, text, text, st.binary(max_size=64))


JOB = "fz-the-followed-job"
"""Stands for the followed job's id in generated frames (it is known only once the server runs)."""


@seed(SEED)
@fuzz_settings(ci_examples=80)
@given(frames=st.lists(_frames(JOB), min_size=1, max_size=3))
def test_no_message_breaks_the_socket_server(socketed: Socketed, frames: list[str | bytes]) -> None:
    real = [f.replace(JOB, socketed.job_id) if isinstance(f, str) else f for f in frames]
    exchange(socketed, real)
    socketed.others_still_served()


def test_a_message_over_the_size_limit_is_closed_with_1009(socketed: Socketed) -> None:
    exchange(socketed, ["x" * (17 * 1024 * 1024)])
    socketed.others_still_served()


def test_subscribing_after_a_huge_seq_is_answered(socketed: Socketed) -> None:
    for after in (2**63, 10**30):
        exchange(
            socketed, [json.dumps({"op": "subscribe", "job_id": socketed.job_id, "after": after})]
        )
    socketed.others_still_served()
