"""Metrics for each role: what `serve`, `gateway` and `agent` count, and where they show it.

A gateway part serves `/metrics` with the fleet's shared state and job totals (from the store);
an agent part counts its own work into the same :class:`Metrics` when they share a process
(`serve`), or into its own, served on `metrics.agent_port`, when it runs alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator

import uvicorn

from comfyfleet.config import Settings
from comfyfleet.metrics import Metrics, count_jobs, metrics_app, watch_fleet
from comfyfleet.roles._backends import Backends
from comfyfleet.supervise import port_is_free

log = logging.getLogger("comfyfleet.agent")

Stop = Callable[[], Awaitable[None]]


def new_metrics(settings: Settings, *, agent_alone: bool = False) -> Metrics | None:
    """The metrics of one role's process; None where nobody could read them (metrics off, or
    an agent alone with no `metrics.agent_port`)."""
    chosen = settings.metrics
    if not chosen.enabled or (agent_alone and chosen.agent_port is None):
        return None
    return Metrics(chosen)


async def watch_gateway(settings: Settings, backends: Backends, metrics: Metrics) -> None:
    """The fleet's gauges (read at scrape time) and job totals (followed from now on)."""
    watch_fleet(
        metrics,
        backends.store,
        backends.registry,
        backends.outbox,
        agent_timeout_s=settings.serve.agent_timeout_s,
    )
    await count_jobs(metrics, backends.store)


class _QuietServer(uvicorn.Server):
    """uvicorn inside our loop: the role's runner owns the signal handling."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_agent_metrics(settings: Settings, metrics: Metrics) -> Stop:
    """`GET /metrics` on `metrics.agent_host:agent_port` until the returned stop is awaited.
    A port already taken is a warning, not a reason to leave the machine's jobs undone."""
    host, port = settings.metrics.agent_host, settings.metrics.agent_port
    assert port is not None

    async def nothing() -> None:
        pass

    if not port_is_free(host, port):
        log.warning("metrics port %s on %s is in use: this agent serves no /metrics", port, host)
        return nothing
    config = uvicorn.Config(
        metrics_app(metrics),
        host=host,
        port=port,
        log_level="warning",
        lifespan="off",
        access_log=False,
        log_config=None,
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    log.info("agent metrics on http://%s:%s/metrics", host, port)

    async def stop() -> None:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await task

    return stop
