"""The counters and histograms of work done in this process: counted where it happens.

One object, told by the parts that do the work through their own small watch interfaces: the
lanes (`comfyfleet.jobs.JobWatch`: the phases of each attempt, model loads, output store
failures), the downloader (`comfyfleet.models.DownloadWatch`), the webhook sender (each
attempt). Labels take a few values that comfyfleet chooses (phase names, folder types, results),
never a job id, a URL or a file name.
"""

from __future__ import annotations

import re
from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Histogram

from comfyfleet.jobs import PHASES
from comfyfleet.models import DownloadItem, DownloadResult
from comfyfleet.storage import (
    AccessDenied,
    InvalidKey,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
)
from comfyfleet.webhooks import DeliveryState, Outcome

PHASE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
"""From a cached 50 ms graph to a ten-minute video job."""
DOWNLOAD_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
WEBHOOK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

_LABEL = re.compile(r"[a-z][a-z0-9_-]{0,39}")
MAX_FOLDERS = 32
"""Distinct folder labels at most (folder types are configured, so a handful); the rest
count as `other`."""

_WEBHOOK_RESULTS = {
    DeliveryState.DELIVERED: "delivered",
    DeliveryState.PENDING: "retrying",
    DeliveryState.FAILED: "failed",
}


def storage_error_kind(error: Exception) -> str:
    """A storage error's label: what an operator does about it differs for each."""
    if isinstance(error, StorageUnavailable):
        return "unavailable"
    if isinstance(error, AccessDenied):
        return "access_denied"
    if isinstance(error, StorageConfigError):
        return "config"
    if isinstance(error, InvalidKey):
        return "invalid_key"
    return "other" if isinstance(error, StorageError) else "internal"


class WorkMetrics:
    """Implements the jobs' `JobWatch`, the models' `DownloadWatch` and the webhook sender's
    `AttemptWatch` (`webhook_attempt`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.phases = Histogram(
            "comfyfleet_job_phase_seconds",
            "Time job attempts spent in each phase, in the agents of this process: queued, "
            "downloading (models), waiting (in ComfyUI's queue), running, storing (outputs)",
            ["phase"],
            buckets=PHASE_BUCKETS,
            registry=registry,
        )
        for phase in PHASES:
            self.phases.labels(phase)
        self.model_loads_total = Counter(
            "comfyfleet_model_loads",
            "Model files an instance ran a job with that its previous job did not use",
            ["folder"],
            registry=registry,
        )
        self.download_bytes = Counter(
            "comfyfleet_model_download_bytes",
            "Bytes of model files fetched (failed transfers included)",
            registry=registry,
        )
        self.downloads = Counter(
            "comfyfleet_model_downloads",
            "Model file transfers that ended, by result (files already there are none)",
            ["result"],
            registry=registry,
        )
        for result in ("succeeded", "failed"):
            self.downloads.labels(result)
        self.download_seconds = Histogram(
            "comfyfleet_model_download_seconds",
            "How long model file transfers that succeeded took",
            buckets=DOWNLOAD_BUCKETS,
            registry=registry,
        )
        self.webhook_seconds = Histogram(
            "comfyfleet_webhook_attempt_seconds",
            "Webhook delivery attempts, by result (delivered; failed and retrying; failed for "
            "good), and how long each took",
            ["result"],
            buckets=WEBHOOK_BUCKETS,
            registry=registry,
        )
        for result in _WEBHOOK_RESULTS.values():
            self.webhook_seconds.labels(result)
        self.storage_errors = Counter(
            "comfyfleet_storage_errors",
            "Writes of job outputs to an output store that failed, by kind",
            ["kind"],
            registry=registry,
        )
        for kind in ("unavailable", "access_denied", "config", "invalid_key", "other"):
            self.storage_errors.labels(kind)
        self._folders: set[str] = set()

    # --- jobs.JobWatch ---------------------------------------------------------------------
    def phase(self, phase: str, seconds: float) -> None:
        if phase in PHASES:
            self.phases.labels(phase).observe(max(0.0, seconds))

    def model_loads(self, models: Collection[str]) -> None:
        for model in models:
            self.model_loads_total.labels(self._folder(model)).inc()

    def storage_failed(self, error: Exception) -> None:
        self.storage_errors.labels(storage_error_kind(error)).inc()

    def _folder(self, model: str) -> str:
        folder = model.split("/", 1)[0] if "/" in model else "other"
        if not _LABEL.fullmatch(folder):
            return "other"
        if folder not in self._folders and len(self._folders) >= MAX_FOLDERS:
            return "other"
        self._folders.add(folder)
        return folder

    # --- models.DownloadWatch --------------------------------------------------------------
    def downloaded(self, result: DownloadResult) -> None:
        self.downloads.labels("succeeded").inc()
        self.download_bytes.inc(max(0, result.fetched_bytes))
        self.download_seconds.observe(max(0.0, result.seconds))

    def download_failed(self, item: DownloadItem, error: Exception, fetched_bytes: int) -> None:
        self.downloads.labels("failed").inc()
        self.download_bytes.inc(max(0, fetched_bytes))

    # --- webhooks.AttemptWatch -------------------------------------------------------------
    def webhook_attempt(self, outcome: Outcome, seconds: float) -> None:
        result = _WEBHOOK_RESULTS.get(outcome.state, "failed")
        self.webhook_seconds.labels(result).observe(max(0.0, seconds))
