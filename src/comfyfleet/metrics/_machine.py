"""This machine's numbers, read at scrape time: its GPUs (NVML) and its instances' processes.

Read in a thread (NVML and the process table block for milliseconds), once per `refresh_s`
whoever scrapes. Instance restarts are the supervisor's own count (for a fleet that
`comfyfleet up --detach` runs, that supervisor's), so they hold however this process started.
Instances are labelled `index`, not `instance`: Prometheus gives every series an `instance`
label of its own (the scraped address).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from comfyfleet.metrics._nvml import GpuReading, Nvml
from comfyfleet.metrics._snapshot import Snapshot
from comfyfleet.supervise import InstanceStatus


@dataclass(frozen=True)
class MachineState:
    instances: tuple[InstanceStatus, ...] = ()
    gpus: tuple[GpuReading, ...] = ()


class MachineReader:
    def __init__(
        self, instances: Callable[[], Sequence[InstanceStatus]], nvml: Nvml | None
    ) -> None:
        self._instances = instances
        self._nvml = nvml

    async def read(self) -> MachineState:
        return await asyncio.to_thread(self._read)

    def _read(self) -> MachineState:
        gpus = self._nvml.read() if self._nvml is not None else ()
        return MachineState(tuple(self._instances()), gpus)

    async def close(self) -> None:
        if self._nvml is not None:
            await asyncio.to_thread(self._nvml.close)


def _gauge(name: str, text: str, labels: Sequence[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, labels=list(labels))


class MachineCollector(Collector):
    def __init__(self, snapshot: Snapshot[MachineState]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        state = self._snapshot.value
        yield from self._instances(state.instances)
        yield from self._gpus(state.gpus)

    @staticmethod
    def _instances(statuses: Sequence[InstanceStatus]) -> Iterable[Metric]:
        restarts = CounterMetricFamily(
            "comfyfleet_instance_restarts",
            "Times the supervisor started an instance again (after a crash or a failed start)",
            labels=["index"],
        )
        memory = _gauge(
            "comfyfleet_instance_memory_rss_bytes",
            "Resident memory of each instance's process tree",
            ["index"],
        )
        for status in statuses:
            restarts.add_metric([str(status.index)], status.restarts)
            if status.rss_bytes is not None:
                memory.add_metric([str(status.index)], status.rss_bytes)
        yield restarts
        yield memory

    @staticmethod
    def _gpus(gpus: Sequence[GpuReading]) -> Iterable[Metric]:
        info = _gauge(
            "comfyfleet_gpu_info", "The GPUs NVML sees (value 1)", ["gpu", "name", "uuid"]
        )
        utilization = _gauge(
            "comfyfleet_gpu_utilization_ratio",
            "Fraction of the last sample period the GPU ran a kernel",
            ["gpu"],
        )
        used = _gauge("comfyfleet_gpu_memory_used_bytes", "GPU memory in use", ["gpu"])
        total = _gauge("comfyfleet_gpu_memory_total_bytes", "GPU memory in all", ["gpu"])
        temperature = _gauge("comfyfleet_gpu_temperature_celsius", "GPU die temperature", ["gpu"])
        power = _gauge("comfyfleet_gpu_power_watts", "GPU power draw", ["gpu"])
        for gpu in gpus:
            label = [str(gpu.index)]
            info.add_metric([*label, gpu.name, gpu.uuid], 1)
            for family, value in (
                (utilization, gpu.utilization),
                (used, gpu.memory_used),
                (total, gpu.memory_total),
                (temperature, gpu.temperature_c),
                (power, gpu.power_w),
            ):
                if value is not None:
                    family.add_metric(label, value)
        yield from (info, utilization, used, total, temperature, power)
