"""The gateway part: the HTTP app over the store, alone (`comfyfleet gateway`) or beside an
agent part in one process (`comfyfleet serve`).

It reads the fleet from the registry like any other gateway; the one thing an agent in the same
process adds is speed: a job enqueued here is handed to that agent's dispatcher at once, and its
preview frames reach the hub directly instead of through the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import uvicorn
from fastapi import APIRouter

from comfyfleet.auth import Sessions, key_lookup, open_key_store, session_secret
from comfyfleet.config import Settings, redacted_settings
from comfyfleet.dashboard import dashboard_router
from comfyfleet.facades.comfy_v2 import comfy_v2_router
from comfyfleet.facades.comfyui import ComfyApi, Folders, SocketHub, comfyui_router
from comfyfleet.facades.instances import InstanceProxy, home_proxy, instances_router
from comfyfleet.facades.openai import openai_edge, openai_images, openai_router
from comfyfleet.gateway import (
    NodeTypes,
    PreviewFeed,
    Service,
    assets_router,
    config_router,
    create_app,
    idempotency_secret,
    keys_router,
    models_router,
    templates_router,
    webhooks_router,
)
from comfyfleet.jobs import JobOptions, JobStore, NewJob
from comfyfleet.metrics import Metrics, metrics_router
from comfyfleet.models import LOADER_INPUTS
from comfyfleet.roles._agent import AgentPart
from comfyfleet.roles._backends import Backends
from comfyfleet.roles._observe import watch_gateway
from comfyfleet.templates import TemplateLibrary
from comfyfleet.workspace import Workspace

Detach = Callable[[], Awaitable[None]]


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the role's runner owns the signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _installs(
    store: JobStore, notify: Callable[[], None]
) -> tuple[Callable[[str], Awaitable[str]], Callable[[dict[str, Any]], Awaitable[str]]]:
    """Model installs (a preset, or one file from a URL) run as jobs, so their progress is a
    job's events like any other's."""

    async def enqueue(option: JobOptions) -> str:
        new = NewJob(id=f"install-{uuid.uuid4().hex[:16]}", workflow={}, options=option)
        job, _ = await store.enqueue(new)
        notify()
        return job.id

    async def preset(name: str) -> str:
        return await enqueue(JobOptions(install_preset=name))

    async def model(spec: dict[str, Any]) -> str:
        return await enqueue(JobOptions(install_model=spec))

    return preset, model


def build_service(
    settings: Settings, ws: Workspace, backends: Backends, agent: AgentPart | None
) -> Service:
    serve = settings.serve
    service = Service(
        store=backends.store,
        output_dir=ws.output_dir,
        settings=serve,
        registry=backends.registry,
        media=backends.media,
        webhook_events=tuple(backends.webhooks.default_events),
        storage_names=frozenset(backends.targets),
        storage=backends.storage,
        net_policy=settings.assets.net_policy(),
        idempotency_secret=idempotency_secret(ws.state_dir),
        loaders=LOADER_INPUTS | settings.models.extra_loaders,
    )
    service.node_types = NodeTypes(backends.registry, timeout_s=serve.agent_timeout_s)
    if agent is not None:
        service.notify = agent.dispatcher.notify
        service.dispatch = agent.dispatcher.dispatch
        service.wake_commands = agent.commands.wake
    return service


def _secret(settings: Settings, ws: Workspace) -> bytes:
    """The gateway's session secret (configured, else kept in the workspace)."""
    configured = settings.auth.session_secret
    return session_secret(
        ws.state_dir, configured.get_secret_value().strip() if configured else None
    )


def _sessions(settings: Settings, ws: Workspace, backends: Backends) -> Sessions | None:
    """Browser sign-in, where keys are on and `auth.browser_login` is."""
    auth = settings.auth
    if backends.keys is None or not auth.browser_login:
        return None
    static = auth.api_key.get_secret_value().strip() if auth.api_key else None
    configured = auth.session_secret.get_secret_value().strip() if auth.session_secret else None
    return Sessions(
        session_secret(ws.state_dir, configured),
        key_lookup(backends.keys, static),
        ttl_s=auth.session_ttl_s,
    )


async def start_gateway(
    settings: Settings,
    ws: Workspace,
    backends: Backends,
    service: Service,
    *,
    agent: AgentPart | None = None,
    on_listening: Callable[[str], None] | None = None,
    metrics: Metrics | None = None,
) -> Detach:
    """Serve the app on the configured address until the returned `detach` is awaited;
    with `metrics`, `/metrics` too (its owner closes them)."""
    serve = settings.serve
    library = TemplateLibrary.for_workspace(ws.root, settings.templates.folders)
    routers: list[APIRouter] = [
        assets_router(backends.assets),
        webhooks_router(
            backends.outbox, wake=agent.webhooks.wake_sender if agent else lambda: None
        ),
        comfy_v2_router(service, backends.assets),
        templates_router(service, library),
        keys_router(
            backends.keys or open_key_store(settings.auth, ws.state_dir),
            enabled=settings.auth.enabled,
        ),
        config_router(lambda: redacted_settings(settings), role="serve" if agent else "gateway"),
    ]
    images = openai_images(
        service,
        library,
        backends.assets,
        settings.openai,
        secret=_secret(settings, ws),
        max_upload_bytes=settings.assets.max_upload_bytes,
    )
    if settings.openai.enabled:
        routers.append(openai_router(images))
    sessions = _sessions(settings, ws, backends)
    if settings.dashboard.enabled:
        routers.append(
            dashboard_router(
                settings.dashboard,
                keys_enabled=backends.keys is not None,
                sessions=sessions is not None,
            )
        )
    if agent is not None:  # model files are an agent's disk: listed where one runs
        preset, model = _installs(backends.store, agent.dispatcher.notify)
        routers.append(
            models_router(
                agent.library,
                preset,
                start_model_install=model,
                net_policy=settings.assets.net_policy(),
            )
        )
    hub = SocketHub(backends.store, service.previews)
    instances_root = ws.instance_dir(0).parent
    comfy = ComfyApi(
        service=service,
        hub=hub,
        folders=Folders(
            output=ws.output_dir,
            input=ws.input_dir,
            temp=lambda: sorted(instances_root.glob("*/temp")),
        ),
        assets=backends.assets,
        max_upload_bytes=settings.assets.max_upload_bytes,
    )
    routers.append(comfyui_router(comfy))
    feed = PreviewFeed(
        backends.registry,
        service.previews,
        local_workers=[agent.worker] if agent is not None else [],
    )
    # The instances' own ComfyUI: /instances/{i}/... and, for whatever no route takes, the
    # home instance (the stock editor at / asks for much the gateway does not implement).
    proxy = InstanceProxy(service.fleet, ui_scope=settings.auth.ui_scope)
    routers.append(instances_router(proxy))
    if metrics is not None:
        await watch_gateway(settings, backends, metrics)
        routers.append(metrics_router(metrics))
    app = create_app(
        service,
        routers=tuple(routers),
        keys=backends.keys,
        public_paths=settings.auth.public_paths,
        sessions=sessions,
        fallback=home_proxy(proxy),
    )
    if settings.openai.enabled:
        app = openai_edge(app, images, ws.output_dir)
    config = uvicorn.Config(
        app,
        host=serve.host,
        port=serve.port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        log_config=None,  # its records go where the process's go (`comfyfleet.logs`)
    )
    server = _EmbeddedServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            break
        await asyncio.sleep(0.01)
    feed.start()
    await hub.start()
    if on_listening is not None:
        on_listening(f"http://{serve.host}:{serve.port}")

    async def detach() -> None:
        service.closing.set()  # event streams end now rather than when their jobs do
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task
        await feed.stop()
        await hub.stop()
        await proxy.aclose()

    return detach
