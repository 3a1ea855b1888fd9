"""Model URLs in a job's graph are the client's choice: the downloader connects only to
addresses the network policy allows, resolved once per connection (so a name that resolves
elsewhere a moment later cannot lead inside), and checks every redirect hop the same way."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from comfyfleet.models import DownloadError, ModelFolders, ModelLibrary, ModelSettings, UrlGuard
from comfyfleet.netguard import NetPolicy
from tests.model_file_server import ModelFileServer, write_random_file
from tests.tls_certs import make_tls


def library(tmp_path: Path, guard: UrlGuard) -> ModelLibrary:
    return ModelLibrary(
        ModelFolders(tmp_path / "models"),
        ModelSettings(free_space_margin_bytes=0, retries=0),
        state_dir=tmp_path / "state",
        url_guard=guard,
    )


def lora_graph(url: str) -> dict[str, Any]:
    return {"1": {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": url}}}


@pytest.fixture
def served(tmp_path: Path) -> Path:
    root = tmp_path / "served"
    write_random_file(root / "lora.safetensors", 100_000, seed=3)
    return root


def test_a_name_that_resolves_to_loopback_is_refused_before_any_request(
    tmp_path: Path, served: Path
) -> None:
    with ModelFileServer(served) as server:
        url = f"http://localhost:{server.port}/lora.safetensors"
        with pytest.raises(DownloadError) as caught:
            asyncio.run(library(tmp_path, UrlGuard(NetPolicy())).ensure(lora_graph(url)))
        assert server.log == [], "nothing was sent"
    assert not caught.value.retryable
    assert "loopback address (localhost resolves to it)" in caught.value.message


def test_the_connection_goes_to_the_checked_address_not_a_second_lookup(
    tmp_path: Path, served: Path
) -> None:
    asked: list[str] = []

    def dns(host: str, port: int) -> Sequence[str]:
        asked.append(host)
        return ["127.0.0.1"]

    guard = UrlGuard(NetPolicy.build(networks=["127.0.0.1/32"]), resolve=dns)
    with ModelFileServer(served) as server:
        # models.test exists in no DNS: the download works only if it connects where `dns` said
        url = f"http://models.test:{server.port}/lora.safetensors"
        graph = asyncio.run(library(tmp_path, guard).ensure(lora_graph(url)))
    name = graph["1"]["inputs"]["lora_name"]
    assert (tmp_path / "models" / "loras" / name).read_bytes() == (
        served / "lora.safetensors"
    ).read_bytes()
    assert asked == ["models.test"], "resolved once, by the guard"


def test_a_redirect_into_a_refused_address_is_refused(tmp_path: Path, served: Path) -> None:
    guard = UrlGuard(NetPolicy.build(hosts=["127.0.0.1"]))  # that literal host, nothing else
    with ModelFileServer(served) as server:
        target = f"http://localhost:{server.port}/lora.safetensors"
        server.behavior.redirects["/cdn/lora.safetensors"] = target
        url = f"http://127.0.0.1:{server.port}/cdn/lora.safetensors"
        with pytest.raises(DownloadError) as caught:
            asyncio.run(library(tmp_path, guard).ensure(lora_graph(url)))
        paths = [r.path for r in server.log]
    assert paths == ["/cdn/lora.safetensors"], "the redirect target was never asked"
    assert "localhost resolves to it" in caught.value.message


def test_https_goes_to_the_checked_address_and_verifies_the_name(
    tmp_path: Path, served: Path
) -> None:
    pytest.importorskip("cryptography", reason="cryptography makes the test certificates")
    ca_file, server_tls = make_tls(tmp_path, "models.test")
    client_tls = ssl.create_default_context(cafile=str(ca_file))

    def dns(host: str, port: int) -> Sequence[str]:
        return ["127.0.0.1"]

    policy = NetPolicy.build(networks=["127.0.0.1/32"])
    with ModelFileServer(served, tls=server_tls) as server:
        good = f"https://models.test:{server.port}/lora.safetensors"
        guard = UrlGuard(policy, resolve=dns, tls=client_tls)
        graph = asyncio.run(library(tmp_path / "a", guard).ensure(lora_graph(good)))
        name = graph["1"]["inputs"]["lora_name"]
        assert (tmp_path / "a" / "models" / "loras" / name).stat().st_size == 100_000
        wrong = f"https://other.test:{server.port}/lora.safetensors"  # the certificate's not
        with pytest.raises(DownloadError) as caught:
            asyncio.run(library(tmp_path / "b", guard).ensure(lora_graph(wrong)))
    assert "certificate" in str(caught.value).lower()
