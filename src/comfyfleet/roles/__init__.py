"""The composition root: what `serve`, `gateway` and `agent` are made of.

Only this package and the CLI see the whole settings object. They open the backends (job store,
webhook outbox, output stores, assets, keys) once, build the supervisor, the dispatcher, the
webhook sender and the HTTP app from them, and hand each feature its own settings section.
"""

from __future__ import annotations

from comfyfleet.roles._backends import Backends, open_backends
from comfyfleet.roles._reach import reachability_checks
from comfyfleet.roles._retention import run_gc
from comfyfleet.roles._serve import fleet_warmup, run_agent, run_gateway, run_service

__all__ = [
    "Backends",
    "fleet_warmup",
    "open_backends",
    "reachability_checks",
    "run_agent",
    "run_gateway",
    "run_gc",
    "run_service",
]
