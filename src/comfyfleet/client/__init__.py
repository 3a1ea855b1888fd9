"""The Python client of a comfyfleet server: `Client` (blocking) and `AsyncClient` (asyncio),
with the same methods.

    from comfyfleet.client import Client

    with Client("http://localhost:8080", api_key="...") as client:
        result = client.run("workflow.json", params={"6.text": "a lighthouse"})
        result.save("outputs/")

Jobs: `run` (submit, follow, download; raises :class:`JobFailed` naming the node), `submit`
(a :class:`Job` handle: `status`, `wait`, `events`, `cancel`), `jobs`, `validate`. Files:
`upload` (`asset.ref` in a loader input), `download`. `templates`, `presets`, `models`,
`install_preset`. :func:`verify_webhook` checks a delivery on the receiving side.

It depends on httpx only (Pillow, when installed, for `Output.image()`), and on nothing else of
comfyfleet, so it can ship on its own.
"""

from __future__ import annotations

from comfyfleet.client._async import AsyncClient, AsyncJob
from comfyfleet.client._calls import RunOptions, SubmitOptions, WaitOptions
from comfyfleet.client._errors import (
    ApiError,
    ComfyfleetClientError,
    ConnectionError,
    JobCancelled,
    JobFailed,
    Timeout,
    WebhookVerificationError,
)
from comfyfleet.client._outputs import Output, Result
from comfyfleet.client._records import Asset, Event, JobRecord, ModelFile, Preset, Template
from comfyfleet.client._retry import Retries
from comfyfleet.client._sync import Client, Job
from comfyfleet.client._webhooks import WebhookEvent, verify_webhook
from comfyfleet.client._workflow import JobOptions

__all__ = [
    "ApiError",
    "Asset",
    "AsyncClient",
    "AsyncJob",
    "Client",
    "ComfyfleetClientError",
    "ConnectionError",
    "Event",
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobOptions",
    "JobRecord",
    "ModelFile",
    "Output",
    "Preset",
    "Result",
    "Retries",
    "RunOptions",
    "SubmitOptions",
    "Template",
    "Timeout",
    "WaitOptions",
    "WebhookEvent",
    "WebhookVerificationError",
    "verify_webhook",
]
