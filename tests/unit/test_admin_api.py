"""The admin routes the dashboard's Settings and Jobs pages act through: `/v1/keys` (create once,
list, revoke), `/v1/config` (secrets masked), `POST /v1/jobs/{id}/retry`,
`GET /v1/jobs/{id}/workflow` and `POST /v1/models/install`."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from comfyfleet.auth import AuthSettings, KeyStore
from comfyfleet.config import Settings, redacted_settings
from comfyfleet.gateway import Service, config_router, create_app, keys_router
from comfyfleet.gateway._models_api import models_router
from comfyfleet.jobs import JobOptions, JobStatus, NewJob
from comfyfleet.models import ModelFolders, ModelLibrary, ModelSettings
from comfyfleet.netguard import NetPolicy
from comfyfleet.storage import StorageSettings
from tests.unit.test_gateway_api import GRAPH, make_service

ADMIN_TOKEN = "x" * 40


def _run(app: Any, calls: Any) -> Any:
    async def main() -> Any:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await calls(client)

    return asyncio.run(main())


def _keys_app(tmp_path: Path) -> tuple[Any, KeyStore]:
    keys = KeyStore(tmp_path / "state" / "api_keys.json", static_key=ADMIN_TOKEN)
    service = make_service(tmp_path)
    app = create_app(service, routers=(keys_router(keys, enabled=True),), keys=keys)
    return app, keys


def test_a_key_is_shown_once_listed_without_its_text_and_revoked(tmp_path: Path) -> None:
    app, _ = _keys_app(tmp_path)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def calls(client: httpx.AsyncClient) -> None:
        made = await client.post(
            "/v1/keys", json={"name": "ci-pipeline", "scopes": ["submit", "read"]}, headers=admin
        )
        assert made.status_code == 201, made.text
        assert made.headers["cache-control"] == "no-store"
        created = made.json()
        token = created.pop("key")
        assert token.startswith(f"cf_{created['id']}_")
        assert created["status"] == "active" and created["scopes"] == ["submit", "read"]
        mine = {"Authorization": f"Bearer {token}"}
        assert (await client.get("/v1/jobs", headers=mine)).status_code == 200
        listed = (await client.get("/v1/keys", headers=admin)).json()
        assert (listed["enabled"], listed["static_key"]) == (True, True)
        assert [k["name"] for k in listed["keys"]] == ["ci-pipeline"]
        assert token not in json.dumps(listed) and "sha256" not in listed["keys"][0]
        revoked = await client.post(f"/v1/keys/{created['id']}/revoke", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
        refused = await client.get("/v1/jobs", headers=mine)
        assert refused.status_code == 401  # from the next request on
        assert (await client.post("/v1/keys", json={}, headers=mine)).status_code == 401

    _run(app, calls)


def test_bad_key_requests_are_refused_naming_the_problem(tmp_path: Path) -> None:
    app, _ = _keys_app(tmp_path)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def calls(client: httpx.AsyncClient) -> list[tuple[int, str, str]]:
        found = []
        for method, url, body in (
            ("POST", "/v1/keys", {"name": "tab\there"}),
            ("POST", "/v1/keys", {"name": "x", "scopes": ["root"]}),
            ("POST", "/v1/keys", {"name": "x", "expires_in_s": 0}),
            ("POST", "/v1/keys/nosuchid/revoke", None),
            ("POST", "/v1/keys/static/revoke", None),
        ):
            answer = await client.request(method, url, json=body, headers=admin)
            error = answer.json()["error"]
            found.append((answer.status_code, error["code"], error["message"]))
        text = await client.post("/v1/keys", content=b"name=x", headers=admin)
        found.append((text.status_code, text.json()["error"]["code"], ""))
        return found

    found = _run(app, calls)
    assert found[0][:2] == (422, "invalid_key_request")
    assert "printable" in found[0][2]
    assert found[1] == (422, "invalid_key_request", "unknown scope 'root'")
    assert found[2][:2] == (422, "invalid_request") and found[2][2].startswith("expires_in_s:")
    assert found[3] == (404, "key_not_found", "no API key 'nosuchid'")  # no server path in it
    assert found[4][:2] == (409, "static_key")
    assert found[5] == (415, "unsupported_media_type", "")


def test_the_settings_are_shown_with_every_secret_masked() -> None:
    settings = Settings(
        serve={"store": "postgresql://fleet:hunter2@db.internal:5432/fleet"},  # type: ignore[arg-type]
        auth=AuthSettings(enabled=True, api_key=SecretStr("s" * 40)),
        storage=StorageSettings(
            url="s3://bucket/out",
            secret_access_key=SecretStr("aws-secret"),
            access_key_id="AKIAEXAMPLE",
            http_headers={"X-Api-Key": SecretStr("hdr-secret")},
        ),
        fleet={"env": {"HF_TOKEN": "hf_abcdef", "CUDA_MODULE_LOADING": "LAZY"}},  # type: ignore[arg-type]
        webhooks={"secret": "whsec_" + "a" * 32},  # type: ignore[arg-type]
        assets={"allowed_hosts": ["https://cdn.example/x?sig=abc&v=1"]},  # type: ignore[arg-type]
        install={"pip_args": ["--extra-index-url=https://tok3n@pypi.example/simple"]},  # type: ignore[arg-type]
    )
    shown = redacted_settings(settings)
    text = json.dumps(shown)
    secrets = ("hunter2", "s" * 40, "aws-secret", "hdr-secret", "hf_abcdef", "whsec_", "abc&")
    for secret in (*secrets, "tok3n"):
        assert secret not in text
    assert shown["install"]["pip_args"] == ["--extra-index-url=https://***@pypi.example/simple"]
    assert shown["assets"]["allowed_hosts"] == ["https://cdn.example/x?sig=***&v=1"]
    assert shown["serve"]["store"] == "postgresql://fleet:***@db.internal:5432/fleet"
    assert shown["fleet"]["env"] == {"HF_TOKEN": "***", "CUDA_MODULE_LOADING": "LAZY"}
    assert shown["storage"]["secret_access_key"] == "***"
    assert shown["storage"]["url"] == "s3://bucket/out"
    assert shown["auth"]["enabled"] is True and shown["workspace"] == "comfyfleet-workspace"


def test_config_is_served_to_admins(tmp_path: Path) -> None:
    keys = KeyStore(tmp_path / "keys.json", static_key=ADMIN_TOKEN)
    reader = keys.create("reader").token
    view = {"workspace": "/srv/comfy"}
    app = create_app(
        make_service(tmp_path), routers=(config_router(lambda: view, role="gateway"),), keys=keys
    )

    async def calls(client: httpx.AsyncClient) -> tuple[Any, int]:
        admin = await client.get("/v1/config", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        other = await client.get("/v1/config", headers={"Authorization": f"Bearer {reader}"})
        return admin.json(), other.status_code

    body, refused = _run(app, calls)
    assert body["role"] == "gateway" and body["settings"] == view and refused == 403


def _finished(service: Service, job_id: str, status: JobStatus) -> None:
    async def finish() -> None:
        store = service.store
        await store.enqueue(
            NewJob(
                id=job_id, workflow=GRAPH, priority=3, options=JobOptions(template={"name": "t"})
            )
        )
        if status is JobStatus.QUEUED:
            return
        await store.claim("w", lease_s=30)
        await store.fail(job_id, "w", {"code": "boom", "message": "x"}, retryable=False)

    asyncio.run(finish())


def test_a_finished_job_is_retried_as_a_new_job_and_its_graph_downloads(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    _finished(service, "old", JobStatus.FAILED)
    _finished(service, "waiting", JobStatus.QUEUED)

    async def calls(client: httpx.AsyncClient) -> None:
        answer = await client.post("/v1/jobs/old/retry")
        assert answer.status_code == 202, answer.text
        new = answer.json()
        assert new["id"] != "old" and new["status"] == "queued" and new["priority"] == 3
        assert new["options"] == {"template": {"name": "t"}, "retry_of": "old"}
        busy = await client.post("/v1/jobs/waiting/retry")
        assert busy.status_code == 409 and busy.json()["error"]["code"] == "job_not_finished"
        assert (await client.post("/v1/jobs/nope/retry")).status_code == 404
        graph = await client.get("/v1/jobs/old/workflow")
        assert graph.status_code == 200 and graph.json() == GRAPH
        disposition = graph.headers["content-disposition"]
        assert disposition == 'attachment; filename="old.json"'

    _run(create_app(service), calls)


def test_a_model_url_install_is_a_job_held_to_the_network_policy(tmp_path: Path) -> None:
    library = ModelLibrary(ModelFolders(tmp_path / "models"), ModelSettings(manifests=[]))
    started: list[dict[str, Any]] = []

    async def start_model(spec: dict[str, Any]) -> str:
        started.append(spec)
        return "install-1"

    async def preset(name: str) -> str:
        return "unused"

    def app(policy: NetPolicy) -> Any:
        router = models_router(library, preset, start_model_install=start_model, net_policy=policy)
        return create_app(make_service(tmp_path), routers=(router,))

    async def calls(client: httpx.AsyncClient) -> list[tuple[int, str]]:
        found = []
        for body in (
            {"source": "http://127.0.0.1:9/x.safetensors", "type": "loras"},
            {"source": "file:///etc/passwd", "type": "loras"},
            {"source": "/srv/models/x.safetensors", "type": "loras"},
            {"source": "https://host/x.safetensors", "type": "nope"},
            {"source": "https://host/x", "type": "loras", "filename": "../../x.safetensors"},
        ):
            answer = await client.post("/v1/models/install", json=body)
            found.append((answer.status_code, answer.json()["error"]["code"]))
        return found

    assert _run(app(NetPolicy()), calls) == [
        (422, "input_refused"),
        (422, "input_refused"),
        (422, "input_refused"),
        (422, "unknown_folder_type"),
        (422, "input_unreachable"),
    ]
    assert started == []

    async def allowed(client: httpx.AsyncClient) -> Any:
        body = {"source": "http://127.0.0.1:9/style/Detail%20v2.safetensors", "type": "loras"}
        answer = await client.post("/v1/models/install", json=body)
        assert answer.status_code == 202, answer.text
        unsafe = body | {"filename": "../../x.safetensors"}
        refused = await client.post("/v1/models/install", json=unsafe)
        assert refused.json()["error"]["code"] == "invalid_model_source"
        return answer.json()

    assert _run(app(NetPolicy(allow_private=True)), allowed) == {
        "id": "install-1",
        "type": "loras",
        "filename": "Detail_v2.safetensors",
    }
    assert started == [
        {
            "source": "http://127.0.0.1:9/style/Detail%20v2.safetensors",
            "type": "loras",
            "filename": "Detail_v2.safetensors",
            "size": None,
            "sha256": None,
        }
    ]
