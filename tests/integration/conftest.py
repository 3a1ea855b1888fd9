"""Servers shared by the integration tests of one run: S3 (moto), Azure Blob (Azurite) and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresMissing, scratch_database
from tests.storage_servers import (
    AzuriteMissing,
    AzuriteServer,
    S3Server,
    azurite_server,
    moto_s3_server,
)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with moto_s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteServer]:
    try:
        with azurite_server() as server:
            yield server
    except AzuriteMissing as exc:
        pytest.skip(f"Azurite is not available: {exc}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """The URL of a database of this run's own on a real PostgreSQL (dropped at the end)."""
    try:
        with scratch_database() as url:
            yield url
    except PostgresMissing as exc:
        pytest.skip(f"PostgreSQL is not available: {exc}")
