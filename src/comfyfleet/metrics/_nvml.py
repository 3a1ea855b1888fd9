"""GPU readings through NVML (the `nvidia-ml-py` binding), where there is an NVIDIA driver.

NVML is opened once and kept open (each init costs milliseconds); a machine without the
library or the driver has no GPU readings, and says nothing about it. A field a GPU does not
support (power on some boards) is left out for that GPU only. Readings block for a few
milliseconds per GPU, so they are taken in a thread, never on the event loop.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("comfyfleet.metrics")

_TEMPERATURE_GPU = 0
"""NVML_TEMPERATURE_GPU: the die's sensor."""


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    uuid: str
    utilization: float | None = None
    """Fraction of the last sample period a kernel ran, 0..1."""
    memory_used: int | None = None
    memory_total: int | None = None
    temperature_c: float | None = None
    power_w: float | None = None


def _text(value: object) -> str:
    """NVML answers bytes in old bindings and str in new ones."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _load_pynvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    return pynvml


class Nvml:
    """An open NVML. Build it with :meth:`open`; `api` stands in for the pynvml module."""

    def __init__(self, api: Any) -> None:
        self._api = api

    @classmethod
    def open(cls, api: Any = None) -> Nvml | None:
        """NVML, initialised; None where it cannot be (no library, no driver, no GPU)."""
        api = api if api is not None else _load_pynvml()
        if api is None:
            return None
        try:
            api.nvmlInit()
        except Exception as exc:
            log.debug("no NVML here: %s", exc)
            return None
        return cls(api)

    def read(self) -> tuple[GpuReading, ...]:
        api = self._api
        readings = []
        for index in range(int(api.nvmlDeviceGetCount())):
            handle = api.nvmlDeviceGetHandleByIndex(index)
            readings.append(
                GpuReading(
                    index=index,
                    name=_text(self._field(api.nvmlDeviceGetName, handle) or "").strip(),
                    uuid=_text(self._field(api.nvmlDeviceGetUUID, handle) or "").strip(),
                    utilization=self._utilization(handle),
                    memory_used=self._memory(handle, "used"),
                    memory_total=self._memory(handle, "total"),
                    temperature_c=self._number(
                        self._field(api.nvmlDeviceGetTemperature, handle, _TEMPERATURE_GPU)
                    ),
                    power_w=self._watts(handle),
                )
            )
        return tuple(readings)

    def close(self) -> None:
        try:
            self._api.nvmlShutdown()
        except Exception as exc:
            log.debug("closing NVML: %s", exc)

    @staticmethod
    def _field(call: Any, *args: Any) -> Any:
        """One reading, or None where this GPU does not support it (or it failed)."""
        try:
            return call(*args)
        except Exception:
            return None

    @staticmethod
    def _number(value: Any) -> float | None:
        return float(value) if isinstance(value, int | float) else None

    def _utilization(self, handle: Any) -> float | None:
        rates = self._field(self._api.nvmlDeviceGetUtilizationRates, handle)
        percent = self._number(getattr(rates, "gpu", None))
        return None if percent is None else percent / 100.0

    def _memory(self, handle: Any, part: str) -> int | None:
        info = self._field(self._api.nvmlDeviceGetMemoryInfo, handle)
        value = getattr(info, part, None)
        return int(value) if isinstance(value, int) else None

    def _watts(self, handle: Any) -> float | None:
        milliwatts = self._number(self._field(self._api.nvmlDeviceGetPowerUsage, handle))
        return None if milliwatts is None else milliwatts / 1000.0
