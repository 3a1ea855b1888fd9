"""`AsyncClient`: the awaitable surface, a thin driver of the shared plans over
`httpx.AsyncClient`. Its methods are :class:`Client`'s with the same arguments, awaited;
`events()` and `jobs()` are async iterators; `on_progress` may also be a coroutine function."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, Unpack

import httpx

from comfyfleet.client import _calls, _jobs, _resources, _transport
from comfyfleet.client._calls import OnEvent, Params, RunOptions, SubmitOptions, WaitOptions
from comfyfleet.client._outputs import Output, Result
from comfyfleet.client._protocol import Emit, Plan, ReadLine, Request, Sleep
from comfyfleet.client._records import Asset, Event, JobRecord, ModelFile, Preset, Template
from comfyfleet.client._transport import AnyTransport, Auth, ClientBase, RunBase
from comfyfleet.client._transport import build_request as _build
from comfyfleet.client._workflow import WorkflowInput, resolve

T = TypeVar("T")


class _Run(RunBase[T]):
    def __init__(self, http: httpx.AsyncClient, auth: Auth, plan: Plan[T]) -> None:
        super().__init__(auth, plan)
        self.http = http
        self.lines: AsyncIterator[str] | None = None

    async def emitted(self) -> AsyncGenerator[Any, None]:
        try:
            for op in self.steps:
                if isinstance(op, Emit):
                    yield op.value
                else:
                    await self.answer(op)
        finally:
            await self.close_stream()
            self.steps.close()

    async def answer(self, op: Request | ReadLine | Sleep) -> None:
        try:
            self.steps.reply(await self.perform(op))
        except httpx.HTTPError as exc:
            self.steps.fail(exc)

    async def perform(self, op: Request | ReadLine | Sleep) -> Any:
        if isinstance(op, Sleep):
            await asyncio.sleep(op.seconds)
            return None
        if isinstance(op, ReadLine):
            return None if self.lines is None else await anext(self.lines, None)
        await self.close_stream()
        request = _build(self.http, self.auth, op)
        response = await self.http.send(request, stream=True)
        if _transport.keeps_stream(op, response.status_code):
            self.stream, self.lines = response, response.aiter_lines()
            return _transport.reply_of(response)
        try:
            return _transport.reply_of(response, await response.aread())
        finally:
            await response.aclose()

    async def close_stream(self) -> None:
        stream, lines = self.stream, self.lines
        self.stream, self.lines = None, None
        if lines is not None and hasattr(lines, "aclose"):
            await lines.aclose()  # now, on this loop, rather than whenever it is collected
        if stream is not None:
            await stream.aclose()


class AsyncClient(ClientBase[httpx.AsyncClient]):
    """A comfyfleet server, awaitable: :class:`Client`'s methods and arguments (`transport`
    is an `httpx.AsyncBaseTransport`). Use `async with AsyncClient(url) as client:`, or
    `await client.close()`."""

    def _open(self, timeout: float, transport: AnyTransport | None) -> httpx.AsyncClient:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError("AsyncClient needs an httpx.AsyncBaseTransport (Client: sync ones)")
        return httpx.AsyncClient(transport=transport, **self._http_args(timeout))

    async def _drive(self, plan: Plan[T], on_event: OnEvent | None = None) -> T:
        run = _Run(self._http, self._auth, plan)
        async with contextlib.aclosing(run.emitted()) as values:  # a raising callback ends it
            async for value in values:
                answer = None if on_event is None else on_event(value)
                if inspect.isawaitable(answer):
                    await answer
        return run.steps.value

    def _emitted(self, plan: Plan[None]) -> AsyncIterator[Any]:
        return _Run(self._http, self._auth, plan).emitted()

    # --- jobs: see Client for what each does ------------------------------------------------
    async def run(
        self, workflow: WorkflowInput, params: Params = None, **options: Unpack[RunOptions]
    ) -> Result:
        plan, on_progress = _calls.run(workflow, params, options, self.retries)
        return await self._drive(plan, on_progress)

    async def submit(
        self, workflow: WorkflowInput, params: Params = None, **options: Unpack[SubmitOptions]
    ) -> AsyncJob:
        record = await self._drive(_calls.submit(workflow, params, options, self.retries))
        return AsyncJob(self, record.id)

    def job(self, job_id: str) -> AsyncJob:
        return AsyncJob(self, job_id)

    def jobs(self, *, status: str | None = None, page_size: int = 100) -> AsyncIterator[JobRecord]:
        return self._emitted(_jobs.list_jobs(status, page_size, self.retries))

    async def validate(self, workflow: WorkflowInput, params: Params = None) -> dict[str, Any]:
        plan = _resources.validate(resolve(workflow), dict(params or {}), self.retries)
        return await self._drive(plan)

    # --- files --------------------------------------------------------------------------------
    async def upload(
        self, file: Path | bytes, *, filename: str | None = None, content_type: str | None = None
    ) -> Asset:
        return await self._drive(_resources.upload(file, filename, content_type, self.retries))

    async def asset(self, asset_id: str) -> Asset:
        return await self._drive(_resources.read_asset(asset_id, self.retries))

    async def delete_asset(self, asset_id: str) -> None:
        await self._drive(_resources.delete_asset(asset_id, self.retries))

    async def download(self, output: Output | str) -> bytes:
        return await self._drive(_resources.download_output(output, self.retries))

    # --- templates and models -------------------------------------------------------------
    async def templates(self) -> list[Template]:
        return await self._drive(_resources.templates(self.retries))

    async def template(self, name: str) -> Template:
        return await self._drive(_resources.template(name, self.retries))

    async def presets(self) -> list[Preset]:
        return await self._drive(_resources.presets(self.retries))

    async def models(self, folder_type: str | None = None) -> list[ModelFile]:
        return await self._drive(_resources.models(folder_type, self.retries))

    async def install_preset(self, name: str) -> AsyncJob:
        return AsyncJob(self, await self._drive(_resources.install_preset(name, self.retries)))

    # --- lifetime -------------------------------------------------------------------------
    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class AsyncJob:
    """:class:`Job`, awaitable; `events()` is an async iterator."""

    def __init__(self, client: AsyncClient, job_id: str) -> None:
        self.client = client
        self.id = job_id

    async def status(self) -> JobRecord:
        return await self.client._drive(_jobs.read_job(self.id, self.client.retries))

    async def wait(self, **options: Unpack[WaitOptions]) -> Result:
        plan, on_progress = _calls.wait(self.id, options, self.client.retries)
        return await self.client._drive(plan, on_progress)

    def events(self, *, after: str | None = None, previews: bool = False) -> AsyncIterator[Event]:
        plan = _jobs.follow(self.id, self.client.retries, after=after, previews=previews)
        return self.client._emitted(plan)

    async def cancel(self) -> JobRecord:
        return await self.client._drive(_jobs.cancel(self.id, self.client.retries))

    def __repr__(self) -> str:
        return f"AsyncJob({self.id!r})"
