"""The `log` section of the settings: how the long-running commands write their log records."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

LogFormat = Literal["text", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


class LogSettings(BaseModel):
    """`format: json` writes one JSON object per line on stderr (for log collectors); `text`
    keeps the terminal's lines. `level` None means `info` for JSON and, for text, the quiet
    terminal of before: warnings and errors, message only."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: LogFormat = Field(default="text", description="text | json (one object per line)")
    level: LogLevel | None = Field(
        default=None, description="debug | info | warning | error (default: info for json)"
    )
