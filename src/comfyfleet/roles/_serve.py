"""The `serve` role: supervisor + dispatcher + webhooks + HTTP gateway in one process.

The gateway and the dispatcher are attached to the fleet before the instances start, and are
stopped before the instances are: jobs still running then fail their attempt as retryable and
run again after a restart (the store is durable; nothing is lost). Webhook deliveries left
pending are sent after a restart too.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator

import uvicorn

from comfyfleet.assets import ASSETS_FOLDER
from comfyfleet.config import Settings
from comfyfleet.errors import PortInUseError
from comfyfleet.gateway import (
    NodeTypes,
    Service,
    assets_router,
    create_app,
    idempotency_secret,
    job_view,
    models_router,
    webhooks_router,
)
from comfyfleet.jobs import (
    INSTALL_PRESET,
    Dispatcher,
    DispatcherSettings,
    JobLimits,
    JobStore,
    ModelFetch,
    NewJob,
    OutputPublisher,
    RemoteFolders,
)
from comfyfleet.models import ModelLibrary
from comfyfleet.roles._backends import Backends, open_backends
from comfyfleet.supervise import InstanceEvent, Supervisor, port_is_free, run_fleet
from comfyfleet.webhooks import WebhookService
from comfyfleet.workspace import Workspace


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the fleet's runner owns the signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_service(
    settings: Settings,
    *,
    on_event: Callable[[InstanceEvent], None] | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    ws = Workspace.from_settings(settings)
    if settings.fleet.instances != 0:  # 0: a gateway in front of attached servers only
        ws.require_installed()
    serve = settings.serve
    if not port_is_free(serve.host, serve.port):
        raise PortInUseError(
            f"port {serve.port} on {serve.host} is in use", hint="choose another with --port"
        )
    async with open_backends(settings, ws) as backends:

        async def attach(
            supervisor: Supervisor, stop: Callable[[], None]
        ) -> Callable[[], Awaitable[None]]:
            return await _attach(settings, ws, backends, supervisor, on_listening)

        await run_fleet(settings.fleet, ws, attach=attach, on_event=on_event)


def _dispatcher(
    settings: Settings,
    ws: Workspace,
    backends: Backends,
    service: Service,
    library: ModelLibrary,
) -> Dispatcher:
    serve = settings.serve
    limits = JobLimits(serve.queued_timeout_s, serve.running_timeout_s)
    options = DispatcherSettings(
        slots_per_instance=serve.slots_per_instance, lease_s=serve.lease_s, limits=limits
    )
    publisher = OutputPublisher(ws.output_dir, backends.storage, choose=backends.storage_for)
    return Dispatcher(
        backends.store,
        options,
        host=settings.fleet.host,
        publisher=publisher,
        on_preview=service.previews.publish,
        prepare=ModelFetch(library),
        remote=RemoteFolders(ws.input_dir, ws.output_dir, ASSETS_FOLDER),
    )


def _installs(store: JobStore, dispatcher: Dispatcher) -> Callable[[str], Awaitable[str]]:
    """Preset installs run as jobs, so their progress is a job's events like any other's."""

    async def start(name: str) -> str:
        new = NewJob(
            id=f"install-{uuid.uuid4().hex[:16]}",
            workflow={},
            options={INSTALL_PRESET: name},
        )
        job, _ = await store.enqueue(new)
        dispatcher.notify()
        return job.id

    return start


async def _attach(
    settings: Settings,
    ws: Workspace,
    backends: Backends,
    supervisor: Supervisor,
    on_listening: Callable[[str], None] | None,
) -> Callable[[], Awaitable[None]]:
    serve = settings.serve
    service = Service(
        store=backends.store,
        output_dir=ws.output_dir,
        settings=serve,
        instances=supervisor.status,
        host=settings.fleet.host,
        media=backends.media,
        webhook_events=tuple(backends.webhooks.default_events),
        storage_names=frozenset(backends.targets),
        storage=backends.storage,
        net_policy=settings.assets.net_policy(),
        idempotency_secret=idempotency_secret(ws.state_dir),
    )
    library = ModelLibrary.from_settings(settings)
    dispatcher = _dispatcher(settings, ws, backends, service, library)
    webhooks = WebhookService(
        backends.store,
        backends.outbox,
        backends.webhooks,
        view=lambda job: job_view(job, storage=backends.storage),
    )
    service.notify = dispatcher.notify
    service.dispatch = dispatcher.dispatch
    service.node_types = NodeTypes(service.serving_urls)
    supervisor.add_listener(dispatcher.on_instance_event)
    dispatcher.start()
    webhooks.start()
    routers = (
        assets_router(backends.assets),
        webhooks_router(backends.outbox, wake=webhooks.wake_sender),
        models_router(library, _installs(backends.store, dispatcher)),
    )
    app = create_app(
        service,
        routers=routers,
        keys=backends.keys,
        public_paths=settings.auth.public_paths,
    )
    config = uvicorn.Config(
        app, host=serve.host, port=serve.port, log_level="warning", lifespan="off", access_log=False
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            break
        await asyncio.sleep(0.01)
    if on_listening is not None:
        on_listening(f"http://{serve.host}:{serve.port}")

    async def detach() -> None:
        service.closing.set()  # event streams end now rather than when their jobs do
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        await dispatcher.stop()
        await webhooks.stop()

    return detach
