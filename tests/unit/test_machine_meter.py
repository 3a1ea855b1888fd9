"""What an agent reports of its machine: disks by file system, GPUs through NVML (a fake
module here), and no GPUs at all where NVML cannot load."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from comfyfleet.gpus import GpuMeter, GpuUsage
from comfyfleet.roles._machine import MachineMeter


class _FakeNvml:
    def __init__(self) -> None:
        self.inits = 0

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:
        return SimpleNamespace(used=(handle + 1) * 1024**3, total=80 * 1024**3)

    def nvmlDeviceGetUtilizationRates(self, handle: int) -> Any:
        if handle == 1:
            raise RuntimeError("not supported")
        return SimpleNamespace(gpu=87)

    def nvmlDeviceGetTemperature(self, handle: int, sensor: int) -> int:
        return 61


def test_gpus_are_read_through_nvml_initialised_once() -> None:
    nvml = _FakeNvml()
    meter = GpuMeter(nvml)
    meter.read()
    first, second = meter.read()
    assert nvml.inits == 1
    assert first == GpuUsage(0, "NVIDIA H100 80GB HBM3", 87, 1024**3, 80 * 1024**3, 61)
    assert (second.utilization_percent, second.memory_used) == (None, 2 * 1024**3)


def test_a_machine_without_nvml_has_no_gpus() -> None:
    class Broken:
        def nvmlInit(self) -> None:
            raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    assert GpuMeter(Broken()).read() == []


def test_folders_on_one_disk_are_one_entry_and_missing_ones_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "out").mkdir()
    meter = MachineMeter(
        {"models": tmp_path / "models", "outputs": tmp_path / "out", "x": tmp_path / "nope"},
        GpuMeter(_FakeNvml()),
    )
    machine = meter.read()
    (disk,) = machine["disks"]
    assert disk["folders"] == ["models", "outputs"]
    assert 0 < disk["free"] <= disk["total"] and 0 < disk["used"] <= disk["total"]
    assert 0 <= disk["percent"] <= 100
    assert machine["memory"]["total"] > machine["memory"]["available"] > 0
    assert machine["cpu"]["count"] >= 1
    assert [gpu["temperature_c"] for gpu in machine["gpus"]] == [61, 61]
