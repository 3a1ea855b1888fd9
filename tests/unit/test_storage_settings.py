from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from comfyfleet.storage import (
    AzureBlobStorage,
    HttpPutStorage,
    LocalStorage,
    S3Storage,
    StorageConfigError,
    StorageSettings,
    Target,
    open_storage,
    parse_storage_url,
)

pytestmark = pytest.mark.anyio

SECRET = "TOPSECRET-do-not-print"
FAKE_KEY = "ZmFrZS1hY2NvdW50LWtleS1mb3ItdW5pdC10ZXN0cw=="
AZURE = (
    "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey={key};"
    "BlobEndpoint=http://127.0.0.1:1/acct;"
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(
    ("url", "target"),
    [
        ("file://", Target("local")),
        ("file:///srv/outputs", Target("local", location="/srv/outputs")),
        ("s3://my-bucket", Target("s3", container="my-bucket")),
        ("s3://my-bucket/", Target("s3", container="my-bucket")),
        ("s3://my-bucket/runs/2024", Target("s3", container="my-bucket", prefix="runs/2024/")),
        ("az://outputs/fleet/", Target("azure", container="outputs", prefix="fleet/")),
        ("https://up.example/put", Target("http", location="https://up.example/put/")),
        ("http://127.0.0.1:9/p/", Target("http", location="http://127.0.0.1:9/p/")),
    ],
)
def test_storage_urls_are_taken_apart(url: str, target: Target) -> None:
    assert parse_storage_url(url) == target


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://host/x", "unknown storage URL"),
        ("outputs", "unknown storage URL"),
        ("file://host/x", "not a host"),
        ("s3://", "not a valid bucket name"),
        ("s3://bad/../x", "bad prefix"),
        ("az://Upper", "not a valid container name"),
        ("https://h/p?token=abc", "query string"),
    ],
)
def test_bad_storage_urls_are_refused_with_the_forms(url: str, says: str) -> None:
    with pytest.raises(ValidationError) as caught:
        StorageSettings(url=url)
    assert says in str(caught.value)


def test_defaults_are_local_with_one_hour_signed_urls() -> None:
    settings = StorageSettings()
    assert settings.target.kind == "local"
    assert settings.presign_expiry_s == 3600
    assert settings.attempts == 3


def test_settings_are_frozen_and_strict() -> None:
    settings = StorageSettings()
    with pytest.raises(ValidationError):
        settings.url = "s3://other"
    with pytest.raises(ValidationError):
        StorageSettings(bucket="x")  # type: ignore[call-arg]


def test_a_secret_key_without_its_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="both access_key_id and secret_access_key"):
        StorageSettings(url="s3://bucket", secret_access_key=SECRET)  # type: ignore[arg-type]


def test_secrets_never_show_in_printed_or_dumped_settings() -> None:
    settings = StorageSettings.model_validate(
        {
            "url": "s3://bucket",
            "access_key_id": "AKIDEXAMPLE",
            "secret_access_key": SECRET,
            "session_token": SECRET,
            "azure_connection_string": SECRET,
            "azure_account_key": SECRET,
            "azure_sas_token": SECRET,
            "http_headers": {"Authorization": f"Bearer {SECRET}"},
        }
    )
    for text in (repr(settings), str(settings), settings.model_dump_json()):
        assert SECRET not in text
    assert settings.secret_access_key is not None
    assert settings.secret_access_key.get_secret_value() == SECRET


def test_open_storage_builds_local_under_the_given_root(tmp_path: Path) -> None:
    storage = open_storage(StorageSettings(), local_root=tmp_path, local_base_url="/v1/outputs/")
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path
    assert storage.url_for("job/a b.png") == "/v1/outputs/job/a%20b.png"


def test_open_storage_local_folder_from_url_and_public_base(tmp_path: Path) -> None:
    settings = StorageSettings(url=f"file://{tmp_path}/out", public_base_url="https://cdn/x/")
    storage = open_storage(settings, local_root=Path("unused"))
    assert isinstance(storage, LocalStorage)
    assert storage.root == tmp_path / "out"
    assert storage.url_for("a.png") == "https://cdn/x/a.png"


async def test_open_storage_builds_s3_without_contacting_it(tmp_path: Path) -> None:
    settings = StorageSettings(
        url="s3://bucket/pre",
        endpoint_url="http://127.0.0.1:1",
        region="eu-west-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key=SECRET,  # type: ignore[arg-type]
    )
    storage = open_storage(settings, local_root=tmp_path)
    try:
        assert isinstance(storage, S3Storage)
        assert (storage.bucket, storage.prefix) == ("bucket", "pre/")
        assert SECRET not in repr(storage)
        url = storage.url_for("job/a.png")
        assert url.startswith("http://127.0.0.1:1/bucket/pre/job/a.png?")
        assert "X-Amz-Expires=3600" in url
        assert SECRET not in url
    finally:
        await storage.close()


async def test_open_storage_builds_azure_and_signs_locally(tmp_path: Path) -> None:
    settings = StorageSettings(
        url="az://outputs/pre",
        azure_connection_string=AZURE.format(key=FAKE_KEY),  # type: ignore[arg-type]
        presign_expiry_s=60,
    )
    storage = open_storage(settings, local_root=tmp_path)
    try:
        assert isinstance(storage, AzureBlobStorage)
        url = storage.url_for("job/a.png")
        assert url.startswith("http://127.0.0.1:1/acct/outputs/pre/job/a.png?")
        assert "sp=r" in url and "sig=" in url
        assert FAKE_KEY not in url and FAKE_KEY not in repr(storage)
    finally:
        await storage.close()


def test_azure_without_an_account_says_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING", raising=False)
    with pytest.raises(StorageConfigError) as caught:
        open_storage(StorageSettings(url="az://outputs"), local_root=tmp_path)
    assert caught.value.hint is not None and "AZURE_STORAGE_CONNECTION_STRING" in caught.value.hint


def test_azure_with_a_malformed_connection_string_does_not_echo_it(tmp_path: Path) -> None:
    settings = StorageSettings(
        url="az://outputs",
        azure_connection_string=f"nonsense-{SECRET}",  # type: ignore[arg-type]
    )
    with pytest.raises(StorageConfigError) as caught:
        open_storage(settings, local_root=tmp_path)
    assert SECRET not in str(caught.value)


async def test_open_storage_builds_http_put_with_headers(tmp_path: Path) -> None:
    settings = StorageSettings(
        url="https://user:pw@up.example/put",
        http_headers={"Authorization": SECRET},  # type: ignore[dict-item]
        public_base_url="https://cdn.example/",
    )
    storage = open_storage(settings, local_root=tmp_path)
    try:
        assert isinstance(storage, HttpPutStorage)
        assert storage.object_url("j/a.png") == "https://user:pw@up.example/put/j/a.png"
        assert storage.url_for("j/a.png") == "https://cdn.example/j/a.png"
        assert "pw" not in repr(storage) and SECRET not in repr(storage)
    finally:
        await storage.close()
