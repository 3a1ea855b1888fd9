"""Fuzzing the job API of a live `comfyfleet serve` with hostile requests.

The campaign generates graphs over the instances' real node classes and junk, job options,
headers and raw bodies (see `payloads`), and holds the gateway to four properties:

- never a 5xx, and never a dropped connection;
- every 4xx has the error shape `{"error": {"code", "message", "details"}}`;
- a 4xx stores nothing: the job list does not grow, an id the client chose is not found;
- what is accepted is a job the API can read back, with an id of the documented form, and no
  number in it that JSON cannot carry (NaN, infinities, 1e999).

The tests after it check what the campaign must not have broken: every fuzzed job ends, and a
normal job still completes within seconds on every instance. The attacks of issue 16 are run
first, one test each, so that a regression names its attack.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import given, seed
from hypothesis import strategies as st

from tests.fuzz import payloads as p
from tests.fuzz.live import (
    JOB_ID,
    RUNNING_TIMEOUT_S,
    TERMINAL,
    campaign_seed,
    check_answer,
    describe,
    fuzz_settings,
    live_server,
    non_finite,
    parsed,
)
from tests.integration.serve import Server, model_free_graph

pytestmark = pytest.mark.comfyui

SEED = campaign_seed()


class Campaign:
    """The live server and what the campaign learnt about it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        # A new connection per request: after a bad answer the server may close its end, and a
        # reused connection would blame the next request for it.
        self.http = httpx.Client(
            base_url=server.url,
            timeout=60,
            trust_env=False,
            limits=httpx.Limits(max_keepalive_connections=0),
        )
        self.accepted: set[str] = set()
        self.classes = self._classes()

    def _classes(self) -> dict[str, list[str]]:
        info = httpx.get(f"http://127.0.0.1:{self.server.base_port}/object_info", timeout=60)
        classes: dict[str, list[str]] = {}
        for name, spec in info.json().items():
            if name.startswith("Fleet"):
                continue  # the test nodes sleep, fail and crash on purpose
            inputs = spec.get("input", {})
            classes[name] = [*inputs.get("required", {}), *inputs.get("optional", {})]
        return classes

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise AssertionError(f"{method} {url}: no answer ({exc!r})") from exc

    def newest(self) -> str | None:
        answer = self.request("GET", "/v1/jobs", params={"limit": 1})
        assert answer.status_code == 200, f"the job list is broken: {describe(answer)}"
        jobs = answer.json()["jobs"]
        return jobs[0]["id"] if jobs else None

    def exists(self, job_id: str) -> bool | None:
        """Whether a job is stored; None where the id cannot be put in a URL."""
        if job_id in ("", ".", "..") or "/" in job_id:
            return None
        try:
            path = "/v1/jobs/" + quote(job_id, safe="")
        except UnicodeEncodeError:
            return None
        answer = self.request("GET", path)
        check_answer(answer)
        return answer.status_code == 200

    def healthy(self) -> None:
        answer = self.request("GET", "/health")
        assert answer.status_code == 200, describe(answer)


@pytest.fixture(scope="module")
def campaign(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Campaign]:
    print(f"fuzz campaign seed: {SEED} (COMFYFLEET_FUZZ_SEED)")
    with live_server(comfyui_install, tmp_path_factory.mktemp("fuzz-api")) as server:
        run = Campaign(server)
        yield run
        run.http.close()


def _idempotent_id(key: bytes) -> str:
    text = key.decode("latin-1")
    return "idem-" + hashlib.sha256(f"anonymous\0{text}".encode()).hexdigest()[:40]


def submit_and_check(
    run: Campaign,
    content: bytes,
    *,
    path: str = "/v1/jobs",
    headers: dict[str, Any] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """POST a body and hold the answer to the campaign's properties."""
    headers = dict(headers or {})
    before = run.newest()
    answer = run.request("POST", path, content=content, headers=headers, params=params)
    check_answer(answer)
    body = parsed(content.decode("utf-8", "replace"))
    chosen = body.get("id") if isinstance(body, dict) else None
    key = headers.get("Idempotency-Key")
    if answer.status_code >= 400 or path.endswith(":validate"):
        assert run.newest() == before, f"a refused request stored a job: {describe(answer)}"
        ids = [chosen] if isinstance(chosen, str) else []
        ids += [_idempotent_id(key)] if isinstance(key, bytes) else []
        for job_id in ids:
            if job_id not in run.accepted:
                found = run.exists(job_id)
                assert not found, f"refused job {job_id!r} was stored: {describe(answer)}"
    if answer.status_code < 400:
        assert not non_finite(body), f"accepted a number JSON cannot carry: {describe(answer)}"
    if answer.status_code < 400 and not path.endswith(":validate"):
        job_id = answer.json()["id"]
        assert JOB_ID.fullmatch(job_id), f"stored job id {job_id!r}: {describe(answer)}"
        assert run.exists(job_id), f"accepted job {job_id!r} cannot be read back"
        run.accepted.add(job_id)
    run.healthy()
    return answer


# --- the attacks of issue 16, one test each ----------------------------------------------------


def _graph(inputs: dict[str, Any]) -> dict[str, Any]:
    image = {"width": 8, "height": 8, "batch_size": 1, "color": 0} | inputs
    return {
        "1": {"class_type": "EmptyImage", "inputs": image},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "f"}},
    }


def _loader(class_type: str, name: str, value: str) -> dict[str, Any]:
    return {"workflow": {"1": {"class_type": class_type, "inputs": {name: value}}}}


def _with(raw_workflow: str, **fields: str) -> bytes:
    extra = "".join(f',"{k}":{v}' for k, v in fields.items())
    return ('{"workflow":' + raw_workflow + extra + "}").encode()


_PLAIN = json.dumps(_graph({}))
ATTACKS: dict[str, bytes] = {
    "nan-input": _with(_PLAIN.replace('"color": 0', '"color": NaN')),
    "infinity-input": _with(_PLAIN.replace('"color": 0', '"color": Infinity')),
    "1e999-input": _with(_PLAIN.replace('"color": 0', '"color": 1e999')),
    "lone-surrogate-input": _with(_PLAIN.replace('"f"', '"\\udc80x"')),
    "model-name-over-4096-bytes": json.dumps(
        _loader("CheckpointLoaderSimple", "ckpt_name", "m" * 5000 + ".safetensors")
    ).encode(),
    "load-latent-climbs-out": json.dumps(
        _loader("LoadLatent", "latent", "../../../../etc/passwd")
    ).encode(),
    "load-latent-absolute": json.dumps(_loader("LoadLatent", "latent", "/etc/passwd")).encode(),
    "webhook-event-lone-surrogate": _with(
        _PLAIN, webhook='{"url":"http://10.0.0.1/hook","events":["\\ud800"]}'
    ),
    "running-timeout-nan": _with(_PLAIN, timeouts='{"running_s":NaN}'),
    "running-timeout-1e999": _with(_PLAIN, timeouts='{"running_s":1e999}'),
    "nesting-990-deep": _with("[" * 990 + "]" * 990),
    "nesting-100000-deep": _with('{"a":' * 100_000 + "1" + "}" * 100_000),
    "priority-2**63": _with(_PLAIN, priority=str(2**63)),
    "priority-minus-2**63-minus-1": _with(_PLAIN, priority=str(-(2**63) - 1)),
    "id-with-newline": _with(_PLAIN, id='"x\\n"'),
    "model-url-unclosed-ipv6": json.dumps(
        _loader("CheckpointLoaderSimple", "ckpt_name", "http://[::1/m.safetensors")
    ).encode(),
    "model-url-port-99999": json.dumps(
        _loader("CheckpointLoaderSimple", "ckpt_name", "http://127.0.0.1:99999/m.safetensors")
    ).encode(),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_a_known_attack_is_refused_and_stores_nothing(campaign: Campaign, name: str) -> None:
    answer = submit_and_check(campaign, ATTACKS[name])
    assert 400 <= answer.status_code < 500, describe(answer)


def test_a_body_of_two_million_keys_is_refused_quickly(campaign: Campaign) -> None:
    keys = (f'"{i:x}":0' for i in range(2_000_000))
    content = ('{"workflow":{"1":{"class_type":"EmptyImage","inputs":{' + ",".join(keys)).encode()
    content += b"}}}}"
    latency = _health_latency_during(campaign, lambda: submit_and_check(campaign, content))
    assert latency < 10, f"/health took {latency:.1f}s while the body was read"


def test_a_graph_of_100k_nodes_is_refused_or_ends(campaign: Campaign) -> None:
    node = {"class_type": "PrimitiveInt", "inputs": {"value": 1}}
    content = json.dumps({"workflow": {str(i): node for i in range(100_000)}}).encode()
    answer = submit_and_check(campaign, content)
    if answer.status_code < 400:
        _wait_terminal(campaign, [answer.json()["id"]], RUNNING_TIMEOUT_S + 30)


def _health_latency_during(run: Campaign, work: Any) -> float:
    """The slowest /health answer while `work` runs in another thread (raises what it raises)."""
    failure: list[BaseException] = []

    def target() -> None:
        try:
            work()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    worst = 0.0
    while thread.is_alive():
        started = time.monotonic()
        run.healthy()
        worst = max(worst, time.monotonic() - started)
        time.sleep(0.05)
    thread.join()
    if failure:
        raise failure[0]
    return worst


# --- the campaign ----------------------------------------------------------------------------

_headers = st.fixed_dictionaries(
    {},
    optional={
        "Idempotency-Key": p.idempotency_keys,
        "Prefer": p.prefers,
        "Content-Type": p.content_types,
    },
)
_params = st.fixed_dictionaries(
    {},
    optional={
        "wait": st.sampled_from(["true", "false", "1", "x"]),
        "inline": st.sampled_from(["true", "0", "x"]),
    },
)


@seed(SEED)
@fuzz_settings(ci_examples=150)
@given(data=st.data())
def test_no_submission_breaks_the_gateway(campaign: Campaign, data: st.DataObject) -> None:
    body = data.draw(p.job_bodies(campaign.classes), "body")
    raw = data.draw(st.one_of(st.none(), st.none(), st.none(), p.raw_bodies), "raw body")
    content = raw if raw is not None else p.encode(body).encode()
    path = data.draw(st.sampled_from(["/v1/jobs", "/v1/jobs", "/v1/jobs:validate"]), "path")
    headers = data.draw(_headers, "headers")
    params = data.draw(_params, "params")
    submit_and_check(campaign, content, path=path, headers=headers, params=params)


_after = st.one_of(p.ints, st.integers(), st.sampled_from(["-1", "1e3", "x", "", " 5"]))
_event_ids = st.one_of(
    p.header_text.map(lambda s: s.encode("latin-1")),
    st.sampled_from([str(2**63), str(10**30), "-1", "7 7", "5:0", "0x10", "9" * 400]).map(
        str.encode
    ),
)


@pytest.fixture(scope="module")
def ended_job(campaign: Campaign) -> str:
    """A job that ended (cancelled while queued, or run), for resuming its event stream."""
    answer = campaign.server.submit(model_free_graph(int(time.time())))
    job_id: str = answer.json()["id"]
    campaign.request("POST", f"/v1/jobs/{job_id}/cancel")
    _wait_terminal(campaign, [job_id], 30)
    return job_id


@seed(SEED)
@fuzz_settings(ci_examples=40)
@given(
    after=st.one_of(st.none(), _after),
    last_event_id=st.one_of(st.none(), _event_ids),
    which=st.sampled_from(["ended", "missing"]),
)
def test_no_event_stream_resume_breaks_the_gateway(
    campaign: Campaign, ended_job: str, after: Any, last_event_id: bytes | None, which: str
) -> None:
    job_id = ended_job if which == "ended" else "fz-missing"
    params = {} if after is None else {"after": str(after)}
    headers = {} if last_event_id is None else {"Last-Event-ID": last_event_id}
    try:
        with campaign.http.stream(
            "GET", f"/v1/jobs/{job_id}/events", params=params, headers=headers, timeout=10
        ) as answer:
            if answer.status_code >= 400:
                answer.read()
                check_answer(answer)
            # A resume of a finished job streams or says 204; an unknown job is a 404. A resume
            # point the API cannot read is refused first: 422 as `?after=`, 400 as the header.
            found = {"ended": {200, 204}, "missing": {404}}[which]
            assert answer.status_code in found | {400, 422}, describe(answer)
    except httpx.TransportError as exc:
        raise AssertionError(f"events of {job_id} {params} {headers}: no answer ({exc!r})") from exc
    campaign.healthy()


_boundaries = st.one_of(
    st.sampled_from(["x", "b" * 70, "b" * 257, "b" * 5000, '"quoted"', "", "a;b"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=80),
)


@st.composite
def _uploads(draw: st.DrawFn) -> tuple[str, bytes]:
    boundary = draw(_boundaries)
    kind = draw(st.sampled_from(["multipart", "raw", "odd"]))
    if kind == "multipart":
        name = draw(st.sampled_from(["file", "other", ""]))
        filename = draw(st.sampled_from(["a.png", "../../x", "", "a\\b"]))
        head = f"--{boundary}\r\nContent-Disposition: form-data; "
        head += f'name="{name}"; filename="{filename}"\r\n\r\n'
        part = head.encode() + draw(st.binary(max_size=64))
        tail = draw(st.sampled_from([f"\r\n--{boundary}--\r\n".encode(), b"", b"\r\n--"]))
        return f"multipart/form-data; boundary={boundary}", part + tail
    if kind == "raw":
        media = draw(st.sampled_from(["image/png", "application/octet-stream", "audio/x"]))
        return media, draw(st.binary(max_size=64))
    media = draw(st.sampled_from(["text/plain", "application/json", "multipart/form-data", "x"]))
    return media, draw(st.binary(max_size=64))


@seed(SEED)
@fuzz_settings(ci_examples=60)
@given(upload=_uploads())
def test_no_upload_breaks_the_gateway(campaign: Campaign, upload: tuple[str, bytes]) -> None:
    media, content = upload
    answer = campaign.request(
        "POST", "/v1/assets", content=content, headers={"Content-Type": media}
    )
    check_answer(answer)
    if answer.status_code < 400:
        asset = campaign.request("GET", f"/v1/assets/{answer.json()['id']}")
        assert asset.status_code == 200, describe(asset)
    campaign.healthy()


# --- after the campaign ------------------------------------------------------------------------


def _wait_terminal(run: Campaign, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = [run.request("GET", f"/v1/jobs/{quote(i, safe='')}").json() for i in ids]
        pending = [j for j in jobs if j.get("status") not in TERMINAL]
        if not pending:
            return jobs
        if time.monotonic() > deadline:
            shown = [(j.get("id"), j.get("status"), j.get("instance")) for j in pending[:10]]
            raise AssertionError(f"{len(pending)} jobs not ended in {timeout:.0f}s: {shown}")
        time.sleep(0.5)


def test_every_fuzzed_job_ends(campaign: Campaign) -> None:
    _wait_terminal(campaign, sorted(campaign.accepted), RUNNING_TIMEOUT_S + 30)


def test_a_normal_job_completes_within_5s_on_every_instance(campaign: Campaign) -> None:
    seen: dict[str, float] = {}
    for round_ in range(6):
        started = time.monotonic()
        ids = [
            campaign.server.submit(model_free_graph(round_ * 10 + i, prefix="after")).json()["id"]
            for i in range(2)
        ]
        jobs = _wait_terminal(campaign, ids, 5)
        took = time.monotonic() - started
        for job in jobs:
            assert job["status"] == "succeeded", job
            seen[job["instance"]] = took
        if len(seen) == campaign.server.instances:
            return
    raise AssertionError(f"normal jobs ran only on instances {sorted(seen)}")


def test_outputs_stay_in_their_jobs_folders(campaign: Campaign) -> None:
    """A `filename_prefix` fed through a link (or written with backslashes) still writes under
    the job's own folder, never into another job's."""
    victim = campaign.server.submit(model_free_graph(7, prefix="victim")).json()["id"]
    _wait_terminal(campaign, [victim], 30)
    output = campaign.server.ws / "output"
    before = {f for f in (output / victim).rglob("*") if f.is_file()}
    attacks = {
        "4": {"class_type": "PrimitiveString", "inputs": {"value": f"{victim}/pwned"}},
        "3": {
            "class_type": "SaveImage",
            "inputs": {"images": ["2", 0], "filename_prefix": ["4", 0]},
        },
    }
    linked = model_free_graph(8) | attacks
    backslashed = model_free_graph(9, prefix=f"..\\{victim}\\pwned")
    ids = []
    for graph in (linked, backslashed):
        answer = submit_and_check(campaign, json.dumps({"workflow": graph}).encode())
        if answer.status_code < 400:
            ids.append(answer.json()["id"])
    for job in _wait_terminal(campaign, ids, 30):
        for item in job["outputs"]:
            url = item.get("url", "")
            assert url.startswith(f"/v1/outputs/{job['id']}/"), (job["id"], item)
    after = {f for f in (output / victim).rglob("*") if f.is_file()}
    assert after == before, f"files written into job {victim}'s folder: {sorted(after - before)}"
