"""How each backend's failures become StorageUnavailable (retry) or another StorageError (do not),
without any server: boto3's own Stubber, the Azure SDK's exception types, and httpx's
MockTransport. The real servers are in tests/integration/test_storage_backends.py."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore import exceptions as bce  # type: ignore[import-untyped]
from botocore.stub import Stubber  # type: ignore[import-untyped]

from comfyfleet.storage import (
    AccessDenied,
    HttpPutStorage,
    ObjectNotFound,
    S3Storage,
    StorageConfigError,
    StorageError,
    StorageSettings,
    StorageUnavailable,
    open_storage,
    read_url,
)
from comfyfleet.storage._azure import azure_error
from comfyfleet.storage._http import redact
from comfyfleet.storage._s3 import build_client, s3_error

pytestmark = pytest.mark.anyio

SECRET = "SECRET-must-not-leak"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def stubbed() -> Iterator[tuple[S3Storage, Stubber]]:
    settings = StorageSettings(
        url="s3://bucket/pre",
        endpoint_url="http://127.0.0.1:1",
        region="us-east-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key=SECRET,  # type: ignore[arg-type]
    )
    client = build_client(settings)
    with Stubber(client) as stubber:
        yield S3Storage("bucket", "pre", settings=settings, client=client), stubber
    client.close()


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("SlowDown", 503, StorageUnavailable),
        ("InternalError", 500, StorageUnavailable),
        ("ServiceUnavailable", 503, StorageUnavailable),
        ("AccessDenied", 403, AccessDenied),
        ("InvalidAccessKeyId", 403, AccessDenied),
        ("SignatureDoesNotMatch", 403, AccessDenied),
        ("NoSuchBucket", 404, StorageConfigError),
        ("EntityTooLarge", 400, StorageConfigError),
    ],
)
async def test_s3_put_failures_are_sorted(
    stubbed: tuple[S3Storage, Stubber], code: str, status: int, expected: type[StorageError]
) -> None:
    storage, stubber = stubbed
    stubber.add_client_error("put_object", code, "said the server", status)
    with pytest.raises(StorageError) as caught:
        await storage.put("job/a.png", b"data", "image/png")
    assert type(caught.value) is expected
    assert "s3://bucket/pre/job/a.png" in str(caught.value) or "'bucket'" in str(caught.value)
    assert SECRET not in str(caught.value)


async def test_s3_get_of_a_missing_key_is_not_found(stubbed: tuple[S3Storage, Stubber]) -> None:
    storage, stubber = stubbed
    stubber.add_client_error("get_object", "NoSuchKey", "gone", 404)
    with pytest.raises(ObjectNotFound, match=r"s3://bucket/pre/job/none\.png"):
        await storage.get("job/none.png")


async def test_s3_check_names_the_missing_bucket(stubbed: tuple[S3Storage, Stubber]) -> None:
    storage, stubber = stubbed
    stubber.add_client_error("head_bucket", "404", "", 404)
    with pytest.raises(StorageConfigError, match="S3 bucket 'bucket' does not exist"):
        await storage.check()
    stubber.add_client_error("head_bucket", "403", "", 403)
    with pytest.raises(AccessDenied):
        await storage.check()


def test_s3_transport_failures_are_retryable() -> None:
    down = bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:1/bucket/key")
    timeout = bce.ReadTimeoutError(endpoint_url="http://127.0.0.1:1/bucket/key")
    for exc in (down, timeout, bce.ConnectTimeoutError(endpoint_url="x")):
        assert isinstance(s3_error(exc, "bucket", "key"), StorageUnavailable)
    assert isinstance(s3_error(bce.NoCredentialsError(), "bucket"), StorageConfigError)
    assert s3_error(RuntimeError("a bug"), "bucket") is None


def test_a_missing_bucket_is_the_readers_problem_not_the_settings() -> None:
    error = bce.ClientError({"Error": {"Code": "NoSuchBucket"}}, "GetObject")
    assert type(s3_error(error, "theirs", "k", reading=True)) is ObjectNotFound
    assert type(s3_error(error, "ours", "k")) is StorageConfigError


def _azure(cls_name: str, status: int, code: str) -> Exception:
    from azure.core import exceptions as ace

    exc: Any = getattr(ace, cls_name)(message="said the server")
    exc.status_code = status
    exc.error_code = code
    return exc  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_azure("HttpResponseError", 503, "ServerBusy"), StorageUnavailable),
        (_azure("HttpResponseError", 500, "InternalError"), StorageUnavailable),
        (_azure("ClientAuthenticationError", 403, "AuthenticationFailed"), AccessDenied),
        (_azure("ResourceNotFoundError", 404, "ContainerNotFound"), StorageConfigError),
        (_azure("ResourceNotFoundError", 404, "BlobNotFound"), ObjectNotFound),
        (_azure("HttpResponseError", 400, "InvalidHeaderValue"), StorageConfigError),
    ],
)
def test_azure_failures_are_sorted(exc: Exception, expected: type[StorageError]) -> None:
    error = azure_error(exc, "outputs", "job/a.png")
    assert type(error) is expected


def test_azure_transport_failures_are_retryable() -> None:
    from azure.core import exceptions as ace

    for exc in (ace.ServiceRequestError("refused"), ace.ServiceResponseError("reset")):
        assert isinstance(azure_error(exc, "outputs"), StorageUnavailable)
    assert azure_error(ValueError("a bug"), "outputs") is None


def test_a_missing_container_is_the_readers_problem_when_reading() -> None:
    exc = _azure("ResourceNotFoundError", 404, "ContainerNotFound")
    assert type(azure_error(exc, "theirs", "k", reading=True)) is ObjectNotFound


class Script:
    """A MockTransport handler that answers from a list of statuses (or exceptions)."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.bodies: list[bytes] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.bodies.append(await request.aread())
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer, content=b"stored" if answer < 300 else b"")


def http_storage(script: Script, **options: Any) -> HttpPutStorage:
    return HttpPutStorage(
        "https://up.example/put",
        {"Authorization": SECRET},
        transport=httpx.MockTransport(script),
        retry_backoff_s=0,
        **options,
    )


async def test_http_put_retries_5xx_and_connection_errors_then_succeeds() -> None:
    script = Script(503, httpx.ConnectError("refused"), 201)
    storage = http_storage(script, attempts=3)
    stored = await storage.put("job/a b.png", b"payload", "image/png")
    await storage.close()
    assert len(script.requests) == 3
    assert all(body == b"payload" for body in script.bodies[::2])
    assert str(script.requests[-1].url) == "https://up.example/put/job/a%20b.png"
    assert script.requests[-1].headers["content-length"] == "7"
    assert script.requests[-1].headers["authorization"] == SECRET
    assert stored.url == "https://up.example/put/job/a%20b.png"
    assert stored.size == 7


async def test_http_put_gives_up_after_its_attempts() -> None:
    script = Script(503, 502, 500, 201)
    storage = http_storage(script, attempts=3)
    with pytest.raises(StorageUnavailable, match="answered 500"):
        await storage.put("a.png", b"x")
    await storage.close()
    assert len(script.requests) == 3


@pytest.mark.parametrize(("status", "expected"), [(401, AccessDenied), (404, StorageConfigError)])
async def test_http_put_does_not_retry_client_errors(
    status: int, expected: type[StorageError]
) -> None:
    script = Script(status, 201)
    storage = http_storage(script)
    with pytest.raises(expected) as caught:
        await storage.put("a.png", b"x")
    await storage.close()
    assert len(script.requests) == 1
    assert SECRET not in str(caught.value)


async def test_http_get_missing_is_not_found_and_delete_missing_is_fine() -> None:
    script = Script(404, 404)
    storage = http_storage(script)
    with pytest.raises(ObjectNotFound):
        await storage.get("a.png")
    await storage.delete("a.png")
    await storage.close()


def test_urls_in_messages_lose_user_info_and_query() -> None:
    assert redact("https://user:pw@host:8/p/a.png?sig=abc#x") == "https://host:8/p/a.png"


def test_missing_boto3_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(StorageConfigError) as caught:
        build_client(StorageSettings(url="s3://bucket"))
    assert caught.value.hint == "pip install 'comfyfleet[s3]'"


def test_missing_azure_sdk_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    settings = StorageSettings(url="az://outputs", azure_account_url="https://a.example")
    with pytest.raises(StorageConfigError) as caught:
        open_storage(settings, local_root=tmp_path)
    assert caught.value.hint == "pip install 'comfyfleet[azure]'"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://host/a.png", "scheme 'https:'"),
        ("s3://bucket", "does not name an object"),
        ("az:///blob", "does not name an object"),
    ],
)
async def test_read_url_refuses_what_it_does_not_read(url: str, says: str) -> None:
    with pytest.raises(StorageConfigError, match=says):
        await read_url(url, StorageSettings(), max_bytes=10)
