"""Finished jobs as OpenAI's `ImagesResponse`: `{"created", "data": [{"url"} | {"b64_json"}],
"output_format"}`.

The images of a job are its saved image files (a template's `SaveImage`; previews are not
outputs), in the order the job lists them, and for n jobs, job after job. `b64_json` carries
each file's bytes; `url` an absolute link the client can open without its key: the output
store's own URL where that is absolute (S3 and Azure sign theirs; a configured public base),
else a signed link to the file on the gateway (`_links`). There is no `revised_prompt` (the
prompt is used as given) and no `usage` (OpenAI reports tokens for its GPT image models only;
a template has none to count).
"""

from __future__ import annotations

import asyncio
import base64
import mimetypes
import time
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from comfyfleet.facades.openai._links import ImageLinks
from comfyfleet.facades.openai._request import B64_JSON
from comfyfleet.gateway import ApiError, Service, job_view
from comfyfleet.jobs import Job, JobStatus
from comfyfleet.storage import StorageError


def check_ended(jobs: Sequence[Job], model: str) -> None:
    """A 500 (`server_error`) for the first job that did not succeed, saying why."""
    for job in jobs:
        if job.status == JobStatus.SUCCEEDED:
            continue
        error = job.error or {}
        code = str(error.get("code") or f"job_{job.status}")
        message = str(error.get("message") or code)
        raise ApiError(
            500,
            code,
            f"model '{model}': job {job.id} {job.status}: {message}",
            {"param": None, "job_id": job.id},
        )


def image_outputs(job: Job, service: Service) -> list[dict[str, Any]]:
    """The job's saved images, with URLs as the job's store hands them out now."""
    outputs: list[dict[str, Any]] = job_view(job, storage=service.storage)["outputs"]
    return [o for o in outputs if _is_image(o)]


def _is_image(output: dict[str, Any]) -> bool:
    if output.get("type") != "output" or not isinstance(output.get("path"), str):
        return False
    kind = output.get("content_type") or mimetypes.guess_type(str(output["path"]))[0] or ""
    return str(kind).startswith("image/")


async def images_answer(
    jobs: Sequence[Job],
    *,
    model: str,
    service: Service,
    links: ImageLinks,
    base: str,
    response_format: str,
) -> dict[str, Any]:
    check_ended(jobs, model)
    data: list[dict[str, Any]] = []
    formats: set[str] = set()
    for job in jobs:
        for output in image_outputs(job, service):
            formats.add(str(output.get("content_type") or _guess(output["path"])))
            if response_format == B64_JSON:
                raw = await _read(service, job, output)
                data.append({"b64_json": base64.b64encode(raw).decode()})
            else:
                data.append({"url": _url(job, output, links, base)})
    if not data:
        raise ApiError(
            500,
            "no_image",
            f"model '{model}' ran (job {', '.join(j.id for j in jobs)}) but saved no image",
            {"param": None},
        )
    finished = [j.finished_at for j in jobs if j.finished_at is not None]
    answer: dict[str, Any] = {"created": int(max(finished) if finished else time.time())}
    answer["data"] = data
    if formats == {"image/png"}:
        answer["output_format"] = "png"
    return answer


def _guess(path: str) -> str:
    return mimetypes.guess_type(path)[0] or "application/octet-stream"


def _url(job: Job, output: dict[str, Any], links: ImageLinks, base: str) -> str:
    stored = output.get("url")
    if isinstance(stored, str) and stored.startswith(("https://", "http://")):
        return stored
    return links.url(base, job.id, str(output["path"]))


async def _read(service: Service, job: Job, output: dict[str, Any]) -> bytes:
    """The file's bytes: from the output folder where it is on this machine, else from the
    job's output store (an agent elsewhere stored it there)."""
    file = service.output_dir / job.id / Path(*PurePosixPath(str(output["path"])).parts)
    if await asyncio.to_thread(file.is_file):
        return await asyncio.to_thread(file.read_bytes)
    key = output.get("key")
    if service.storage is None or not isinstance(key, str):
        raise ApiError(500, "output_unavailable", f"job {job.id}: output {file.name} is gone")
    try:
        return await service.storage.get(key)
    except StorageError as exc:
        raise ApiError(
            503, "output_unavailable", f"job {job.id}: reading {key} failed: {exc.message}"
        ) from exc
