"""Real servers for the storage tests, reusable by any test that needs a store to write to.

- `moto_s3_server()`: moto's S3 in a subprocess on a free loopback port.
- `azurite_server()`: Azurite's blob service (installed once from npm into the test cache,
  keyed by version), with a fresh random account key. `AzuriteMissing` when npm, node or the
  install is not available: callers skip with its message.
- `put_receiver()`: an HTTP server in a thread that keeps what is PUT to it, serves it back,
  and can be told to fail the next requests or to demand a header.

Each is a context manager that yields the endpoint details and always stops its server.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.server
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from comfyfleet.storage import StorageSettings

AZURITE_VERSION = "3.35.0"
"""Pinned: newer releases ask for Node 22, and Debian's Node is 20."""

S3_REGION = "us-east-1"


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "comfyfleet-tests"


def free_port() -> int:
    """A loopback port nothing listens on right now (best effort, as always)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def down_url(path: str = "/") -> str:
    """A URL on a loopback port where nothing listens: a store that is down."""
    return f"http://127.0.0.1:{free_port()}{path}"


def wait_until_answers(url: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """Poll `url` until any HTTP answer comes back; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        try:
            httpx.get(url, timeout=2, trust_env=False)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:.0f}s") from None
            time.sleep(0.1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, SIGKILL it after a grace period."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@contextlib.contextmanager
def _server_process(
    argv: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=log.parent,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    try:
        try:
            wait_until_answers(ready_url, proc, timeout=60)
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}; its output:\n{tail}") from None
        yield proc
    finally:
        _stop(proc)


# --- S3 (moto) ------------------------------------------------------------------------------


@dataclass
class S3Server:
    endpoint_url: str
    proc: subprocess.Popen[bytes]
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = S3_REGION

    def settings(self, bucket: str, prefix: str = "", **options: Any) -> StorageSettings:
        """Storage settings that write to `s3://bucket/prefix` on this server."""
        values: dict[str, Any] = {
            "url": f"s3://{bucket}/{prefix}",
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
            "addressing_style": "path",
            "attempts": 1,
        }
        return StorageSettings(**(values | options))

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def create_bucket(self, name: str) -> str:
        with contextlib.closing(self.client()) as client:
            client.create_bucket(Bucket=name)
        return name

    def make_public(self, bucket: str) -> None:
        """Let anyone GET the bucket's objects (moto refuses anonymous reads otherwise)."""
        statement = {
            "Effect": "Allow",
            "Principal": "*",
            "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{bucket}/*",
        }
        policy = json.dumps({"Version": "2012-10-17", "Statement": [statement]})
        with contextlib.closing(self.client()) as client:
            client.put_bucket_policy(Bucket=bucket, Policy=policy)

    def stop(self) -> None:
        _stop(self.proc)


@contextlib.contextmanager
def moto_s3_server() -> Iterator[S3Server]:
    """moto's S3 in its own process; stopped (with its process group) on exit."""
    with tempfile.TemporaryDirectory(prefix="moto-") as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
        with _server_process(argv, url + "/", Path(tmp) / "moto.log") as proc:
            yield S3Server(url, proc)


# --- Azure (Azurite) ------------------------------------------------------------------------


class AzuriteMissing(RuntimeError):
    """Azurite cannot be installed or started here; the message says why."""


@dataclass
class AzuriteServer:
    blob_port: int
    proc: subprocess.Popen[bytes]
    account: str
    account_key: str

    @property
    def blob_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return self.connection_string_with(self.account_key)

    def connection_string_with(self, key: str) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={key};"
            f"BlobEndpoint={self.blob_endpoint};"
        )

    def settings(self, container: str, prefix: str = "", **options: Any) -> StorageSettings:
        """Storage settings that write to `az://container/prefix` on this server."""
        values: dict[str, Any] = {
            "url": f"az://{container}/{prefix}",
            "azure_connection_string": self.connection_string,
            "attempts": 1,
        }
        return StorageSettings(**(values | options))

    def create_container(self, name: str) -> str:
        from azure.storage.blob import BlobServiceClient

        with BlobServiceClient.from_connection_string(self.connection_string) as service:
            service.create_container(name)
        return name

    def stop(self) -> None:
        _stop(self.proc)


def azurite_install_dir() -> Path:
    return cache_root() / f"azurite-{AZURITE_VERSION}"


def ensure_azurite() -> Path:
    """The `azurite-blob` program, installed from npm into the test cache on first use."""
    program = azurite_install_dir() / "node_modules" / ".bin" / "azurite-blob"
    if program.exists():
        return program
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise AzuriteMissing("Azurite needs node and npm, and they are not installed")
    target = azurite_install_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.with_suffix(".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if program.exists():
            return program
        staging = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        argv = [npm, "install", "--prefix", str(staging), f"azurite@{AZURITE_VERSION}"]
        argv += ["--no-audit", "--no-fund", "--loglevel=error"]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=900)
        except subprocess.TimeoutExpired:
            shutil.rmtree(staging, ignore_errors=True)
            raise AzuriteMissing(f"npm install azurite@{AZURITE_VERSION} timed out") from None
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            tail = (result.stderr or result.stdout)[-1500:]
            raise AzuriteMissing(f"npm install azurite@{AZURITE_VERSION} failed: {tail}")
        staging.rename(target)
    return program


@contextlib.contextmanager
def azurite_server() -> Iterator[AzuriteServer]:
    """Azurite's blob service in memory, with an account of its own; stopped on exit."""
    program = ensure_azurite()
    account = "fleettest"
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    with tempfile.TemporaryDirectory(prefix="azurite-") as tmp:
        port = free_port()
        argv = [str(program), "--inMemoryPersistence", "--blobHost", "127.0.0.1"]
        argv += ["--blobPort", str(port), "--loose", "--skipApiVersionCheck"]
        env = {"AZURITE_ACCOUNTS": f"{account}:{key}"}
        ready = f"http://127.0.0.1:{port}/"
        with _server_process(argv, ready, Path(tmp) / "azurite.log", env) as proc:
            yield AzuriteServer(port, proc, account, key)


# --- HTTP PUT receiver ----------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class PutReceiver:
    """What the receiver was sent, and knobs to make it misbehave."""

    base_url: str
    prefix: str = "/uploads/"
    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    fail_status: int = 503
    fail_next: int = 0
    """Answer this many of the next requests with `fail_status`."""
    required_headers: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        """The prefix URL to PUT under."""
        return self.base_url + self.prefix

    def puts(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.method == "PUT"]

    def answer(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        with self.lock:
            self.requests.append(Received(method, path, headers, body))
            if self.fail_next > 0:
                self.fail_next -= 1
                return self.fail_status, b"failing on purpose", "text/plain"
            for name, value in self.required_headers.items():
                if headers.get(name.lower()) != value:
                    return 401, b"missing credentials", "text/plain"
            if method == "PUT":
                self.objects[path] = (body, headers.get("content-type", ""))
                return 201, b"", "text/plain"
            if method == "DELETE":
                return (204 if self.objects.pop(path, None) else 404), b"", "text/plain"
            if path in self.objects:
                data, content_type = self.objects[path]
                return 200, data, content_type
            return 404, b"not found", "text/plain"


def _handler(receiver: PutReceiver) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self, send_body: bool = True) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, data, content_type = receiver.answer(self.command, self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if send_body:
                self.wfile.write(data)

        def do_PUT(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def do_DELETE(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve(send_body=False)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextlib.contextmanager
def put_receiver() -> Iterator[PutReceiver]:
    """A threaded HTTP server on a free loopback port that accepts PUT, GET, HEAD, DELETE."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    receiver = PutReceiver(f"http://127.0.0.1:{server.server_address[1]}")
    server.RequestHandlerClass = _handler(receiver)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="put-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
