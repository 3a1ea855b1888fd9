"""`comfyfleet serve`: supervisor + dispatcher + HTTP gateway in one process.

The gateway and the dispatcher are attached to the fleet before the instances start, and are
stopped before the instances are: jobs still running then fail their attempt as retryable and
run again after a restart (the store is durable; nothing is lost).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import uvicorn

from comfyfleet.config import Settings
from comfyfleet.errors import PortInUseError
from comfyfleet.gateway._app import create_app
from comfyfleet.gateway._service import GatewaySettings, NodeTypes, Service
from comfyfleet.jobs import Dispatcher, DispatcherSettings, open_store
from comfyfleet.supervise import InstanceEvent, Supervisor, port_is_free, run_fleet
from comfyfleet.workspace import Workspace


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    store: str = "sqlite://"
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    dispatcher: DispatcherSettings = field(default_factory=DispatcherSettings)


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the fleet's runner owns the signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def run_service(
    settings: Settings,
    options: ServeOptions,
    *,
    on_event: Callable[[InstanceEvent], None] | None = None,
    on_listening: Callable[[str], None] | None = None,
) -> None:
    ws = Workspace.from_settings(settings)
    ws.require_installed()
    if not port_is_free(options.host, options.port):
        raise PortInUseError(
            f"port {options.port} on {options.host} is in use", hint="choose another with --port"
        )
    store = await open_store(options.store, default_dir=ws.state_dir)

    async def attach(
        supervisor: Supervisor, stop: Callable[[], None]
    ) -> Callable[[], Awaitable[None]]:
        dispatcher = Dispatcher(store, options.dispatcher, host=settings.fleet.host)
        supervisor.add_listener(dispatcher.on_instance_event)
        dispatcher.start()
        service = Service(
            store=store,
            output_dir=ws.output_dir,
            settings=options.gateway,
            instances=supervisor.status,
            host=settings.fleet.host,
            notify=dispatcher.notify,
            dispatch=dispatcher.dispatch,
        )
        service.node_types = NodeTypes(service.serving_urls)
        config = uvicorn.Config(
            create_app(service),
            host=options.host,
            port=options.port,
            log_level="warning",
            lifespan="off",
            access_log=False,
        )
        server = _EmbeddedServer(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                break
            await asyncio.sleep(0.01)
        if on_listening is not None:
            on_listening(f"http://{options.host}:{options.port}")

        async def detach() -> None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await task
            await dispatcher.stop()

        return detach

    try:
        await run_fleet(settings, attach=attach, on_event=on_event)
    finally:
        await store.close()
