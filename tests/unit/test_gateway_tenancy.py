"""Tenancy in the gateway: keys own their jobs and assets, scopes gate the routes.

The real app (`create_app` with the key middleware, the assets and webhooks routers) in front
of an in-memory job store, called in-process. The same promises against `comfyfleet serve` with
keys made by the CLI are in tests/integration/test_serve_tenancy.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from comfyfleet.assets import AssetResolver, AssetStore
from comfyfleet.auth import ADMIN, READ, SUBMIT, KeyStore
from comfyfleet.gateway import ServeSettings, Service, create_app
from comfyfleet.gateway._assets_api import assets_router
from comfyfleet.gateway._models_api import models_router
from comfyfleet.gateway._tenancy import idempotency_secret
from comfyfleet.gateway._webhooks_api import webhooks_router
from comfyfleet.jobs import MemoryJobStore, NewJob
from comfyfleet.webhooks import MemoryOutbox

T = TypeVar("T")
GRAPH = {
    "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
    "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "t"}},
}
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


@dataclass
class Gateway:
    service: Service
    assets: AssetStore
    tokens: dict[str, str]

    def call(self, who: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def never(name: str) -> str:
            raise AssertionError("a refused install must not start")

        library: Any = object()  # a refused request never reaches the library
        routers = (
            assets_router(self.assets),
            webhooks_router(MemoryOutbox()),
            models_router(library, never),
        )
        app = create_app(
            self.service,
            routers=routers,
            keys=KeyStore(self.service.output_dir.parent / "keys.json"),
        )
        headers = {"Authorization": f"Bearer {self.tokens[who]}", **kwargs.pop("headers", {})}

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                return await client.request(method, url, headers=headers, **kwargs)

        return run(go())

    def submit(self, who: str, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        return self.call(who, "POST", "/v1/jobs", json=body or {"workflow": GRAPH}, **kwargs)


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    keys = KeyStore(tmp_path / "keys.json")
    scopes = {
        "a": {SUBMIT, READ},
        "b": {SUBMIT, READ},
        "admin": {ADMIN},
        "reader": {READ},
        "submitter": {SUBMIT},
    }
    tokens = {who: keys.create(who, scopes=frozenset(s)).token for who, s in scopes.items()}
    assets = AssetStore(tmp_path / "input")
    service = Service(
        store=MemoryJobStore(),
        output_dir=tmp_path / "out",
        settings=ServeSettings(),
        media=AssetResolver(assets),
    )
    return Gateway(service, assets, tokens)


def error(answer: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = answer.json()["error"]
    return body


# --- jobs -----------------------------------------------------------------------------------------


def test_another_keys_job_answers_exactly_as_a_missing_one(gw: Gateway) -> None:
    job_id = gw.submit("a").json()["id"]
    (gw.service.output_dir / job_id).mkdir(parents=True)
    (gw.service.output_dir / job_id / "t.png").write_bytes(PNG)
    for method, path in [
        ("GET", "/v1/jobs/{}"),
        ("POST", "/v1/jobs/{}/cancel"),
        ("GET", "/v1/jobs/{}/events"),
        ("GET", "/v1/outputs/{}/t.png"),
    ]:
        theirs = gw.call("b", method, path.format(job_id))
        missing = gw.call("b", method, path.format("no-such-job"))
        assert theirs.status_code == missing.status_code == 404, path
        assert theirs.text == missing.text.replace("no-such-job", job_id), path
    assert gw.call("a", "GET", f"/v1/outputs/{job_id}/t.png").content == PNG
    assert gw.call("a", "GET", f"/v1/jobs/{job_id}").json()["status"] == "queued"


def test_each_key_lists_its_own_jobs_and_admin_lists_all(gw: Gateway) -> None:
    mine = [gw.submit("a").json()["id"] for _ in range(2)]
    theirs = gw.submit("b").json()["id"]
    run(gw.service.store.enqueue(NewJob(id="from-before-keys", workflow=GRAPH)))

    def listed(who: str) -> list[str]:
        return [j["id"] for j in gw.call(who, "GET", "/v1/jobs").json()["jobs"]]

    assert listed("a") == mine[::-1]
    assert listed("b") == [theirs]
    assert listed("admin") == ["from-before-keys", theirs, *mine[::-1]]
    assert gw.call("admin", "POST", f"/v1/jobs/{theirs}/cancel").json()["status"] == "cancelled"


def test_a_missing_scope_is_403_naming_it(gw: Gateway) -> None:
    job_id = gw.submit("a").json()["id"]
    for who, method, url, needed in [
        ("reader", "POST", "/v1/jobs", SUBMIT),
        ("reader", "POST", "/v1/jobs:validate", SUBMIT),
        ("reader", "POST", f"/v1/jobs/{job_id}/cancel", SUBMIT),
        ("reader", "POST", "/v1/assets", SUBMIT),
        ("submitter", "GET", f"/v1/jobs/{job_id}", READ),
        ("submitter", "GET", "/v1/jobs", READ),
        ("a", "GET", "/v1/webhooks/deliveries", ADMIN),
        ("a", "POST", "/v1/webhooks/deliveries/d1/redeliver", ADMIN),
        ("a", "POST", "/v1/presets/sd15/install", ADMIN),
        ("a", "DELETE", "/v1/models/checkpoints/x.safetensors", ADMIN),
    ]:
        answer = gw.call(who, method, url, json={"workflow": GRAPH})
        assert answer.status_code == 403, (who, url, answer.text)
        assert error(answer)["code"] == "forbidden"
        assert error(answer)["details"]["needs"] == needed
    assert gw.call("admin", "GET", "/v1/webhooks/deliveries").status_code == 200
    assert gw.submit("submitter").status_code == 202


def test_idempotency_keys_are_per_key_and_not_computable(gw: Gateway) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = gw.submit("a", headers=headers)
    other = gw.submit("b", headers=headers)
    replay = gw.submit("a", headers=headers)
    assert (first.status_code, other.status_code, replay.status_code) == (202, 202, 202)
    assert other.json()["id"] != first.json()["id"]
    assert replay.json()["id"] == first.json()["id"]
    assert replay.headers["idempotent-replayed"] == "true"
    records = KeyStore(gw.service.output_dir.parent / "keys.json").records()
    a_id = next(r.id for r in records if r.name == "a")
    plain = "idem-" + hashlib.sha256(f"{a_id}\0order-42".encode()).hexdigest()[:40]
    assert first.json()["id"] != plain  # the old, computable derivation


def test_a_client_id_of_another_key_is_a_conflict_that_tells_nothing(gw: Gateway) -> None:
    body = {"workflow": GRAPH, "id": "order-7"}
    assert gw.submit("a", body).status_code == 202
    taken = gw.submit("b", body)
    changed = gw.submit("a", {"workflow": GRAPH, "id": "order-7", "priority": 5})
    assert taken.status_code == changed.status_code == 409
    assert taken.json() == changed.json()  # the same answer as a different body from the owner
    assert gw.submit("a", body).headers.get("idempotent-replayed") is None  # still A's retry
    assert gw.call("a", "GET", "/v1/jobs/order-7").status_code == 200


def test_the_idempotency_secret_is_made_once_and_kept_private(tmp_path: Path) -> None:
    secret = idempotency_secret(tmp_path / "state")
    assert len(secret) == 32
    assert idempotency_secret(tmp_path / "state") == secret
    assert (tmp_path / "state" / "idempotency_secret").stat().st_mode & 0o777 == 0o600


# --- assets ---------------------------------------------------------------------------------------


def upload(gw: Gateway, who: str, name: str) -> httpx.Response:
    return gw.call(
        who, "POST", "/v1/assets", params={"filename": name}, content=PNG,
        headers={"Content-Type": "image/png"},
    )  # fmt: skip


def test_assets_are_their_uploaders_own(gw: Gateway) -> None:
    first = upload(gw, "a", "secret-plan.png")
    assert first.status_code == 201
    asset_id = first.json()["id"]
    missing = gw.call("b", "GET", f"/v1/assets/{'0' * 64}")
    for url in (f"/v1/assets/{asset_id}", f"/v1/assets/{asset_id}/content"):
        theirs = gw.call("b", "GET", url)
        assert theirs.status_code == 404 and error(theirs)["code"] == "asset_not_found"
    assert gw.call("b", "DELETE", f"/v1/assets/{asset_id}").status_code == 404
    assert error(missing)["code"] == "asset_not_found"
    graph = GRAPH | {"3": {"class_type": "LoadImage", "inputs": {"image": f"asset:{asset_id}"}}}
    refused = gw.submit("b", {"workflow": graph})
    assert refused.status_code == 422 and error(refused)["code"] == "asset_not_found"
    assert gw.submit("a", {"workflow": graph}).status_code == 202
    assert gw.submit("admin", {"workflow": graph}).status_code == 202


def test_the_same_bytes_from_another_key_are_new_to_it_and_survive_the_first_delete(
    gw: Gateway,
) -> None:
    asset_id = upload(gw, "a", "a.png").json()["id"]
    second = upload(gw, "b", "b.png")
    assert second.status_code == 201  # no hint that someone else has this file
    assert second.json()["filename"] == "b.png"
    assert upload(gw, "b", "again.png").status_code == 200
    assert gw.call("a", "DELETE", f"/v1/assets/{asset_id}").status_code == 204
    assert gw.call("a", "GET", f"/v1/assets/{asset_id}").status_code == 404
    assert gw.call("b", "GET", f"/v1/assets/{asset_id}/content").content == PNG
    assert gw.call("admin", "DELETE", f"/v1/assets/{asset_id}").status_code == 204
    assert gw.call("b", "GET", f"/v1/assets/{asset_id}").status_code == 404
