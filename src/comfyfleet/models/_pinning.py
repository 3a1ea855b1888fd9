"""Connections for model URLs a client chose: to checked addresses only, whatever DNS says later.

A loader input in a job's graph may be a URL, and the gateway checks its host against the SSRF
policy when the job is submitted. The download starts later, and a name can resolve elsewhere by
then (DNS rebinding), or redirect somewhere the check never saw. So a source that carries a
:class:`UrlGuard` is fetched over connections that resolve each host once, check every address
with `comfyfleet.netguard`'s policy, and connect to a checked address itself; https still sends
the name for SNI and verifies the certificate against it. Every redirect hop opens its connection
the same way. No proxy is used for such a source: a proxy would resolve the name again.

Manifests and the CLI are the operator's: their sources carry no guard.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from comfyfleet.models._errors import DownloadError
from comfyfleet.netguard import (
    BlockingResolver,
    NetPolicy,
    UrlRefused,
    UrlUnreachable,
    checked_addresses_blocking,
    system_resolve_blocking,
)


@dataclass(frozen=True)
class UrlGuard:
    """The policy a client's model URL is held to, and how its hosts are resolved."""

    policy: NetPolicy
    resolve: BlockingResolver = system_resolve_blocking
    """Called on the downloader's threads; tests map names to local servers with it."""
    tls: ssl.SSLContext | None = None
    """The TLS context for https (default: the system's trusted CAs)."""

    def addresses(self, host: str, port: int) -> list[str]:
        """Every address of `host`, each allowed; a refused one is a lasting DownloadError, a
        name that does not resolve an OSError (retried like any network failure)."""
        try:
            found = checked_addresses_blocking(host, port, self.policy, self.resolve)
        except UrlRefused as exc:
            raise DownloadError(
                f"model URL refused: {exc.message}",
                hint="a job may name public model URLs only; list others in a manifest",
            ) from exc
        except UrlUnreachable as exc:
            raise OSError(exc.message) from exc
        return [str(address) for address in found]

    def connection(
        self, scheme: str, host: str, port: int, timeout: float
    ) -> http.client.HTTPConnection:
        """An unopened connection to `host` that will open to a checked address of it."""
        addresses = self.addresses(host, port)
        conn: http.client.HTTPConnection
        if scheme == "https":
            context = self.tls or ssl.create_default_context()
            conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)

        def open_checked(
            address: tuple[str, int], timeout: Any = None, source: Any = None
        ) -> socket.socket:
            failure: OSError | None = None
            for checked in addresses:  # `address` holds the name: it is not resolved again
                try:
                    return socket.create_connection((checked, address[1]), timeout, source)
                except OSError as exc:
                    failure = exc
            assert failure is not None
            raise failure

        # http.client opens its socket through this attribute (HTTPSConnection then wraps it
        # with server_hostname=host, so TLS still checks the name).
        conn._create_connection = open_checked  # type: ignore[attr-defined]
        return conn
