"""Reading Server-Sent Events line by line (the WHATWG event-stream format).

Fields `event`, `data` (several lines join with a newline), `id` and `retry`; a line starting
with `:` is a comment (the server's heartbeat); a blank line ends a message. A message with no
data is not dispatched, as browsers do.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SseMessage:
    event: str
    data: str
    id: str | None


class SseParser:
    """Feed it lines (without their line ending); it returns a message at each blank line."""

    def __init__(self) -> None:
        self.last_id: str | None = None
        """The last `id` seen, kept across messages as the format says."""
        self.retry_ms: int | None = None
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseMessage | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self.last_id = value or None
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return None

    def _dispatch(self) -> SseMessage | None:
        data, event = self._data, self._event or "message"
        self._data, self._event = [], ""
        if not data:
            return None
        return SseMessage(event, "\n".join(data), self.last_id)
