"""One real fleet for the client's tests: `comfyfleet serve` with a CPU ComfyUI, API keys on,
webhooks signed with a known secret, a manifest of small presets served over HTTP, and two
workflow templates in the workspace. Every test gets a client of each surface: `Client`, and
`AsyncClient` seen through `Synced` (its coroutines run on a loop in a thread of their own), so
the sync and async clients pass the very same suite."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from comfyfleet.client import AsyncClient, AsyncJob, Client
from tests.comfyui_env import workspace_sharing
from tests.integration.client import doc_examples
from tests.integration.serve import Server, serve_config
from tests.integration.test_serve_tenancy import create_key
from tests.model_file_server import ModelFileServer

SURFACES = ("sync", "async")
WEBHOOK_SECRET = "whsec_" + "Y2xpZW50LXRlc3RzLXNpZ25pbmcta2V5LTMyYnl0ZXMh"
TEMPLATES = {
    "client-blank": """
description: A plain image of a chosen size and colour
parameters:
  width: {type: integer, default: 32, minimum: 8, maximum: 256, multiple_of: 8, sets: ["1.width"]}
  height: {type: integer, default: 32, minimum: 8, maximum: 256, multiple_of: 8, sets: ["1.height"]}
  color: {type: integer, default: 0, minimum: 0, maximum: 16777215, sets: ["1.color"]}
workflow:
  "1": {class_type: EmptyImage, inputs: {width: 32, height: 32, batch_size: 1, color: 0}}
  "2": {class_type: SaveImage, inputs: {images: ["1", 0], filename_prefix: blank}}
""",
    "client-invert": """
description: The negative of an image
parameters:
  image: {type: image, sets: ["1.image"]}
workflow:
  "1": {class_type: LoadImage, inputs: {image: example.png}}
  "2": {class_type: ImageInvert, inputs: {image: ["1", 0]}}
  "3": {class_type: SaveImage, inputs: {images: ["2", 0], filename_prefix: inverted}}
""",
}
"""Workflow templates in the file format of the templates package, written to the workspace."""


@dataclass
class Fleet:
    server: Server
    keys: dict[str, str]
    """`user` (submit, read), `other` (the same, another owner), `reader` (read), `admin`."""
    secret: str
    presets: dict[str, str]
    """The preset made for each surface's install test, by surface."""

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def has_templates(self) -> bool:
        """Whether this server has the templates routes (they are built on another branch)."""
        paths = self.server.http.get("/openapi.json").json().get("paths", {})
        return "/v1/templates" in paths


def _manifest(files: ModelFileServer, folder: Path) -> dict[str, Any]:
    presets: dict[str, Any] = {}
    for surface in SURFACES:
        name = f"client-{surface}.safetensors"
        content = f"not a real model: {surface}".encode() * 64
        (folder / name).write_bytes(content)
        entry = {
            "source": files.url(name),
            "type": "loras",
            "filename": name,
            "size": len(content),
            "sha256": hashlib.sha256(content).hexdigest(),
        }
        presets[f"client-{surface}"] = {"description": f"{surface} test", "files": [entry]}
    return {"presets": presets}


@pytest.fixture(scope="session")
def fleet(comfyui_install: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("client")
    (root / "files").mkdir()
    with ModelFileServer(root / "files") as files:
        (root / "manifest.yaml").write_text(
            yaml.safe_dump(_manifest(files, root / "files")), encoding="utf-8"
        )
        ws = workspace_sharing(comfyui_install, root / "ws")
        (ws / "templates").mkdir()
        for name, text in (TEMPLATES | doc_examples.templates()).items():
            (ws / "templates" / f"{name}.yaml").write_text(text, encoding="utf-8")
        serve_config(
            ws,
            fleet={"probe_interval_s": 0.2, "startup_timeout_s": 120},
            auth={"enabled": True, "public_paths": ["/health", "/ready", "/openapi.json"]},
            webhooks={
                "secret": WEBHOOK_SECRET,
                "allow_private_targets": True,  # the receivers listen on loopback
                "initial_backoff_s": 0.5,
                "poll_s": 0.2,
            },
            models_root=str(root / "models"),
            models={"manifests": [str(root / "manifest.yaml")]},
        )
        keys = {
            "user": create_key(ws, "app"),
            "other": create_key(ws, "another-app"),
            "reader": create_key(ws, "dashboard", "read"),
            "admin": create_key(ws, "ops", "admin"),
        }
        server = Server(ws, instances=1).start()
        try:
            presets = {surface: f"client-{surface}" for surface in SURFACES}
            yield Fleet(server, keys, WEBHOOK_SECRET, presets)
        finally:
            server.close()


class Portal:
    """An event loop in a thread: runs coroutines for code that blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, items: AsyncIterator[Any]) -> Iterator[Any]:
        try:
            while True:
                try:
                    yield self.call(anext(items))  # type: ignore[arg-type]
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                self.call(close())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()


class Synced:
    """An `AsyncClient` (or `AsyncJob`) used like its sync twin: awaitables are awaited on the
    portal, async iterators become iterators, async jobs come back wrapped too."""

    def __init__(self, target: Any, portal: Portal) -> None:
        self._target = target
        self._portal = portal

    def __getattr__(self, name: str) -> Any:
        member = getattr(self._target, name)
        if not callable(member):
            return member

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._wrap(member(*args, **kwargs))

        return call

    def _wrap(self, value: Any) -> Any:
        if inspect.isawaitable(value):
            value = self._portal.call(value)  # type: ignore[arg-type]
        if isinstance(value, AsyncJob):
            return Synced(value, self._portal)
        if hasattr(value, "__anext__"):
            return self._portal.iterate(value)
        return value

    def __repr__(self) -> str:
        return f"Synced({self._target!r})"


@pytest.fixture(scope="session")
def portal() -> Iterator[Portal]:
    portal = Portal()
    yield portal
    portal.close()


@pytest.fixture(params=SURFACES)
def surface(request: pytest.FixtureRequest) -> str:
    return str(request.param)


Connect = Callable[..., Any]


@pytest.fixture
def connect(surface: str, portal: Portal) -> Iterator[Connect]:
    """Opens clients of the test's surface (`connect(url, api_key=...)`), closed after it."""
    opened: list[Any] = []

    def make(url: str, **kwargs: Any) -> Any:
        made = (
            Client(url, **kwargs)
            if surface == "sync"
            else Synced(AsyncClient(url, **kwargs), portal)
        )
        opened.append(made)
        return made

    yield make
    for made in opened:
        made.close()


@pytest.fixture
def client(connect: Connect, fleet: Fleet) -> Any:
    """A client with the `user` key (submit and read)."""
    return connect(fleet.url, api_key=fleet.keys["user"])


@pytest.fixture
def admin(connect: Connect, fleet: Fleet) -> Any:
    return connect(fleet.url, api_key=fleet.keys["admin"])
