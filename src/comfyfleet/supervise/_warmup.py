"""The warm-up: a workflow an instance runs after every start, before it is ready.

A fresh ComfyUI holds no model in memory, so the first job sent to it pays for loading them
(seconds, minutes for large checkpoints on slow disks). A warm-up workflow that loads the same
models, run while the instance is WARMING, moves that cost off the users' jobs: the dispatcher
sends nothing to an instance before it is READY. The warm-up runs like any prompt, over HTTP:
submitted with the client id `comfyfleet-warmup` (easy to find in ComfyUI's history: newer
ComfyUI takes only UUIDs as prompt ids, so the prompt id cannot say it), then its history entry
awaited. One that fails (a node error, a graph the instance
rejects, no end within its timeout) is a failed start: the instance backs off and starts again,
and its state's reason says what went wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from comfyfleet.comfy import (
    ComfyClient,
    ComfyError,
    PromptRejected,
    PromptTimeout,
    new_prompt_id,
)

WARMUP_CLIENT_ID = "comfyfleet-warmup"
"""The client id warm-ups are submitted with (their history entries carry it)."""


@dataclass(frozen=True)
class Warmup:
    """Which workflow (an API-format graph) each instance runs after it starts."""

    default: Mapping[str, Any] | None = None
    """For every instance without one of its own."""
    by_instance: Mapping[int, Mapping[str, Any] | None] = field(default_factory=dict)
    """Per instance index; None there turns the warm-up off for that instance."""
    timeout_s: float = 600.0

    def graph_for(self, index: int) -> Mapping[str, Any] | None:
        if index in self.by_instance:
            return self.by_instance[index]
        return self.default


class WarmupRunner(Protocol):
    async def run(self, url: str, graph: Mapping[str, Any], timeout_s: float) -> str | None:
        """Run `graph` on the ComfyUI at `url`; None when it ran to its end, else what went
        wrong (it becomes the reason of the failed start)."""


class HttpWarmupRunner:
    """Runs warm-ups through the ComfyUI client; `make_client` is the seam for tests."""

    def __init__(self, make_client: Callable[[str], ComfyClient] | None = None) -> None:
        self._make_client = make_client or (lambda url: ComfyClient(url, timeout=30))

    async def run(self, url: str, graph: Mapping[str, Any], timeout_s: float) -> str | None:
        prompt_id = new_prompt_id()
        async with self._make_client(url) as client:
            try:
                await client.submit(dict(graph), client_id=WARMUP_CLIENT_ID, prompt_id=prompt_id)
                await client.wait(prompt_id, timeout=timeout_s, poll=0.05)
            except PromptRejected as exc:
                return f"warm-up workflow rejected: {exc.message}"
            except PromptTimeout:
                await _interrupt(client, prompt_id)
                return f"warm-up did not finish within {timeout_s:g}s (watchdog.warmup_timeout_s)"
            except ComfyError as exc:
                return f"warm-up failed: {exc.message}"
        return None


async def _interrupt(client: ComfyClient, prompt_id: str) -> None:
    """Best effort: the process is stopped right after, which ends the prompt anyway."""
    try:
        await client.cancel(prompt_id)
    except ComfyError:
        pass
