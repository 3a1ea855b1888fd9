"""The plans for everything around jobs: input uploads, output downloads, templates, model
presets and files, and the dry-run check of a workflow."""

from __future__ import annotations

import hashlib
from typing import Any
from urllib.parse import quote

from comfyfleet.client._errors import ApiError, ComfyfleetClientError
from comfyfleet.client._outputs import Output
from comfyfleet.client._protocol import Plan, Reply, Request, Sleep
from comfyfleet.client._records import Asset, ModelFile, Preset, Template
from comfyfleet.client._retry import Retries, call, expected_error, send
from comfyfleet.client._workflow import Target, job_body, media_type, upload_content


def upload(
    file: Any, filename: str | None, content_type: str | None, retries: Retries
) -> Plan[Asset]:
    """Store an input file (a `Path` or bytes). The store is content-addressed, so sending the
    same bytes again is harmless: a failed upload is retried."""
    content, own_name = upload_content(file)
    name = filename or own_name
    request = Request(
        "POST",
        "/v1/assets",
        params={"filename": name} if name else {},
        headers={"Content-Type": media_type(name, content_type)},
        content=content,
        idempotent=True,
    )
    reply = yield from call(request, retries, ok=(200, 201))
    return Asset.from_dict(reply.json())


def read_asset(asset_id: str, retries: Retries) -> Plan[Asset]:
    path = f"/v1/assets/{quote(asset_id, safe='')}"
    reply = yield from call(Request("GET", path, idempotent=True), retries)
    return Asset.from_dict(reply.json())


def delete_asset(asset_id: str, retries: Retries) -> Plan[None]:
    path = f"/v1/assets/{quote(asset_id, safe='')}"
    yield from call(Request("DELETE", path, idempotent=True), retries, ok=(204,))


def download(url: str, sha256: str | None, retries: Retries) -> Plan[bytes]:
    """An output file's bytes, from the server or the storage its presigned URL points to
    (which gets no API key), checked against the `sha256` the job recorded."""
    reply = yield from call(Request("GET", url, idempotent=True), retries)
    if sha256 and hashlib.sha256(reply.body).hexdigest() != sha256.lower():
        raise ComfyfleetClientError(
            f"the file at {url} does not match its sha256 {sha256}: it changed or was cut short"
        )
    return reply.body


def download_output(output: Output | str, retries: Retries) -> Plan[bytes]:
    """An :class:`Output`'s bytes (a text's without asking), or those at an output URL."""
    if isinstance(output, str):
        return download(output, None, retries)
    if output.url is None:
        return _done(output.bytes())
    return download(output.url, output.sha256, retries)


def _done(value: bytes) -> Plan[bytes]:
    """A plan that needs nothing: `value` at once."""
    if False:  # pragma: no cover - makes this function a generator
        yield Sleep(0)
    return value


def templates(retries: Retries) -> Plan[list[Template]]:
    reply = yield from _templates_call("/v1/templates", None, retries)
    return [Template.from_dict(t) for t in reply.json().get("templates") or []]


def template(name: str, retries: Retries) -> Plan[Template]:
    reply = yield from _templates_call(f"/v1/templates/{quote(name, safe='')}", name, retries)
    return Template.from_dict(reply.json())


def _templates_call(path: str, name: str | None, retries: Retries) -> Plan[Reply]:
    reply = yield from send(Request("GET", path, idempotent=True), retries)
    if reply.status != 200:
        raise templates_error(expected_error(reply), name)
    return reply


def templates_error(error: ApiError, name: str | None) -> ApiError:
    """`error` of a templates route, unless the server has no such routes: its unknown paths
    answer 404 or 405 in whatever shape, which says nothing of templates, so say it here."""
    if error.status not in (404, 405) or error.code == "template_not_found":
        return error
    what = "templates cannot be listed" if name is None else f"'{name}' cannot be run by name"
    return ApiError(
        error.status,
        "templates_unavailable",
        f"this server has no templates API, so {what}: pass a workflow graph or the path of a "
        "JSON file (ending in .json)",
        {"template": name},
    )


def presets(retries: Retries) -> Plan[list[Preset]]:
    reply = yield from call(Request("GET", "/v1/presets", idempotent=True), retries)
    return [Preset.from_dict(p) for p in reply.json().get("presets") or []]


def models(folder_type: str | None, retries: Retries) -> Plan[list[ModelFile]]:
    params = {"type": folder_type} if folder_type else {}
    request = Request("GET", "/v1/models", params=params, idempotent=True)
    reply = yield from call(request, retries)
    return [ModelFile.from_dict(m) for m in reply.json().get("models") or []]


def install_preset(name: str, retries: Retries) -> Plan[str]:
    """Start installing a preset (an admin key's right); the id of the job that does it.
    Not retried after it was sent: a second start would be a second job."""
    path = f"/v1/presets/{quote(name, safe='')}/install"
    reply = yield from call(Request("POST", path), retries, ok=(202,))
    return str(reply.json()["id"])


def validate(target: Target, values: dict[str, Any], retries: Retries) -> Plan[dict[str, Any]]:
    """The server's checks of a graph, without running it: its answer, or the ApiError a
    submit would get."""
    if target.template is not None:
        raise ComfyfleetClientError("validate() checks a workflow graph, not a template")
    body = job_body(target, values, {})
    request = Request("POST", "/v1/jobs:validate", json=body, idempotent=True)
    reply = yield from call(request, retries)
    answer: dict[str, Any] = reply.json()
    return answer
