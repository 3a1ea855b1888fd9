"""How long comfyfleet keeps what it stores: the `retention` section of the settings.

Ages are durations (a number of seconds, or `90s`, `15m`, `12h`, `30d`, `2w`); sizes are bytes
(a number, or `500MB`, `2GiB`, ...). `off` (or null) keeps that kind of thing forever.
"""

from __future__ import annotations

import math
import re
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(I)?)?B?\s*$", re.IGNORECASE)
_OFF = ("off", "never", "none", "")


def parse_duration(value: object) -> float | None:
    """Seconds from `30d`, `12h`, `15m`, `90s` or a number; None for `off`. ValueError names
    the forms that are taken."""
    if _off(value):
        return None
    if isinstance(value, bool):
        raise ValueError("true is not a duration: give one (30d), or 'off'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if match is None:
            raise ValueError(
                f"{str(value)[:40]!r} is not a duration: use seconds, or a number with s, m, h, "
                "d or w (30d, 12h), or 'off'"
            )
        seconds = float(match[1]) * _SECONDS[match[2].lower()]
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be above zero, not {value!r} (use 'off' for never)")
    return seconds


def parse_size(value: object) -> int | None:
    """Bytes from `500MB`, `2GiB`, `1.5TB` or a number; None for `off`."""
    if _off(value):
        return None
    if isinstance(value, bool):
        raise ValueError("true is not a size: give one (500GB), or 'off'")
    if isinstance(value, int | float):
        size = float(value)
    else:
        match = _SIZE.match(str(value))
        if match is None:
            raise ValueError(
                f"{str(value)[:40]!r} is not a size: use bytes, or a number with KB, MB, GB, TB "
                "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), or 'off'"
            )
        power = " KMGT".index((match[2] or " ").upper())
        size = float(match[1]) * (1024 if match[3] else 1000) ** power
    if not math.isfinite(size) or size < 1:
        raise ValueError(f"a size must be at least one byte, not {value!r} (use 'off' for none)")
    return int(size)


def _off(value: object) -> bool:
    """`off`, `never`, null, or false (YAML reads a bare `off` as false)."""
    if value is None or value is False:
        return True
    return isinstance(value, str) and value.strip().lower() in _OFF


Duration = Annotated[float | None, BeforeValidator(parse_duration)]
"""Seconds, or None: kept forever."""
Size = Annotated[int | None, BeforeValidator(parse_size)]
"""Bytes, or None: no limit."""

DAY = 86400.0


class RetentionSettings(BaseModel):
    """What is pruned, after how long (the `retention:` section of the settings). Nothing that a
    queued or running job needs is ever removed, whatever its age."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interval: Duration = Field(
        3600.0, description="prune this often in every serve, gateway and agent ('off': only gc)"
    )
    jobs: Duration = Field(30 * DAY, description="finished jobs and their events, after they ended")
    webhooks_delivered: Duration = Field(
        7 * DAY, description="webhook deliveries that were delivered, after delivery"
    )
    webhooks_failed: Duration = Field(
        30 * DAY, description="dead-lettered webhook deliveries, after they failed"
    )
    previews: Duration = Field(3600.0, description="stored preview frames, after they were sent")
    inputs: Duration = Field(
        7 * DAY, description="uploaded and fetched input files, after their last use"
    )
    outputs: Duration = Field(
        None, description="job folders in the local output folder, after their last write"
    )
    outputs_max_bytes: Size = Field(
        None, description="cap on the local output folder: the oldest job folders go first"
    )
    temp: Duration = Field(DAY, description="files in the instances' temp folders")
