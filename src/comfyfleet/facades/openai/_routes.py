"""The routes: `GET /models`, `GET /models/{model}`, `POST /images/generations` and
`POST /images/edits`, under the prefix.

A request becomes ordinary fleet jobs through the gateway's intake (`parse_job`, `submit_job`),
so every check, limit (429 `queue_full`), key scope and output store of `/v1` applies, and the
jobs are listed by `/v1/jobs` with the template and values that made them and the endpoint and
`user` they came from. OpenAI's API is synchronous: the answer waits for the jobs to end, at
most `serve.max_wait_s`; past that the jobs are cancelled (nobody could collect them) and the
answer is a 504. A job that fails is a 500 naming the job and why. Nothing is replayed: as at
OpenAI, the same request sent twice makes images twice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from starlette.requests import ClientDisconnect

from comfyfleet.assets import AssetStore
from comfyfleet.auth import READ, SUBMIT
from comfyfleet.facades.openai._answer import images_answer
from comfyfleet.facades.openai._errors import invalid
from comfyfleet.facades.openai._form import read_edit_form, store_file
from comfyfleet.facades.openai._links import ImageLinks
from comfyfleet.facades.openai._request import (
    EDIT_FIELDS,
    GENERATION_FIELDS,
    ImageRequest,
    job_count,
    read_request,
    resolved,
    takes_images,
    template_params,
)
from comfyfleet.facades.openai._settings import OpenAISettings
from comfyfleet.gateway import (
    ApiError,
    Caller,
    Service,
    json_limits,
    needs,
    parse_job,
    read_json_body,
    submit_job,
    wait_for_end,
)
from comfyfleet.jobs import TERMINAL, Job
from comfyfleet.templates import ParamType, Template, TemplateLibrary

PREFIX = "/openai/v1"
OWNER = "comfyfleet"


@dataclass(frozen=True)
class OpenAIImages:
    """What the routes work with."""

    service: Service
    library: TemplateLibrary
    assets: AssetStore
    links: ImageLinks
    settings: OpenAISettings
    max_upload_bytes: int

    async def models(self) -> list[Template]:
        await asyncio.to_thread(self.library.refresh)
        return [t for t in self.library.all() if t.openai is not None]

    async def model(self, name: str | None) -> Template:
        """The template a request names (or the default one), or the OpenAI 4xx."""
        models = {t.name: t for t in await self.models()}
        known = ", ".join(models) or "none"
        name = name or self.settings.default_model
        if name is None:
            raise invalid(
                f"Missing required parameter: 'model' (this server has no default; models: "
                f"{known})",
                "model",
                "missing_required_parameter",
            )
        if name not in models:
            raise ApiError(
                404,
                "model_not_found",
                f"The model '{name[:100]}' does not exist (models: {known})",
                {"param": "model", "known": list(models)},
            )
        return models[name]

    async def run(
        self,
        template: Template,
        request: ImageRequest,
        caller: Caller,
        *,
        endpoint: str,
        gone: Callable[[], Awaitable[None]],
        images: Sequence[str] = (),
        mask: str | None = None,
    ) -> list[Job]:
        """Submit the request's jobs and wait for their end. They are cancelled when it does
        not come in time, and when `gone` returns first (the client left: no one would get
        the images)."""
        count = job_count(template, request, self.settings.max_images)
        params = template_params(template, request, images, mask)
        submitted: list[str] = []
        seconds = self.service.settings.max_wait_s
        try:
            for _ in range(count):  # each job resolves anew: its own random seed
                submitted.append(await self._submit(template, params, request, caller, endpoint))
            ended = await _unless_gone(
                asyncio.gather(*(wait_for_end(self.service, i, seconds) for i in submitted)),
                gone,
            )
        except BaseException:
            await self._cancel(submitted)
            raise
        if any(job.status not in TERMINAL for job in ended):
            await self._cancel(submitted)
            raise ApiError(
                504,
                "timeout",
                f"model '{template.name}': the job(s) did not end within {seconds:g}s and were "
                "cancelled",
                {"param": None, "jobs": submitted},
            )
        return list(ended)

    async def _submit(
        self,
        template: Template,
        params: dict[str, Any],
        request: ImageRequest,
        caller: Caller,
        endpoint: str,
    ) -> str:
        values = resolved(template, params)
        new = await parse_job(self.service, {"workflow": template.apply(values)}, None)
        images = {n for n, p in template.parameters.items() if p.type is ParamType.IMAGE}
        recorded = {name: value for name, value in values.items() if name not in images}
        origin = {"endpoint": endpoint} | ({"user": request.user} if request.user else {})
        record = {"name": template.name, "params": recorded}
        options = new.options.but(template=record, openai=origin)
        new = replace(new, owner=caller.owner, options=options)
        job, _ = await submit_job(self.service, new, caller, chosen=False)
        return job.id

    async def _cancel(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            with contextlib.suppress(Exception):
                job = await self.service.store.get(job_id)
                if job.status not in TERMINAL:
                    await self.service.store.cancel(job_id)

    async def answer(
        self, jobs: Sequence[Job], template: Template, request: ImageRequest, base: str
    ) -> dict[str, Any]:
        return await images_answer(
            jobs,
            model=template.name,
            service=self.service,
            links=self.links,
            base=base,
            response_format=request.response_format,
        )


async def _unless_gone(
    waiting: asyncio.Future[list[Job]], gone: Callable[[], Awaitable[None]]
) -> list[Job]:
    """`waiting`'s result, or `ClientDisconnect` (which the gateway logs as routine) when
    `gone` returns first."""
    watch = asyncio.ensure_future(gone())
    both: set[asyncio.Future[Any]] = {waiting, watch}
    try:
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
        if not waiting.done():
            raise ClientDisconnect
        return waiting.result()
    finally:
        for task in (waiting, watch):
            task.cancel()
        await asyncio.gather(waiting, watch, return_exceptions=True)


def disconnected(request: Request) -> Callable[[], Awaitable[None]]:
    """What returns once the client has gone (its request body read already)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    return gone


def model_object(template: Template) -> dict[str, Any]:
    """OpenAI's `Model`; `created` is the template file's time (0 for the shipped ones)."""
    created = 0
    with contextlib.suppress(OSError):
        created = int(Path(template.source).stat().st_mtime)
    return {"id": template.name, "object": "model", "created": created, "owned_by": OWNER}


def base_url(request: Request) -> str:
    """The origin the client reached (scheme, host, any mount path): links are built on it."""
    return str(request.base_url).rstrip("/")


def openai_router(images: OpenAIImages) -> APIRouter:
    """The routes under `PREFIX`; left out of the OpenAPI document (their contract is
    OpenAI's)."""
    router = APIRouter(prefix=PREFIX, tags=["openai"], include_in_schema=False)

    @router.get("/models", dependencies=[Depends(needs(READ))])
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [model_object(t) for t in await images.models()]}

    @router.get("/models/{model}", dependencies=[Depends(needs(READ))])
    async def read_model(model: str) -> dict[str, Any]:
        return model_object(await images.model(model))

    @router.post("/images/generations")
    async def generations(
        request: Request, caller: Annotated[Caller, Depends(needs(SUBMIT))]
    ) -> dict[str, Any]:
        body = await read_json_body(request, json_limits(images.service.settings))
        wanted = read_request(body, allowed=GENERATION_FIELDS)
        template = await images.model(wanted.model)
        if takes_images(template):
            raise invalid(
                f"model '{template.name}' edits an image: send it to /images/edits", "model"
            )
        jobs = await images.run(
            template,
            wanted,
            caller,
            endpoint="images/generations",
            gone=disconnected(request),
        )
        return await images.answer(jobs, template, wanted, base_url(request))

    @router.post("/images/edits")
    async def edits(
        request: Request, caller: Annotated[Caller, Depends(needs(SUBMIT))]
    ) -> dict[str, Any]:
        form = await read_edit_form(request, images.max_upload_bytes)
        try:
            wanted = read_request(form.fields, allowed=EDIT_FIELDS)
            template = await images.model(wanted.model)
            if not takes_images(template):
                raise invalid(
                    f"model '{template.name}' draws from a prompt alone: send it to "
                    "/images/generations",
                    "model",
                )
            if not form.images:
                raise invalid(
                    "Missing required parameter: 'image'.", "image", "missing_required_parameter"
                )
            limit = images.max_upload_bytes
            stored = [
                await store_file(f, images.assets, caller.owner, "image", limit)
                for f in form.images
            ]
            mask = None
            if form.mask is not None:
                mask = await store_file(form.mask, images.assets, caller.owner, "mask", limit)
        finally:
            await form.close()
        jobs = await images.run(
            template,
            wanted,
            caller,
            endpoint="images/edits",
            gone=disconnected(request),
            images=stored,
            mask=mask,
        )
        return await images.answer(jobs, template, wanted, base_url(request))

    return router
