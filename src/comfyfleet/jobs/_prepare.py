"""Getting a job ready for its instance: the model files its loaders name, fetched first.

Runs between the claim and the submit. A file on disk is used as it is; a missing file that a
manifest or preset knows is downloaded (the job shows a `downloading` phase with progress
events); a loader input that is a URL is downloaded into the URL cache and the graph rewritten
to read it. A missing file nobody knows fails the job at once, naming the node and the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from comfyfleet.jobs._model import Job
from comfyfleet.jobs._outputs import JobOutput
from comfyfleet.jobs._store import JobStore
from comfyfleet.models import (
    DownloadError,
    DownloadProgress,
    DownloadResult,
    ModelError,
    ModelMissing,
    required_models,
)


def _public(result: DownloadResult) -> JobOutput:
    """What a client may see of a finished download (not its source: it may carry a token)."""
    return JobOutput(
        kind="model",
        file=result.path.name,
        size=result.size,
        sha256=result.sha256,
        skipped=result.skipped,
        others={} if result.sha256 is not None else {"sha256": None},  # shown as null
    )


class PrepareFailed(Exception):
    """The job cannot be submitted: its error, and whether another attempt could help."""

    def __init__(self, error: dict[str, Any], *, retryable: bool) -> None:
        super().__init__(error.get("message", "preparing the job failed"))
        self.error = error
        self.retryable = retryable


class NothingToRun(Exception):
    """The job was all preparation (a preset install): it is done without ComfyUI."""

    def __init__(self, outputs: list[JobOutput]) -> None:
        super().__init__("nothing to run")
        self.outputs = outputs


class Preparer(Protocol):
    def needed(self, job: Job) -> bool:
        """Whether the job has anything to prepare (else it is submitted straight away)."""
        ...

    async def __call__(self, job: Job, store: JobStore) -> dict[str, Any]:
        """The graph to submit; raises PrepareFailed."""
        ...


class _Library(Protocol):
    async def ensure(self, workflow: dict[str, Any], on_progress: Any = None) -> dict[str, Any]: ...

    async def install_preset(self, name: str, on_progress: Any = None) -> list[DownloadResult]: ...

    async def install_source(
        self,
        source: str,
        *,
        folder_type: str,
        filename: str | None = None,
        size: int | None = None,
        sha256: str | None = None,
        on_progress: Any = None,
    ) -> list[DownloadResult]: ...


@dataclass
class ModelFetch:
    """The :class:`Preparer` that makes sure a job's model files are on disk."""

    library: _Library
    every_s: float = 0.25
    """At most one progress event per file this often (the last one always goes out)."""
    _last: dict[tuple[str, str], float] = field(default_factory=dict)

    def needed(self, job: Job) -> bool:
        return job.options.installs or bool(required_models(job.workflow))

    async def __call__(self, job: Job, store: JobStore) -> dict[str, Any]:
        async def on_progress(progress: DownloadProgress) -> None:
            key = (job.id, progress.file)
            now = time.monotonic()
            finished = progress.total is not None and progress.done >= progress.total
            if not finished and now - self._last.get(key, 0.0) < self.every_s:
                return
            self._last[key] = now
            await store.publish(job.id, "downloading", progress.to_dict())

        try:
            results = await self._install(job, on_progress)
            if results is not None:
                raise NothingToRun([_public(result) for result in results])
            return await self.library.ensure(job.workflow, on_progress=on_progress)
        except ModelMissing as exc:
            error = {"code": "model_missing", "retryable": False, "message": exc.message}
            raise PrepareFailed(error | exc.details(), retryable=False) from exc
        except DownloadError as exc:
            error = {"code": "model_download_failed", "retryable": exc.retryable}
            raise PrepareFailed(error | {"message": str(exc)}, retryable=exc.retryable) from exc
        except ModelError as exc:
            error = {"code": "model_error", "retryable": False, "message": str(exc)}
            raise PrepareFailed(error, retryable=False) from exc
        finally:
            for key in [k for k in self._last if k[0] == job.id]:
                del self._last[key]

    async def _install(self, job: Job, on_progress: Any) -> list[DownloadResult] | None:
        """The files a model install job downloaded; None for a job that runs a graph."""
        preset = job.options.install_preset
        if preset is not None:
            return await self.library.install_preset(preset, on_progress=on_progress)
        model = job.options.install_model
        if model is None:
            return None
        return await self.library.install_source(
            str(model["source"]),
            folder_type=str(model["type"]),
            filename=model.get("filename"),
            size=model.get("size"),
            sha256=model.get("sha256"),
            on_progress=on_progress,
        )
