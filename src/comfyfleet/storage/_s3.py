"""S3 and S3-compatible stores (MinIO, R2, Ceph ...) through boto3, blocking calls in a thread.

boto3 is optional and imported only when an S3 backend is built. Credentials come from the
settings when given there, otherwise from boto3's usual chain (environment, config files,
instance roles). Errors are sorted into `StorageUnavailable` (unreachable, 5xx, throttling) and
`StorageConfigError` (missing bucket, refused credentials), with messages that name the bucket
and key but never a credential or a signed URL.
"""

from __future__ import annotations

from typing import Any

from comfyfleet.storage._answers import StoreDialect
from comfyfleet.storage._errors import (
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    missing_package,
)
from comfyfleet.storage._settings import StorageSettings

_CREDENTIALS_HINT = (
    "check access_key_id / secret_access_key in the storage settings, or the AWS credential "
    "chain (AWS_ACCESS_KEY_ID, AWS_PROFILE, ~/.aws/credentials)"
)

S3 = StoreDialect(
    name="S3",
    scheme="s3",
    container="bucket",
    container_missing="NoSuchBucket",
    busy_codes=frozenset(
        {
            "SlowDown",
            "Throttling",
            "ThrottlingException",
            "TooManyRequests",
            "RequestLimitExceeded",
            "RequestTimeout",
            "ServiceUnavailable",
            "InternalError",
        }
    ),
    missing_codes=frozenset({"NoSuchKey", "NotFound", "404", "NoSuchBucket"}),
    denied_codes=frozenset(
        {
            "AccessDenied",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "ExpiredToken",
            "InvalidToken",
            "TokenRefreshRequired",
            "AllAccessDisabled",
            "403",
        }
    ),
    credentials_hint=_CREDENTIALS_HINT,
)


def build_client(settings: StorageSettings) -> Any:
    """A boto3 S3 client from the settings: explicit keys first, then boto3's own chain."""
    try:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]
        from botocore.exceptions import BotoCoreError  # type: ignore[import-untyped]
    except ImportError as exc:
        raise missing_package("boto3", "s3") from exc
    secret = settings.secret_access_key
    token = settings.session_token
    config = Config(
        connect_timeout=settings.connect_timeout_s,
        read_timeout=settings.read_timeout_s,
        retries={"total_max_attempts": settings.attempts, "mode": "standard"},
        s3={"addressing_style": settings.addressing_style},
        signature_version="s3v4",
    )
    try:
        session = boto3.session.Session(
            aws_access_key_id=settings.access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            aws_session_token=token.get_secret_value() if token else None,
            region_name=settings.region,
            profile_name=settings.profile,
        )
        return session.client("s3", endpoint_url=settings.endpoint_url, config=config)
    except BotoCoreError as exc:
        raise StorageConfigError(
            f"cannot set up the S3 client: {type(exc).__name__}",
            hint="check region, profile and endpoint_url in the storage settings",
        ) from exc
    except ValueError as exc:
        raise StorageConfigError(
            f"cannot set up the S3 client: {exc}", hint="check endpoint_url and region"
        ) from exc


def s3_error(
    exc: BaseException, bucket: str, key: str = "", *, reading: bool = False
) -> StorageError | None:
    """The storage error for a boto3/botocore failure on `s3://bucket/key`; None for anything
    that is not one (a bug, to be raised as it is). When `reading` a URL someone gave, a missing
    bucket is that URL's problem (ObjectNotFound), not the settings'."""
    try:
        from botocore import exceptions as bce  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - boto3 is installed if a client exists
        return None
    where = S3.where(bucket, key)
    if isinstance(exc, bce.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        return S3.answer_error(code, status, bucket, key, reading=reading)
    if isinstance(exc, bce.SSLError):
        return StorageConfigError(
            f"{where}: TLS handshake with the S3 endpoint failed",
            hint="check endpoint_url and the server's certificate",
        )
    if isinstance(exc, bce.ConnectionError | bce.HTTPClientError):
        return StorageUnavailable(
            f"{where}: cannot reach the S3 endpoint ({type(exc).__name__})",
            hint="check that the store is up and endpoint_url is right; the call can be retried",
        )
    if isinstance(exc, bce.CredentialRetrievalError):
        return StorageUnavailable(
            f"{where}: fetching S3 credentials failed ({type(exc).__name__})",
            hint=_CREDENTIALS_HINT,
        )
    if isinstance(exc, bce.NoCredentialsError | bce.PartialCredentialsError):
        return StorageConfigError(f"{where}: no usable S3 credentials", hint=_CREDENTIALS_HINT)
    if isinstance(exc, bce.BotoCoreError):
        return StorageConfigError(
            f"{where}: the S3 request could not be made ({type(exc).__name__})",
            hint="check the storage settings (region, endpoint_url, bucket name)",
        )
    return None
