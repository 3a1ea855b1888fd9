"""The bound on open event streams: in all and per API key, on the native SSE route and on
Comfy API v2's, refused with 429 `too_many_streams` before anything is held, and given back
when a stream ends."""

from __future__ import annotations

from pathlib import Path

import pytest

from comfyfleet.auth import READ, SUBMIT, KeyStore
from comfyfleet.gateway import ApiError
from comfyfleet.gateway._stream_slots import StreamSlots
from tests.unit.v2_gateway import GRAPH, Gateway


def test_slots_bound_the_total_and_each_key_and_come_back_once() -> None:
    slots = StreamSlots(total=3, per_key=2)
    a1, a2 = slots.take("a"), slots.take("a")
    with pytest.raises(ApiError) as per_key:
        slots.take("a")
    assert (per_key.value.status, per_key.value.code) == (429, "too_many_streams")
    assert per_key.value.headers == {"Retry-After": "5"}
    b1 = slots.take("b")
    with pytest.raises(ApiError) as total:
        slots.take("c")
    assert "3 event streams" in total.value.message
    a1.release()
    a1.release()  # a second release gives nothing back twice
    assert slots.open == 2
    slots.take("c")
    b1.release()
    a2.release()
    assert slots.open == 1


def test_without_keys_every_stream_counts_against_the_total_only() -> None:
    slots = StreamSlots(total=2, per_key=1)
    slots.take(None)
    slots.take(None)
    with pytest.raises(ApiError):
        slots.take(None)


def _finished_job(gw: Gateway) -> str:
    job_id: str = gw.call("POST", "/api/v2/jobs", json={"workflow": GRAPH}).json()["id"]
    gw.finish(job_id, [{"node_id": "5", "kind": "text", "text": "hi"}])
    return job_id


@pytest.mark.parametrize("route", ["/api/v2/jobs/{id}/events", "/v1/jobs/{id}/events"])
def test_a_stream_past_the_bound_is_429_and_a_finished_stream_gives_its_slot_back(
    tmp_path: Path, route: str
) -> None:
    gw = Gateway(tmp_path, max_event_streams=1)
    job_id = _finished_job(gw)
    url = route.format(id=job_id)
    held = gw.service.streams.take(None)  # another client's open stream
    refused = gw.call("GET", url)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_streams"
    assert refused.headers["retry-after"] == "5"
    held.release()
    served = gw.call("GET", url)
    assert served.status_code == 200
    assert served.headers["content-type"].startswith("text/event-stream")
    assert gw.service.streams.open == 0


def test_one_keys_streams_do_not_use_up_anothers(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    alice = keys.create("alice", scopes=frozenset({SUBMIT, READ}))
    bob = keys.create("bob", scopes=frozenset({SUBMIT, READ}))
    gw = Gateway(tmp_path, keys=keys, max_event_streams_per_key=1)
    ids = {}
    for issued in (alice, bob):
        auth = {"Authorization": f"Bearer {issued.token}"}
        answer = gw.call("POST", "/api/v2/jobs", json={"workflow": GRAPH}, headers=auth)
        ids[issued.token] = answer.json()["id"]
        gw.finish(ids[issued.token], [{"node_id": "5", "kind": "text", "text": "hi"}])
    gw.service.streams.take(alice.record.id)  # alice already holds her one stream
    as_alice = {"Authorization": f"Bearer {alice.token}"}
    refused = gw.call("GET", f"/api/v2/jobs/{ids[alice.token]}/events", headers=as_alice)
    assert (refused.status_code, refused.json()["error"]["code"]) == (429, "too_many_streams")
    as_bob = {"Authorization": f"Bearer {bob.token}"}
    served = gw.call("GET", f"/api/v2/jobs/{ids[bob.token]}/events", headers=as_bob)
    assert served.status_code == 200
