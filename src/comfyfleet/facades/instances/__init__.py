"""The instances' own ComfyUI, through the gateway: `/instances/{i}/...` and the home fallback.

A streaming reverse proxy (HTTP of any method, WebSocket both ways) to the instances the registry
lists, so that an operator opens one instance's editor at `/instances/0/` behind the gateway's
keys and address, and the stock editor opened at the gateway's `/` finds what it needs on a
"home" instance. See `_apps` for the two apps, `_headers` for what crosses, `_http` and
`_websocket` for the streaming, `_directory` for how an instance is found.
"""

from __future__ import annotations

from comfyfleet.facades.instances._apps import (
    PREFIX,
    RESERVED_PREFIXES,
    InstanceProxy,
    home_proxy,
    instances_router,
)
from comfyfleet.facades.instances._directory import InstanceDirectory, instance_name
from comfyfleet.facades.instances._errors import ProxyError

__all__ = [
    "PREFIX",
    "RESERVED_PREFIXES",
    "InstanceDirectory",
    "InstanceProxy",
    "ProxyError",
    "home_proxy",
    "instance_name",
    "instances_router",
]
