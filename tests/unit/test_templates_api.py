"""`/v1/templates` in front of a job store alone: listing, one template, and template jobs that
go through the same intake as `/v1/jobs` (jobs stay queued: no instance runs here)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from comfyfleet.auth import READ, SUBMIT, KeyStore
from comfyfleet.gateway import ServeSettings, Service, create_app, templates_router
from comfyfleet.jobs import JobStatus, MemoryJobStore, MemoryRegistry, digest_of
from comfyfleet.templates import TemplateLibrary
from tests.registry_contract import agent, instance

SD15 = {"checkpoints": ["v1-5-pruned-emaonly.safetensors"]}


class _Known:
    async def known(self, wanted: set[str]) -> frozenset[str]:
        return frozenset(wanted)  # every class is known: the graphs are the shipped ones

    def free_text(self, class_type: str, input_name: str) -> bool:
        return input_name == "text"


@pytest.fixture
def library(tmp_path: Path) -> TemplateLibrary:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "broken.yaml").write_text("workflow: {}\n", encoding="utf-8")
    return TemplateLibrary.for_workspace(tmp_path)


@pytest.fixture
def service(tmp_path: Path) -> Service:
    service = Service(
        store=MemoryJobStore(),
        output_dir=tmp_path / "out",
        settings=ServeSettings(),  # type: ignore[call-arg]
        registry=MemoryRegistry(),
    )
    service.node_types = _Known()  # type: ignore[assignment]
    return service


def _call(
    service: Service,
    library: TemplateLibrary,
    requests: list[tuple[str, str, dict[str, Any]]],
    keys: KeyStore | None = None,
) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        app = create_app(service, routers=(templates_router(service, library),), keys=keys)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return [await client.request(m, url, **kw) for m, url, kw in requests]

    return asyncio.run(go())


def _one(service: Service, library: TemplateLibrary, method: str, url: str, **kw: Any) -> Any:
    (answer,) = _call(service, library, [(method, url, kw)])
    return answer


def test_the_list_has_every_template_its_schema_and_the_broken_files(
    service: Service, library: TemplateLibrary
) -> None:
    answer = _one(service, library, "GET", "/v1/templates")
    assert answer.status_code == 200, answer.text
    listed = {t["name"]: t for t in answer.json()["templates"]}
    assert "txt2img" in listed and "inpaint-sdxl" in listed
    txt2img = listed["txt2img"]
    assert txt2img["models"] == SD15 and txt2img["preset"] == "sd15"
    assert txt2img["models_present"] is False  # no agent has registered any file
    assert txt2img["openai"] is True and listed["upscale"]["openai"] is False
    assert txt2img["parameters"]["properties"]["steps"]["maximum"] == 150
    assert answer.json()["broken"] == [
        {
            "file": "broken.yaml",
            "error": "workflow: workflow must be a non-empty JSON object of nodes",
        }
    ]


def test_models_present_reads_the_files_the_agents_registered(
    service: Service, library: TemplateLibrary
) -> None:
    models = {"checkpoints": ["v1-5-pruned-emaonly.safetensors"], "vae": []}
    record = instance(0, "a", models=models, models_digest=digest_of(models))
    asyncio.run(service.registry.report(agent("a"), [record]))
    sd15 = _one(service, library, "GET", "/v1/templates/txt2img").json()
    sdxl = _one(service, library, "GET", "/v1/templates/txt2img-sdxl").json()
    assert (sd15["models_present"], sd15["missing_models"]) == (True, [])
    assert sdxl["models_present"] is False
    assert sdxl["missing_models"] == [
        "checkpoints/sd_xl_base_1.0.safetensors",
        "vae/sdxl_vae.safetensors",
    ]


def test_an_unknown_template_is_a_404_listing_the_known_ones(
    service: Service, library: TemplateLibrary
) -> None:
    for method, url in (("GET", "/v1/templates/txt2im"), ("POST", "/v1/templates/txt2im/jobs")):
        answer = _one(service, library, method, url, json={"params": {}})
        assert answer.status_code == 404, answer.text
        error = answer.json()["error"]
        assert error["code"] == "template_not_found"
        assert error["message"].startswith("no template named 'txt2im' (known: batch, ")
        assert error["details"]["known"] == library.names()


def test_a_template_job_is_an_ordinary_job_recording_its_template(
    service: Service, library: TemplateLibrary
) -> None:
    body = {"params": {"prompt": "a fox", "steps": 8, "width": 256}, "priority": 5}
    first, second = _call(
        service,
        library,
        [("POST", "/v1/templates/txt2img/jobs", {"json": body})] * 2,
    )
    assert first.status_code == 202, first.text
    job = first.json()
    assert job["status"] == "queued" and job["priority"] == 5
    record = job["options"]["template"]
    assert record["name"] == "txt2img"
    assert record["params"]["prompt"] == "a fox" and record["params"]["steps"] == 8
    stored = asyncio.run(service.store.get(job["id"]))
    assert stored.workflow["6"]["inputs"]["text"] == "a fox"
    assert stored.workflow["3"]["inputs"]["steps"] == 8
    assert stored.workflow["5"]["inputs"]["width"] == 256
    assert stored.workflow["3"]["inputs"]["seed"] == record["params"]["seed"]
    assert stored.models == ("checkpoints/v1-5-pruned-emaonly.safetensors",)
    again = second.json()["options"]["template"]["params"]["seed"]
    assert again != record["params"]["seed"]  # a fresh random seed per job
    shown = _one(service, library, "GET", f"/v1/jobs/{job['id']}").json()
    assert shown["options"]["template"] == record


@pytest.mark.parametrize(
    ("body", "code", "message", "details"),
    [
        (
            {"params": {"steps": 500}},
            "invalid_parameter",
            "parameter 'steps' must be at most 150 (got 500)",
            {"parameter": "steps", "maximum": 150},
        ),
        (
            {"params": {"width": 100}},
            "invalid_parameter",
            "parameter 'width' must be a multiple of 8 (got 100)",
            {"parameter": "width", "multiple_of": 8},
        ),
        (
            {"params": {"sampler": "turbo"}},
            "invalid_parameter",
            None,
            {"parameter": "sampler"},
        ),
        (
            {"params": {"size": "512x512"}},
            "invalid_parameter",
            "template 'txt2img' has no parameter 'size' (known: prompt, negative, seed, steps,"
            " cfg, sampler, scheduler, width, height, batch_size, checkpoint)",
            {"parameter": "size"},
        ),
        (
            {"params": ["a fox"]},
            "invalid_parameter",
            "'params' must be an object of parameter names and values",
            {"parameter": None},
        ),
        (
            {"params": {}, "workflow": {}},
            "invalid_request",
            "unknown fields: workflow (a template job takes 'params'; the template has the"
            " workflow)",
            {},
        ),
        (
            {"params": {}, "storage": "elsewhere"},
            "invalid_storage",
            None,
            {},
        ),
    ],
)
def test_bad_params_are_422s_naming_the_parameter_and_bound_and_nothing_is_stored(
    service: Service,
    library: TemplateLibrary,
    body: dict[str, Any],
    code: str,
    message: str | None,
    details: dict[str, Any],
) -> None:
    answer = _one(service, library, "POST", "/v1/templates/txt2img/jobs", json=body)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == code
    if message is not None:
        assert error["message"] == message
    for key, value in details.items():
        assert error["details"][key] == value
    assert asyncio.run(service.store.count(JobStatus.QUEUED)) == 0


def test_an_unknown_parameter_lists_the_known_ones(
    service: Service, library: TemplateLibrary
) -> None:
    body = {"params": {"image": "asset:x", "strength": 0.5}}
    error = _one(service, library, "POST", "/v1/templates/img2img/jobs", json=body).json()
    assert error["error"]["details"]["known"] == list(library.get("img2img").parameters)


def test_a_missing_image_is_named(service: Service, library: TemplateLibrary) -> None:
    answer = _one(service, library, "POST", "/v1/templates/inpaint/jobs", json={"params": {}})
    assert answer.status_code == 422
    assert answer.json()["error"]["message"] == (
        "parameter 'image' is required (an image: a URL, data: URI, base64 or asset:<id>)"
    )


def test_an_idempotency_key_replays_the_job_whatever_seed_a_retry_would_draw(
    service: Service, library: TemplateLibrary
) -> None:
    headers = {"Idempotency-Key": "order-17"}
    body = {"params": {"prompt": "a fox"}}
    first, again, other = _call(
        service,
        library,
        [
            ("POST", "/v1/templates/txt2img/jobs", {"json": body, "headers": headers}),
            ("POST", "/v1/templates/txt2img/jobs", {"json": body, "headers": headers}),
            (
                "POST",
                "/v1/templates/txt2img/jobs",
                {"json": {"params": {"prompt": "a cat"}}, "headers": headers},
            ),
        ],
    )
    assert first.status_code == 202 and again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409 and other.json()["error"]["code"] == "job_conflict"


def test_scopes_are_those_of_jobs(
    service: Service, library: TemplateLibrary, tmp_path: Path
) -> None:
    keys = KeyStore(tmp_path / "keys.json")
    reader = keys.create("reader", scopes=frozenset({READ})).token
    submitter = keys.create("submitter", scopes=frozenset({SUBMIT})).token
    listed, refused, submitted = _call(
        service,
        library,
        [
            ("GET", "/v1/templates", {"headers": {"Authorization": f"Bearer {reader}"}}),
            (
                "POST",
                "/v1/templates/txt2img/jobs",
                {"json": {}, "headers": {"Authorization": f"Bearer {reader}"}},
            ),
            (
                "POST",
                "/v1/templates/txt2img/jobs",
                {"json": {}, "headers": {"Authorization": f"Bearer {submitter}"}},
            ),
        ],
        keys=keys,
    )
    assert listed.status_code == 200
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["needs"] == "submit"
    assert submitted.status_code == 202, submitted.text


def test_a_template_dropped_into_the_folder_is_served_without_a_restart(
    service: Service, library: TemplateLibrary, tmp_path: Path
) -> None:
    shipped = library.get("txt2img")
    document = {"description": "mine", "workflow": dict(shipped.workflow)}
    (tmp_path / "templates" / "mine.yaml").write_text(yaml.safe_dump(document))
    answer = _one(service, library, "GET", "/v1/templates/mine")
    assert answer.status_code == 200 and answer.json()["description"] == "mine"


def test_the_routes_are_in_the_openapi_document(service: Service, library: TemplateLibrary) -> None:
    spec = _one(service, library, "GET", "/openapi.json").json()
    post = spec["paths"]["/v1/templates/{name}/jobs"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert "params" in body["properties"] and "workflow" not in body["properties"]
    assert body["additionalProperties"] is False
    assert {"200", "202", "404", "409", "422", "429"} <= set(post["responses"])
    assert set(spec["paths"]["/v1/templates/{name}"]["get"]["responses"]) >= {"200", "404"}
