"""The work counters (`comfyfleet.metrics.WorkMetrics`) fed by the real parts that do the work:
the model downloader copying local files, the webhook sender posting to an in-process receiver;
and the machine's GPU readings from a stand-in for NVML."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from comfyfleet.metrics import (
    MachineState,
    Metrics,
    MetricsSettings,
    Nvml,
    WorkMetrics,
    storage_error_kind,
    watch_machine,
)
from comfyfleet.models import Downloader, DownloadError, DownloadItem, ModelSettings
from comfyfleet.netguard import GuardedClient, NetPolicy
from comfyfleet.storage import AccessDenied, InvalidKey, StorageConfigError, StorageUnavailable
from comfyfleet.supervise import InstanceStatus, State
from comfyfleet.webhooks import MemoryOutbox, NewDelivery, Sender, WebhookSettings
from tests.unit.fake_nvml import FakeNvml


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    assert found is not None, f"no sample {name}{labels}"
    return found


def test_downloads_count_bytes_and_failures_but_not_files_already_there(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    work = WorkMetrics(registry)
    source = tmp_path / "src.bin"
    source.write_bytes(b"x" * 3000)
    downloader = Downloader(ModelSettings(free_space_margin_bytes=0), watch=work)

    async def scenario() -> None:
        await downloader.download(DownloadItem(f"file://{source}", tmp_path / "m" / "a.bin"))
        await downloader.download(DownloadItem(f"file://{source}", tmp_path / "m" / "a.bin"))
        with pytest.raises(DownloadError):
            await downloader.download(DownloadItem(f"file://{source}.gone", tmp_path / "b.bin"))

    asyncio.run(scenario())
    assert value(registry, "comfyfleet_model_downloads_total", result="succeeded") == 1
    assert value(registry, "comfyfleet_model_downloads_total", result="failed") == 1
    assert value(registry, "comfyfleet_model_download_bytes_total") == 3000
    assert value(registry, "comfyfleet_model_download_seconds_count") == 1


def test_webhook_attempts_are_timed_by_result() -> None:
    registry = CollectorRegistry()
    work = WorkMetrics(registry)
    outbox = MemoryOutbox()
    answers = {"ok": 200, "later": 503, "gone": 410}

    async def dns(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    def receiver(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answers[request.url.path.strip("/")])

    config = WebhookSettings.model_validate(
        {"secret": "s" * 32, "allow_private_targets": True, "retry_for_s": 60.0}
    )

    async def scenario() -> None:
        rows = [
            NewDelivery(f"msg_{i}", i, job, "job.succeeded", f"http://hooks.test/{job}", "{}")
            for i, job in enumerate(answers, start=1)
        ]
        await outbox.relay(0, len(rows), rows, now=1.0)
        http = GuardedClient(
            NetPolicy(allow_private=True),
            timeout_s=5,
            max_redirects=0,
            resolve=dns,
            transport=httpx.MockTransport(receiver),
        )
        sender = Sender(outbox, http, secret="s" * 32, settings=config, watch=work.webhook_attempt)
        await sender.send_due()

    asyncio.run(scenario())
    for result in ("delivered", "retrying", "failed"):
        assert value(registry, "comfyfleet_webhook_attempt_seconds_count", result=result) == 1


def test_storage_errors_are_labelled_by_what_to_do_about_them() -> None:
    assert [
        storage_error_kind(e)
        for e in (
            StorageUnavailable("down"),
            AccessDenied("no"),
            StorageConfigError("bad"),
            InvalidKey("../x", "escapes"),
            RuntimeError("bug"),
        )
    ] == ["unavailable", "access_denied", "config", "invalid_key", "internal"]


def test_model_loads_are_labelled_by_folder_never_by_file_name() -> None:
    registry = CollectorRegistry()
    work = WorkMetrics(registry)
    work.model_loads({"checkpoints/secret-client-model.safetensors", "loras/a.safetensors"})
    work.model_loads({"Weird Folder/x", "noslash"})
    assert value(registry, "comfyfleet_model_loads_total", folder="checkpoints") == 1
    assert value(registry, "comfyfleet_model_loads_total", folder="loras") == 1
    assert value(registry, "comfyfleet_model_loads_total", folder="other") == 2


def test_gpus_and_instances_are_read_at_scrape_time_and_nvml_closed_after() -> None:
    fake = FakeNvml()
    nvml = Nvml.open(fake)
    assert nvml is not None
    status = InstanceStatus(0, State.READY, 1, 8188, "cuda:0", 1.0, 2.0, 3, 512 * 2**20, "x", "")
    metrics = Metrics()

    async def scenario() -> str:
        watch_machine(metrics, lambda: [status], nvml=nvml)
        text = (await metrics.render()).decode()
        await metrics.close()
        return text

    text = asyncio.run(scenario())
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("comfyfleet_")
    }
    gpu0, gpu1 = (("gpu", "0"),), (("gpu", "1"),)
    assert samples[("comfyfleet_gpu_utilization_ratio", gpu0)] == 0.87
    assert samples[("comfyfleet_gpu_utilization_ratio", gpu1)] == 0.0
    assert samples[("comfyfleet_gpu_memory_used_bytes", gpu0)] == 30 * 2**30
    assert samples[("comfyfleet_gpu_memory_total_bytes", gpu1)] == 80 * 2**30
    assert samples[("comfyfleet_gpu_temperature_celsius", gpu0)] == 71
    assert samples[("comfyfleet_gpu_power_watts", gpu0)] == 412.5
    assert ("comfyfleet_gpu_power_watts", gpu1) not in samples
    info = (("gpu", "0"), ("name", "NVIDIA H100 80GB HBM3"), ("uuid", "GPU-0"))
    assert samples[("comfyfleet_gpu_info", info)] == 1
    assert samples[("comfyfleet_instance_restarts_total", (("index", "0"),))] == 3
    assert samples[("comfyfleet_instance_memory_rss_bytes", (("index", "0"),))] == 512 * 2**20
    assert fake.shut


def test_no_nvml_means_no_gpu_series_and_no_error() -> None:
    class Broken:
        def nvmlInit(self) -> None:
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    assert Nvml.open(Broken()) is None
    metrics = Metrics(MetricsSettings(nvml=False))  # never this machine's own NVML

    async def scenario() -> MachineState:
        snapshot = watch_machine(metrics, list, nvml=None)
        await metrics.render()
        await metrics.close()
        return snapshot.value

    assert asyncio.run(scenario()) == MachineState((), ())
