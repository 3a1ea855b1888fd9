"""Publishing a finished job's files: converted if asked, stored, and described.

ComfyUI writes every output under the job's own folder of the output directory. From there each
file goes to the job's storage: the default backend (local disk needs no copy, the file is
already where `/v1/outputs` serves it), or the one the job names. Each output then carries its
`url`, `content_type`, `size` and `sha256`. The local files stay where ComfyUI wrote them, so a
store that is down loses nothing: the attempt fails as retryable `storage_unavailable` and the
outputs are still on disk.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import mimetypes
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, cast

from comfyfleet.jobs._model import Job
from comfyfleet.jobs._options import JobOptions
from comfyfleet.jobs._outputs import JobOutput
from comfyfleet.storage import (
    ImageFormat,
    LocalStorage,
    Storage,
    StorageError,
    StorageUnavailable,
    StoredObject,
    convert_image,
)

log = logging.getLogger("comfyfleet.jobs")

StorageChooser = Callable[[JobOptions], Storage]
"""The backend for a job, from its options: the default one, or one the job names."""


@dataclass
class OutputPublisher:
    output_dir: Path
    default: Storage
    choose: StorageChooser | None = None
    attempts: int = 3
    backoff_s: float = 0.5
    _no_copy: bool = field(init=False)

    def __post_init__(self) -> None:
        # Local storage rooted at the output folder already holds the files ComfyUI wrote.
        self._no_copy = isinstance(self.default, LocalStorage) and (
            self.default.root.resolve() == self.output_dir.resolve()
        )

    async def publish(self, job: Job, outputs: list[JobOutput]) -> list[JobOutput]:
        """The outputs with their stored URL and digest. Raises StorageUnavailable when the
        store cannot be reached after a few tries, StorageError when it refuses for good."""
        storage = self.default if self.choose is None else self.choose(job.options)
        convert = _conversion(job.options)
        published = []
        for output in outputs:
            relative = output.path
            if relative is None:
                published.append(output)  # texts, and files outside the job's folder
                continue
            published.append(await self._publish_file(job.id, relative, output, storage, convert))
        return published

    async def _publish_file(
        self,
        job_id: str,
        relative: str,
        output: JobOutput,
        storage: Storage,
        convert: tuple[ImageFormat, int] | None,
    ) -> JobOutput:
        file = self.output_dir / job_id / Path(*PurePosixPath(relative).parts)
        key = f"{job_id}/{relative}"
        source: bytes | Path = file
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if convert is not None and content_type.startswith("image/"):
            converted = await asyncio.to_thread(convert_image, file.read_bytes(), *convert)
            if converted is not None:
                source, content_type, suffix = converted
                key = str(PurePosixPath(key).with_suffix(suffix))
        started = time.perf_counter()
        if storage is self.default and self._no_copy and isinstance(source, Path):
            stored = _describe_in_place(cast(LocalStorage, storage), key, file, content_type)
        else:
            stored = await self._put(storage, key, source, content_type)
        result = replace(
            output,
            store_s=round(time.perf_counter() - started, 6),
            url=stored.url,
            key=stored.key,
            content_type=stored.content_type,
            size=stored.size,
            sha256=stored.sha256,
        )
        if key != f"{job_id}/{relative}":
            result = replace(result, path=key.split("/", 1)[1], filename=PurePosixPath(key).name)
        return result

    async def _put(
        self, storage: Storage, key: str, source: bytes | Path, content_type: str
    ) -> StoredObject:
        delay = self.backoff_s
        for _ in range(self.attempts - 1):
            try:
                return await storage.put(key, source, content_type)
            except StorageUnavailable as exc:
                log.warning("storing %s failed (%s); trying again in %.1fs", key, exc, delay)
                await asyncio.sleep(delay)
                delay *= 2
        return await storage.put(key, source, content_type)  # the last try raises as it is


def _describe_in_place(
    storage: LocalStorage, key: str, file: Path, content_type: str
) -> StoredObject:
    digest = hashlib.sha256()
    size = 0
    with file.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return StoredObject(key, storage.url_for(key), content_type, size, digest.hexdigest())


def _conversion(options: JobOptions) -> tuple[ImageFormat, int] | None:
    convert = options.convert
    if convert is None:
        return None
    return cast(ImageFormat, convert.format), convert.quality


def storage_error(exc: StorageError) -> dict[str, Any]:
    """The job error for a store that failed: retryable when it may come back."""
    retryable = isinstance(exc, StorageUnavailable)
    return {
        "code": "storage_unavailable" if retryable else "storage_error",
        "retryable": retryable,
        "message": f"storing the outputs failed: {exc.message}",
    }
