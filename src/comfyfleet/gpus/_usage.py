"""How busy the GPUs are right now: utilisation, memory and temperature, read through NVML.

What the dashboard shows per machine. NVML is loaded once and kept initialised (a reading then
costs microseconds); a machine without it (no NVIDIA driver, CPU-only, AMD, Apple) reads as no
GPUs, never as an error, as in `_detect`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from comfyfleet.gpus._detect import _load_pynvml, _text


@dataclass(frozen=True)
class GpuUsage:
    index: int
    name: str
    utilization_percent: int | None
    memory_used: int | None
    memory_total: int | None
    temperature_c: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class GpuMeter:
    """Reads every NVIDIA GPU's usage. `nvml` stands in for the `pynvml` module (tests)."""

    def __init__(self, nvml: object | None = None) -> None:
        self._given = nvml
        self._api: Any = None
        self._tried = False

    def read(self) -> list[GpuUsage]:
        api = self._open()
        if api is None:
            return []
        try:
            return [_one(api, index) for index in range(int(api.nvmlDeviceGetCount()))]
        except Exception:
            return []

    def close(self) -> None:
        if self._api is not None:
            try:
                self._api.nvmlShutdown()
            except Exception:
                pass
            self._api = None

    def _open(self) -> Any:
        if self._tried:
            return self._api
        self._tried = True
        api: Any = self._given if self._given is not None else _load_pynvml()
        if api is None:
            return None
        try:
            api.nvmlInit()
        except Exception:
            return None
        self._api = api
        return api


def _one(api: Any, index: int) -> GpuUsage:
    handle = api.nvmlDeviceGetHandleByIndex(index)
    memory = _maybe(lambda: api.nvmlDeviceGetMemoryInfo(handle))
    rates = _maybe(lambda: api.nvmlDeviceGetUtilizationRates(handle))
    temperature = _maybe(lambda: api.nvmlDeviceGetTemperature(handle, 0))  # 0: the GPU die
    return GpuUsage(
        index=index,
        name=_text(api.nvmlDeviceGetName(handle)).strip(),
        utilization_percent=None if rates is None else int(rates.gpu),
        memory_used=None if memory is None else int(memory.used),
        memory_total=None if memory is None else int(memory.total),
        temperature_c=None if temperature is None else int(temperature),
    )


def _maybe(read: Any) -> Any:
    """One reading, or None where this GPU or driver does not offer it."""
    try:
        return read()
    except Exception:
        return None
