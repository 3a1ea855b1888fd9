"""Model URLs in a client's graph: only public web sources, checked before the job is stored.

A loader input may name its model by URL (fetch before run downloads it). Manifests and the CLI
are the operator's and may use any source; a graph is a client's, so here only http(s), `hf://`
and `civitai://` are accepted, and an http(s) host must resolve to addresses the SSRF policy
allows: a `file://` or `s3://` value, or a URL into the deployment's own network, would have the
server copy something private into the models folder, where `GET /v1/models` lists it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from comfyfleet.gateway._errors import ApiError
from comfyfleet.models import ModelNeed, required_models
from comfyfleet.netguard import NetPolicy, UrlRefused, UrlUnreachable, checked_addresses

CLIENT_SCHEMES = frozenset({"http", "https", "hf", "civitai"})


def job_models(
    workflow: Mapping[str, Any], loaders: Mapping[str, Mapping[str, str]] | None = None
) -> tuple[str, ...]:
    """The models a job needs, as `folder_type/name`, in node order without repeats: stored
    with the job, so that claims can prefer instances that hold them (routing by affinity).
    `loaders` is the loader table (default: ComfyUI's loaders; `models.extra_loaders` adds
    custom nodes')."""
    needs = required_models(workflow, loaders)
    return tuple(dict.fromkeys(f"{need.folder_type}/{need.value}" for need in needs))


async def check_model_urls(workflow: Mapping[str, Any], policy: NetPolicy) -> None:
    """Raise a 422 naming the node and input of the first model URL a client may not use."""
    for need in required_models(workflow):
        if need.is_url:
            await _check(need, policy)


async def _check(need: ModelNeed, policy: NetPolicy) -> None:
    where = f"node {need.node_id} ({need.class_type}): input '{need.input_name}'"
    details = {"node_id": need.node_id, "class_type": need.class_type, "input": need.input_name}
    await check_client_source(need.value, policy, where=where, details=details)


async def check_client_source(
    value: str, policy: NetPolicy, *, where: str, details: dict[str, Any], what: str = "a job"
) -> None:
    """Raise a 422 unless `value` is a model source a client may choose: http(s) to an address
    the policy allows, `hf://` or `civitai://`. `where` starts the message."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:  # "http://[::1/m", a port over 65535 ...
        raise ApiError(
            422,
            "input_refused",
            f"{where}: the model URL is malformed ({exc})",
            details | {"hint": "give an http(s) URL such as https://host/path/model.safetensors"},
        ) from exc
    if parts.scheme not in CLIENT_SCHEMES:
        shown = (
            f"{parts.scheme}:// model sources" if parts.scheme else "model sources without a scheme"
        )
        raise ApiError(
            422,
            "input_refused",
            f"{where}: {shown} are not accepted in {what}",
            details | {"hint": "list the file in a manifest, or give an http(s) URL"},
        )
    if parts.scheme not in ("http", "https"):
        return  # hf:// and civitai:// name public hubs
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        await checked_addresses(parts.hostname or "", port, policy)
    except UrlRefused as exc:
        raise ApiError(422, "input_refused", f"{where}: {exc.message}", details) from exc
    except UrlUnreachable as exc:
        raise ApiError(422, "input_unreachable", f"{where}: {exc.message}", details) from exc
