"""`Client`: the blocking surface, a thin driver of the shared plans over `httpx.Client`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Generator, Iterator
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
    def __init__(self, http: httpx.Client, auth: Auth, plan: Plan[T]) -> None:
        super().__init__(auth, plan)
        self.http = http
        self.lines: Iterator[str] = iter(())

    def emitted(self) -> Generator[Any, None, None]:
        try:
            for op in self.steps:
                if isinstance(op, Emit):
                    yield op.value
                else:
                    self.answer(op)
        finally:
            self.close_stream()
            self.steps.close()

    def answer(self, op: Request | ReadLine | Sleep) -> None:
        try:
            self.steps.reply(self.perform(op))
        except httpx.HTTPError as exc:
            self.steps.fail(exc)

    def perform(self, op: Request | ReadLine | Sleep) -> Any:
        if isinstance(op, Sleep):
            time.sleep(op.seconds)
            return None
        if isinstance(op, ReadLine):
            return next(self.lines, None)
        self.close_stream()
        response = self.http.send(_build(self.http, self.auth, op), stream=True)
        if _transport.keeps_stream(op, response.status_code):
            self.stream, self.lines = response, response.iter_lines()
            return _transport.reply_of(response)
        try:
            return _transport.reply_of(response, response.read())
        finally:
            response.close()

    def close_stream(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream, self.lines = None, iter(())


class Client(ClientBase[httpx.Client]):
    """A comfyfleet server, blocking: `Client("http://host:8080", api_key="...")`.

    `timeout` bounds each connect and each read, in seconds (keep it above the server's 15 s
    event heartbeat); `retries` (a :class:`Retries`) how failed requests are tried again;
    `transport` swaps httpx's network layer (an `httpx.BaseTransport`: tests, proxies). Use it
    as a context manager, or call `close()`.
    """

    def _open(self, timeout: float, transport: AnyTransport | None) -> httpx.Client:
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise TypeError("Client needs an httpx.BaseTransport (AsyncClient takes async ones)")
        return httpx.Client(transport=transport, **self._http_args(timeout))

    def _drive(self, plan: Plan[T], on_event: OnEvent | None = None) -> T:
        run = _Run(self._http, self._auth, plan)
        with contextlib.closing(run.emitted()) as values:  # a raising callback ends it at once
            for value in values:
                if on_event is not None:
                    on_event(value)
        return run.steps.value

    def _emitted(self, plan: Plan[None]) -> Iterator[Any]:
        yield from _Run(self._http, self._auth, plan).emitted()

    # --- jobs -----------------------------------------------------------------------------
    def run(
        self, workflow: WorkflowInput, params: Params = None, **options: Unpack[RunOptions]
    ) -> Result:
        """Run a workflow to its end and return its outputs, downloaded.

        `workflow` is a graph (dict), a JSON file's path, or a template's name. `params`: the
        template's parameters, or for a graph `{"<node id>.<input>": value}`; `Path` and
        `bytes` values are uploaded first. Keywords: the job's options (`priority`, `webhook`,
        `timeouts`, ...: :class:`JobOptions`), `on_progress(event)` for every live event,
        `timeout` (seconds; then :class:`Timeout`, the job goes on), `download`.

        Raises :class:`JobFailed` (with the node and its class) when the job fails,
        :class:`ApiError` when the server refuses the workflow."""
        plan, on_progress = _calls.run(workflow, params, options, self.retries)
        return self._drive(plan, on_progress)

    def submit(
        self, workflow: WorkflowInput, params: Params = None, **options: Unpack[SubmitOptions]
    ) -> Job:
        """Queue a workflow; its :class:`Job` at once. The same `idempotency_key` (one is
        made when none is given) names the same job, however often it is sent."""
        return Job(self, self._drive(_calls.submit(workflow, params, options, self.retries)).id)

    def job(self, job_id: str) -> Job:
        """The handle of an existing job (nothing is asked of the server yet)."""
        return Job(self, job_id)

    def jobs(self, *, status: str | None = None, page_size: int = 100) -> Iterator[JobRecord]:
        """Every job this key may see, newest first (`status`: only those)."""
        return self._emitted(_jobs.list_jobs(status, page_size, self.retries))

    def validate(self, workflow: WorkflowInput, params: Params = None) -> dict[str, Any]:
        """Check a graph as a submit would, without running it; raises the same ApiError."""
        target, values = resolve(workflow), dict(params or {})
        return self._drive(_resources.validate(target, values, self.retries))

    # --- files ----------------------------------------------------------------------------
    def upload(
        self, file: Path | bytes, *, filename: str | None = None, content_type: str | None = None
    ) -> Asset:
        """Upload an input file; put `asset.ref` in a loader's input or a template parameter.
        The same bytes are stored once."""
        return self._drive(_resources.upload(file, filename, content_type, self.retries))

    def asset(self, asset_id: str) -> Asset:
        """An uploaded file's record."""
        return self._drive(_resources.read_asset(asset_id, self.retries))

    def delete_asset(self, asset_id: str) -> None:
        """Give up an uploaded file (it goes once no key holds it)."""
        self._drive(_resources.delete_asset(asset_id, self.retries))

    def download(self, output: Output | str) -> bytes:
        """An output's bytes: an :class:`Output` (checked against its sha256), or a URL."""
        return self._drive(_resources.download_output(output, self.retries))

    # --- templates and models -------------------------------------------------------------
    def templates(self) -> list[Template]:
        """The server's workflow templates (those that load)."""
        return self._drive(_resources.templates(self.retries))

    def template(self, name: str) -> Template:
        """One template, with the model files it lacks."""
        return self._drive(_resources.template(name, self.retries))

    def presets(self) -> list[Preset]:
        """The model presets, and whether each has all its files on disk."""
        return self._drive(_resources.presets(self.retries))

    def models(self, folder_type: str | None = None) -> list[ModelFile]:
        """The model files on the server's disk (of one folder type: `checkpoints`, ...)."""
        return self._drive(_resources.models(folder_type, self.retries))

    def install_preset(self, name: str) -> Job:
        """Download a preset's files on the server (an admin key); the job that does it."""
        return Job(self, self._drive(_resources.install_preset(name, self.retries)))

    # --- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Job:
    """A submitted job: ask its `status()`, follow its `events()`, `wait()` for its result,
    or `cancel()` it."""

    def __init__(self, client: Client, job_id: str) -> None:
        self.client = client
        self.id = job_id

    def status(self) -> JobRecord:
        """The job as the server has it now."""
        return self.client._drive(_jobs.read_job(self.id, self.client.retries))

    def wait(self, **options: Unpack[WaitOptions]) -> Result:
        """Wait for its end (`timeout`, `on_progress`, `download` as for `run`); its result
        with the outputs, or :class:`JobFailed` / :class:`JobCancelled`."""
        plan, on_progress = _calls.wait(self.id, options, self.client.retries)
        return self.client._drive(plan, on_progress)

    def events(self, *, after: str | None = None, previews: bool = False) -> Iterator[Event]:
        """Its live events, from the start (or after event id `after`) to its end; a dropped
        connection is resumed where it stopped. `previews`: sampler preview frames too."""
        plan = _jobs.follow(self.id, self.client.retries, after=after, previews=previews)
        return self.client._emitted(plan)

    def cancel(self) -> JobRecord:
        """Cancel it: a queued job is removed, a running one interrupted."""
        return self.client._drive(_jobs.cancel(self.id, self.client.retries))

    def __repr__(self) -> str:
        return f"Job({self.id!r})"
